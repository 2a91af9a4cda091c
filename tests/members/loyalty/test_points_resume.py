"""A derivation resumed from a checkpoint (``points_derive(resume=...)``) equals the derivation
of the whole history in one go, wherever the history is cut: pure, no database. The second
part's steps are later than the first's, as the refresh's incremental path guarantees; "now"
may be before or after them (a refresh reads the clock, events carry their own times)."""

import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from unittest.mock import patch
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from members.aggregates import OrderEvent
from members.loyalty import points
from members.loyalty.points import CHECKPOINT_FORMAT, Checkpoint, Kind, LoyaltyEvent, Recorded, points_derive
from members.loyalty.program import Downgrade, EarnRule, Expiry, NegativeBalance, Program, TierBasis, TierRule

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
TIERS = (TierRule("member", "Member", 0, Decimal(0)), TierRule("silver", "Silver", 1, Decimal(300)),
         TierRule("gold", "Gold", 2, Decimal(1000)))  # fmt: skip


@st.composite
def programs(draw: st.DrawFn) -> Program:
    rule = EarnRule(
        channel_multipliers={"pos": Decimal(2)}, tier_multipliers={"gold": Decimal(3)},
        first_purchase_bonus=draw(st.sampled_from([0, 50])), signup_bonus=draw(st.sampled_from([0, 30])),
        pending_days=draw(st.sampled_from([0, 3])),
        expiry=draw(st.sampled_from([Expiry.NEVER, Expiry.DAYS, Expiry.END_OF_MONTH])), expiry_days=25,
    )  # fmt: skip
    return Program(
        rules=(rule,), tiers=TIERS, tier_basis=draw(st.sampled_from(list(TierBasis))), tier_window_days=40,
        downgrade=draw(st.sampled_from(list(Downgrade))), review_months=1,
        negative_balance=draw(st.sampled_from(list(NegativeBalance))),
        # A zone with daylight saving: a review's midnight is a local one across the change.
        zone=ZoneInfo(draw(st.sampled_from(["UTC", "Europe/Berlin", "Asia/Shanghai"]))),
    )  # fmt: skip


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[OrderEvent], list[LoyaltyEvent]]:
    orders: list[OrderEvent] = []
    events: list[LoyaltyEvent] = []
    hours, ids = 0, 1
    numbers: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(1, 14))):
        hours += draw(st.integers(1, 24 * 20))
        at, ids = T0 + timedelta(hours=hours), ids + 1
        kind = draw(st.sampled_from(["order", "order", "refund", "signup"]))
        if kind == "refund" and numbers:
            number, source = draw(st.sampled_from(numbers))
            # Now and then returned through another source than it was bought in.
            source = draw(st.sampled_from([source, 9]))
            orders.append(OrderEvent(ids, "Order Refunded", number, Decimal(draw(st.integers(1, 400))), "CNY", at,
                                     "app", "", f"m{ids}", source))  # fmt: skip
        elif kind == "signup":
            events.append(LoyaltyEvent(ids, "Signed Up", at, f"m{ids}"))
        else:
            number, source = f"O{ids}", draw(st.sampled_from([1, 2]))
            numbers.append((number, source))
            orders.append(OrderEvent(ids, "Order Completed", number, Decimal(draw(st.integers(1, 900))), "CNY", at,
                                     draw(st.sampled_from(["pos", "app"])), "", f"m{ids}", source))  # fmt: skip
    return orders, events


@settings(max_examples=300, deadline=None)
@given(program=programs(), history=histories(), cuts=st.lists(st.floats(0, 1), min_size=1, max_size=3),
       now_days=st.integers(-30, 400), cold_after=st.sampled_from([0, 1, 3, points.COLD_AFTER]),
       spends=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 300)), max_size=3),
       compress_from=st.sampled_from([0, 64, points.COLD_COMPRESS_FROM, 10**9]))  # fmt: skip
def test_a_resumed_derivation_equals_the_whole_one(program, history, cuts, now_days, cold_after, spends,
                                                   compress_from):  # fmt: skip
    """Cut once or several times: each part resumes from the checkpoint the part before it
    made, itself resumed (what it left undecoded, ``Lots.dormant`` and the frozen orders,
    goes on from checkpoint to checkpoint, in the hot part or the cold one: ``cold_after``
    says how soon the cold part is written again, so that every mix of the two is met).

    ``spends``: redemptions a till recorded in the first part (a resumed part has no new
    fact), so that lots are partly spent before they go cold and a later refund reaches past
    its own order's lot. ``compress_from``: which cold buckets are stored compressed (0: all,
    as before ``COLD_COMPRESS_FROM``; 10**9: none; between: a mix)."""
    with (
        patch.object(points, "COLD_AFTER", cold_after),
        patch.object(points, "COLD_COMPRESS_FROM", compress_from),
    ):
        _resumed_equals_whole(program, history, cuts, now_days, spends)


def _resumed_equals_whole(program, history, cuts, now_days, spends):
    orders, events = history
    steps = sorted([*(o.at for o in orders), *(e.at for e in events)])
    splits = sorted({steps[int(cut * (len(steps) - 1))] for cut in cuts})
    now = T0 + timedelta(days=now_days)
    first = [at for at in steps if at <= splits[0]]
    facts = [
        Recorded(
            key=f"redeem-{n}",
            kind=Kind.REDEEM,
            points=-spent,
            at=first[int(when * (len(first) - 1))] - timedelta(minutes=1),
            derived=False,
        )
        for n, (when, spent) in enumerate(spends)
    ]
    whole = points_derive(program=program, orders=orders, lines={}, events=events, recorded=facts, now=now)

    bounds = [None, *splits, None]
    parts, resume = [], None
    for after, until in pairwise(bounds):

        def within(at, after=after, until=until):
            return (after is None or at > after) and (until is None or at <= until)

        part = points_derive(program=program, orders=[o for o in orders if within(o.at)], lines={},
                             events=[e for e in events if within(e.at)], recorded=facts if after is None else (),
                             now=now, resume=resume)  # fmt: skip
        assert part.checkpoint is not None
        parts.append(part)
        resume = part.checkpoint
    resumed = parts[-1]

    # Each earlier part's entries before its checkpoint, then everything the last one says.
    combined = {d.key: d for part in parts[:-1] for d in part.due[: part.tail_from]} | {
        d.key: d for d in resumed.due
    }
    assert combined == {d.key: d for d in whole.due}
    assert sum(len(part.due[: part.tail_from]) for part in parts[:-1]) + len(resumed.due) == len(whole.due)
    assert (resumed.tier, resumed.tier_since, resumed.tier_changes, resumed.recheck_at, resumed.next_expiry) == (
        whole.tier, whole.tier_since, whole.tier_changes, whole.recheck_at, whole.next_expiry)  # fmt: skip
    assert resumed.checkpoint is not None
    assert whole.checkpoint is not None
    assert resumed.checkpoint.at == whole.checkpoint.at

    # What each checkpoint holds answers a later step alike: every order refunded in full a
    # day after the last step reaches every order and its lot, hot or cold.
    if steps:
        later = steps[-1] + timedelta(days=1)
        probe = [OrderEvent(1000 + n, "Order Refunded", o.order_id, o.amount, "CNY", later + timedelta(seconds=n),
                            "app", "", f"p{n}", o.source_id)
                 for n, o in enumerate(orders) if o.name == "Order Completed"]  # fmt: skip
        after_whole, after_parts = (
            points_derive(
                program=program, orders=probe, lines={}, events=[], recorded=(), now=now, resume=checkpoint
            )
            for checkpoint in (whole.checkpoint, resumed.checkpoint)
        )
        assert after_parts.due == after_whole.due
        assert (after_parts.tier, after_parts.refunded_in_full) == (
            after_whole.tier,
            after_whole.refunded_in_full,
        )


def test_a_checkpoint_of_another_format_is_refused():
    program = Program(tiers=TIERS)
    first = points_derive(program=program, orders=[], lines={}, events=[], recorded=(), now=T0)
    assert first.checkpoint is not None
    state = orjson.loads(first.checkpoint.state)
    state["format"] = CHECKPOINT_FORMAT + 1
    stale = Checkpoint(at=None, state=orjson.dumps(state), cold=first.checkpoint.cold)
    with pytest.raises(ValueError, match="format"):
        points_derive(program=program, orders=[], lines={}, events=[], recorded=(), now=T0, resume=stale)
    # Format 3 and before: the whole state compressed, no cold part.
    state["format"] = 3
    old = Checkpoint(at=None, state=zlib.compress(orjson.dumps(state), 1))
    with pytest.raises(ValueError, match="format 3"):
        points_derive(program=program, orders=[], lines={}, events=[], recorded=(), now=T0, resume=old)


def test_a_hot_part_with_another_cold_part_is_refused():
    """The two parts are written together; a hot part read with another cold part (or none)
    would resume from a state that never was."""
    program = Program(tiers=TIERS)
    order = OrderEvent(1, "Order Completed", "O1", Decimal(100), "CNY", T0, "pos", "", "m1", 1)
    first = points_derive(program=program, orders=[order], lines={}, events=[], recorded=(), now=T0)
    other = points_derive(program=program, orders=[], lines={}, events=[], recorded=(), now=T0)
    assert first.checkpoint is not None
    assert other.checkpoint is not None
    for cold in (other.checkpoint.cold, None):
        mixed = Checkpoint(at=first.checkpoint.at, state=first.checkpoint.state, cold=cold)
        with pytest.raises(ValueError, match="cold part"):
            points_derive(program=program, orders=[], lines={}, events=[], recorded=(), now=T0, resume=mixed)


def test_a_long_history_resumed_rewrites_only_its_hot_part():
    """A member with many orders, resumed with one more: the cold part (their orders and
    dormant lots) is kept as it was, and the hot part stays small however long the history."""
    program = Program(rules=(EarnRule(),), tiers=TIERS)
    history = [
        OrderEvent(n, "Order Completed", f"O{n}", Decimal(100), "CNY", T0 + timedelta(hours=n), "pos", "", f"m{n}", 1)
        for n in range(1, 301)
    ]  # fmt: skip
    whole = points_derive(program=program, orders=history[:-1], lines={}, events=[], recorded=(), now=T0)
    assert whole.checkpoint is not None
    assert whole.checkpoint.cold is not None
    resumed = points_derive(program=program, orders=history[-1:], lines={}, events=[], recorded=(), now=T0,
                            resume=whole.checkpoint)  # fmt: skip
    assert resumed.checkpoint is not None
    assert not resumed.checkpoint.cold_written
    assert resumed.checkpoint.cold is whole.checkpoint.cold
    assert len(resumed.due) == 1  # the new order's points, no less
    # 300 orders, their lots and tier window amounts are some 60 KB of JSON; the hot part a few rows.
    cold = whole.checkpoint.cold
    assert (
        sum(
            len(orjson.dumps(points._cold_decode(points._cold_unpack(cold, n))))
            for n in range(points.COLD_BUCKETS + 1)
        )
        > 50_000
    )
    assert len(resumed.checkpoint.state) < 1_500


def test_a_lot_spent_from_the_cold_part_stays_spent():
    """A dormant lot the cold part holds, emptied by a refund of its order while the cold
    part is kept as it was (``Lots.woken``), is not found again by a later refund reaching
    past its own order's lot (the till spent part of it before the checkpoint)."""
    program = Program(rules=(EarnRule(),), tiers=TIERS, negative_balance=NegativeBalance.FORBID)

    def order(n: int, hours: int, name: str = "Order Completed") -> OrderEvent:
        return OrderEvent(hours, name, f"O{n}", Decimal(100), "CNY", T0 + timedelta(hours=hours), "app", "",
                          f"m{hours}", 1)  # fmt: skip

    spent = Recorded(key="till-1", kind=Kind.REDEEM, points=-150, at=T0 + timedelta(hours=25), derived=False)
    parts = [[order(1, 10), order(2, 20), order(3, 30)], [order(3, 40, "Order Refunded")],
             [order(2, 50, "Order Refunded")]]  # fmt: skip
    whole = points_derive(program=program, orders=[o for part in parts for o in part], lines={}, events=[],
                          recorded=[spent], now=T0 + timedelta(days=30))  # fmt: skip
    resume, due = None, []
    for n, part in enumerate(parts):
        derived = points_derive(program=program, orders=part, lines={}, events=[], recorded=[spent] if n == 0 else (),
                                now=T0 + timedelta(days=30), resume=resume)  # fmt: skip
        assert derived.checkpoint is not None
        assert n == 0 or not derived.checkpoint.cold_written  # the refunds keep the cold part as it was
        due += derived.due
        resume = derived.checkpoint
    assert due == list(whole.due)
    assert [d.points for d in due if d.key == "reverse:50"] == [-50]  # what was left of order 2's lot


def test_a_short_history_stores_its_cold_part_uncompressed():
    """A member with a few orders (an imported member's first refresh): no bucket of the
    cold part is long enough to be worth deflate's set-up, so none is compressed; a long
    bucket still is, and each reads back as it was written."""
    program = Program(rules=(EarnRule(),), tiers=TIERS)
    orders = [
        OrderEvent(n, "Order Completed", f"O{n}", Decimal(59), "CNY", T0 + timedelta(days=n), "pos", "", f"m{n}", 1)
        for n in range(1, 6)
    ]  # fmt: skip
    with patch.object(points.zlib, "compress", wraps=zlib.compress) as compress:
        short = points_derive(program=program, orders=orders, lines={}, events=[], recorded=(), now=T0)
    assert short.checkpoint is not None
    assert short.checkpoint.cold is not None
    assert compress.call_count == 0
    stored = [points._cold_unpack(short.checkpoint.cold, n) for n in range(points.COLD_BUCKETS + 1)]
    assert all(bucket.startswith(b"{") for bucket in stored)
    long_bucket = {"orders": [["x" * 40, n] for n in range(50)], "dormant": []}
    encoded = points._cold_encode(long_bucket)
    assert encoded[:1] == b"\x78"  # deflated
    assert points._cold_decode(encoded) == long_bucket
    assert points._cold_decode(points._cold_encode({"orders": [], "dormant": []})) == {
        "orders": [],
        "dormant": [],
    }


def test_a_checkpoint_with_every_bucket_compressed_resumes_as_one_with_none():
    """Checkpoints written before ``COLD_COMPRESS_FROM`` (every bucket compressed) resume to
    the same derivation as those written now, and a resumed one writes its cold part anew in
    the current encoding when it writes it."""
    program = Program(rules=(EarnRule(),), tiers=TIERS)
    orders = [
        OrderEvent(n, "Order Completed", f"O{n}", Decimal(100 + n), "CNY", T0 + timedelta(days=n), "pos", "",
                   f"m{n}", 1)
        for n in range(1, 12)
    ]  # fmt: skip
    refund = OrderEvent(
        99, "Order Refunded", "O2", Decimal(102), "CNY", T0 + timedelta(days=30), "pos", "", "r2", 1
    )
    now = T0 + timedelta(days=40)
    whole = points_derive(
        program=program, orders=[*orders, refund], lines={}, events=[], recorded=(), now=now
    )
    with patch.object(points, "COLD_AFTER", 0):
        with patch.object(points, "COLD_COMPRESS_FROM", 0):
            before = points_derive(program=program, orders=orders, lines={}, events=[], recorded=(), now=T0)
        now_written = points_derive(program=program, orders=orders, lines={}, events=[], recorded=(), now=T0)
        assert before.checkpoint is not None
        assert now_written.checkpoint is not None
        assert points._cold_unpack(before.checkpoint.cold, 0)[:1] == b"\x78"  # deflated, as before
        assert points._cold_unpack(now_written.checkpoint.cold, 0)[:1] == b"{"
        resumed = [
            points_derive(
                program=program,
                orders=[refund],
                lines={},
                events=[],
                recorded=(),
                now=now,
                resume=derived.checkpoint,
            )
            for derived in (before, now_written)
        ]
    assert resumed[0].due == resumed[1].due
    assert any(due.points < 0 for due in resumed[0].due)  # the refund reached its order's cold lot
    assert resumed[0].tier == resumed[1].tier == whole.tier
