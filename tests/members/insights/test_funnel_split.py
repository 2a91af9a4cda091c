"""A funnel from the per-member summary split by member id range (``funnels.funnel_part_sql``,
merged by ``funnels.funnel_parts_merge``; ``funnel_services.funnel_results`` on several
connections) is the unsplit query's answer exactly: the same cells in the same order, the same
counts and the same medians to the last bit (the median of the merged times, not of the parts'
medians), with breakdowns, merges, splits and late events queued beside the summary."""

import itertools
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings
from hypothesis import event, given
from hypothesis import strategies as st

from members.insights import funnel_events
from members.insights.funnel_services import DateRange, _Part, analysed_members, funnel_results
from members.insights.funnels import (
    FunnelSpec,
    funnel_parse,
    funnel_part_sql,
    funnel_parts_merge,
    funnel_sql,
    median_cont,
    member_ranges,
)
from members.insights.services import members_changed
from tests.members.insights.journeys import NAMES, SEGMENTS, T0, person_st, write
from tests.members.insights.test_funnel_events import _event, _person, apply, change_st, funnel_st
from tests.members.insights.test_funnels_reference import SLOW, rows


def unsplit(spec: FunnelSpec, *, start, end, analysed) -> dict[tuple[int, str], tuple]:
    sql, params = funnel_sql(spec, start=start, end=end, analysed=analysed, from_summary=True)
    return {(s, g): (e, c, m) for s, g, e, c, m in rows(sql, params)}


@pytest.mark.django_db
@SLOW
@given(
    people=st.lists(person_st(), min_size=1, max_size=5),
    definition=funnel_st,
    changes=st.lists(change_st, max_size=3),
    cuts=st.lists(st.integers(0, 12), max_size=3),
    pending_part=st.integers(0, 3),
    start_hours=st.integers(0, 36),
    span_hours=st.integers(1, 48),
)
def test_a_funnel_split_by_members_is_the_unsplit_funnel(
    people, definition, changes, cuts, pending_part, start_hours, span_hours
):
    segments = list(SEGMENTS) if definition["breakdown"] == "segment" else []
    spec = funnel_parse(**definition, segments=segments)
    start = T0 + timedelta(hours=start_hours)
    end = start + timedelta(hours=span_hours)
    analysed = analysed_members()
    with transaction.atomic():
        written = write(people)
        funnel_events.summary_from_scratch()
        touched = set()
        for change in changes:
            touched |= apply(change, written)
        members_changed(touched)  # queued: read from the log by the part with ``pending``
        whole = unsplit(spec, start=start, end=end, analysed=analysed)
        # Any cut of the members' ids (a survivor and its absorbed member may fall apart).
        first = min(m.pk for m in written.members)
        bounds = sorted({first, *(first + cut for cut in cuts), first + 2 * len(people) + 1})
        ranges = list(itertools.pairwise(bounds))
        pending_part %= len(ranges)
        parts = []
        for part, members in enumerate(ranges):
            sql, params = funnel_part_sql(
                spec, start=start, end=end, analysed=analysed, members=members, pending=part == pending_part
            )
            parts.append(rows(sql, params))
        merged = funnel_parts_merge(parts)
        assert merged == whole  # medians equal as floats, not within a tolerance
        event(f"parts: {len(ranges)}; cells with times in two parts: "
              f"{min(2, sum(len([p for p in parts if any(r[:2] == c and r[4] for r in p)]) > 1 for c in whole))}")  # fmt: skip

        # The service, its parts in turn on this connection (the test's transaction), in order.
        dates = DateRange(T0.date(), (T0 + timedelta(days=3)).date())
        with override_settings(TIME_ZONE="UTC", INSIGHTS_FUNNEL_CONNECTIONS=1):
            alone = funnel_results(spec=spec, dates=dates)
        with override_settings(TIME_ZONE="UTC", INSIGHTS_FUNNEL_CONNECTIONS=3, INSIGHTS_FUNNEL_SPLIT_FROM=1):
            assert funnel_results(spec=spec, dates=dates) == alone
        transaction.set_rollback(True)


def test_the_median_is_percentile_conts():
    assert median_cont([3.0]) == 3.0
    assert median_cont([4.0, 1.0]) == 2.5
    assert median_cont([0.1, 0.7, 0.2, 10.0]) == 0.2 + (0.7 - 0.2) * 0.5
    assert median_cont([5.0, 1.0, 3.0]) == 3.0


@pytest.mark.parametrize(("first", "last", "parts"), [(1, 10, 2), (5, 5, 2), (1, 3, 4), (7, 1_000_003, 3)])
def test_member_ranges_cover_the_ids_once(first, last, parts):
    ranges = member_ranges(first, last, parts)
    assert ranges[0][0] == first
    assert ranges[-1][1] == last + 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(start < stop for start, stop in ranges)
    assert len(ranges) == min(parts, last - first + 1)


@pytest.mark.django_db(transaction=True)
@override_settings(TIME_ZONE="UTC")
def test_the_parts_run_on_connections_of_their_own_reading_one_snapshot(monkeypatch):
    # Committed data (no test transaction): the parts run in threads, on their own backends.
    channels = ("app", "pos", "web", "mini_program")
    people = [
        _person([_event(NAMES[0], 10 * i, channels[i % 4]), _event(NAMES[1], 10 * i + 7 * (i % 5), channels[i % 3]),
                  _event(NAMES[2], 10 * i + 30 + i, channels[(i + 1) % 4])][: 1 + i % 3])
        for i in range(12)
    ]  # fmt: skip
    written = write(people)
    funnel_events.summary_from_scratch()
    members_changed({written.members[3].pk})  # one member read from the log, beside the summary
    spec = funnel_parse(steps=[{"event": n} for n in NAMES[:3]], window_hours=24, breakdown="channel")
    dates = DateRange(T0.date(), T0.date())
    with override_settings(INSIGHTS_FUNNEL_CONNECTIONS=1):
        alone = funnel_results(spec=spec, dates=dates)
    assert sum(r.entered for r in alone if r.step == 1) == 12
    assert any(r.median_seconds for r in alone)

    backends = []
    run = _Part.run

    def spied(self):
        run(self)
        backends.append(threading.current_thread().name)

    monkeypatch.setattr(_Part, "run", spied)
    with override_settings(INSIGHTS_FUNNEL_CONNECTIONS=2, INSIGHTS_FUNNEL_SPLIT_FROM=1):
        assert funnel_results(spec=spec, dates=dates) == alone
    assert backends == ["insights-funnel-part"]  # the other part ran on this thread's connection
    assert not connection.in_atomic_block


@pytest.mark.django_db
def test_the_median_of_the_parts_is_the_median_of_all_their_times():
    # Step 1 to step 2 in 1, 2, 10 and 30 hours by four members: cut after the first, the parts'
    # medians are 1 and 10 hours (their mean 5.5), the median of all four times 6 hours.
    spec = funnel_parse(steps=[{"event": NAMES[0]}, {"event": NAMES[1]}], window_hours=48)
    people = [_person([_event(NAMES[0], 0), _event(NAMES[1], 60 * hours)]) for hours in (1, 2, 10, 30)]
    start, end = T0, T0 + timedelta(days=1)
    analysed = analysed_members()
    with transaction.atomic():
        written = write(people)
        funnel_events.summary_from_scratch()
        first, second = written.members[0].pk, written.members[1].pk
        parts = []
        for members in ((first, second), (second, written.members[-1].pk + 1)):
            sql, params = funnel_part_sql(
                spec, start=start, end=end, analysed=analysed, members=members, pending=members[0] == first
            )
            parts.append(rows(sql, params))
        assert [sorted(r[4]) for part in parts for r in part if r[0] == 1] == [
            [3600.0],
            [7200.0, 36000.0, 108000.0],
        ]
        assert funnel_parts_merge(parts) == {(1, ""): (4, 4, 6 * 3600.0), (2, ""): (4, 0, None)}
        assert unsplit(spec, start=start, end=end, analysed=analysed) == funnel_parts_merge(parts)
        transaction.set_rollback(True)
