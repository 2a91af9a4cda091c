"""The funnels' per-member summary (``members.insights.funnel_events``): funnels answered from it
are the funnels answered from the event log and the plain-Python reference, on generated
cross-channel journeys, and stay so after merges, splits and late events once the rollup job
has taken the changed members from its queue; funnels read it only while it is up to date."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings
from hypothesis import event, given
from hypothesis import strategies as st

from events.models import Event
from identity.models import EventResolution
from members.consent.statements import DENIED, GRANTED, WITHDRAWN
from members.insights import funnel_events
from members.insights.funnel_services import DateRange, analysed_members, funnel_results
from members.insights.funnels import (
    FunnelRow,
    funnel_attempts_reference,
    funnel_parse,
    funnel_reference,
    funnel_sql,
    funnel_step_members_sql,
    summary_answers,
)
from members.insights.models import MemberFunnelEvents
from members.insights.services import insights_refresh, members_changed
from members.models import Member
from tests.factories.consent import consent_state
from tests.members.insights.journeys import CHANNELS, NAMES, SEGMENTS, T0, person_st, write
from tests.members.insights.test_funnels_reference import SLOW, funnels, rows, same_funnel

# Steps the summary answers: names, channels and stores (property filters read the log).
where_st = st.dictionaries(
    st.sampled_from(("channel", "store_code")), st.none(), max_size=2
).flatmap(
    lambda keys: st.fixed_dictionaries({
        key: st.sampled_from(CHANNELS) if key == "channel" else st.sampled_from(("", "S1", "S2")) for key in keys
    })
)  # fmt: skip
step_st = st.fixed_dictionaries({"event": st.sampled_from(NAMES[:3])}, optional={"where": where_st})
funnel_st = funnels(step_st)
late_st = st.fixed_dictionaries(
    {
        "name": st.sampled_from(NAMES[:3]),
        "channel": st.sampled_from(CHANNELS),
        "store_code": st.sampled_from(("", "S1")),
        "minutes": st.integers(0, 72 * 60).map(lambda m: m - m % 60),
    }
)
# What happens after the summary was built: a merge of one person's member into another's, a
# split (a person's absorbed member active again, on its own), a late event.
change_st = st.one_of(
    st.tuples(st.just("merge"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("split"), st.integers(0, 4), st.booleans()),
    st.tuples(st.just("late"), st.integers(0, 4), late_st),
)


def summary_rows() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT member_id, event, ranks, times, channels, stores FROM {funnel_events.TABLE} "
            "ORDER BY member_id, event"
        )
        return cursor.fetchall()


def answers(spec, *, start, end, from_summary):
    sql, params = funnel_sql(
        spec, start=start, end=end, analysed=analysed_members(), from_summary=from_summary
    )
    return [FunnelRow(s, g, e, c, None if m is None else float(m)) for s, g, e, c, m in rows(sql, params)]


def step_members(spec, *, start, end, from_summary):
    found = {}
    for step in range(1, len(spec.steps) + 1):
        for dropped in (False, True):
            sql, params = funnel_step_members_sql(
                spec, start=start, end=end, step=step, dropped=dropped, analysed=analysed_members(),
                from_summary=from_summary,
            )  # fmt: skip
            found[(step, dropped)] = [r[0] for r in rows(sql, params)]
    return found


def apply(change, written) -> set[int]:
    """Make ``change`` in the tables as identity would leave them; the members it touches (those
    the members refresh would recompute, and so queue for the rollup job)."""
    kind, i = change[0], change[1] % len(written.members)
    member = written.members[i]
    absorbed = Member.objects.get(pk=member.pk + 1)  # ``write`` makes each person's absorbed member next
    if kind == "merge":
        survivor = written.members[change[2] % len(written.members)]
        if survivor.pk == member.pk or Member.objects.get(pk=member.pk).status != "active":
            return set()
        if Member.objects.get(pk=survivor.pk).status != "active":
            return set()
        Member.objects.filter(pk=member.pk).update(status="merged", merged_into_id=survivor.pk)
        Member.objects.filter(merged_into_id=member.pk).update(merged_into_id=survivor.pk)
        return {member.pk, survivor.pk}
    if kind == "split":
        if absorbed.status != "merged":
            return set()
        was = absorbed.merged_into_id
        assert was is not None
        Member.objects.filter(pk=absorbed.pk).update(status="active", merged_into_id=None)
        if change[2]:  # the split-off member analysed too
            consent_state(
                [absorbed.pk], GRANTED, purposes=["analytics"], at=datetime.now(UTC) - timedelta(days=1)
            )
        return {absorbed.pk, was}
    late = change[2]
    owner = Member.objects.get(pk=member.pk)
    owner_id = owner.merged_into_id or owner.pk
    row = Event.objects.create(
        source=written.sources[late["channel"]], message_id=f"late-{Event.objects.count()}", type="track",
        event=late["name"], channel=late["channel"], store_code=late["store_code"],
        timestamp=T0 + timedelta(minutes=late["minutes"]), received_at=T0,
    )  # fmt: skip
    EventResolution.objects.create(event=row, member_id=owner_id)
    return {owner_id}


@pytest.mark.django_db
@SLOW
@given(
    people=st.lists(person_st(), min_size=1, max_size=5),
    definition=funnel_st,
    changes=st.lists(change_st, max_size=4),
    start_hours=st.integers(0, 36),
    span_hours=st.integers(1, 48),
)
def test_funnels_from_the_summary_are_the_logs(people, definition, changes, start_hours, span_hours):
    segments = list(SEGMENTS) if definition["breakdown"] == "segment" else []
    spec = funnel_parse(**definition, segments=segments)
    assert summary_answers(spec)
    start = T0 + timedelta(hours=start_hours)
    end = start + timedelta(hours=span_hours)
    with transaction.atomic():
        written = write(people)
        analysed = written.of_analysed()
        funnel_events.summary_from_scratch()
        found = answers(spec, start=start, end=end, from_summary=True)
        expected = funnel_reference(spec, analysed.events, start=start, end=end, tiers=analysed.tiers,
                                    segments_of=analysed.segments_of)  # fmt: skip
        same_funnel(found, expected)
        attempts = funnel_attempts_reference(spec, analysed.events, start=start, end=end)
        assert step_members(spec, start=start, end=end, from_summary=True) == {
            (step, dropped): sorted(
                a.member for a in attempts if (len(a.steps) == step if dropped else len(a.steps) >= step)
            )
            for step in range(1, len(spec.steps) + 1)
            for dropped in (False, True)
        }
        event(f"deepest step reached: {max((r.step for r in found), default=0)}")

        # Merges, splits, late events: the touched members queued, as the members refresh does,
        # and taken by the rollup job, which rebuilds their summaries.
        touched = set()
        for change in changes:
            touched |= apply(change, written)
        event(f"members touched by changes: {min(len(touched), 3)}")
        members_changed(touched)
        # Queued, not yet rebuilt: those members are read from the log beside the summary.
        with connection.cursor() as cursor:
            cursor.execute(funnel_events.READY_SQL)
            assert cursor.fetchone()[0]
        same_funnel(
            answers(spec, start=start, end=end, from_summary=True),
            answers(spec, start=start, end=end, from_summary=False),
        )
        assert step_members(spec, start=start, end=end, from_summary=True) == step_members(
            spec, start=start, end=end, from_summary=False
        )
        insights_refresh(time_budget=float("inf"))
        with connection.cursor() as cursor:
            cursor.execute(funnel_events.READY_SQL)
            assert cursor.fetchone()[0]
        kept = summary_rows()
        same_funnel(
            answers(spec, start=start, end=end, from_summary=True),
            answers(spec, start=start, end=end, from_summary=False),
        )
        assert step_members(spec, start=start, end=end, from_summary=True) == step_members(
            spec, start=start, end=end, from_summary=False
        )
        # What the queue kept is what a build from scratch makes.
        funnel_events.summary_from_scratch()
        assert kept == summary_rows()
        transaction.set_rollback(True)


def _person(events):
    return {"events": events, "absorbed_events": [], "orders": [], "tier": None, "segments": []}


def _event(name, minutes, channel="app", properties=None):
    return {"name": name, "channel": channel, "store_code": "", "minutes": minutes,
            "properties": properties or {}, "campaign": "", "source": ""}  # fmt: skip


@pytest.mark.django_db
@override_settings(TIME_ZONE="UTC")
def test_funnels_read_the_summary_where_it_is_up_to_date():
    spec = funnel_parse(steps=[{"event": NAMES[0]}, {"event": NAMES[2]}], window_hours=24)
    dates = DateRange(T0.date(), T0.date())
    people = [_person([_event(NAMES[0], 0), _event(NAMES[2], 60)]), _person([_event(NAMES[0], 30)])]
    with transaction.atomic():
        written = write(people)
        log = [(1, "", 2, 1), (2, "", 1, 0)]

        def counted():
            return [(r.step, r.group, r.entered, r.converted) for r in funnel_results(spec=spec, dates=dates)]

        assert counted() == log  # never built: the log
        funnel_events.summary_from_scratch()
        assert counted() == log
        # A summary gone wrong is read while it says it is up to date: this is how the tests
        # above would see a wrong summary.
        MemberFunnelEvents.objects.filter(member_id=written.members[0].pk, event=NAMES[2]).delete()
        assert counted() == [(1, "", 2, 0)]
        with override_settings(INSIGHTS_FUNNEL_SUMMARY=False):
            assert counted() == log
        members_changed([written.members[1].pk])  # another member queued: still wrong
        assert counted() == [(1, "", 2, 0)]
        members_changed([written.members[0].pk])  # queued: read from the log until the job runs
        assert counted() == log
        insights_refresh()
        assert counted() == log
        # The rollups from scratch empty the queue without the summary: the log until it is built.
        from members.insights.services import _from_scratch

        _from_scratch()
        MemberFunnelEvents.objects.all().delete()
        assert counted() == log
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_property_filter_reads_the_log():
    spec = funnel_parse(
        steps=[{"event": NAMES[0], "where": {"properties.k": "x"}}, {"event": NAMES[2]}], window_hours=24
    )
    assert not summary_answers(spec)
    assert summary_answers(
        funnel_parse(
            steps=[{"event": NAMES[0], "where": {"channel": "app", "store_code": ""}}, {"event": NAMES[2]}],
            window_hours=24,
        )
    )


@pytest.mark.django_db
@pytest.mark.parametrize("from_summary", [True, False])
def test_of_equally_deep_attempts_the_earliest_counts(from_summary):
    # Two attempts two steps deep: the first (app, 60 minutes to the add) is the member's.
    spec = funnel_parse(steps=[{"event": NAMES[0]}, {"event": NAMES[1]}], window_hours=2, breakdown="channel")
    events = [_event(NAMES[0], 0, "app"), _event(NAMES[1], 60, "pos"), _event(NAMES[0], 120, "web"),
              _event(NAMES[1], 200, "pos")]  # fmt: skip
    with transaction.atomic():
        written = write([_person(events)])
        funnel_events.summary_from_scratch()
        found = answers(spec, start=T0, end=T0 + timedelta(days=1), from_summary=from_summary)
        assert [(r.step, r.group, r.entered, r.converted, r.median_seconds) for r in found] == [
            (1, "app", 1, 1, 3600.0), (2, "pos", 1, 0, None)
        ]  # fmt: skip
        same_funnel(found, funnel_reference(spec, written.events, start=T0, end=T0 + timedelta(days=1)))
        transaction.set_rollback(True)


def _plan_nodes(node):
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


@pytest.mark.django_db
def test_a_funnel_from_the_summary_reads_consent_once_not_once_per_member():
    # Five members enter; two have analytics consent in force (never stated, denied and
    # withdrawn are not): their consent is one pass over the range, not a probe each.
    spec = funnel_parse(steps=[{"event": NAMES[0]}, {"event": NAMES[2]}], window_hours=24)
    histories = ((GRANTED,), (DENIED,), (), (GRANTED, WITHDRAWN), (DENIED, GRANTED))
    journey = [_event(NAMES[0], 0), _event(NAMES[2], 60)]
    with transaction.atomic():
        write([{**_person(journey), "analytics": history} for history in histories])
        funnel_events.summary_from_scratch()
        sql, params = funnel_sql(
            spec, start=T0, end=T0 + timedelta(days=1), analysed=analysed_members(), from_summary=True
        )
        assert [(s, e, c) for s, _, e, c, _ in rows(sql, params)] == [(1, 2, 2), (2, 2, 0)]
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            (plan,) = cursor.fetchone()[0]
        loops = [
            node["Actual Loops"]
            for node in _plan_nodes(plan["Plan"])
            if node.get("Relation Name") == "consent_consentstatement"
        ]
        assert loops
        assert max(loops) == 1, loops  # the queued members' part: not run (0 loops)
        transaction.set_rollback(True)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "journey",
    [
        [(0, 0), (1, 30), (0, 100), (0, 200)],  # step-1 events after the last step 2: not tried
        [(1, 0), (0, 30), (0, 60)],  # every step 2 before the first attempt: the first alone
        [(0, 0), (0, 30)],  # no step 2 at all
        [(0, 0), (1, 300), (0, 400), (1, 420), (2, 430), (0, 500)],  # the deeper attempt later
    ],
)
def test_attempts_after_the_last_step_two_are_not_needed(journey):
    spec = funnel_parse(steps=[{"event": NAMES[k]} for k in range(3)], window_hours=2)
    with transaction.atomic():
        written = write([_person([_event(NAMES[k], minutes) for k, minutes in journey])])
        funnel_events.summary_from_scratch()
        end = T0 + timedelta(days=1)
        same_funnel(
            answers(spec, start=T0, end=end, from_summary=True),
            funnel_reference(spec, written.events, start=T0, end=end),
        )
        transaction.set_rollback(True)
