"""The points a member's history entitles them to. Pure (no ORM).

``points_derive`` replays a member's loyalty history in event-time order — orders, refunds,
sign-ups, referrals, and the redemptions and adjustments staff and tills recorded — under the
program's rules, and returns every ledger entry that history calls for, each under an
idempotency key named after the event that caused it (``purchase:<completion event>``,
``reverse:<refund event>``, …), and the member's tier. The ledger service compares that with
what is recorded and appends only the differences, so running it twice, after a retry, a
merge, a split or a late upload, converges on the same ledger, and a rebuild from the event
log equals the incremental path.

Keys name events, not order numbers. An order is its source and its ``order_id`` there
(``members.aggregates``), and the refresh gives the derivation only the orders the member owns;
but while the member that lost an order to a later claim has not yet been refreshed, both
members' ledgers hold points for it, in separate transactions that may come in either order.
Keyed by the completion event (which belongs to one member at a time and moves with it through
merges and splits), the two claims never collide on the ledger's unique key: the winner earns
under its event's key, the loser's refresh corrects its own to zero. "One order, one owner" is
the derivation's input (``members.orders``), not the index's: an index can only say who wrote
first, and that depends on arrival order.

Rows written before keys named events (``earn:<order_id>``, ``bonus:first_purchase:<order_id>``
and their expiries) keep meaning what they meant: ``cause_of`` reads them as the cause of the
event they record, so upgrading neither awards an order again nor takes its points back.

Points are whole numbers; fractions are rounded down when earned, and a partial refund takes
back the share of the order's points its amount is of the order's total (cumulatively, so
that refunding every part takes back exactly what was earned).

Lots: every credit (an earn, a bonus, a positive adjustment, points returned by a refund) is a
lot with a time it becomes spendable (the pending period) and a time it expires. Spending and
negative adjustments consume available lots first in, first out (soonest to expire first);
a refund's reversal consumes its own order's lot first; an expiry takes what is left of its
lot. ``lots_of`` rebuilds the lots from ledger rows alone, for reads.
"""

import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import partial
from itertools import takewhile
from typing import Any

import orjson

from members.aggregates import OrderEvent, OrderKey, order_history
from members.loyalty.program import (
    MAX_MULTIPLIER,
    MAX_POINTS_PER_UNIT,
    Downgrade,
    NegativeBalance,
    Program,
    TierBasis,
    TierRule,
    within_bounds,
)
from members.moments import moment_plus

#: The most points one command may move (a staff adjustment either way, a redemption): far
#: beyond any real adjustment, and small enough that no single move can carry a balance past
#: what the ledger stores. Anything beyond is refused with the field named.
MAX_POINTS_MOVE = 1_000_000_000

#: The causes of an order's points: the completion event that placed it for its member.
PURCHASE = "purchase:"
FIRST_ORDER_BONUS = "bonus:first_order:"
EXPIRE = "expire:"
#: The same causes as keys written before they named events: ``<prefix><order_id>``.
_LEGACY_CAUSES = {"earn:": PURCHASE, "bonus:first_purchase:": FIRST_ORDER_BONUS}

SIGNED_UP = "Signed Up"
REFERRAL = "Referral"
#: Events other than orders that earn points.
LOYALTY_EVENTS = frozenset({SIGNED_UP, REFERRAL})


class Kind(StrEnum):
    EARN = "earn"
    REDEEM = "redeem"
    EXPIRE = "expire"
    REVERSE = "reverse"
    ADJUST = "adjust"


@dataclass(frozen=True, slots=True)
class Recorded:
    """A ledger row as the derivation reads it. Rows staff or tills recorded (``derived``
    false: redemptions, adjustments) are facts the replay takes as given."""

    key: str
    kind: Kind
    points: int
    at: datetime
    order_id: str = ""
    cause_key: str = ""
    available_at: datetime | None = None
    expires_at: datetime | None = None
    derived: bool = True
    event_id: int | None = None


def cause_of(row: Recorded) -> str:
    """The cause of a ledger row in today's keys: its ``cause_key``, or, for a row of an order
    keyed by ``order_id`` before keys named events, the cause named after the completion event
    it records (``earn:POS-1`` of event 42 is ``purchase:42``; its expiry ``expire:purchase:42``)."""
    cause = row.cause_key or row.key
    expiry = cause.startswith(EXPIRE)
    inner = cause.removeprefix(EXPIRE) if expiry else cause
    for legacy, current in _LEGACY_CAUSES.items():
        if inner.startswith(legacy) and row.event_id is not None:
            return f"{EXPIRE if expiry else ''}{current}{row.event_id}"
    return cause


@dataclass(frozen=True, slots=True)
class Due:
    """A ledger entry the history calls for. ``beneficiary`` is None for the member whose
    history it is, or the user id of a referrer who earns it."""

    key: str
    kind: Kind
    points: int
    at: datetime
    reason: str
    event_id: int | None = None
    order_id: str = ""
    available_at: datetime | None = None
    expires_at: datetime | None = None
    beneficiary: str | None = None


@dataclass(frozen=True, slots=True)
class LoyaltyEvent:
    """A sign-up or referral, as the derivation reads it."""

    event_id: int
    name: str
    at: datetime
    message_id: str
    referrer: str | None = None  # a Signed Up naming who referred the member (a user id)


@dataclass(frozen=True, slots=True)
class OrderLine:
    """What the earning rules need of an order beyond its totals: its products."""

    sku: str
    category: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class TierChange:
    at: datetime
    from_tier: str
    to_tier: str
    reason: str


@dataclass(frozen=True, slots=True)
class TierGrant:
    """A tier a member reached elsewhere (a legacy programme, imported): from ``at`` they hold
    at least ``tier``; the programme's reviews and downgrades apply to it from then on."""

    at: datetime
    tier: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Derivation:
    due: tuple[Due, ...]
    tier: str
    tier_since: datetime | None
    tier_changes: tuple[TierChange, ...]
    #: When the answer changes with time alone (a lot expires, a tier review): None if never.
    recheck_at: datetime | None
    #: The next expiry after ``now`` and how many points it takes, if any.
    next_expiry: tuple[datetime, int] | None
    #: The replay as it stood after the history's last step, before time ran on to ``now``
    #: (``Checkpoint``): where the next derivation of later events resumes.
    checkpoint: "Checkpoint | None" = None
    #: ``due[tail_from:]`` came from time running on after the last step (expiries, reviews):
    #: a resumed derivation derives them again, or finds them no longer due.
    tail_from: int = 0
    #: Orders whose refunds in this derivation left nothing of them (their coupons come back).
    refunded_in_full: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A replay's state after the last step of a history (``at``: that step's time), as
    bytes (``state``): everything but the program, which the resumer hands back in. Only
    this process's own code reads it (``points_derive``'s ``resume``); a state of an older
    ``CHECKPOINT_FORMAT``, or one that fails to load, is no checkpoint."""

    at: datetime | None
    #: The hot part: what the next step reads (open lots, the tier window, the orders whose
    #: points may still expire), and what changed since the cold part was written.
    state: bytes
    #: The cold part (``_Replay.freeze``): orders and dormant lots that only a refund naming
    #: them or a spend reaching them reads, and the tier window's older amounts.
    cold: bytes | None = None
    #: Whether this derivation wrote ``cold`` anew; if not, it is the one it resumed from, as
    #: stored (the caller need not write it again).
    cold_written: bool = True


@dataclass(slots=True)
class Lot:
    key: str
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None
    order_id: str = ""
    event_id: int | None = None
    #: The order it was credited in (``Lots.credit``): among lots of the same expiry and
    #: earning time, the first credited is spent first, wherever the lot sits in ``Lots.lots``.
    seq: int = 0

    @property
    def of_order(self) -> bool:
        """Whether it holds an order's points (earned on it), whose refund takes from it first."""
        return self.key.startswith(PURCHASE)

    def spendable_at(self, at: datetime) -> bool:
        return (
            self.remaining > 0
            and self.available_at <= at
            and (self.expires_at is None or at < self.expires_at)
        )


@dataclass(slots=True)
class Lots:
    """A member's lots and debt as the ledger stands at some moment."""

    lots: list[Lot] = field(default_factory=list)
    debt: int = 0  # points owed (a negative balance), paid from the next credits
    credited: int = 0  # lots credited so far: the next one's ``seq``
    #: Lots a restored checkpoint holds that only a spend can change (spendable, never
    #: expiring), by key, still as the checkpoint froze them (``_Replay.freeze``): a resumed
    #: replay decodes one only when a spend reaches it, so what it costs does not grow with
    #: the member's history of orders. These are the hot part's; ``dormant_cold`` the cold
    #: part's, once ``thaw`` loaded it.
    dormant: dict[str, list[Any]] = field(default_factory=dict)
    dormant_cold: dict[str, list[Any]] = field(default_factory=dict)
    #: The keys of the cold part's dormant lots decoded since it was written: what is left of
    #: them is in the hot part, and the cold part's rows of them no longer count.
    woken: set[str] = field(default_factory=set)
    #: Loads the checkpoint's cold part (``_Replay.cold_load``), until it is loaded: only a
    #: spend reaching past the hot part's lots calls it.
    thaw: Callable[[], None] | None = None

    @property
    def balance(self) -> int:
        self.wake()
        return sum(lot.remaining for lot in self.lots) - self.debt

    def credit(self, lot: Lot) -> None:
        paid = min(self.debt, lot.remaining)
        self.debt -= paid
        lot.remaining -= paid
        lot.seq, self.credited = self.credited, self.credited + 1
        self.lots.append(lot)

    def wake(self, key: str | None = None) -> None:
        """Decode the dormant lot ``key`` (every dormant lot if None) into ``lots``."""
        if self.thaw is not None and (
            key is None
            or (
                key not in self.dormant
                and key not in self.dormant_cold
                and all(lot.key != key for lot in self.lots)
            )
        ):
            self.thaw()
        for found in [key] if key is not None else [*self.dormant, *self.dormant_cold]:
            if (row := self.dormant.pop(found, None)) is not None:
                self.lots.append(_lot_thawed(row))
            elif (row := self.dormant_cold.pop(found, None)) is not None:
                self.woken.add(found)
                self.lots.append(_lot_thawed(row))

    def spend(self, points: int, at: datetime, *, first: str | None = None) -> int:
        """Take ``points`` from lots spendable at ``at`` (lot ``first`` first, even if still
        pending: a refund takes back its own order's points); returns how many were found."""
        wanted = points
        if first is not None:
            self.wake(first)
            for lot in self.lots:
                if lot.key == first and lot.remaining > 0:
                    taken = min(wanted, lot.remaining)
                    lot.remaining -= taken
                    wanted -= taken
        if wanted == 0:
            return points
        self.wake()
        for lot in sorted(
            (lot for lot in self.lots if lot.spendable_at(at)),
            key=lambda lot: (
                lot.expires_at or datetime.max.replace(tzinfo=lot.earned_at.tzinfo),
                lot.earned_at,
                lot.seq,
            ),
        ):
            if wanted == 0:
                break
            taken = min(wanted, lot.remaining)
            lot.remaining -= taken
            wanted -= taken
        return points - wanted

    def expire(self, lot: Lot) -> int:
        taken, lot.remaining = lot.remaining, 0
        return taken

    def pending(self, at: datetime) -> int:
        self.wake()
        return sum(lot.remaining for lot in self.lots if lot.available_at > at)

    def expiring(self, at: datetime, until: datetime) -> list[Lot]:
        return [
            lot
            for lot in self.lots
            if lot.remaining > 0 and lot.expires_at is not None and at < lot.expires_at <= until
        ]


def points_of_order(
    amount: Decimal,
    lines: Sequence[OrderLine],
    *,
    channel: str,
    tier: str,
    rule_multiplier: Decimal,
    excluded_skus: frozenset[str],
    excluded_categories: frozenset[str],
    channel_multipliers: dict[str, Decimal],
    tier_multipliers: dict[str, Decimal],
) -> int:
    """Whole points for an order: its amount less excluded products, times the rule's rate and
    the channel's and tier's multipliers, rounded down. The rate and multipliers are held to
    their bounds (``members.loyalty.program``): a rule stored before the bounds were checked
    earns at most what they allow, never more than the ledger stores."""
    excluded = sum(
        (line.amount for line in lines if line.sku in excluded_skus or line.category in excluded_categories),
        Decimal(0),
    )
    eligible = max(Decimal(0), amount - excluded)
    points = (
        eligible
        * within_bounds(rule_multiplier, MAX_POINTS_PER_UNIT)
        * within_bounds(channel_multipliers.get(channel, Decimal(1)), MAX_MULTIPLIER)
        * within_bounds(tier_multipliers.get(tier, Decimal(1)), MAX_MULTIPLIER)
    )
    return int(points.to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class _Placed:
    """What the replay keeps of an order's completion: what its refunds are measured against."""

    order_id: str
    amount: Decimal
    currency: str


@dataclass(slots=True)
class _Order:
    completion: _Placed | None
    earned: int = 0
    lot_key: str = ""
    refunded: Decimal = Decimal(0)
    unearned: int = 0  # the share of ``earned`` refunds took back so far
    reversed: int = 0  # of that, reversed (taken from the member's lots, or owed)
    written_off: int = 0  # of that, not taken back: already spent and the program forbids debt
    expired: int = 0  # points of this order's lot that expired (they cannot be taken back again)


def points_derive(
    *,
    program: Program,
    orders: Iterable[OrderEvent],
    lines: Mapping[int, Sequence[OrderLine]],
    events: Iterable[LoyaltyEvent],
    recorded: Iterable[Recorded],
    now: datetime,
    grants: Iterable[TierGrant] = (),
    resume: Checkpoint | None = None,
) -> Derivation:
    """Every ledger entry and the tier a member's history calls for, as of ``now``.

    ``orders`` are the member's ``Order Completed`` / ``Order Refunded`` facts (of the orders
    they own), ``lines`` the products of each completion (by event id), ``events`` sign-ups and
    referrals, ``recorded`` the member's ledger rows (only the ones staff or tills recorded are
    read), ``grants`` the tiers reached elsewhere (imported).

    ``resume``: a checkpoint of this member's earlier derivation, under the same program; the
    history is then only what came after it, every step later than ``resume.at``, with no new
    fact nor grant nor completion of an order it holds (``services.points_refresh``,
    ``members.incremental``), and only the entries those steps and the time
    since call for are returned (with those of time after the checkpoint: ``tail_from`` 0).
    """
    tiers = program.tiers_by_rank()
    facts = [r for r in recorded if not r.derived]
    state = _Replay(program=program, tiers=tiers, lines=lines)
    if resume is not None:
        state.restore(resume.state, resume.cold)
    # Each step is what happened and when, bound to the replay step that applies it.
    timeline: list[tuple[tuple[datetime, int, str], Callable[[], None]]] = []
    history = order_history(orders)
    for done in history.completions.values():
        timeline.append(((done.at, 0, done.message_id), partial(state.order, done)))
    for key, refunds in history.refunds.items():
        for refund in refunds:
            # Resumed, the orders replayed before count too in telling which order it refunds.
            of = key if resume is None else state.order_key_of(refund.order_key, history.completions)
            timeline.append(((refund.at, 1, refund.message_id), partial(state.refund, refund, of)))
    for event in events:
        timeline.append(((event.at, 0, event.message_id), partial(state.loyalty_event, event)))
    for fact in facts:
        timeline.append(((fact.at, 2, fact.key), partial(state.fact, fact)))
    for grant in grants:
        timeline.append(((grant.at, 3, grant.key), partial(state.grant, grant)))
    timeline.sort(key=lambda step: step[0])

    for (at, _, _), apply in timeline:
        state.advance_to(at)
        apply()
    last = timeline[-1][0][0] if timeline else (resume.at if resume is not None else None)
    hot, cold = state.freeze(last)
    checkpoint = Checkpoint(
        at=last, state=hot, cold=state.cold if cold is None else cold, cold_written=cold is not None
    )
    tail_from = len(state.due)
    state.advance_to(now)
    refunded = [refund for refunds in history.refunds.values() for refund in refunds]
    return Derivation(
        due=tuple(state.due),
        tier=state.tier,
        tier_since=state.tier_since,
        tier_changes=tuple(state.tier_changes),
        recheck_at=state.next_change(now),
        next_expiry=state.next_expiry(now),
        checkpoint=checkpoint,
        tail_from=tail_from,
        refunded_in_full=state.refunded_in_full(refunded),
    )


#: The shape of ``_Replay``'s checkpointed state: raise it whenever a change to the replay
#: would make an older state mean something else (its fields, what they hold, how steps use
#: them). A state of another format is ignored: the member is derived from their history.
#: 2: an order's completion kept as its number, amount and currency; 3: lots that only a spend
#: can change kept apart (``Lots.dormant``), spent and expired lots and qualifying amounts out of
#: the tier window left out, each lot with its ``seq``; 4: a hot part and a cold part
#: (``_Replay.freeze``), the hot part uncompressed.
CHECKPOINT_FORMAT = 4

#: How many rows may go cold (orders, dormant lots, tier window amounts, woken lots' keys)
#: in the hot part before the cold part is written again with them (``_Replay.freeze``): the
#: hot part, read and written on every refresh, stays about this small, and the cold part is
#: re-encoded about once every this many rows.
COLD_AFTER = 64
#: How many of the cold part's tier window amounts the hot part holds a copy of: the next
#: ones the window slides past (``_Replay.freeze``).
QUALIFYING_AHEAD = 16
#: The cold part's orders are kept in this many buckets by their number (``_bucket``), each
#: with the dormant lots of its orders, compressed apart: a refund decodes its order's bucket.
COLD_BUCKETS = 8


def _bucket(number: str) -> int:
    """The cold part's bucket of the orders numbered ``number`` and of their lots (1 on; 0
    holds the tier window's amounts and the lots of no order)."""
    return 1 + zlib.crc32(number.encode()) % COLD_BUCKETS


#: A cold bucket whose JSON is shorter than this many bytes is kept as it is, not compressed:
#: deflate's set-up costs ~12 µs of CPU however little it is given, and a member with a few
#: orders had all nine buckets compressed at every refresh that wrote the cold part (an
#: imported member's first: ~0.1 ms of their ~2 ms), to save a few dozen bytes each.
COLD_COMPRESS_FROM = 512


def _cold_encode(bucket: dict[str, list[Any]]) -> bytes:
    """A cold bucket as stored: its JSON, compressed when it is long (``COLD_COMPRESS_FROM``)."""
    data = orjson.dumps(bucket, default=str)
    return zlib.compress(data, 1) if len(data) >= COLD_COMPRESS_FROM else data


def _cold_decode(stored: bytes) -> Any:
    """A bucket ``_cold_encode`` stored: plain JSON starts with ``{``, zlib's stream never
    does (its first byte is 0x78), so both read, as do buckets stored compressed before."""
    return orjson.loads(stored if stored[:1] == b"{" else zlib.decompress(stored))


def _cold_pack(buckets: list[bytes]) -> bytes:
    """The cold part's buckets in one value: their count and lengths, then each."""
    return struct.pack(f"<{len(buckets) + 1}I", len(buckets), *map(len, buckets)) + b"".join(buckets)


def _cold_unpack(cold: bytes, index: int) -> bytes:
    """Bucket ``index`` of a cold part ``_cold_pack`` made."""
    (count,) = struct.unpack_from("<I", cold)
    lengths = struct.unpack_from(f"<{count}I", cold, 4)
    start = 4 * (count + 1) + sum(lengths[:index])
    return cold[start : start + lengths[index]]


@dataclass(slots=True)
class _Replay:
    program: Program
    tiers: tuple[TierRule, ...]
    lines: Mapping[int, Sequence[OrderLine]]
    lots: Lots = field(default_factory=Lots)
    due: list[Due] = field(default_factory=list)
    orders: dict[OrderKey, _Order] = field(default_factory=dict)
    #: The orders a restored checkpoint holds that this replay has not touched, still as
    #: frozen (``_order_at`` decodes one when a step names it; ``freeze`` writes the others
    #: back as they were): a resumed replay decodes only the orders its new events refund.
    #: ``frozen_orders`` are the hot part's, ``cold_orders`` the cold part's once loaded.
    frozen_orders: dict[OrderKey, list[Any]] = field(default_factory=dict)
    cold_orders: dict[OrderKey, list[Any]] = field(default_factory=dict)
    #: The restored checkpoint's cold part (``freeze``), None for a replay from the start.
    cold: bytes | None = None
    _cold_loaded: set[int] = field(default_factory=set)  # its buckets decoded
    #: How many of the cold part's tier window amounts the window had slid past when the hot
    #: part was written, and how many it holds; the rest are ``qualifying``'s first
    #: ``_cold_qualifying`` entries (None until the cold part is loaded).
    _cold_qualifying_at: tuple[int, int] = (0, 0)
    _cold_qualifying: int = 0
    order_lots: dict[str, OrderKey] = field(default_factory=dict)  # an order's lot key -> the order
    # Points spent on an order and given back by its refunds, by the order id the till named.
    spent_on: dict[str, int] = field(default_factory=dict)
    given_back: dict[str, int] = field(default_factory=dict)
    # (at, points or spend); one restored and not read since is still as frozen: [at, amount],
    # or None while it is the cold part's and that is not loaded.
    qualifying: list[tuple[datetime, Decimal] | list[str] | None] = field(default_factory=list)
    # The tier window as ``_measure`` last slid it: qualifying[start:end], their sum, its end.
    _window_start: int = 0
    _window_end: int = 0
    _window_sum: Decimal = Decimal(0)
    _window_at: datetime | None = None
    tier: str = ""
    tier_since: datetime | None = None
    tier_changes: list[TierChange] = field(default_factory=list)
    first_order_seen: bool = False
    signed_up: bool = False
    referred: bool = False  # a sign-up naming a referrer was seen: the referrer earns once
    review_at: datetime | None = None

    def __post_init__(self) -> None:
        self.tier = self.tiers[0].key if self.tiers else ""

    # checkpoints: the state between derivations (``Checkpoint``)

    def freeze(self, at: datetime | None) -> tuple[bytes, bytes | None]:
        """The state after the step at ``at`` as JSON, without the program (given back on
        ``restore``), the lines of this history's orders (a resumed derivation has its own) and
        the entries due so far, in two parts: hot (plain JSON) and cold (compressed JSON); the
        cold part is None when the one restored still stands. Plain data, no pickle: a row of
        the database never becomes code.

        Only what a later step can still read: no lot already spent or expired, no qualifying
        amount the tier window has slid past (a resumed replay's steps are all later than
        ``at``). The lots only a spend can change (spendable at ``at``, never expiring) are
        kept apart, as are the orders, undecoded on ``restore`` until a step needs one; those
        a resumed replay did not touch are written back as they were read.

        What grows with the member's history goes cold: orders whose points can no longer
        expire or turn spendable (only a refund naming them reads them), dormant lots (only a
        spend reaching them), the tier window's amounts (only its sliding past them). The cold
        part is written again only when what went cold since it was written (kept in the hot
        part meanwhile, with the keys of its dormant lots decoded since: ``Lots.woken``) is more
        than ``COLD_AFTER`` rows, or when there is none yet: a refresh of a member with a long
        history re-encodes what it changed, and the cold part's cost spreads over that many.
        The cold part's orders and their dormant lots are kept in buckets by order number
        (``COLD_BUCKETS``), compressed apart when long (``COLD_COMPRESS_FROM``): a refund
        decodes its order's bucket alone."""
        orders: list[list[Any]] = [
            *(
                [*key, None if o.completion is None else [o.completion.order_id, o.completion.amount,
                                                          o.completion.currency],
                 o.earned, o.lot_key, o.refunded, o.unearned, o.reversed, o.written_off, o.expired]
                for key, o in self.orders.items()
            ),
            *self.frozen_orders.values(),
        ]  # fmt: skip
        lots: list[list[Any]] = []
        sleeping: list[list[Any]] = []
        live = [lot for lot in self.lots.lots if lot.remaining > 0]  # nothing takes from the others
        # Dormant lots are found by key: a key two lots share stays with the lots decoded.
        shared = {key for key, n in Counter(lot.key for lot in live).items() if n > 1}
        for lot in live:
            row = [lot.key, lot.points, lot.remaining, lot.earned_at, lot.available_at, lot.expires_at,
                   lot.order_id, lot.event_id, lot.seq]  # fmt: skip
            sleeps = (
                lot.expires_at is None and at is not None and lot.available_at <= at
                and lot.key not in shared and lot.key not in self.lots.dormant
                and lot.key not in self.lots.dormant_cold
            )  # fmt: skip
            (sleeping if sleeps else lots).append(row)
        live_keys = {row[0] for row in lots}
        start, placeheld = self._window_start, self._cold_qualifying
        hot_qualifying = self.qualifying[max(start, placeheld) :]
        went_cold = (
            sum(1 for row in orders if row[4] not in live_keys) + len(self.lots.dormant) + len(sleeping)
            + len(self.lots.woken) + len(hot_qualifying)
        )  # fmt: skip
        cold: bytes | None = None
        if self.cold is None or went_cold > COLD_AFTER:
            self.cold_load()
            orders += self.cold_orders.values()
            buckets: list[dict[str, list[Any]]] = [
                {"dormant": [], "qualifying": self.qualifying[start:]},
                *({"orders": [], "dormant": []} for _ in range(COLD_BUCKETS)),
            ]
            for row in orders:
                if row[4] not in live_keys:
                    buckets[_bucket(str(row[1]))]["orders"].append(row)
            for row in (*self.lots.dormant.values(), *self.lots.dormant_cold.values(), *sleeping):
                buckets[_bucket(str(row[6])) if row[6] else 0]["dormant"].append(row)
            cold = _cold_pack([_cold_encode(bucket) for bucket in buckets])
            orders = [row for row in orders if row[4] in live_keys]
            sleeping, woken, hot_qualifying = [], [], []
            cold_qualifying = [0, len(self.qualifying) - start]
            crc = zlib.crc32(cold)
        else:
            sleeping = [*self.lots.dormant.values(), *sleeping]
            woken = sorted(self.lots.woken)
            skipped, held = self._cold_qualifying_at
            cold_qualifying = [min(skipped + start, held), held]
            crc = zlib.crc32(self.cold)
        # The cold amounts the window slides past next, copied hot: every step reads the first
        # (is it out of the window yet?), and a window sliding loads the cold part only when
        # it has slid past all of them.
        upcoming = min(QUALIFYING_AHEAD, cold_qualifying[1] - cold_qualifying[0])
        ahead = list(takewhile(lambda entry: entry is not None, self.qualifying[start : start + upcoming]))
        state = {
            "format": CHECKPOINT_FORMAT, "cold": crc, "orders": orders, "lots": lots, "dormant": sleeping,
            "woken": woken, "debt": self.lots.debt, "credited": self.lots.credited,
            "spent_on": self.spent_on, "given_back": self.given_back, "qualifying": hot_qualifying,
            "cold_qualifying": cold_qualifying, "qualifying_ahead": ahead,
            "window": [0, self._window_end - start, self._window_sum, self._window_at],
            "tier": [self.tier, self.tier_since], "tier_changes": [
                [c.at, c.from_tier, c.to_tier, c.reason] for c in self.tier_changes],
            "flags": [self.first_order_seen, self.signed_up, self.referred], "review_at": self.review_at,
        }  # fmt: skip
        return orjson.dumps(state, default=str), cold

    def restore(self, frozen: bytes, cold: bytes | None) -> None:
        """Take the state ``freeze`` made, its hot part and its cold part (raises
        ``ValueError`` for one of another format, or whose parts were not written together).
        The cold part stays undecoded until a step needs it (``cold_load``); orders, dormant
        lots and qualifying amounts stay as read until a step needs them."""
        try:
            state = orjson.loads(frozen)
        except orjson.JSONDecodeError:  # format 3 and before: compressed whole
            raise ValueError("a checkpoint of format 3 or before") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"a checkpoint of format {state.get('format') if isinstance(state, dict) else '?'}, "
                f"not {CHECKPOINT_FORMAT}"
            )
        if state["cold"] != (None if cold is None else zlib.crc32(cold)):
            raise ValueError("a checkpoint whose cold part is not the one written with it")
        self.cold = cold
        self.orders = {}
        self.frozen_orders = {(row[0], row[1]): row for row in state["orders"]}
        self.order_lots = {row[4]: (row[0], row[1]) for row in state["orders"] if row[4]}
        self.lots = Lots(
            lots=[_lot_thawed(row) for row in state["lots"]],
            debt=state["debt"],
            credited=state["credited"],
            dormant={row[0]: row for row in state["dormant"]},
            woken=set(state["woken"]),
            thaw=self.cold_load,
        )
        self.spent_on, self.given_back = state["spent_on"], state["given_back"]
        # The cold part's amounts still in the window come first, as placeholders until read.
        skipped, held = self._cold_qualifying_at = tuple(state["cold_qualifying"])
        self._cold_qualifying = held - skipped
        ahead = state["qualifying_ahead"]
        self.qualifying = [*ahead, *([None] * (self._cold_qualifying - len(ahead))), *state["qualifying"]]
        start, end, total, at = state["window"]
        self._window_start, self._window_end, self._window_sum = start, end, Decimal(total)
        self._window_at = _moment(at)
        self.tier, self.tier_since = state["tier"][0], _moment(state["tier"][1])
        self.tier_changes = [
            TierChange(datetime.fromisoformat(at), old, new, why)
            for at, old, new, why in state["tier_changes"]
        ]
        self.first_order_seen, self.signed_up, self.referred = state["flags"]
        # In the program's zone, as ``Program.next_review`` made it: time is added to it in that zone.
        review_at = _moment(state["review_at"])
        self.review_at = None if review_at is None else review_at.astimezone(self.program.zone)

    def cold_load(self, bucket: int | None = None) -> None:
        """Decode the cold part's ``bucket`` (``_bucket``; every one if None), once: its orders
        and dormant lots that the hot part does not hold newer (``Lots.woken``), and (bucket 0)
        its amounts of the tier window into their placeholders."""
        if self.cold is None:
            return
        for index in range(COLD_BUCKETS + 1) if bucket is None else (bucket,):
            if index not in self._cold_loaded:
                self._cold_loaded.add(index)
                self._cold_bucket_load(index, _cold_decode(_cold_unpack(self.cold, index)))
        if len(self._cold_loaded) > COLD_BUCKETS:
            self.lots.thaw = None

    def _cold_bucket_load(self, index: int, cold: dict[str, list[Any]]) -> None:
        for row in cold.get("orders", ()):
            key = (row[0], row[1])
            if key not in self.orders and key not in self.frozen_orders:
                self.cold_orders[key] = row
                if row[4]:
                    self.order_lots.setdefault(row[4], key)
        for row in cold["dormant"]:
            if row[0] not in self.lots.woken and row[0] not in self.lots.dormant:
                self.lots.dormant_cold[row[0]] = row
        if index:
            return
        skipped, _ = self._cold_qualifying_at
        for at, entry in enumerate(cold["qualifying"][skipped : skipped + self._cold_qualifying]):
            if self.qualifying[at] is None:
                self.qualifying[at] = entry

    def _order_at(self, key: OrderKey, *, cold: bool = True) -> _Order | None:
        """The order ``key`` replayed so far (decoded from the checkpoint if need be), if any;
        ``cold`` False: not looking in the cold part (not loading it)."""
        order = self.orders.get(key)
        if order is None:
            row = self.frozen_orders.pop(key, None)
            if row is None and cold:
                self.cold_load(_bucket(key[1]))
                row = self.cold_orders.pop(key, None)
            if row is not None:
                order = self.orders[key] = _order_thawed(row)
        return order

    def _qualifying_at(self, index: int) -> tuple[datetime, Decimal]:
        entry = self.qualifying[index]
        if entry is None:  # the cold part's, not loaded yet
            self.cold_load(0)
            entry = self.qualifying[index]
        if isinstance(entry, list):  # as restored
            entry = self.qualifying[index] = (datetime.fromisoformat(entry[0]), Decimal(entry[1]))
        assert entry is not None  # the cold part holds every placeholder's
        return entry

    def order_key_of(self, key: OrderKey, completions: Mapping[OrderKey, OrderEvent]) -> OrderKey:
        """The order a refund of ``key`` is of, among the orders replayed before and these new
        completions, as ``order_history`` would match it over the whole history."""
        if key in self.orders or key in self.frozen_orders or key in completions:
            return key
        self.cold_load(_bucket(key[1]))  # where every order of that number is
        if key in self.cold_orders:
            return key
        numbered = [
            k for k in (*self.orders, *self.frozen_orders, *self.cold_orders, *completions) if k[1] == key[1]
        ]
        return numbered[0] if len(numbered) == 1 else key

    def refunded_in_full(self, refunds: Iterable[OrderEvent]) -> frozenset[str]:
        """The order ids of these refunds whose orders they refunded in full (as replayed)."""
        refunded = {refund.order_id for refund in refunds}
        for number in refunded:
            self.cold_load(_bucket(number))
        for key in [key for key in (*self.frozen_orders, *self.cold_orders) if key[1] in refunded]:
            self._order_at(key)
        return frozenset(
            order.completion.order_id
            for order in self.orders.values()
            if order.completion is not None
            and order.completion.order_id in refunded
            and order.refunded >= order.completion.amount > 0
        )

    # time passing: lots expire, tiers are reviewed

    def advance_to(self, at: datetime) -> None:
        while True:
            expiring = [
                lot for lot in self.lots.lots if lot.remaining > 0 and lot.expires_at and lot.expires_at <= at
            ]
            review = self.review_at if self.review_at is not None and self.review_at <= at else None
            first_expiry = min((lot.expires_at for lot in expiring if lot.expires_at), default=None)
            if first_expiry is None and review is None:
                break
            if review is not None and (first_expiry is None or review <= first_expiry):
                self._review(review)
                continue
            assert first_expiry is not None  # else the review came first
            for lot in expiring:
                if lot.expires_at == first_expiry:
                    taken = self.lots.expire(lot)
                    if (key := self.order_lots.get(lot.key)) is not None and (
                        order := self._order_at(key)
                    ) is not None:
                        order.expired += taken
                    self.due.append(
                        Due(
                            key=f"{EXPIRE}{lot.key}",
                            kind=Kind.EXPIRE,
                            points=-taken,
                            at=first_expiry,
                            reason=f"{taken} points earned {lot.earned_at:%Y-%m-%d} expired",
                            event_id=lot.event_id,
                            order_id=lot.order_id,
                        )
                    )

    def next_change(self, now: datetime) -> datetime | None:
        expiries = [
            lot.expires_at
            for lot in self.lots.lots
            if lot.remaining > 0 and lot.expires_at and lot.expires_at > now
        ]
        candidates = [*expiries, *([self.review_at] if self.review_at else [])]
        return min(candidates, default=None)

    def next_expiry(self, now: datetime) -> tuple[datetime, int] | None:
        expiring = [
            lot for lot in self.lots.lots if lot.remaining > 0 and lot.expires_at and lot.expires_at > now
        ]
        if not expiring:
            return None
        first = min(lot.expires_at for lot in expiring if lot.expires_at)
        return first, sum(lot.remaining for lot in expiring if lot.expires_at == first)

    # credits

    def _credit(self, due: Due, *, lot_key: str | None = None) -> None:
        self.due.append(due)
        self.lots.credit(
            Lot(
                key=lot_key or due.key,
                points=due.points,
                remaining=due.points,
                earned_at=due.at,
                available_at=due.available_at or due.at,
                expires_at=due.expires_at,
                order_id=due.order_id,
                event_id=due.event_id,
            )
        )

    def _credit_due(
        self,
        *,
        key: str,
        points: int,
        at: datetime,
        reason: str,
        event_id: int | None,
        order_id: str = "",
        pending: bool = True,
    ) -> Due:
        rule = self.program.rule_at(at)
        # Pending beyond the end of the calendar (an event stamped in year 9999): spendable at once.
        available = (
            moment_plus(at, timedelta(days=rule.pending_days)) if pending and rule.pending_days else None
        )
        return Due(
            key=key,
            kind=Kind.EARN,
            points=points,
            at=at,
            reason=reason,
            event_id=event_id,
            order_id=order_id,
            available_at=available,
            expires_at=rule.expires_at(at, self.program.zone),
        )

    def order(self, done: OrderEvent) -> None:
        # A resumed replay is given no completion of an order it holds (``points_derive``):
        # the cold part, where such an order would be, is not loaded for it.
        order = self._order_at(done.order_key, cold=False)
        if order is None:
            order = self.orders[done.order_key] = _Order(completion=None)
        order.completion = _Placed(done.order_id, done.amount, done.currency)
        if done.currency != self.program.currency:
            return  # points are earned in the program's currency only
        rule = self.program.rule_at(done.at)
        points = points_of_order(
            done.amount,
            self.lines.get(done.event_id, ()),
            channel=done.channel,
            tier=self.tier,
            rule_multiplier=rule.points_per_unit,
            excluded_skus=rule.excluded_skus,
            excluded_categories=rule.excluded_categories,
            channel_multipliers=rule.channel_multipliers,
            tier_multipliers=rule.tier_multipliers,
        )
        if points > 0:
            order.earned, order.lot_key = points, f"{PURCHASE}{done.event_id}"
            self.order_lots[order.lot_key] = done.order_key
            self._credit(
                self._credit_due(
                    key=order.lot_key,
                    points=points,
                    at=done.at,
                    event_id=done.event_id,
                    order_id=done.order_id,
                    reason=f"order {done.order_id}: {done.amount} {done.currency} in {done.channel or 'unknown channel'}",
                )
            )
        if not self.first_order_seen and rule.first_purchase_bonus > 0:
            self._credit(
                self._credit_due(
                    key=f"{FIRST_ORDER_BONUS}{done.event_id}",
                    points=rule.first_purchase_bonus,
                    at=done.at,
                    event_id=done.event_id,
                    order_id=done.order_id,
                    reason=f"first purchase bonus (order {done.order_id})",
                )
            )
        self.first_order_seen = True
        self._qualify(done.at, points if self.program.tier_basis == TierBasis.POINTS else done.amount)

    def refund(self, refund: OrderEvent, key: OrderKey) -> None:
        """A refund of the order ``key`` (``members.aggregates.order_history`` says which)."""
        order = self._order_at(key)
        if order is None or order.completion is None or order.completion.currency != refund.currency:
            return  # nothing was earned on it here (placed before the program, or in another currency)
        total = order.completion.amount
        before = order.refunded
        order.refunded = min(total, order.refunded + refund.amount)
        share = order.refunded / total if total else Decimal(1)
        if self.program.tier_basis == TierBasis.SPEND:
            self._qualify(refund.at, -(order.refunded - before))
        reverse_to = _share(order.earned, share)
        unearned, order.unearned = reverse_to - order.unearned, reverse_to
        if unearned and self.program.tier_basis == TierBasis.POINTS:
            # The order no longer earned these points, whether or not they can be taken back.
            self._qualify(refund.at, Decimal(-unearned))
        # Points of the order already gone (reversed, written off, or expired) are not taken twice.
        taking = reverse_to - order.reversed - order.written_off - order.expired
        if taking > 0:
            found = self.lots.spend(taking, refund.at, first=order.lot_key)
            shortfall = taking - found
            if shortfall and self.program.negative_balance == NegativeBalance.ALLOW:
                self.lots.debt += shortfall
                found = taking
            order.reversed += found
            order.written_off += taking - found
            reason = f"order {refund.order_id} refunded {refund.amount} {refund.currency}"
            if found < taking:
                reason += f"; {taking - found} points already spent were written off (no negative balance)"
            if found:
                self.due.append(
                    Due(
                        key=f"reverse:{refund.event_id}",
                        kind=Kind.REVERSE,
                        points=-found,
                        at=refund.at,
                        reason=reason,
                        event_id=refund.event_id,
                        order_id=refund.order_id,
                    )
                )
        spent = self.spent_on.get(refund.order_id, 0)
        if self.program.refund_returns_redeemed_points and spent:
            back = _share(spent, share) - self.given_back.get(refund.order_id, 0)
            if back > 0:
                self.given_back[refund.order_id] = self.given_back.get(refund.order_id, 0) + back
                rule = self.program.rule_at(refund.at)
                self._credit(
                    Due(
                        key=f"return:{refund.event_id}",
                        kind=Kind.REVERSE,
                        points=back,
                        at=refund.at,
                        reason=f"points spent on order {refund.order_id} given back (refund)",
                        event_id=refund.event_id,
                        order_id=refund.order_id,
                        expires_at=rule.expires_at(refund.at, self.program.zone),
                    )
                )

    def loyalty_event(self, event: LoyaltyEvent) -> None:
        rule = self.program.rule_at(event.at)
        if event.name == SIGNED_UP and not self.signed_up:
            self.signed_up = True
            if rule.signup_bonus > 0:
                self._credit(
                    self._credit_due(
                        key=f"bonus:signup:{event.event_id}",
                        points=rule.signup_bonus,
                        at=event.at,
                        event_id=event.event_id,
                        reason="sign-up bonus",
                    )
                )
        if rule.referral_bonus <= 0:
            return
        if event.name == REFERRAL:
            self._credit(
                self._credit_due(
                    key=f"bonus:referral:{event.event_id}",
                    points=rule.referral_bonus,
                    at=event.at,
                    event_id=event.event_id,
                    reason="referral bonus",
                )
            )
        elif event.name == SIGNED_UP and event.referrer and not self.referred:
            self.referred = True
            # Earned by the referrer, not by this member: not a lot of this member's.
            due = self._credit_due(
                key=f"bonus:referred:{event.event_id}",
                points=rule.referral_bonus,
                at=event.at,
                event_id=event.event_id,
                reason="referral bonus (a referred member signed up)",
            )
            self.due.append(replace(due, beneficiary=event.referrer))

    def fact(self, fact: Recorded) -> None:
        """A redemption or adjustment staff or a till recorded: taken as it is."""
        if fact.points > 0:
            self.lots.credit(
                Lot(
                    key=fact.key,
                    points=fact.points,
                    remaining=fact.points,
                    earned_at=fact.at,
                    available_at=fact.available_at or fact.at,
                    expires_at=fact.expires_at,
                    order_id=fact.order_id,
                )
            )
            return
        wanted = -fact.points
        found = self.lots.spend(wanted, fact.at)
        if fact.kind == Kind.REDEEM and fact.order_id:
            self.spent_on[fact.order_id] = self.spent_on.get(fact.order_id, 0) + wanted
        shortfall = wanted - found
        if not shortfall:
            return
        if self.program.negative_balance == NegativeBalance.ALLOW:
            self.lots.debt += shortfall
        else:
            # Only after a split took away points this member had spent: the program allows
            # no debt, so what is missing is written off.
            self.due.append(
                Due(
                    key=f"writeoff:{fact.key}",
                    kind=Kind.ADJUST,
                    points=shortfall,
                    at=fact.at,
                    reason=f"{shortfall} points spent by {fact.key} now belong to another member; written off",
                )
            )

    # tiers

    def _qualify(self, at: datetime, amount: Decimal | int) -> None:
        if not self.tiers:
            return
        self.qualifying.append((at, Decimal(amount)))
        measure = self._measure(at)
        qualified = self._qualified_for(measure)
        if self.tiers.index(qualified) > self._index(self.tier):
            self._change(
                at,
                qualified.key,
                f"qualified: {self._describe(measure)} ≥ {qualified.name} {qualified.threshold}",
            )
        if self.review_at is None and self.program.downgrade != Downgrade.NONE:
            self.review_at = self.program.next_review(at)

    def grant(self, grant: TierGrant) -> None:
        """A tier reached elsewhere: held from its date if above the tier held then (a tier the
        programme does not have is ignored); reviews apply to it as to any tier reached."""
        index = self._index(grant.tier)
        if index > self._index(self.tier):
            self._change(grant.at, grant.tier, grant.reason)
        if index >= 0 and self.review_at is None and self.program.downgrade != Downgrade.NONE:
            self.review_at = self.program.next_review(grant.at)

    def _review(self, at: datetime) -> None:
        self.review_at = self.program.next_review(at)
        measure = self._measure(at)
        current = self._index(self.tier)
        qualified = self.tiers.index(self._qualified_for(measure))
        if qualified >= current:
            return
        target = current - 1 if self.program.downgrade == Downgrade.ONE_STEP else qualified
        held = self.tiers[current]
        self._change(
            at, self.tiers[target].key, f"review: {self._describe(measure)} < {held.name} {held.threshold}"
        )

    def _measure(self, at: datetime) -> Decimal:
        """What qualified in the tier window ending at ``at``. The replay asks in time order and
        qualifies in time order, so the window only slides forward: a running sum over it
        (summing the whole list at every order made a long history's replay quadratic)."""
        since = moment_plus(at, -timedelta(days=self.program.tier_window_days))  # None: since always
        if since is None or (self._window_at is not None and at < self._window_at):
            return sum(
                (
                    amount
                    for when, amount in map(self._qualifying_at, range(len(self.qualifying)))
                    if (since is None or since < when) and when <= at
                ),
                Decimal(0),
            )
        self._window_at = at
        while self._window_end < len(self.qualifying) and self._qualifying_at(self._window_end)[0] <= at:
            self._window_sum += self._qualifying_at(self._window_end)[1]
            self._window_end += 1
        while self._window_start < self._window_end and self._qualifying_at(self._window_start)[0] <= since:
            self._window_sum -= self._qualifying_at(self._window_start)[1]
            self._window_start += 1
        return self._window_sum

    def _qualified_for(self, measure: Decimal) -> TierRule:
        reached = [tier for tier in self.tiers if measure >= tier.threshold]
        return reached[-1] if reached else self.tiers[0]

    def _index(self, key: str) -> int:
        return next((i for i, tier in enumerate(self.tiers) if tier.key == key), -1)

    def _describe(self, measure: Decimal) -> str:
        unit = (
            "points earned"
            if self.program.tier_basis == TierBasis.POINTS
            else f"{self.program.currency} spent"
        )
        return f"{measure.normalize():f} {unit} in {self.program.tier_window_days} days"

    def _change(self, at: datetime, to: str, reason: str) -> None:
        self.tier_changes.append(TierChange(at=at, from_tier=self.tier, to_tier=to, reason=reason))
        self.tier, self.tier_since = to, at


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _lot_thawed(row: list[Any]) -> Lot:
    """A lot as ``_Replay.freeze`` wrote it."""
    key, points, remaining, earned, available, expires, order_id, event_id, seq = row
    earned_at = datetime.fromisoformat(earned)
    return Lot(key, points, remaining, earned_at, earned_at if available == earned else datetime.fromisoformat(available),
               _moment(expires), order_id, event_id, seq)  # fmt: skip


def _order_thawed(row: list[Any]) -> _Order:
    """An order as ``_Replay.freeze`` wrote it."""
    _, _, done, earned, lot_key, refunded, unearned, reversed_, written_off, expired = row
    placed = None if done is None else _Placed(done[0], Decimal(done[1]), done[2])
    return _Order(placed, earned, lot_key, Decimal(refunded), unearned, reversed_, written_off, expired)


def _share(points: int, share: Decimal) -> int:
    return int((points * share).to_integral_value(rounding=ROUND_HALF_UP))


def lots_of(rows: Iterable[Recorded]) -> Lots:
    """A member's lots and debt from their ledger rows alone, in the order they took effect:
    what the points view shows as pending and expiring. A row correcting an earlier one
    (same cause, ``cause_of``) changes that row's lot; an expiry empties its lot; a reversal
    takes its order's lot first (the lot earned on an order of that number)."""
    lots = Lots()
    by_cause: dict[str, Lot] = {}
    for row in sorted(rows, key=lambda r: (r.at, r.points < 0, r.key)):
        cause = cause_of(row)
        if row.points > 0:
            if cause in by_cause:
                by_cause[cause].points += row.points
                by_cause[cause].remaining += row.points
                continue
            lot = Lot(
                key=cause,
                points=row.points,
                remaining=row.points,
                earned_at=row.at,
                available_at=row.available_at or row.at,
                expires_at=row.expires_at,
                order_id=row.order_id,
            )
            by_cause[cause] = lot
            lots.credit(lot)
            continue
        first = by_cause.get(cause.removeprefix(EXPIRE))
        if first is None and row.kind == Kind.REVERSE and row.order_id:
            first = next(
                (lot for lot in lots.lots if lot.of_order and lot.order_id == row.order_id and lot.remaining),
                None,
            )
        wanted = -row.points
        wanted -= lots.spend(wanted, row.at, first=first.key if first else None)
        lots.debt += wanted
    return lots
