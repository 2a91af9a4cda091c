"""The rollup rows computed in SQL from members' facts (``member_days_sql``) equal the sums per
day, channel and store of ``kpis.member_days`` (the definition, in plain Python) on any history:
identified or not, refusing analytics or not, events and orders in any channel and store,
orders refunded in full, several orders on one day and key, purchases close and far apart
(repurchase windows, lifecycle turns that a later purchase cancels, conversion windows),
several members at once; the same once the facts are packed as stored and unpacked again. And
on members made by the real pipeline, from members' tables."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from members.insights import kpis, member_days_sql
from members.insights.services import member_histories
from members.models import Member

D0 = date(2026, 1, 1)
CHANNELS = ("pos", "app", "mini_program", "web", "server")

# Days close together (same-day conversion, repurchase) as often as far apart (lifecycle turns).
days = st.one_of(st.integers(0, 12), st.integers(0, 400)).map(lambda n: D0 + timedelta(days=n))
channel_and_store = st.sampled_from(CHANNELS).flatmap(
    lambda c: st.tuples(st.just(c), st.sampled_from(["SH01", "BJ01", ""]) if c == "pos" else st.just(""))
)
events = st.builds(
    lambda day, cs, count: kpis.EventCount(day, cs[0], cs[1], count),
    days,
    channel_and_store,
    st.integers(1, 5),
)
orders = st.builds(
    lambda day, cs, net: kpis.OrderFact(day, cs[0], cs[1], Decimal(net) / 100),
    days,
    channel_and_store,
    st.integers(-500, 50_000),  # zero and below: refunded in full (or over-refunded): no order
)


def history(member_id: int) -> st.SearchStrategy[kpis.MemberHistory]:
    return st.builds(
        lambda identified, analytics, e, o: kpis.MemberHistory(
            member_id, identified, analytics, tuple(e), tuple(o)
        ),
        st.booleans(),
        st.booleans(),
        st.lists(events, max_size=8, unique_by=lambda e: (e.day, e.channel, e.store_code)),
        st.lists(orders, max_size=8),  # two orders may share a day and a store
    )


def python_rows(histories: list[kpis.MemberHistory]) -> dict[tuple, tuple]:
    """The members' rows (``kpis.member_days``) added up per day, channel and store, as the
    rollups hold them: a row all zero is none."""
    sums: dict[tuple, list] = {}
    for h in histories:
        for (_, day, channel, store), values in kpis.member_days(h).items():
            row = sums.setdefault((day, channel, store), [0] * len(kpis.COLUMNS))
            for i, value in enumerate(values):
                row[i] += value
    return {key: tuple(row) for key, row in sums.items() if any(row)}


def sql_rows() -> dict[tuple, tuple]:
    return member_days_sql.staged_day_sums()


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=st.tuples(history(1), history(2), history(3)))
def test_the_sql_rows_equal_the_python_definition(histories):
    with transaction.atomic():
        member_days_sql.facts_stage_rows(histories)
        expected = python_rows(list(histories))
        assert sql_rows() == expected
        assert member_days_sql.packed_day_sums() == expected  # as stored, then read back
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_purchase_before_a_turn_cancels_it_and_a_far_one_turns_the_member_churned():
    # Bought on day 0, day 60 (before the at-risk turn on day 90), then day 400 (after churning).
    h = kpis.MemberHistory(
        7,
        True,
        True,
        (),
        tuple(kpis.OrderFact(D0 + timedelta(days=n), "app", "", Decimal(10)) for n in (0, 60, 400)),
    )
    member_days_sql.facts_stage_rows([h])
    rows = sql_rows()
    assert rows == python_rows([h])
    lifecycle = {
        key[0]: {c: v for c, v in zip(kpis.COLUMNS, values, strict=True) if c.endswith("_delta") and v}
        for key, values in rows.items()
        if key[1:] == (kpis.ALL, kpis.ALL)
    }
    assert lifecycle[D0] == {"active_delta": 1}
    assert D0 + timedelta(days=90) not in lifecycle  # the purchase on day 60 kept it active
    assert lifecycle[D0 + timedelta(days=150)] == {"active_delta": -1, "at_risk_delta": 1}
    assert lifecycle[D0 + timedelta(days=240)] == {"at_risk_delta": -1, "churned_delta": 1}
    assert lifecycle[D0 + timedelta(days=400)] == {"churned_delta": -1, "active_delta": 1}


@pytest.mark.django_db
def test_the_facts_read_from_members_tables_give_the_python_rows(zhang):
    """The staging reads (events through resolutions, orders net of refunds, identifiers,
    consent) give the rows that the Python definition gives on the same members."""
    ids = sorted(Member.objects.values_list("id", flat=True))
    member_days_sql.facts_stage(ids)
    rows = sql_rows()
    assert rows
    assert rows == python_rows(member_histories(ids))
