"""Properties of the points ledger over generated histories (issue 5): the balance is the sum of
the ledger, never negative where the program forbids it, nothing counted twice, and the ledger
rebuilt from the event log equals the one kept incrementally through merges, splits,
redemptions and the passing of time.

The first tests check the pure derivation (``points_derive``) in microseconds per example; the
last one drives the whole pipeline against PostgreSQL with a handful of examples."""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.services import SplitRefused, member_split
from members import member_events
from members import services as member_services
from members.aggregates import OrderEvent
from members.loyalty.models import EarnRule as EarnRuleRow
from members.loyalty.models import LoyaltyProgram, PointsAccount, PointsEntry
from members.loyalty.points import Derivation, Kind, LoyaltyEvent, OrderLine, Recorded, lots_of, points_derive
from members.loyalty.program import (
    Downgrade,
    EarnRule,
    Expiry,
    NegativeBalance,
    Program,
    TierBasis,
    TierRule,
)
from members.loyalty.selectors import points_available, program_load, recorded_of
from members.loyalty.services import PointsRefused, points_redeem
from members.models import DirtyMark, Member, MemberOrder, ParkedMember

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIERS = (TierRule("member", "Member", 0, Decimal(0)), TierRule("silver", "Silver", 1, Decimal(100)),
         TierRule("gold", "Gold", 2, Decimal(400)))  # fmt: skip

# Generated pure histories ---------------------------------------------------------------------

moments = st.integers(min_value=0, max_value=400 * 24).map(lambda hours: T0 + timedelta(hours=hours))
amounts = st.integers(min_value=0, max_value=50_000).map(lambda cents: Decimal(cents) / 100)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    def rule(**kwargs: Any) -> EarnRule:
        expiry = draw(st.sampled_from(Expiry))
        return EarnRule(
            points_per_unit=draw(st.sampled_from([Decimal(1), Decimal("1.5"), Decimal(2)])),
            channel_multipliers=draw(st.sampled_from([{}, {"pos": Decimal(2)}])),
            tier_multipliers=draw(st.sampled_from([{}, {"gold": Decimal("1.25")}])),
            excluded_categories=draw(st.sampled_from([frozenset(), frozenset({"tobacco"})])),
            first_purchase_bonus=draw(st.sampled_from([0, 50])),
            signup_bonus=draw(st.sampled_from([0, 20])),
            referral_bonus=draw(st.sampled_from([0, 30])),
            pending_days=draw(st.sampled_from([0, 0, 14])),
            expiry=expiry,
            expiry_days=draw(st.integers(min_value=1, max_value=90)) if expiry == Expiry.DAYS else None,
            **kwargs,
        )

    switch = T0 + timedelta(days=draw(st.integers(min_value=0, max_value=300)))
    rules = draw(st.sampled_from([(), (rule(),), (rule(valid_until=switch), rule(valid_from=switch))]))
    return Program(
        rules=rules,
        tiers=draw(st.sampled_from([(), TIERS])),
        tier_basis=draw(st.sampled_from(TierBasis)),
        tier_window_days=draw(st.sampled_from([30, 365])),
        downgrade=draw(st.sampled_from(Downgrade)),
        review_months=draw(st.sampled_from([1, 3, 12])),
        negative_balance=draw(st.sampled_from(NegativeBalance)),
        refund_returns_redeemed_points=draw(st.booleans()),
    )


@st.composite
def histories(draw: st.DrawFn) -> dict:
    ids = iter(range(1, 10_000))
    orders: list[OrderEvent] = []
    lines: dict[int, list[OrderLine]] = {}

    def event(name: str, order_id: str, amount: Decimal, at: datetime, currency: str = "CNY",
              source_id: int = 1) -> OrderEvent:  # fmt: skip
        event_id = next(ids)
        channel = draw(st.sampled_from(["pos", "app", "web"]))
        return OrderEvent(event_id=event_id, name=name, order_id=order_id, amount=amount, currency=currency,
                          at=at, channel=channel, store_code="", message_id=f"m-{event_id}",
                          source_id=source_id)  # fmt: skip

    for n in range(draw(st.integers(min_value=0, max_value=6))):
        at, amount = draw(moments), draw(amounts)
        # Two sources number their orders alike: (source, number) is the order, a number alone is not.
        source_id, number = draw(st.sampled_from([1, 2])), draw(st.sampled_from([f"O{n}", "O-SAME"]))
        done = event(
            "Order Completed",
            number,
            amount,
            at,
            draw(st.sampled_from(["CNY", "CNY", "CNY", "USD"])),
            source_id,
        )
        orders.append(done)
        if draw(st.booleans()):
            lines[done.event_id] = [OrderLine("CIG", "tobacco", draw(amounts))]
        if draw(st.booleans()):  # sent twice (a retry with another message id)
            orders.append(event("Order Completed", done.order_id, amount, at + timedelta(minutes=1),
                                source_id=source_id))  # fmt: skip
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            later = at + timedelta(hours=draw(st.integers(min_value=0, max_value=60 * 24)))
            part = draw(st.sampled_from([amount, amount / 2, amount / 3, draw(amounts)]))
            refunded_by = draw(st.sampled_from([source_id, source_id, 3]))  # 3: returned elsewhere
            orders.append(event("Order Refunded", done.order_id, part.quantize(Decimal("0.01")), later,
                                done.currency, refunded_by))  # fmt: skip
    events = []
    for name in draw(st.lists(st.sampled_from(["Signed Up", "Referral"]), max_size=3)):
        event_id = next(ids)
        referrer = draw(st.sampled_from([None, "u-ann"])) if name == "Signed Up" else None
        events.append(LoyaltyEvent(event_id=event_id, name=name, at=draw(moments), message_id=f"m-{event_id}",
                                   referrer=referrer))  # fmt: skip
    order_ids = [*sorted({o.order_id for o in orders}), "ELSEWHERE"]
    facts = []
    for n in range(draw(st.integers(min_value=0, max_value=5))):
        kind = draw(st.sampled_from([Kind.REDEEM, Kind.REDEEM, Kind.ADJUST]))
        points = draw(st.integers(min_value=1, max_value=400))
        if kind == Kind.REDEEM or draw(st.booleans()):  # an adjustment may take points or give them
            points = -points
        key = f"{kind}:{n}"
        facts.append(Recorded(key=key, kind=kind, points=points, at=draw(moments), cause_key=key, derived=False,
                              order_id=draw(st.sampled_from(order_ids)) if kind == Kind.REDEEM else ""))  # fmt: skip
    last = max([o.at for o in orders] + [e.at for e in events] + [f.at for f in facts], default=T0)
    now = last + timedelta(days=draw(st.integers(min_value=0, max_value=800)))
    return {"orders": orders, "lines": lines, "events": events, "recorded": facts, "now": now}


def derive(program: Program, history: dict, **changes: object) -> Derivation:
    return points_derive(program=program, **{**history, **changes})


def own(derivation: Derivation) -> list:
    """The derivation's entries for the member themselves (not their referrer's)."""
    return [due for due in derivation.due if due.beneficiary is None]


def as_rows(derivation: Derivation, facts: list[Recorded]) -> list[Recorded]:
    return [
        Recorded(key=d.key, kind=d.kind, points=d.points, at=d.at, order_id=d.order_id, cause_key=d.key,
                 available_at=d.available_at, expires_at=d.expires_at, event_id=d.event_id)
        for d in own(derivation)
    ] + facts  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(program=programs(), history=histories())
def test_a_derived_ledger_counts_everything_once_and_never_below_the_floor(program: Program, history: dict):
    derivation = derive(program, history)
    facts = history["recorded"]

    keys = [due.key for due in derivation.due]
    assert len(keys) == len(set(keys)), "a cause appears twice"
    assert all(due.points != 0 for due in derivation.due)
    assert not set(keys) & {fact.key for fact in facts}
    for prefix in ("bonus:first_order:", "bonus:signup:", "bonus:referred:"):
        assert sum(key.startswith(prefix) for key in keys) <= 1, prefix

    rows = as_rows(derivation, facts)
    if program.negative_balance == NegativeBalance.FORBID:
        # Not only at the end: at every moment of the member's history.
        running = 0
        for at in sorted({row.at for row in rows}):
            running += sum(row.points for row in rows if row.at == at)
            assert running >= 0, f"balance {running} at {at}"
    # The lots read back from the ledger hold exactly its sum.
    assert lots_of(rows).balance == sum(row.points for row in rows)

    # Per order number (the orders of every source with it, together): never reverses more than
    # it earned, never takes away more than it gave (reversal and expiry of its own points
    # together), never gives back more than was spent on it.
    by_order: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for due in own(derivation):
        cause = due.key.removeprefix("expire:")
        kind = "earn" if cause.startswith("purchase:") else cause.split(":", 1)[0]
        kind = f"expire {kind}" if due.kind == Kind.EXPIRE else kind
        by_order[due.order_id][kind] += due.points
    for order_id, sums in by_order.items():
        if not order_id:
            continue
        assert -sums["reverse"] <= sums["earn"], order_id
        assert sums["earn"] + sums["reverse"] + sums["expire earn"] >= 0, order_id
        spent_on_it = -sum(f.points for f in facts if f.kind == Kind.REDEEM and f.order_id == order_id)
        assert sums["return"] <= spent_on_it, order_id


@settings(max_examples=300, deadline=None)
@given(program=programs(), history=histories(), seed=st.integers())
def test_the_derivation_does_not_depend_on_the_order_its_inputs_arrive_in(
    program: Program, history: dict, seed: int
):
    shuffle = random.Random(seed)
    shuffled = {
        key: shuffle.sample(value, len(value)) if isinstance(value, list) else value
        for key, value in history.items()
    }

    assert derive(program, shuffled) == derive(program, history)


@settings(max_examples=300, deadline=None)
@given(program=programs(), history=histories(), later=st.integers(min_value=1, max_value=800))
def test_time_passing_only_appends_expiries_and_reviews(program: Program, history: dict, later: int):
    before = derive(program, history)
    after = derive(program, history, now=history["now"] + timedelta(days=later))

    assert after.due[: len(before.due)] == before.due
    assert all(due.kind == Kind.EXPIRE and due.at > history["now"] for due in after.due[len(before.due) :])
    assert after.tier_changes[: len(before.tier_changes)] == before.tier_changes
    if before.recheck_at is None:
        assert after.due == before.due
        assert after.tier_changes == before.tier_changes
    else:
        assert all(due.at >= before.recheck_at for due in after.due[len(before.due) :])


# Through the pipeline, against the database --------------------------------------------------

START = datetime(2027, 3, 1, 12, tzinfo=UTC)  # the clock of the scenario (``timezone.now``)
RULES = [None, {"expiry": "days", "expiry_days": 30}, {"pending_days": 7, "expiry": "end_of_month"},
         {"first_purchase_bonus": 20, "signup_bonus": 10, "expiry": "days", "expiry_days": 45}]  # fmt: skip


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    """A few people's events (an order at the till known by phone, in the app known by an
    anonymous id until the app learns the phone: a merge), in a shuffled arrival order, with
    redemptions, splits and the clock moving between batches. Order numbers collide: the till
    and the app number alike (two orders), and one number of one source may reach two people
    (one order: a till's re-attribution, or a confused client)."""
    people = draw(st.integers(min_value=2, max_value=3))
    events = []
    for person in range(people):
        for n in range(draw(st.integers(min_value=1, max_value=3))):
            channel = draw(st.sampled_from(["pos", "app"]))
            order_id = draw(st.sampled_from([f"{person}-{n}", f"{n}"]))
            amount = draw(st.integers(min_value=1, max_value=400))
            days_ago = draw(st.integers(min_value=0, max_value=40))
            events.append(("Order Completed", person, channel, order_id, amount, days_ago))
            for _ in range(draw(st.integers(min_value=0, max_value=2))):
                part, later = draw(st.integers(min_value=1, max_value=amount)), draw(st.integers(0, days_ago))
                events.append(("Order Refunded", person, channel, order_id, part, days_ago - later))
        for name in draw(st.lists(st.sampled_from(["identify", "Signed Up"]), max_size=2, unique=True)):
            events.append((name, person, "app", "", 0, draw(st.integers(min_value=0, max_value=40))))
    arrival = draw(st.permutations(events))
    size = draw(st.integers(min_value=1, max_value=4))
    action = st.one_of(
        # Spend a share of what is available (more than all of it is refused), on one of the
        # person's orders (a refund gives it back) or on another.
        st.tuples(
            st.just("redeem"), st.integers(0, people - 1), st.sampled_from([0.3, 0.5, 1, 1.5]), st.booleans()
        ),
        st.tuples(st.just("redeem"), st.integers(0, people - 1), st.sampled_from([0.5, 1]), st.booleans()),
        st.tuples(st.just("split"), st.integers(0, people - 1)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
    )
    batches = [arrival[i : i + size] for i in range(0, len(arrival), size)]
    return {
        "forbid": draw(st.booleans()),
        "rule": draw(st.sampled_from(RULES)),
        "steps": [(batch, draw(st.lists(action, min_size=1, max_size=3))) for batch in batches],
        "final_tick": draw(st.sampled_from([0, 0, 20, 60])),
    }


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def _post(scenario_event: tuple, sources: dict, posted: dict) -> None:
    from tests.factories import EventFactory

    name, person, channel, order_id, amount, days_ago = scenario_event
    phone, anonymous = f"1390000000{person}", f"anon-{person}"
    at = START - timedelta(days=days_ago, minutes=person)
    common = {"source": sources[channel], "user_id": "", "timestamp": at}
    if name == "identify":
        event = EventFactory.create(
            type="identify", anonymous_id=anonymous, traits={"phone": phone}, **common
        )
    elif name == "Signed Up":
        event = EventFactory.create(event=name, anonymous_id=anonymous, properties={}, **common)
    elif channel == "pos":
        event = EventFactory.create(event=name, anonymous_id="", context={"traits": {"phone": phone}},
                             properties={"order_id": order_id, "total": amount, "currency": "CNY"}, **common)  # fmt: skip
    else:
        event = EventFactory.create(event=name, anonymous_id=anonymous,
                             properties={"order_id": order_id, "total": amount, "currency": "CNY"}, **common)  # fmt: skip
    posted[person].append(event.pk)


def _member_of(person: int, posted: dict) -> Member | None:
    ids = EventResolution.objects.filter(event_id__in=posted[person]).values_list("member_id", flat=True)
    return Member.objects.filter(id__in=ids, status=Member.Status.ACTIVE).order_by("id").first()


def _owned(histories: dict) -> None:
    """Each member's history without their completions of orders another member owns: the
    owner of an order (source, number) is the member holding its latest completion (event
    time, then messageId). An independent reading of the rule ``members.orders`` keeps."""
    latest: dict[tuple[int, str], tuple] = {}
    for member_id, history in histories.items():
        for o in history.orders:
            if o.name == "Order Completed":
                claim = (o.at, o.message_id, member_id)
                latest[o.order_key] = max(latest.get(o.order_key, claim), claim)
    for member_id, history in histories.items():
        history.orders = [
            o for o in history.orders if o.name != "Order Completed" or latest[o.order_key][2] == member_id
        ]


def _check_ledger(clock: Clock, forbid: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(a.member_id, e.member_id), a.balance, coalesce(sum(e.points), 0) "
            "FROM members_pointsaccount AS a FULL JOIN members_pointsentry AS e ON e.member_id = a.member_id "
            "GROUP BY 1, 2 HAVING a.balance IS DISTINCT FROM coalesce(sum(e.points), 0)"
        )
        assert cursor.fetchall() == [], "a balance differs from the sum of its ledger"
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the no-debt floor, checked as at commit
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    assert not PointsEntry.objects.exclude(member__status=Member.Status.ACTIVE).exists(), (
        "ledger rows left on a merged-away member"
    )
    if forbid:
        assert not PointsAccount.objects.filter(balance__lt=0).exists()
    # Never double-counted: each member's net points per cause are what a fresh derivation of
    # their whole history calls for, and the staff/till facts are theirs as recorded.
    program = program_load()
    active = set(Member.objects.filter(status=Member.Status.ACTIVE).values_list("id", flat=True))
    events = member_events.events_of(active)
    histories = member_events.loyalty_histories(active, events, member_events.order_events_of(events))
    _owned(histories)
    # One owner per order, counted in figures by that member alone, and nobody parked.
    assert not ParkedMember.objects.filter(replayed_at__isnull=True).exists()
    placed = defaultdict(set)
    for member_id, source_id, order_id in MemberOrder.objects.filter(placed_at__isnull=False).values_list(
        "member_id", "source_id", "order_id"
    ):
        placed[source_id, order_id].add(member_id)
    assert placed == {
        o.order_key: {member_id}
        for member_id, history in histories.items()
        for o in history.orders
        if o.name == "Order Completed"
    }
    for member_id, history in histories.items():
        entries = list(PointsEntry.objects.filter(member_id=member_id))
        derivation = points_derive(program=program, orders=history.orders, lines=history.lines,
                                   events=history.events, now=clock.now,
                                   recorded=[recorded_of(e) for e in entries if not e.derived])  # fmt: skip
        held: dict[str, int] = defaultdict(int)
        for entry in entries:
            if entry.derived:
                held[entry.cause_key] += entry.points
        assert {cause: points for cause, points in held.items() if points} == {
            due.key: due.points for due in derivation.due if due.beneficiary is None
        }, f"member {member_id}"


@pytest.mark.django_db(transaction=False)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(scenario=scenarios())
def test_the_ledger_through_merges_splits_redemptions_and_time_equals_a_rebuild(scenario: dict):
    from tests.factories import SourceFactory

    clock = Clock()
    with mock.patch("django.utils.timezone.now", clock), transaction.atomic():
        LoyaltyProgram.objects.update_or_create(
            key="default", defaults={"negative_balance": "forbid" if scenario["forbid"] else "allow"}
        )
        EarnRuleRow.objects.all().delete()
        if scenario["rule"]:
            EarnRuleRow.objects.create(name="generated", **scenario["rule"])
        sources = {"pos": SourceFactory(pos=True), "app": SourceFactory(kind="app")}
        posted: dict[int, list[int]] = defaultdict(list)
        redeemed = 0
        for batch, actions in scenario["steps"]:
            for event in batch:
                _post(event, sources, posted)
            events_process_pending()
            for action in actions:
                if action[0] == "tick":
                    clock.now += timedelta(days=action[1])
                    continue
                member = _member_of(action[1], posted)
                if member is None:
                    continue
                if action[0] == "split":
                    try:
                        member_split(member_id=member.pk, identifiers=[f"anonymous_id:anon-{action[1]}"],
                                     reason="two people")  # fmt: skip
                    except SplitRefused:
                        continue
                else:
                    _, person, share, on_order = action
                    orders = [
                        e[3] for b, _ in scenario["steps"] for e in b if e[:2] == ("Order Completed", person)
                    ]
                    points = max(1, int(points_available(member_id=member.pk, now=clock.now) * share))
                    try:
                        points_redeem(member=member, points=points, order_id=orders[0] if on_order else "TILL",
                                      channel="pos", idempotency_key=f"r-{redeemed}", user=AnonymousUser())  # fmt: skip
                        redeemed += 1
                    except PointsRefused:
                        pass
                member_services.members_refresh()
        clock.now += timedelta(days=scenario["final_tick"])
        DirtyMark.objects.bulk_create(
            DirtyMark(member_id=m)
            for m in Member.objects.filter(status=Member.Status.ACTIVE).values_list("id", flat=True)
        )
        member_services.members_refresh()

        _check_ledger(clock, scenario["forbid"])
        assert PointsEntry.objects.filter(derived=False).count() == redeemed
        incremental = (set(PointsEntry.objects.values_list("id", "member_id")),
                       set(PointsAccount.objects.values_list("member_id", "balance")))  # fmt: skip
        member_services.members_rebuild()
        assert (set(PointsEntry.objects.values_list("id", "member_id")),
                set(PointsAccount.objects.values_list("member_id", "balance"))) == incremental  # fmt: skip
        transaction.set_rollback(True)
