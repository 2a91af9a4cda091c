"""The KPI rollups held to a plain-Python reference: members made by the real pipeline from
generated events (orders in every channel, refunds, identifies that merge members, splits,
late uploads), rolled up incrementally after each step; every KPI of every day equals what the
reference computes from the members as resolved at the end, and a rollup from scratch changes
nothing."""

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import Event
from events.pipeline import events_process_pending
from identity.models import EventResolution, Identifier
from identity.services import member_split
from members.consent.models import ConsentStatement
from members.insights import kpis, member_days_sql
from members.insights.models import DailyRollup, DirtyMember, MemberFacts
from members.insights.selectors import kpi_series
from members.insights.services import compute_from, insights_refresh
from members.models import Member
from tests.factories import EventFactory, SourceFactory
from tests.factories.consent import consent_grant

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
ONLINE = {"app", "mini_program", "web"}


@dataclass(frozen=True)
class Step:
    person: int
    source: int  # 0, 1: stores; 2: app; 3: web
    day: int
    action: str  # view, order, refund, link
    amount: int
    phone: bool


steps = st.lists(
    st.builds(
        Step,
        person=st.integers(0, 3),
        source=st.integers(0, 3),
        day=st.integers(0, 240),
        action=st.sampled_from(["view", "order", "order", "refund", "link"]),
        amount=st.integers(1, 400),
        phone=st.booleans(),
    ),
    min_size=1,
    max_size=18,
)


@dataclass
class World:
    sources: list
    orders: list = field(default_factory=list)  # (person, source, order_id, total, refunded, ids)
    n: int = 0

    def ids(self, step: Step) -> dict:
        fields: dict[str, Any] = {"anonymous_id": f"a{step.person}-{step.source}", "user_id": ""}
        if step.phone:
            fields["context"] = {"traits": {"phone": f"+861380013800{step.person}"}}
        return fields

    def send(self, step: Step) -> None:
        self.n += 1
        at = T0 + timedelta(days=step.day)
        source = self.sources[step.source]
        common = {"source": source, "timestamp": at, "message_id": f"m-{self.n}"}
        if step.action == "view":
            EventFactory(event="Product Viewed", **common, **self.ids(step))
        elif step.action == "link":
            EventFactory(type="identify", event="", traits={"phone": f"+861380013800{step.person}"},
                         **common, anonymous_id=f"a{step.person}-{step.source}", user_id="")  # fmt: skip
        elif step.action == "order":
            ids = self.ids(step)
            order_id = f"O-{self.n}"
            EventFactory(event="Order Completed", **common, **ids,
                         properties={"order_id": order_id, "total": str(step.amount), "currency": "CNY"})  # fmt: skip
            self.orders.append([order_id, step.amount, 0, ids, source])
        else:
            for order in self.orders:
                order_id, total, refunded, ids, order_source = order
                if order_source == source and refunded < total:
                    amount = min(step.amount, total - refunded)
                    order[2] += amount
                    EventFactory(event="Order Refunded", **common, **ids,
                                 properties={"order_id": order_id, "total": str(amount), "currency": "CNY"})  # fmt: skip
                    return


def step_once(world: World, batch: list[Step]) -> None:
    for step in batch:
        world.send(step)
    events_process_pending()
    analytics_granted_to_everyone()
    insights_refresh()


def analytics_granted_to_everyone() -> None:
    """Every member, new ones and those a split made included, agrees to ``analytics``, so the
    reference analyses everyone (which members the board analyses is held to its definition by
    ``test_member_days_sql`` and ``test_kpis_api``); queued for the rollup as a statement
    recorded by staff queues them."""
    unstated = list(
        Member.objects.filter(status="active")
        .exclude(id__in=ConsentStatement.objects.filter(purpose="analytics").values("member_id"))
        .values_list("id", flat=True)
    )
    consent_grant(unstated, purposes=["analytics"], at=datetime(2020, 1, 1, tzinfo=UTC))
    DirtyMember.objects.bulk_create(DirtyMember(member_id=m) for m in unstated)


# --- The reference: each KPI of each day, by its definition, from the resolved members. ---


def reference(first: date, last: date) -> dict[str, dict[date, Decimal | None]]:
    tz = ZoneInfo(django_settings.TIME_ZONE)
    active = set(Member.objects.filter(status="active").values_list("id", flat=True))
    owner = dict(EventResolution.objects.values_list("event_id", "member_id"))
    events: dict[int, list[tuple[date, str]]] = defaultdict(list)
    completions: dict[tuple[int, str], tuple[int, date, str, str, Decimal]] = {}
    refunds: dict[tuple[int, str, int], Decimal] = defaultdict(Decimal)
    for e in Event.objects.order_by("id"):
        m = owner.get(e.id)
        if m not in active:
            continue
        day = e.timestamp.astimezone(tz).date()
        events[m].append((day, e.channel))
        if e.event == "Order Completed":
            completions[(e.source_id, e.properties["order_id"])] = (
                m,
                day,
                e.channel,
                e.store_code,
                Decimal(e.properties["total"]),
            )
        elif e.event == "Order Refunded":
            refunds[(e.source_id, e.properties["order_id"], m)] += Decimal(e.properties["total"])
    orders: dict[int, list[tuple[date, str, str, Decimal]]] = defaultdict(list)
    for (source, order_id), (m, day, channel, store, total) in completions.items():
        net = total - refunds[(source, order_id, m)]
        if net > 0:
            orders[m].append((day, channel, store, net))
    orders = dict(orders)  # a plain dict: looking a member up must not add them
    identified = set(
        Identifier.objects.filter(type="phone", member_id__in=active).values_list("member_id", flat=True)
    )
    out: dict[str, dict[date, Decimal | None]] = defaultdict(dict)

    def ratio(top: Decimal | int, bottom: Decimal | int) -> Decimal | None:
        return Decimal(top) / Decimal(bottom) if bottom else None

    day = first
    while day <= last:
        todays = [(m, o) for m in orders for o in orders[m] if o[0] == day]
        buyers = {m for m, _ in todays}
        sales = sum((o[3] for _, o in todays), Decimal(0))
        out["sales"][day] = sales
        out["orders"][day] = Decimal(len(todays))
        out["buyers"][day] = Decimal(len(buyers))
        out["aov"][day] = ratio(sales, len(todays))

        def omni(m: int, d: date) -> bool:
            return len({o[1] for o in orders.get(m, []) if o[0] <= d}) >= 2

        omni_orders = [o for m, o in todays if omni(m, day)]
        single_orders = [o for m, o in todays if not omni(m, day)]
        omni_sales = sum((o[3] for o in omni_orders), Decimal(0))
        single_sales = sum((o[3] for o in single_orders), Decimal(0))
        out["omni_sales_share"][day] = ratio(omni_sales, omni_sales + single_sales)
        out["aov_omni"][day] = ratio(omni_sales, len(omni_orders))
        out["aov_single"][day] = ratio(single_sales, len(single_orders))
        a, b = ratio(omni_sales, len(omni_orders)), ratio(single_sales, len(single_orders))
        out["aov_omni_uplift"][day] = a / b - 1 if a is not None and b else None
        for n in kpis.REPURCHASE_WINDOWS:
            again = {m for m in buyers if any(day - timedelta(days=n) <= o[0] < day for o in orders[m])}
            out[f"repurchase_{n}"][day] = ratio(len(again), len(buyers))
        out["new_members"][day] = Decimal(sum(1 for m in orders if min(o[0] for o in orders[m]) == day))
        out["omni_members"][day] = Decimal(sum(1 for m in orders if omni(m, day)))
        window = timedelta(days=kpis.CONVERSION_WINDOW_DAYS)
        online = {m for m in events if any(d == day and c in ONLINE for d, c in events[m])}
        in_store = {m for m in events if any(d == day and c == "pos" for d, c in events[m])}
        out["online_to_store"][day] = ratio(
            sum(
                1
                for m in online
                if any(o[1] == "pos" and day <= o[0] <= day + window for o in orders.get(m, []))
            ),
            len(online),
        )
        out["store_to_online"][day] = ratio(
            sum(
                1
                for m in in_store
                if any(o[1] in ONLINE and day <= o[0] <= day + window for o in orders.get(m, []))
            ),
            len(in_store),
        )
        todays_events = [(m, c) for m in events for d, c in events[m] if d == day]
        out["identified_event_share"][day] = ratio(
            sum(1 for m, _ in todays_events if m in identified), len(todays_events)
        )
        known = [m for m in identified if m in events and min(d for d, _ in events[m]) <= day]
        spanning = [m for m in known if len({c for d, c in events[m] if d <= day}) >= 2]
        out["unification_rate"][day] = ratio(len(spanning), len(known))
        states = {"active_members": 0, "at_risk_members": 0, "churned_members": 0}
        for m in orders:
            past = [o[0] for o in orders[m] if o[0] <= day]
            if past:
                age = (day - max(past)).days
                key = (
                    "active_members"
                    if age < kpis.ACTIVE_DAYS
                    else ("at_risk_members" if age < kpis.AT_RISK_DAYS else "churned_members")
                )
                states[key] += 1
        for key, count in states.items():
            out[key][day] = Decimal(count)
        day += timedelta(days=1)
    return out


def measured(first: date, last: date) -> dict[str, dict[date, Decimal | None]]:
    out: dict[str, dict[date, Decimal | None]] = {}
    for kpi in kpis.KPIS:
        if kpi.source == "daily":
            points = kpi_series(kpi=kpi, start=first, end=last, interval=kpis.Period.DAY)
            out[kpi.key] = {p.start: p.value for p in points}
    return out


def rollup_rows() -> list[tuple]:
    return sorted(DailyRollup.objects.values_list("day", "channel", "store_code", *kpis.COLUMNS))


def assert_same(reference_values: dict, measured_values: dict) -> None:
    for key, days in measured_values.items():
        for day, value in days.items():
            expected = reference_values[key][day]
            if expected is None or value is None:
                assert value == expected, (key, day, value, expected)
            else:
                assert abs(Decimal(value) - expected) < Decimal("1e-9"), (key, day, value, expected)


@pytest.mark.django_db
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), generated=steps)
def test_rollups_equal_the_reference_after_merges_splits_refunds_and_late_uploads(data, generated):
    with transaction.atomic():  # each example starts from, and leaves, empty tables
        _check(data, generated)
        transaction.set_rollback(True)


def _check(data, generated) -> None:
    sources = [SourceFactory(pos=True, store_code="SH01"), SourceFactory(pos=True, store_code="BJ01"),
               SourceFactory(kind="app"), SourceFactory(kind="web")]  # fmt: skip
    world = World(sources)
    # Arrival in any order: late uploads land on days already rolled up.
    arrival = data.draw(st.permutations(generated))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=3)))
    for start, end in zip([0, *cuts], [*cuts, len(arrival)], strict=True):
        step_once(world, arrival[start:end])
        if data.draw(st.booleans()):
            _split_one(data)
    first = T0.date()
    last = first + timedelta(days=240 + kpis.AT_RISK_DAYS + kpis.CONVERSION_WINDOW_DAYS)
    assert not DirtyMember.objects.exists()
    assert_same(reference(first, last), measured(first, last))

    incremental = rollup_rows()
    compute_from(since=None)
    assert rollup_rows() == incremental  # from scratch: the same rows


def _split_one(data) -> None:
    """Split an anonymous id off a member holding more than one identifier, if there is one."""
    by_member: dict[int, list[str]] = defaultdict(list)
    for member_id, kind, value in Identifier.objects.filter(member__status="active").values_list(
        "member_id", "type", "value"
    ):
        by_member[member_id].append(f"{kind}:{value}")
    candidates = sorted(m for m, ids in by_member.items() if len(ids) >= 2)
    if not candidates:
        return
    member = data.draw(st.sampled_from(candidates))
    anonymous = sorted(i for i in by_member[member] if i.startswith("anonymous_id:"))
    if not anonymous:
        return
    member_split(member_id=member, identifiers=[data.draw(st.sampled_from(anonymous))], reason="test")
    events_process_pending()
    analytics_granted_to_everyone()  # the member the split made too
    insights_refresh()


# --- The nightly on connections of its own (outside a transaction, as the beat job runs it). ---

#: Four people in every channel over a few months: orders, refunds, views, a link that merges.
NIGHTLY_STEPS = [
    Step(
        person=p,
        source=(p + i) % 4,
        day=17 * i + p,
        action=action,
        amount=40 + 9 * i,
        phone=bool((p + i) % 2),
    )
    for i, action in enumerate(["order", "view", "order", "refund", "link", "order", "view", "order"])
    for p in range(4)
]


def _facts_rows() -> list[tuple]:
    return sorted(MemberFacts.objects.values_list(*member_days_sql.PACKED))


@pytest.mark.django_db(transaction=True)
def test_the_nightly_on_parallel_connections_gives_the_rows_of_the_incremental_path(django_settings_parts):
    step_once(World([SourceFactory(pos=True, store_code="SH01"), SourceFactory(pos=True, store_code="BJ01"),
                     SourceFactory(kind="app"), SourceFactory(kind="web")]), NIGHTLY_STEPS)  # fmt: skip
    incremental, facts = rollup_rows(), _facts_rows()
    assert len(facts) >= django_settings_parts  # members in every part
    compute_from(since=None)  # not in a transaction: every part on a thread and connection of its own
    assert rollup_rows() == incremental
    assert _facts_rows() == facts


@pytest.mark.django_db(transaction=True)
def test_a_part_failing_leaves_the_rollups_facts_and_queue_as_they_were(django_settings_parts, monkeypatch):
    step_once(World([SourceFactory(pos=True, store_code="SH01"), SourceFactory(kind="app")]),
              [Step(p, p % 2, 3 * p, "order", 50, True) for p in range(4)])  # fmt: skip
    DirtyMember.objects.create(member_id=Member.objects.order_by("id").values_list("id", flat=True)[0])
    before = rollup_rows(), _facts_rows(), list(DirtyMember.objects.values_list("member_id", flat=True))
    assert before[0]
    assert before[1]
    packed = member_days_sql.facts_pack
    threads = set()

    def last_part_fails(into: str = member_days_sql.STAGE_PACKED) -> int:
        threads.add(threading.current_thread().name)
        if into.endswith(f"_{django_settings_parts - 1}"):
            raise RuntimeError("part failed")
        return packed(into)

    monkeypatch.setattr(member_days_sql, "facts_pack", last_part_fails)
    with pytest.raises(RuntimeError, match="part failed"):
        compute_from(since=None)
    assert threads == {f"insights-nightly-{part}" for part in range(django_settings_parts)}  # not inline
    assert (
        rollup_rows(),
        _facts_rows(),
        list(DirtyMember.objects.values_list("member_id", flat=True)),
    ) == before


@pytest.fixture
def django_settings_parts(settings) -> int:
    settings.INSIGHTS_NIGHTLY_CONNECTIONS = 2
    return 2
