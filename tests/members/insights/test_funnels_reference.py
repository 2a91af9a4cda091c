"""Funnels, attribution and cohorts in SQL over the real tables held to their plain-Python
references on generated cross-channel journeys (with merges, ties, refunds, other currencies,
and members who granted, refused, withdrew or never stated ``analytics`` consent: the SQL's
answer is the reference's over the analysed members' part of the journeys only)."""

import math
import os
from datetime import timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from members.insights.attribution import (
    MODELS,
    AttributionSpec,
    attribution_reference,
    attribution_sql,
    credits_from_rows,
)
from members.insights.cohorts import CohortSpec, Start, cohorts_reference, cohorts_sql
from members.insights.funnel_services import analysed_members
from members.insights.funnels import (
    FunnelRow,
    funnel_attempts_reference,
    funnel_parse,
    funnel_reference,
    funnel_sql,
    funnel_step_members_sql,
)
from tests.members.insights.journeys import (
    CHANNELS,
    NAMES,
    PROPERTY_VALUES,
    SEGMENTS,
    SPREAD,
    T0,
    person_st,
    write,
)

# Shrinking a failure over the database is slow; INSIGHTS_NO_SHRINK=1 skips it while debugging.
PHASES = [p for p in Phase if not (os.environ.get("INSIGHTS_NO_SHRINK") and p is Phase.shrink)]
SLOW = settings(
    max_examples=60, deadline=None, phases=PHASES,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip

where_st = st.dictionaries(
    st.sampled_from(("channel", "store_code", "properties.k")), st.none(), max_size=2
).flatmap(
    lambda keys: st.fixed_dictionaries({
        key: st.sampled_from(CHANNELS) if key == "channel" else
        st.sampled_from(("", "S1", "S2")) if key == "store_code" else st.sampled_from(PROPERTY_VALUES)
        for key in keys
    })
)  # fmt: skip
step_st = st.fixed_dictionaries({"event": st.sampled_from(NAMES[:2])}, optional={"where": where_st})


def funnels(steps: st.SearchStrategy) -> st.SearchStrategy:
    """Funnel definitions of 2 to 4 of these steps, any window and breakdown."""
    return st.fixed_dictionaries(
        {
            "steps": st.lists(steps, min_size=2, max_size=4),
            "window_hours": st.integers(1, 60),
            "breakdown": st.sampled_from(("", "channel", "store", "tier", "segment")),
        }
    )


funnel_st = funnels(step_st)


def rows(sql, params):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def same_funnel(found: list[FunnelRow], expected: list[FunnelRow]) -> None:
    assert [(r.step, r.group, r.entered, r.converted) for r in found] == [
        (r.step, r.group, r.entered, r.converted) for r in expected
    ]
    for a, b in zip(found, expected, strict=True):
        assert (a.median_seconds is None) == (b.median_seconds is None)
        if a.median_seconds is not None:
            assert b.median_seconds is not None
            assert math.isclose(a.median_seconds, b.median_seconds, abs_tol=1e-6)


@pytest.mark.django_db
@SLOW
@given(
    people=st.lists(person_st(), min_size=1, max_size=5),
    definition=funnel_st,
    start_hours=st.integers(0, 36),
    span_hours=st.integers(1, 48),
)
def test_funnel_sql_is_the_reference(people, definition, start_hours, span_hours):
    segments = list(SEGMENTS) if definition["breakdown"] == "segment" else []
    spec = funnel_parse(**definition, segments=segments)
    start = T0 + timedelta(hours=start_hours)
    end = start + timedelta(hours=span_hours)
    with transaction.atomic():
        written = write(people).of_analysed()
        sql, params = funnel_sql(spec, start=start, end=end, analysed=analysed_members())
        found = [
            FunnelRow(s, g, e, c, None if m is None else float(m)) for s, g, e, c, m in rows(sql, params)
        ]
        expected = funnel_reference(spec, written.events, start=start, end=end, tiers=written.tiers,
                                    segments_of=written.segments_of)  # fmt: skip
        same_funnel(found, expected)
        event(f"deepest step reached: {max((r.step for r in found), default=0)}")
        attempts = funnel_attempts_reference(spec, written.events, start=start, end=end)
        for step in range(1, len(spec.steps) + 1):
            for dropped in (False, True):
                sql, params = funnel_step_members_sql(
                    spec, start=start, end=end, step=step, dropped=dropped, analysed=analysed_members()
                )
                wanted = sorted(
                    a.member for a in attempts if (len(a.steps) == step if dropped else len(a.steps) >= step)
                )
                assert [r[0] for r in rows(sql, params)] == wanted
        transaction.set_rollback(True)


@pytest.mark.django_db
@SLOW
@given(
    people=st.lists(person_st(), min_size=1, max_size=5),
    lookback_hours=st.integers(1, 72),
    half_life_hours=st.integers(1, 48),
    dimension=st.sampled_from(("channel", "source", "campaign", "store")),
    start_hours=st.integers(0, 36),
    span_hours=st.integers(1, 48),
)
def test_attribution_sql_is_the_reference_and_credits_add_up(
    people, lookback_hours, half_life_hours, dimension, start_hours, span_hours
):
    spec = AttributionSpec(timedelta(hours=lookback_hours), timedelta(hours=half_life_hours), dimension)
    start = T0 + timedelta(hours=start_hours)
    end = start + timedelta(hours=span_hours)
    with transaction.atomic():
        written = write(people).of_analysed()
        sql, params = attribution_sql(spec, start=start, end=end, currency="CNY", analysed=analysed_members())
        found = {c.group: c for c in credits_from_rows(rows(sql, params))}
        conversions = [c for c in written.conversions if start <= c.at < end]
        expected = attribution_reference(spec, conversions, written.touches)
        assert set(found) == set(expected)
        event(f"touched groups: {min(len(set(found) - {'(no touch)'}), 3)}")
        for group, credit in found.items():
            for model in MODELS:
                value, count = expected[group][model]
                # Each credit is rounded to the cent in SQL only at the end (per group).
                assert abs(float(credit.value[model]) - value) <= 0.01, (group, model)
                assert math.isclose(credit.conversions[model], count, abs_tol=1e-9), (group, model)
        total = sum(c.value for c in conversions)
        for model in MODELS:
            # Every model hands out exactly the conversions' value (within a cent per group).
            assert abs(sum(c.value[model] for c in found.values()) - total) <= Decimal("0.01") * max(
                len(found), 1
            )
            assert math.isclose(
                sum(c.conversions[model] for c in found.values()), len(conversions), abs_tol=1e-9
            )
        transaction.set_rollback(True)


@pytest.mark.django_db
@SLOW
@given(
    people=st.lists(person_st(SPREAD), min_size=1, max_size=5),
    spec=st.builds(CohortSpec, basis=st.just("purchase"), period=st.sampled_from(("week", "month"))),
    start_hours=st.integers(0, 36),
    span_hours=st.integers(1, 40 * 24),
    zone=st.sampled_from(("UTC", "Asia/Shanghai", "America/Los_Angeles")),
)
def test_cohorts_sql_is_the_reference(people, spec, start_hours, span_hours, zone):
    start = T0 + timedelta(hours=start_hours)
    end = start + timedelta(hours=span_hours)
    with transaction.atomic():
        written = write(people).of_analysed()
        firsts = {}
        for member, at, _order_id, channel in sorted(written.orders, key=lambda o: (o[1], o[2])):
            firsts.setdefault(member, Start(member, at, channel))
        sizes, cells = cohorts_reference(
            spec, starts=firsts.values(), orders=[(m, at) for m, at, _, _ in written.orders],
            events=[(e.member, e.at) for e in written.events], start=start, end=end, zone=ZoneInfo(zone),
        )  # fmt: skip
        sql, params = cohorts_sql(spec, start=start, end=end, time_zone=zone, analysed=analysed_members())
        found = rows(sql, params)
        event(f"cells: {min(sum(1 for r in found if r[2] >= 1), 3)}")
        assert {(c, ch): n for c, ch, k, n, _, _ in found if k == -1} == sizes
        assert [(c, ch, k, a, o) for c, ch, k, _, a, o in found if k >= 0] == [
            (x.cohort, x.channel, x.offset, x.active, x.repurchased) for x in cells
        ]
        transaction.set_rollback(True)


def _person(events, **extra):
    base = {"events": events, "absorbed_events": [], "orders": [], "tier": None, "segments": []}
    return {**base, **extra}


def _event(name, minutes, channel="app"):
    return {"name": name, "channel": channel, "store_code": "", "minutes": minutes, "properties": {},
            "campaign": "", "source": ""}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize(("gap_minutes", "converts"), [(120, True), (121, False)])
def test_the_window_includes_its_last_instant(gap_minutes, converts):
    spec = funnel_parse(
        steps=[{"event": NAMES[0]}, {"event": NAMES[2], "where": {"channel": "pos"}}], window_hours=2
    )
    people = [_person([_event(NAMES[0], 0), _event(NAMES[2], gap_minutes, "pos")])]
    with transaction.atomic():
        written = write(people)
        sql, params = funnel_sql(spec, start=T0, end=T0 + timedelta(days=1), analysed=analysed_members())
        found = [(s, e, c) for s, _, e, c, _ in rows(sql, params)]
        expected = funnel_reference(spec, written.events, start=T0, end=T0 + timedelta(days=1))
        assert found == [(r.step, r.entered, r.converted) for r in expected]
        assert found[0] == (1, 1, 1 if converts else 0)
        transaction.set_rollback(True)
