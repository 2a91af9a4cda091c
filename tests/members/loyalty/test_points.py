"""The points derivation (members.loyalty.points), rule by rule: pure, no database."""

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from events.commerce import MAX_AMOUNT
from members.aggregates import OrderEvent
from members.loyalty.points import (
    Derivation,
    Kind,
    Lot,
    Lots,
    LoyaltyEvent,
    OrderLine,
    Recorded,
    cause_of,
    lots_of,
    points_derive,
)
from members.loyalty.program import (
    MAX_MULTIPLIER,
    MAX_POINTS_PER_UNIT,
    Downgrade,
    EarnRule,
    Expiry,
    NegativeBalance,
    Program,
    TierBasis,
    TierRule,
    multiplier_of,
)

T0 = datetime(2026, 1, 10, 10, tzinfo=UTC)
DAY = timedelta(days=1)
SHANGHAI = ZoneInfo("Asia/Shanghai")
_ids = itertools.count(1000)
DEFAULT = Program()


_numbers: dict[int, str] = {}  # completion event id -> its order's number, for ``named``


def order(order_id: str, amount: str, *, at: datetime = T0, channel: str = "pos", currency: str = "CNY",
          name: str = "Order Completed", event_id: int | None = None, source_id: int = 0) -> OrderEvent:  # fmt: skip
    event_id = event_id or next(_ids)
    if name == "Order Completed":
        _numbers[event_id] = order_id
    return OrderEvent(
        event_id=event_id, name=name, order_id=order_id, amount=Decimal(amount), currency=currency, at=at,
        channel=channel, store_code="", message_id=f"m-{event_id}", source_id=source_id,
    )  # fmt: skip


def named(key: str) -> str:
    """A key as these tests write it: an order's causes are named after the completion event
    (``purchase:1003``, ``expire:purchase:1003``); here, to read, after the order's number
    (``purchase:A``). Other keys are as they are."""
    head, _, event_id = key.rpartition(":")
    if head.endswith(("purchase", "first_order")) and event_id.isdigit() and int(event_id) in _numbers:
        return f"{head}:{_numbers[int(event_id)]}"
    return key


def refund(order_id: str, amount: str, *, at: datetime, **kwargs: Any) -> OrderEvent:
    return order(order_id, amount, at=at, name="Order Refunded", **kwargs)


def signed_up(*, at: datetime = T0, referrer: str | None = None) -> LoyaltyEvent:
    event_id = next(_ids)
    return LoyaltyEvent(
        event_id=event_id, name="Signed Up", at=at, message_id=f"m-{event_id}", referrer=referrer
    )


def referral(*, at: datetime = T0) -> LoyaltyEvent:
    event_id = next(_ids)
    return LoyaltyEvent(event_id=event_id, name="Referral", at=at, message_id=f"m-{event_id}")


def spent(points: int, *, at: datetime, order_id: str = "", key: str = "") -> Recorded:
    key = key or f"redeem:{next(_ids)}"
    return Recorded(key=key, kind=Kind.REDEEM, points=-points, at=at, order_id=order_id, cause_key=key,
                    derived=False)  # fmt: skip


def adjusted(points: int, *, at: datetime) -> Recorded:
    key = f"adjust:{next(_ids)}"
    return Recorded(key=key, kind=Kind.ADJUST, points=points, at=at, cause_key=key, derived=False)


def derive(program: Program = DEFAULT, *, orders: Sequence[OrderEvent] = (), events: Sequence[LoyaltyEvent] = (),
           recorded: Sequence[Recorded] = (), lines: dict | None = None, now: datetime = T0 + 400 * DAY) -> Derivation:  # fmt: skip
    return points_derive(program=program, orders=orders, lines=lines or {}, events=events, recorded=recorded,
                         now=now)  # fmt: skip


def points(derivation: Derivation) -> dict[str, int]:
    return {named(due.key): due.points for due in derivation.due}


def rows(derivation: Derivation, facts: Sequence[Recorded] = ()) -> list[Recorded]:
    """The ledger rows a first reconciliation writes for this derivation, and the facts."""
    return [
        Recorded(key=d.key, kind=d.kind, points=d.points, at=d.at, order_id=d.order_id, cause_key=d.key,
                 available_at=d.available_at, expires_at=d.expires_at, event_id=d.event_id)
        for d in derivation.due
        if d.beneficiary is None
    ] + list(facts)  # fmt: skip


def balance(derivation: Derivation, facts: Sequence[Recorded] = ()) -> int:
    return sum(row.points for row in rows(derivation, facts))


# Earning ---------------------------------------------------------------------------------------


def test_the_default_program_earns_a_point_per_whole_unit_in_its_currency_at_once_forever():
    a = order("A", "99.99", channel="web")
    derivation = derive(orders=[a, order("U", "500", currency="USD"), order("Z", "0.99")])

    (earned,) = derivation.due
    assert (earned.key, earned.kind, earned.points, earned.at) == (
        f"purchase:{a.event_id}",
        Kind.EARN,
        99,
        T0,
    )
    assert (earned.event_id, earned.order_id, earned.beneficiary) == (a.event_id, "A", None)
    assert (earned.available_at, earned.expires_at) == (None, None)
    assert earned.reason == "order A: 99.99 CNY in web"
    assert (derivation.tier, derivation.tier_changes, derivation.recheck_at, derivation.next_expiry) == (
        "", (), None, None,
    )  # fmt: skip


def test_a_completion_sent_twice_earns_once_and_a_refund_in_another_currency_reverses_nothing():
    first, again = order("A", "100"), order("A", "100", at=T0 + timedelta(seconds=5))

    derivation = derive(orders=[again, first, refund("A", "100", at=T0 + DAY, currency="USD")])

    assert [(d.key, d.points, d.event_id) for d in derivation.due] == [
        (f"purchase:{first.event_id}", 100, first.event_id)
    ]


def test_one_number_from_two_sources_is_two_orders_and_a_refund_takes_from_its_own():
    store, web = order("1001", "100", source_id=1), order("1001", "40", source_id=2, channel="web")

    derivation = derive(orders=[web, refund("1001", "40", at=T0 + DAY, source_id=2, event_id=7), store])

    assert {d.key: d.points for d in derivation.due} == {
        f"purchase:{store.event_id}": 100, f"purchase:{web.event_id}": 40, "reverse:7": -40,
    }  # fmt: skip


def test_rows_keyed_by_order_number_before_keys_named_events_keep_their_cause():
    def row(key: str, points: int, *, cause: str = "", at: datetime = T0, kind: Kind = Kind.EARN) -> Recorded:
        return Recorded(
            key=key, kind=kind, points=points, at=at, order_id="A", cause_key=cause or key, event_id=42
        )

    earned, bonus = row("earn:A", 100), row("bonus:first_purchase:A", 20)
    corrected = row("purchase:42#2", -40, cause="purchase:42", at=T0 + DAY)
    expired = row("expire:earn:A", -60, at=T0 + 30 * DAY, kind=Kind.EXPIRE)
    refunded = row("reverse:9", -10, kind=Kind.REVERSE)

    assert [cause_of(r) for r in (earned, bonus, corrected, expired, refunded)] == [
        "purchase:42", "bonus:first_order:42", "purchase:42", "expire:purchase:42", "reverse:9",
    ]  # fmt: skip
    assert cause_of(Recorded(key="earn:A", kind=Kind.EARN, points=1, at=T0, cause_key="earn:A")) == "earn:A"
    # The correction written since is a correction of the old row's lot, which then expires.
    lots = lots_of([earned, corrected, expired])
    assert [(lot.key, lot.points, lot.remaining) for lot in lots.lots] == [("purchase:42", 100, 0)]


def test_channel_and_tier_multipliers_multiply_and_the_result_rounds_down():
    rule = EarnRule(channel_multipliers={"pos": Decimal(2)}, tier_multipliers={"gold": Decimal("1.5")})
    tiers = (TierRule("member", "Member", 0, Decimal(0)), TierRule("gold", "Gold", 1, Decimal(150)))
    program = Program(rules=(rule,), tiers=tiers)

    derivation = derive(program, orders=[
        order("P1", "100", channel="pos"),  # member: 200, which makes them gold
        order("A1", "100", channel="app", at=T0 + DAY),  # gold: 150
        order("P2", "10.55", channel="pos", at=T0 + 2 * DAY),  # 10.55 * 2 * 1.5 = 31.65
        order("W1", "0.66", channel="web", at=T0 + 3 * DAY),  # 0.99
    ])  # fmt: skip

    assert points(derivation) == {"purchase:P1": 200, "purchase:A1": 150, "purchase:P2": 31}
    assert derivation.tier == "gold"


def test_the_bounds_keep_an_order_far_inside_the_ledgers_64_bits():
    most = MAX_AMOUNT * MAX_POINTS_PER_UNIT * MAX_MULTIPLIER * MAX_MULTIPLIER

    assert most < Decimal(2**63) / 10_000  # room for ten thousand such orders in one balance


def test_a_rule_stored_before_the_bounds_earns_at_most_what_they_allow():
    """Rates and multipliers beyond the bounds (or below 0, or NaN) are held to them: the
    largest order then earns what the bounds allow, not more than the ledger stores."""
    greedy = EarnRule(
        key="greedy",
        valid_until=T0 + DAY,
        points_per_unit=Decimal("1E+30"),
        channel_multipliers={"pos": Decimal("1E+30"), "web": Decimal(-3)},
        tier_multipliers={"member": Decimal("Infinity")},
    )
    broken = EarnRule(key="broken", valid_from=T0 + DAY, points_per_unit=Decimal("NaN"))
    program = Program(rules=(greedy, broken), tiers=(TierRule("member", "Member", 0, Decimal(0)),))

    derivation = derive(program, orders=[
        order("P", str(MAX_AMOUNT), channel="pos"),
        order("W", str(MAX_AMOUNT), channel="web"),
        order("N", str(MAX_AMOUNT), channel="pos", at=T0 + 2 * DAY),
    ])  # fmt: skip

    assert points(derivation) == {"purchase:P": int(MAX_AMOUNT * MAX_POINTS_PER_UNIT * MAX_MULTIPLIER**2)}


def test_a_stored_multiplier_is_read_as_a_number_or_not_at_all():
    assert multiplier_of(1.1) == Decimal("1.1")
    assert multiplier_of("2") == Decimal(2)  # written as text before the admin checked
    assert multiplier_of(10**5000) == Decimal(10**5000)  # held to the bound when used
    assert [multiplier_of(v) for v in ("lots", True, None, [2], float("nan"), float("inf"))] == [None] * 6


def test_excluded_skus_and_categories_earn_nothing():
    rule = EarnRule(excluded_skus=frozenset({"GIFT-CARD"}), excluded_categories=frozenset({"tobacco"}))
    lines = {
        1: [OrderLine("GIFT-CARD", "cards", Decimal(30)), OrderLine("CIG", "tobacco", Decimal("20.50")),
            OrderLine("TEA", "food", Decimal("49.50"))],
        2: [OrderLine("GIFT-CARD", "cards", Decimal(80))],
    }  # fmt: skip

    derivation = derive(Program(rules=(rule,)), lines=lines, orders=[
        order("A", "100", event_id=1), order("B", "60", event_id=2, at=T0 + DAY),  # lines worth more than paid
    ])  # fmt: skip

    assert points(derivation) == {"purchase:A": 49}


def test_an_order_earns_under_the_rule_valid_at_its_time_and_its_refund_takes_back_what_it_earned():
    switch, end = T0 + 10 * DAY, T0 + 20 * DAY
    program = Program(rules=(
        EarnRule(key="single", valid_until=switch, points_per_unit=Decimal(1)),
        EarnRule(key="triple", valid_from=switch, valid_until=end, points_per_unit=Decimal(3)),
    ))  # fmt: skip

    derivation = derive(program, orders=[
        order("BEFORE", "10", at=switch - timedelta(seconds=1)), order("AT", "10", at=switch),
        order("AFTER", "10", at=end),  # no rule: the default
        refund("BEFORE", "10", at=switch + DAY, event_id=77),
    ])  # fmt: skip

    assert points(derivation) == {
        "purchase:BEFORE": 10,
        "purchase:AT": 30,
        "purchase:AFTER": 10,
        "reverse:77": -10,
    }


# Bonuses ---------------------------------------------------------------------------------------


def test_the_first_purchase_bonus_is_given_once_even_for_two_orders_at_the_same_moment():
    program = Program(rules=(EarnRule(first_purchase_bonus=50),))
    foreign = order("USD", "10", currency="USD", at=T0 - DAY)  # not a purchase in the program
    one, two, later = order("A", "10"), order("B", "20"), order("C", "5", at=T0 + DAY)

    derivation = derive(program, orders=[two, foreign, one, later])
    again = derive(program, orders=[one, later, foreign, two])

    bonuses = [d for d in derivation.due if d.key.startswith("bonus:first_order:")]
    assert len(bonuses) == 1
    assert (bonuses[0].points, bonuses[0].order_id in {"A", "B"}) == (50, True)
    assert bonuses[0].reason == f"first purchase bonus (order {bonuses[0].order_id})"
    assert again.due == derivation.due


def test_the_sign_up_bonus_is_given_once():
    program = Program(rules=(EarnRule(signup_bonus=100),))
    first, second = signed_up(), signed_up(at=T0 + DAY)

    assert points(derive(program, events=[second, first])) == {f"bonus:signup:{first.event_id}": 100}
    assert points(derive(Program(), events=[first])) == {}


def test_a_referral_earns_the_member_a_bonus_and_a_referred_sign_up_earns_their_referrer_one():
    program = Program(rules=(EarnRule(referral_bonus=30, signup_bonus=10),))
    made = referral(at=T0 + DAY)
    joined = signed_up(referrer="u-ann")

    derivation = derive(program, events=[made, joined])

    due = {d.key: d for d in derivation.due}
    assert set(due) == {f"bonus:signup:{joined.event_id}", f"bonus:referral:{made.event_id}",
                        f"bonus:referred:{joined.event_id}"}  # fmt: skip
    assert (due[f"bonus:referral:{made.event_id}"].points, due[f"bonus:referral:{made.event_id}"].beneficiary) == (
        30, None,
    )  # fmt: skip
    referred = due[f"bonus:referred:{joined.event_id}"]
    assert (referred.points, referred.beneficiary, referred.event_id) == (30, "u-ann", joined.event_id)
    # The referrer's points are not this member's to spend: a redemption of 41 finds only 40.
    forbid = Program(rules=program.rules, negative_balance=NegativeBalance.FORBID)
    redemption = spent(41, at=T0 + 2 * DAY)
    assert (
        points(derive(forbid, events=[made, joined], recorded=[redemption]))[f"writeoff:{redemption.key}"]
        == 1
    )


def test_a_member_signing_up_twice_earns_their_referrer_one_bonus():
    """Two profiles of one person merged: both signed up, naming the same referrer."""
    program = Program(rules=(EarnRule(referral_bonus=30),))
    first, second = signed_up(referrer="u-ann"), signed_up(at=T0 + DAY, referrer="u-ann")

    derivation = derive(program, events=[second, first])

    assert [(d.key, d.beneficiary) for d in derivation.due] == [(f"bonus:referred:{first.event_id}", "u-ann")]


# Pending and expiry ----------------------------------------------------------------------------


def test_pending_points_cannot_be_spent_until_available():
    program = Program(rules=(EarnRule(pending_days=14),), negative_balance=NegativeBalance.FORBID)
    early = spent(60, at=T0 + DAY)

    derivation = derive(program, orders=[order("A", "100")], recorded=[early])

    earned = derivation.due[0]
    assert (named(earned.key), earned.available_at) == ("purchase:A", T0 + 14 * DAY)
    assert points(derivation) == {"purchase:A": 100, f"writeoff:{early.key}": 60}
    lots = lots_of(rows(derive(program, orders=[order("A", "100")])))
    assert (lots.pending(T0 + DAY), lots.pending(T0 + 14 * DAY)) == (100, 0)
    assert lots.spend(60, T0 + 13 * DAY) == 0
    assert lots.spend(60, T0 + 14 * DAY) == 60
    assert lots.balance == 40
    # Read from the ledger, the early redemption is paid by its write-off, never by the pending lot.
    assert [(named(lot.key), lot.remaining) for lot in lots_of(rows(derivation, [early])).lots] == [
        ("purchase:A", 100), (f"writeoff:{early.key}", 0),
    ]  # fmt: skip


def test_a_refund_takes_back_its_own_pending_points():
    program = Program(rules=(EarnRule(pending_days=14),))

    derivation = derive(program, orders=[order("A", "100"), refund("A", "25", at=T0 + DAY, event_id=9)])

    assert points(derivation) == {"purchase:A": 100, "reverse:9": -25}
    lots = lots_of(rows(derivation))
    assert (lots.balance, lots.debt, lots.pending(T0 + DAY)) == (75, 0, 75)


def test_lots_expire_after_n_days():
    program = Program(rules=(EarnRule(expiry=Expiry.DAYS, expiry_days=30),))

    derivation = derive(program, orders=[order("A", "100")], now=T0 + 31 * DAY)

    assert [(named(d.key), d.points, d.at) for d in derivation.due] == [
        ("purchase:A", 100, T0), ("expire:purchase:A", -100, T0 + 30 * DAY),
    ]  # fmt: skip
    assert derivation.due[1].reason == "100 points earned 2026-01-10 expired"
    assert derive(program, orders=[order("A", "100")], now=T0 + 29 * DAY).next_expiry == (T0 + 30 * DAY, 100)


def test_month_and_year_ends_are_local_midnights():
    month, year = EarnRule(expiry=Expiry.END_OF_MONTH), EarnRule(expiry=Expiry.END_OF_YEAR)
    # 2026-01-31 17:00 UTC is already 1 February in Shanghai.
    late_january_utc = datetime(2026, 1, 31, 17, tzinfo=UTC)

    assert month.expires_at(late_january_utc, SHANGHAI) == datetime(2026, 3, 1, tzinfo=SHANGHAI)
    assert month.expires_at(late_january_utc, ZoneInfo("UTC")) == datetime(2026, 2, 1, tzinfo=UTC)
    assert month.expires_at(datetime(2026, 12, 5, tzinfo=UTC), SHANGHAI) == datetime(
        2027, 1, 1, tzinfo=SHANGHAI
    )
    assert year.expires_at(datetime(2026, 12, 31, 17, tzinfo=UTC), SHANGHAI) == datetime(
        2028, 1, 1, tzinfo=SHANGHAI
    )
    assert year.expires_at(datetime(2026, 12, 31, 15, tzinfo=UTC), SHANGHAI) == datetime(
        2027, 1, 1, tzinfo=SHANGHAI
    )
    assert EarnRule().expires_at(T0, SHANGHAI) is None

    program = Program(rules=(month,), zone=SHANGHAI)
    derivation = derive(
        program, orders=[order("A", "10", at=late_january_utc)], now=datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert [(named(d.key), d.at) for d in derivation.due] == [
        ("purchase:A", late_january_utc), ("expire:purchase:A", datetime(2026, 2, 28, 16, tzinfo=UTC)),
    ]  # fmt: skip


def test_spending_takes_the_soonest_expiring_lot_first_and_expiry_takes_only_what_is_left():
    rule = EarnRule(expiry=Expiry.DAYS, expiry_days=30)
    program = Program(rules=(rule,))
    orders = [order("OLD", "100"), order("NEW", "100", at=T0 + 10 * DAY)]
    redemption = spent(130, at=T0 + 20 * DAY)

    derivation = derive(program, orders=orders, recorded=[redemption], now=T0 + 45 * DAY)

    # OLD (expiring first) is spent entirely, NEW gives 30 and loses its last 70 at day 40.
    assert points(derivation) == {"purchase:OLD": 100, "purchase:NEW": 100, "expire:purchase:NEW": -70}
    assert (derivation.next_expiry, derivation.recheck_at) == (None, None)
    assert balance(derivation, [redemption]) == 0

    middle = derive(program, orders=orders, recorded=[redemption], now=T0 + 25 * DAY)
    assert (middle.next_expiry, middle.recheck_at) == ((T0 + 40 * DAY, 70), T0 + 40 * DAY)
    lots = lots_of(rows(middle, [redemption]))
    assert [(named(lot.key), lot.remaining) for lot in lots.lots] == [
        ("purchase:OLD", 0),
        ("purchase:NEW", 70),
    ]
    assert [named(lot.key) for lot in lots.expiring(T0 + 25 * DAY, T0 + 60 * DAY)] == ["purchase:NEW"]


def test_lots_spend_soonest_expiry_first_and_never_expired_or_pending_lots():
    def lot(key: str, points: int, *, available: datetime = T0, expires: datetime | None = None) -> Lot:
        return Lot(key=key, points=points, remaining=points, earned_at=T0, available_at=available,
                   expires_at=expires)  # fmt: skip

    lots = Lots([lot("forever", 10), lot("soon", 10, expires=T0 + 5 * DAY), lot("later", 10, expires=T0 + 9 * DAY),
                 lot("pending", 10, available=T0 + 3 * DAY), lot("gone", 10, expires=T0 + DAY)])  # fmt: skip

    assert lots.spend(25, T0 + 2 * DAY) == 25
    assert {x.key: x.remaining for x in lots.lots} == {
        "forever": 5,
        "soon": 0,
        "later": 0,
        "pending": 10,
        "gone": 10,
    }
    assert lots.spend(100, T0 + 2 * DAY, first="pending") == 15  # a refund reaches its own pending lot
    assert lots.balance == 10  # only the expired lot, which expiry (not spending) takes


# Refunds ---------------------------------------------------------------------------------------


def test_partial_refunds_reverse_in_proportion_and_all_of_them_reverse_exactly_what_was_earned():
    derivation = derive(orders=[
        order("A", "10.00"), refund("A", "3.33", at=T0 + DAY, event_id=1),
        refund("A", "3.33", at=T0 + 2 * DAY, event_id=2), refund("A", "3.34", at=T0 + 3 * DAY, event_id=3),
        refund("A", "5.00", at=T0 + 4 * DAY, event_id=4),  # more than the order: nothing left to take
    ])  # fmt: skip

    # Cumulative shares 3.33, 6.66, 10.00 of 10 points: 3, 7, 10.
    assert points(derivation) == {"purchase:A": 10, "reverse:1": -3, "reverse:2": -4, "reverse:3": -3}
    assert "order A refunded 3.33 CNY" in derivation.due[1].reason


def test_a_refund_after_redemption_makes_a_debt_the_next_earnings_pay_when_the_program_allows_it():
    program = Program(
        rules=(EarnRule(expiry=Expiry.DAYS, expiry_days=30),), refund_returns_redeemed_points=False
    )
    redemption = spent(100, at=T0 + DAY, order_id="OTHER")
    orders = [
        order("A", "100"),
        refund("A", "100", at=T0 + 2 * DAY, event_id=5),
        order("B", "60", at=T0 + 3 * DAY),
    ]

    derivation = derive(program, orders=orders, recorded=[redemption], now=T0 + 60 * DAY)

    assert points(derivation) == {
        "purchase:A": 100,
        "reverse:5": -100,
        "purchase:B": 60,
    }  # B paid the debt: nothing expires
    assert balance(derivation, [redemption]) == -40
    lots = lots_of(rows(derivation, [redemption]))
    assert (lots.debt, lots.balance) == (40, -40)


def test_a_refund_after_redemption_is_capped_and_written_off_when_the_program_forbids_debt():
    program = Program(negative_balance=NegativeBalance.FORBID, refund_returns_redeemed_points=False)
    redemption = spent(70, at=T0 + DAY, order_id="OTHER")

    derivation = derive(program, orders=[order("A", "100"), refund("A", "100", at=T0 + 2 * DAY, event_id=5)],
                        recorded=[redemption])  # fmt: skip

    assert points(derivation) == {"purchase:A": 100, "reverse:5": -30}
    assert derivation.due[1].reason == (
        "order A refunded 100 CNY; 70 points already spent were written off (no negative balance)"
    )
    assert balance(derivation, [redemption]) == 0


def test_points_written_off_are_not_taken_back_by_a_later_partial_refund():
    program = Program(negative_balance=NegativeBalance.FORBID, refund_returns_redeemed_points=False)
    redemption = spent(100, at=T0 + DAY, order_id="OTHER")

    derivation = derive(program, recorded=[redemption], orders=[
        order("A", "100"), refund("A", "50", at=T0 + 2 * DAY, event_id=1),  # 50 due, all spent: written off
        order("B", "200", at=T0 + 3 * DAY), refund("A", "50", at=T0 + 4 * DAY, event_id=2),  # the other 50
    ])  # fmt: skip

    assert points(derivation) == {"purchase:A": 100, "purchase:B": 200, "reverse:2": -50}


def test_points_that_expired_are_not_taken_back_again_by_a_refund():
    program = Program(rules=(EarnRule(expiry=Expiry.DAYS, expiry_days=30),))

    derivation = derive(program, now=T0 + 45 * DAY, orders=[
        order("A", "100"), order("B", "100", at=T0 + 20 * DAY), refund("A", "100", at=T0 + 40 * DAY, event_id=3),
    ])  # fmt: skip

    assert points(derivation) == {"purchase:A": 100, "purchase:B": 100, "expire:purchase:A": -100}


def test_a_refund_gives_back_the_points_spent_on_the_order_in_proportion():
    program = Program(rules=(EarnRule(expiry=Expiry.DAYS, expiry_days=30),))
    redemption = spent(40, at=T0 + DAY, order_id="B")  # 40 points paid part of order B
    orders = [order("A", "100"), order("B", "80", at=T0 + DAY),
              refund("B", "40", at=T0 + 2 * DAY, event_id=1), refund("B", "40", at=T0 + 3 * DAY, event_id=2)]  # fmt: skip

    derivation = derive(program, orders=orders, recorded=[redemption], now=T0 + 5 * DAY)

    assert points(derivation) == {"purchase:A": 100, "purchase:B": 80, "reverse:1": -40, "return:1": 20,
                                  "reverse:2": -40, "return:2": 20}  # fmt: skip
    given_back = {d.key: d for d in derivation.due}["return:1"]
    assert (given_back.kind, given_back.order_id, given_back.expires_at) == (Kind.REVERSE, "B", T0 + 32 * DAY)
    assert given_back.reason == "points spent on order B given back (refund)"
    assert balance(derivation, [redemption]) == 100

    kept = Program(rules=program.rules, refund_returns_redeemed_points=False)
    assert not any(
        d.key.startswith("return:") for d in derive(kept, orders=orders, recorded=[redemption]).due
    )


# Tiers -----------------------------------------------------------------------------------------

TIERS = (TierRule("member", "Member", 0, Decimal(0)), TierRule("silver", "Silver", 1, Decimal(100)),
         TierRule("gold", "Gold", 2, Decimal(500)), TierRule("black", "Black", 3, Decimal(1000)))  # fmt: skip


def tiered(downgrade: Downgrade = Downgrade.NONE, **kwargs: Any) -> Program:
    return Program(tiers=TIERS, tier_window_days=30, downgrade=downgrade, review_months=1, **kwargs)


def test_a_member_is_upgraded_when_what_they_earned_in_the_window_crosses_a_threshold():
    derivation = derive(tiered(), orders=[
        order("A", "60"), order("B", "60", at=T0 + DAY),  # 120 in 30 days: silver
        order("C", "450", at=T0 + 40 * DAY),  # A and B are out of the window: 450 is not gold
        order("D", "50", at=T0 + 41 * DAY),  # 500: gold
    ])  # fmt: skip

    assert [(c.from_tier, c.to_tier, c.at) for c in derivation.tier_changes] == [
        ("member", "silver", T0 + DAY), ("silver", "gold", T0 + 41 * DAY),
    ]  # fmt: skip
    assert derivation.tier_changes[0].reason == "qualified: 120 points earned in 30 days ≥ Silver 100"
    assert (derivation.tier, derivation.tier_since) == ("gold", T0 + 41 * DAY)


def test_the_tier_follows_spend_net_of_refunds_when_the_program_says_so():
    derivation = derive(tiered(Downgrade.PERIODIC, tier_basis=TierBasis.SPEND), orders=[
        order("A", "600"), refund("A", "550", at=T0 + DAY),
    ], now=T0 + 25 * DAY)  # fmt: skip

    assert [(c.to_tier, c.reason) for c in derivation.tier_changes] == [
        ("gold", "qualified: 600 CNY spent in 30 days ≥ Gold 500"),
        ("member", "review: 50 CNY spent in 30 days < Gold 500"),
    ]


def test_the_balance_never_makes_a_tier():
    bonus = adjusted(5000, at=T0)
    derivation = derive(
        tiered(), orders=[order("A", "99", at=T0 + DAY)], recorded=[bonus, spent(99, at=T0 + DAY)]
    )

    assert (derivation.tier, derivation.tier_changes) == ("member", ())
    spending = derive(tiered(Downgrade.PERIODIC), orders=[order("A", "600")], recorded=[spent(600, at=T0 + DAY)],
                      now=T0 + 15 * DAY)  # fmt: skip
    assert spending.tier == "gold"  # spending points does not lose the tier


def test_downgrade_policies_apply_at_review_instants_only():
    orders = [order("A", "1000")]  # black on 10 January; the window is empty from 10 February
    reviews = [datetime(2026, month, 1, tzinfo=UTC) for month in (2, 3, 4, 5)]

    none = derive(tiered(Downgrade.NONE), orders=orders, now=datetime(2026, 6, 1, tzinfo=UTC))
    periodic = derive(tiered(Downgrade.PERIODIC), orders=orders, now=datetime(2026, 6, 1, tzinfo=UTC))
    one_step = derive(tiered(Downgrade.ONE_STEP), orders=orders, now=datetime(2026, 6, 1, tzinfo=UTC))
    before = derive(tiered(Downgrade.PERIODIC), orders=orders, now=reviews[1] - timedelta(seconds=1))

    assert (none.tier, none.recheck_at) == ("black", None)
    assert [(c.to_tier, c.at) for c in periodic.tier_changes] == [("black", T0), ("member", reviews[1])]
    assert periodic.tier_changes[1].reason == "review: 0 points earned in 30 days < Black 1000"
    assert [(c.to_tier, c.at) for c in one_step.tier_changes] == [
        ("black", T0), ("gold", reviews[1]), ("silver", reviews[2]), ("member", reviews[3]),
    ]  # fmt: skip
    assert one_step.tier_changes[2].reason == "review: 0 points earned in 30 days < Gold 500"
    assert (before.tier, before.recheck_at) == ("black", reviews[1])
    assert periodic.recheck_at == datetime(2026, 7, 1, tzinfo=UTC)


def test_reviews_fall_on_local_month_boundaries_every_n_months_from_january():
    program = Program(review_months=3, zone=SHANGHAI)

    assert program.next_review(datetime(2026, 1, 10, tzinfo=UTC)) == datetime(2026, 4, 1, tzinfo=SHANGHAI)
    assert program.next_review(datetime(2026, 3, 31, 16, tzinfo=UTC)) == datetime(2026, 7, 1, tzinfo=SHANGHAI)
    assert Program(review_months=12).next_review(datetime(2026, 12, 31, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_a_refund_the_member_cannot_pay_back_still_takes_the_order_out_of_the_tier():
    program = tiered(
        Downgrade.PERIODIC, negative_balance=NegativeBalance.FORBID, refund_returns_redeemed_points=False
    )

    derivation = derive(program, orders=[order("A", "1000"), refund("A", "1000", at=T0 + 2 * DAY)],
                        recorded=[spent(1000, at=T0 + DAY)], now=T0 + 25 * DAY)  # fmt: skip

    assert derivation.tier == "member"
    assert derivation.tier_changes[-1].reason == "review: 0 points earned in 30 days < Black 1000"


def test_a_tier_reached_elsewhere_is_held_from_its_date_and_reviewed_like_any_other():
    from members.loyalty.points import TierGrant

    grant = TierGrant(at=T0, tier="gold", key="tier:crm:M1", reason="reached in crm")
    kept = points_derive(program=tiered(), orders=[order("A", "60", at=T0 + DAY)], lines={}, events=(),
                         recorded=(), now=datetime(2026, 6, 1, tzinfo=UTC), grants=[grant])  # fmt: skip
    assert [(c.from_tier, c.to_tier, c.at, c.reason) for c in kept.tier_changes] == [
        ("member", "gold", T0, "reached in crm")
    ]  # an order qualifying for less does not take it down
    assert (kept.tier, kept.tier_since) == ("gold", T0)
    reviewed = points_derive(program=tiered(Downgrade.ONE_STEP), orders=(), lines={}, events=(), recorded=(),
                             now=datetime(2026, 3, 15, tzinfo=UTC), grants=[grant])  # fmt: skip
    assert [c.to_tier for c in reviewed.tier_changes] == [
        "gold",
        "silver",
        "member",
    ]  # February's, March's reviews
    unknown = TierGrant(at=T0, tier="diamond", key="tier:crm:M2", reason="reached in crm")
    assert points_derive(program=tiered(), orders=(), lines={}, events=(), recorded=(), now=T0 + DAY,
                         grants=[unknown]).tier == "member"  # fmt: skip
    higher = derive(tiered(), orders=[order("A", "1000", at=T0 - DAY)])
    assert points_derive(program=tiered(), orders=[order("A", "1000", at=T0 - DAY)], lines={}, events=(),
                         recorded=(), now=T0 + DAY, grants=[grant]).tier == higher.tier == "black"  # fmt: skip
