"""Writes of loyalty: keep each member's ledger equal to what their history calls for, and
record what staff and tills do with points.

The member refresh (``members.services``) calls ``points_reconcile`` with the history of the
members it refreshes, under their refresh locks. Derived rows belong to the member whose event
caused them (a referral bonus to the referrer): a reconciliation moves rows whose cause now
belongs to this member (a merge, a split), appends a correction where a cause's points changed,
and corrects to zero a cause that no longer earns anything (a second first-purchase bonus after
a merge, an order another member's later completion took: ``members.orders``). Causes are
compared in today's keys (``points.cause_of``), so rows written under the keys of an earlier
release keep counting for their cause. Rows staff or tills recorded are facts: they follow
their member through merges.
"""

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import Decimal

import orjson
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from cdp.db import binary_parameters_cursor, rows_delete
from cdp.metrics import POINTS_DERIVATIONS
from events.commerce import as_amount
from events.tasks import process_pending_enqueue
from identity.identifiers import BlockedIdentifier, IdentifierType, InvalidIdentifier
from identity.selectors import identifier_lookup_values, members_holding
from members.aggregates import OrderEvent, orders_of
from members.locks import member_refresh_locks
from members.loyalty.coupons import coupons_release_for_orders
from members.loyalty.models import (
    LoyaltyProgram,
    PointsAccount,
    PointsCheckpoint,
    PointsEntry,
    TierChange,
    TierGrant,
)
from members.loyalty.points import (
    MAX_POINTS_MOVE,
    Checkpoint,
    Derivation,
    Due,
    Kind,
    LoyaltyEvent,
    OrderLine,
    Recorded,
    cause_of,
    points_derive,
)
from members.loyalty.points import TierGrant as GrantFact
from members.loyalty.program import NegativeBalance, Program
from members.loyalty.selectors import points_available, program_load
from members.marks import members_mark_dirty
from members.models import Member

logger = logging.getLogger(__name__)

#: The cause of a referral bonus earned by the referrer (``members.loyalty.points``).
REFERRED = "bonus:referred:"


@dataclass(slots=True)
class LoyaltyHistory:
    """What of a member's events the points derivation reads."""

    orders: list[OrderEvent] = field(default_factory=list)
    lines: dict[int, list[OrderLine]] = field(default_factory=dict)
    events: list[LoyaltyEvent] = field(default_factory=list)

    @property
    def event_ids(self) -> set[int]:
        """The member's events the ledger answers for: ``lines`` names every completion the
        member holds, those of orders another member owns included (their rows, if an earlier
        refresh wrote any, are this member's to correct to zero)."""
        return {o.event_id for o in self.orders} | set(self.lines) | {e.event_id for e in self.events}


def order_lines(properties: dict) -> list[OrderLine]:
    """The products of an order as the earning rules read them (price times quantity each)."""
    products = properties.get("products")
    if not isinstance(products, list):
        return []
    lines = []
    for product in products:
        if not isinstance(product, dict):
            continue
        price = as_amount(product.get("price"))
        quantity = as_amount(product.get("quantity"))
        if price is None:
            continue
        lines.append(
            OrderLine(
                sku=str(product.get("sku") or product.get("product_id") or ""),
                category=str(product.get("category") or ""),
                amount=price * (quantity if quantity is not None else Decimal(1)),
            )
        )
    return lines


_RECORDED_OF = """
SELECT p.id, p.member_id, p.kind, p.points, p.key, p.cause_key, p.derived, p.event_id, p.order_id,
       p.at, p.available_at, p.expires_at
FROM unnest(%b::bigint[]) AS m(id)
CROSS JOIN LATERAL (SELECT * FROM members_pointsentry AS e WHERE e.member_id = m.id OFFSET 0) AS p
UNION
SELECT p.id, p.member_id, p.kind, p.points, p.key, p.cause_key, p.derived, p.event_id, p.order_id,
       p.at, p.available_at, p.expires_at
FROM unnest(%b::bigint[]) AS c(id)
CROSS JOIN LATERAL (SELECT * FROM members_pointsentry AS e WHERE e.event_id = c.id OFFSET 0) AS p
"""


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    member_id: int
    recorded: Recorded


def _rows_of(member_ids: Iterable[int], event_ids: Iterable[int]) -> list[_Row]:
    return _rows_read(_RECORDED_OF, [sorted(set(member_ids)), sorted(set(event_ids))])


def _rows_read(query: str, arguments: list) -> list[_Row]:
    with binary_parameters_cursor() as cursor:
        cursor.execute(query, arguments)
        return [
            _Row(
                row_id,
                member_id,
                Recorded(
                    key=key,
                    kind=Kind(kind),
                    points=points,
                    at=at,
                    order_id=order_id,
                    cause_key=cause_key,
                    available_at=available_at,
                    expires_at=expires_at,
                    derived=derived,
                    event_id=event_id,
                ),
            )
            for row_id, member_id, kind, points, key, cause_key, derived, event_id, order_id, at, available_at, expires_at in cursor.fetchall()
        ]


def points_reconcile(
    *,
    histories: dict[int, LoyaltyHistory],
    retired: Iterable[int] = (),
    now: datetime | None = None,
    checkpoint: bool = False,
) -> None:
    """Bring these active members' ledgers, tiers and accounts to what their histories call
    for as of ``now``, after moving everything loyalty of the ``retired`` members (absorbed by
    a merge) to their survivors. Idempotent: a second run appends nothing. Callers hold the
    members' refresh locks (``members.services``).

    ``checkpoint``: each history is exactly the member's events the refresh's watermark
    covers (written in this transaction), so where the derivation stands is kept for the next
    refresh to resume from (``points_refresh``'s ``new``). Otherwise the members' checkpoints are dropped:
    what they stood on may have changed."""
    points_refresh(histories=histories, retired=retired, now=now, checkpoint=checkpoint)


def points_refresh(
    *,
    histories: dict[int, LoyaltyHistory],
    retired: Iterable[int] = (),
    new: dict[int, LoyaltyHistory] | None = None,
    whole: Callable[[set[int]], dict[int, LoyaltyHistory]] | None = None,
    now: datetime | None = None,
    checkpoint: bool = False,
) -> None:
    """What a refresh does to points, in one pass over the accounts: the members of
    ``histories`` reconciled from their whole history (``points_reconcile``), the ``retired``
    ones' points moved to their survivors, and the members of ``new`` advanced from their
    checkpoints with these new events alone (``_advance_prepare``); those whose derivation
    cannot resume are reconciled from the history ``whole`` reads for them.

    Everything is derived first; then every account any of it writes (the members', their
    survivors', those rows move from or to, a referrer's) is locked at once, in member-id order
    (``_accounts_lock``), and only then written: the ledger trigger only updates accounts
    already held. One refresh transaction takes account locks once, after its order rows and
    before its memberships (``members.locks``), so two refreshes whose writes cross (one moves
    points into the account the other writes) wait for each other instead of deadlocking.
    """
    now = now or timezone.now()
    program = program_load()
    writes: list[_PointsWrites] = []
    if new:
        advanced, unresumed = _advance_prepare(new, program, now)
        writes.append(advanced)
        if unresumed and whole is not None:
            histories = {**histories, **whole(unresumed)}
    if histories or retired:
        writes.append(_reconcile_prepare(histories, retired, program, now, checkpoint=checkpoint))
    if not any(w.touches for w in writes):
        return
    _accounts_lock(set().union(*(w.accounts for w in writes)))
    for w in writes:
        if w.touches:
            w.apply(program)


@dataclass(slots=True)
class _PointsWrites:
    """What bringing some members' points to their derivations writes, prepared before any
    account is locked (``points_refresh``)."""

    derivations: dict[int, Derivation]
    #: Every account the writes touch (locked before any is written).
    accounts: set[int] = field(default_factory=set)
    moves: dict[int, list["_Row"]] = field(default_factory=dict)
    corrections: list["_Entry"] = field(default_factory=list)
    #: Absorbed members whose loyalty goes to their survivor (``_retired_move``).
    survivors: dict[int, int] = field(default_factory=dict)
    #: Orders refunded in full: the coupons used on them can be used again.
    refunded: list[str] = field(default_factory=list)
    checkpoints_dropped: set[int] = field(default_factory=set)
    #: The checkpoints kept: each cause's (points, rows) once written, and the facts read.
    checkpoint: tuple[dict[str, tuple[int, int]], dict[int, str]] | None = None
    metric: str = "replayed"

    @property
    def touches(self) -> bool:
        return bool(self.derivations or self.survivors)

    def apply(self, program: Program) -> None:
        """Write them (the caller holds ``accounts``)."""
        _retired_move(self.survivors)
        if self.derivations:
            _accounts_write(self.derivations, program)
        _rows_move(self.moves)
        # Credits before debits: the floor is checked at commit, but a clean order reads better.
        _entries_insert(sorted(self.corrections, key=lambda e: -e.points))
        if self.derivations:
            _tier_changes_write(self.derivations)
        if self.refunded:
            coupons_release_for_orders(order_ids=self.refunded, reason="order refunded in full")
        if self.checkpoints_dropped:
            rows_delete(PointsCheckpoint, column="member", keys=self.checkpoints_dropped)
        if self.checkpoint is not None and self.derivations:
            after, facts = self.checkpoint
            _checkpoints_write(self.derivations, program, after, facts=facts)
        POINTS_DERIVATIONS.labels(self.metric).inc(len(self.derivations))


def _reconcile_prepare(
    histories: dict[int, LoyaltyHistory],
    retired: Iterable[int],
    program: Program,
    now: datetime,
    *,
    checkpoint: bool,
) -> _PointsWrites:
    """``points_reconcile``'s writes, derived from the members' whole histories."""
    survivors = _survivors_of(retired)
    if not histories and not survivors:
        return _PointsWrites(derivations={})
    # The facts as the derivation reads them, before this reconciliation writes any.
    given = _facts_of(histories) if checkpoint and histories else {}
    # Read as they will be once the retired members' rows are with their survivors (moved
    # below, after the locks): a survivor refreshed in this batch reconciles with them now.
    absorbed_here = {old for old, survivor in survivors.items() if survivor in histories}
    rows = [
        replace(row, member_id=survivors.get(row.member_id, row.member_id))
        for row in _rows_of(
            histories.keys() | absorbed_here, {i for h in histories.values() for i in h.event_ids}
        )
    ]
    facts: dict[int, list[Recorded]] = defaultdict(list)
    by_cause: dict[str, list[_Row]] = defaultdict(list)
    inbound: dict[tuple[int, str], list[Recorded]] = defaultdict(list)
    for row in rows:
        if row.recorded.derived:
            by_cause[cause_of(row.recorded)].append(row)
            if row.member_id in histories and row.recorded.cause_key.startswith(REFERRED):
                inbound[(row.member_id, row.recorded.cause_key)].append(row.recorded)
        elif row.member_id in histories:
            facts[row.member_id].append(row.recorded)
    # A referral bonus the member earned from someone else's sign-up is not in their own history:
    # their derivation takes it as given, a lot like a staff credit, so spending it is no debt.
    for (member_id, cause), bonuses in inbound.items():
        if (points := sum(r.points for r in bonuses)) > 0:
            first = min(bonuses, key=lambda r: r.at)
            facts[member_id].append(replace(first, key=cause, points=points, derived=False))
    grants: dict[int, list[GrantFact]] = defaultdict(list)
    for grant, holder in _grants_held(histories.keys() | absorbed_here, survivors).items():
        grants[holder].append(GrantFact(at=grant.at, tier=grant.tier, key=grant.key, reason=grant.reason))
    derivations = {
        member_id: points_derive(
            program=program,
            orders=history.orders,
            lines=history.lines,
            events=history.events,
            recorded=facts[member_id],
            now=now,
            grants=grants[member_id],
        )
        for member_id, history in histories.items()
    }
    referrers = _referrers(
        {d.beneficiary for derived in derivations.values() for d in derived.due if d.beneficiary}
    )
    moves, corrections, after, wanted = _dues_reconcile(derivations, by_cause, referrers, now)
    # A cause nobody's history calls for any more is corrected to zero, by the member whose
    # event caused it (a cause whose event moved to a member outside this batch waits for it).
    caused_by = {event_id for history in histories.values() for event_id in history.event_ids}
    for cause, held in by_cause.items():
        total = sum(row.recorded.points for row in held)
        if cause in wanted or not total:
            continue
        if any(
            row.recorded.event_id in caused_by
            or (row.recorded.event_id is None and row.member_id in histories)
            for row in held
        ):
            first = held[0].recorded
            no_longer = Due(key=cause, kind=first.kind, points=0, at=now, reason="no longer due",
                            event_id=first.event_id, order_id=first.order_id)  # fmt: skip
            corrections.append(_entry(held[0].member_id, no_longer, -total, len(held), now))
    held_by_retired = _holding_points(survivors)
    return _PointsWrites(
        derivations=derivations,
        accounts=histories.keys()
        | {member for old in held_by_retired for member in (old, survivors[old])}
        | {member for target, held in moves.items() for member in (target, *(row.member_id for row in held))}
        | {entry.member_id for entry in corrections},
        moves=moves,
        corrections=corrections,
        survivors=survivors,
        refunded=_refunded_in_full(histories),
        checkpoints_dropped=set(survivors) | (set() if checkpoint else set(histories)),
        checkpoint=(after, given) if checkpoint else None,
    )


def _dues_reconcile(
    derivations: dict[int, Derivation],
    by_cause: dict[str, list[_Row]],
    referrers: dict[str, int],
    now: datetime,
    held_elsewhere: dict[str, tuple[int, int]] | None = None,
) -> tuple[dict[int, list[_Row]], "list[_Entry]", dict[str, tuple[int, int]], set[str]]:
    """What bringing the ledger to these derivations' entries takes: the rows to move to the
    member each cause belongs to now (a referral bonus to its referrer), the corrections to
    append where a cause's points differ from what is held, each cause's (points, rows) once
    they are written, and the causes wanted. A cause is held as its rows in ``by_cause`` say,
    or as ``held_elsewhere`` says where it names it (a checkpoint's tail)."""
    moves: dict[int, list[_Row]] = defaultdict(list)  # target member -> rows
    corrections: list[_Entry] = []
    after: dict[str, tuple[int, int]] = {}
    wanted: set[str] = set()
    for member_id, derivation in derivations.items():
        for due in derivation.due:
            target = referrers.get(due.beneficiary) if due.beneficiary else member_id
            if target is None:
                continue  # the referrer is not (yet) a member: nobody to credit
            wanted.add(due.key)
            found = by_cause.get(due.key, [])
            moves[target] += [row for row in found if row.member_id != target]
            points, count = sum(row.recorded.points for row in found), len(found)
            if held_elsewhere and due.key in held_elsewhere:
                points, count = held_elsewhere[due.key]
            if difference := due.points - points:
                corrections.append(_entry(target, due, difference, count, now))
                points, count = due.points, count + 1
            after[due.key] = (points, count)
    return moves, corrections, after, wanted


def _advance_prepare(
    histories: dict[int, LoyaltyHistory], program: Program, now: datetime
) -> tuple[_PointsWrites, set[int]]:
    """The writes of ``points_refresh``'s ``new`` members: their derivations resumed from their
    checkpoints with their *new* events (``histories``: only those after what their refresh's
    watermark covered); and the members that could not resume, for the caller to reconcile
    from their whole history (``points_reconcile``).

    A member resumes when their checkpoint was made under the program as it is now, their
    facts (ledger rows staff, tills and referrals gave them, tier grants) are those it was
    made with, every new step is later than the last it covered, and the new orders and
    refunds are in the program's currency. The ledger rows compared are those the new events
    caused and the causes the checkpoint's tail lists: not the member's whole ledger.
    """
    fingerprint = program_fingerprint(program)
    facts = _facts_of(histories.keys())
    resumed: dict[int, tuple[LoyaltyHistory, _StoredCheckpoint]] = {}
    for stored in _checkpoints_of(histories.keys()):
        history = histories[stored.member_id]
        later = stored.at is None or all(
            step > stored.at
            for step in (
                *(o.at for o in history.orders),
                *(e.at for e in history.events),
            )
        )
        if (
            stored.program == fingerprint
            and stored.facts == facts.get(stored.member_id, _NO_FACTS)
            and later
            and all(o.currency == program.currency for o in history.orders)
        ):
            resumed[stored.member_id] = (history, stored)
    derivations: dict[int, Derivation] = {}
    for member_id, (history, stored) in resumed.items():
        try:
            derivations[member_id] = points_derive(
                program=program, orders=history.orders, lines=history.lines, events=history.events,
                recorded=(), now=now, resume=Checkpoint(at=stored.at, state=stored.state, cold=stored.cold),
            )  # fmt: skip
        except Exception:
            logger.warning("points checkpoint of member %s unusable; deriving from the history", member_id)
    if not derivations:
        return _PointsWrites(derivations={}), set(histories)
    tails = {pk: {t[0]: t for t in resumed[pk][1].tail} for pk in derivations}
    rows = _rows_by_event({i for pk in derivations for i in histories[pk].event_ids})
    by_cause: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        if row.recorded.derived:
            by_cause[cause_of(row.recorded)].append(row)
    referrers = _referrers(
        {d.beneficiary for derived in derivations.values() for d in derived.due if d.beneficiary}
    )
    # The tail's causes are held as the checkpoint says (their events are old ones: not read).
    tail_held = {cause: (t[1], t[2]) for tail in tails.values() for cause, t in tail.items()}
    moves, corrections, held, wanted = _dues_reconcile(derivations, by_cause, referrers, now, tail_held)
    for member_id, tail in tails.items():
        # The tail's causes no longer due (a refund took the lot that was to expire) go to zero.
        for cause, (_, points, count, kind, event_id, order_id) in tail.items():
            if cause not in wanted and points:
                gone = Due(key=cause, kind=Kind(kind), points=0, at=now, reason="no longer due",
                           event_id=event_id, order_id=order_id)  # fmt: skip
                corrections.append(_entry(member_id, gone, -points, count, now))
    refunded = [order_id for d in derivations.values() for order_id in sorted(d.refunded_in_full)]
    accounts = (
        derivations.keys()
        | {
            member
            for target, found in moves.items()
            for member in (target, *(row.member_id for row in found))
        }
        | {entry.member_id for entry in corrections}
    )
    writes = _PointsWrites(
        derivations=derivations, accounts=accounts, moves=moves, corrections=corrections, refunded=refunded,
        checkpoint=(held, facts), metric="resumed",
    )  # fmt: skip
    return writes, set(histories) - derivations.keys()


@dataclass(frozen=True, slots=True)
class _StoredCheckpoint:
    """A member's ``PointsCheckpoint`` as ``_advance_prepare`` reads it."""

    member_id: int
    at: datetime | None
    state: bytes
    cold: bytes | None
    program: str
    facts: str
    tail: list[list]


_CHECKPOINTS_OF = (
    "SELECT member_id, at, state, cold, program, facts, tail FROM members_pointscheckpoint "
    "WHERE member_id = ANY(%b::bigint[])"
)


def _checkpoints_of(member_ids: Iterable[int]) -> list[_StoredCheckpoint]:
    """These members' checkpoints, in one statement bound in binary: the ORM's ``IN`` list of a
    batch's ids was parsed and planned afresh at every refresh, and each row built as a model."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_CHECKPOINTS_OF, [sorted(member_ids)])
        return [
            _StoredCheckpoint(member_id, at, bytes(state), None if cold is None else bytes(cold), program, facts,
                              orjson.loads(tail))
            for member_id, at, state, cold, program, facts, tail in cursor.fetchall()
        ]  # fmt: skip


#: A member with no facts (``_facts_of``).
_NO_FACTS = "0:0:0:0"


def program_fingerprint(program: Program) -> str:
    """The program's every setting, hashed: a checkpoint made under another program is stale."""

    def canonical(value: object) -> object:
        if isinstance(value, set | frozenset):
            return sorted(value, key=str)
        return str(value)  # Decimal, datetime, ZoneInfo, enums

    text = json.dumps(asdict(program), default=canonical, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


_FACTS_OF = f"""
SELECT m.id, (SELECT count(*) || ':' || coalesce(sum(e.id), 0) FROM members_pointsentry AS e
              WHERE e.member_id = m.id AND (NOT e.derived OR e.cause_key::text LIKE 'bonus:referred:%%')),
             (SELECT count(*) || ':' || coalesce(sum(g.id), 0) FROM {TierGrant._meta.db_table} AS g
              WHERE g.member_id = m.id OR g.granted_to_id = m.id)
FROM unnest(%b::bigint[]) AS m(id)
"""  # noqa: S608 - the model's table


def _facts_of(member_ids: Iterable[int]) -> dict[int, str]:
    """What each member's derivation takes as given, as a fingerprint: the count and id sum of
    their ledger rows staff, tills or referrals gave them (index ``points_facts_of_member``) and
    of the tier grants they hold or were granted. Rows move only with a merge or split, so a
    fingerprint that stands means the facts do."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_FACTS_OF, [sorted(member_ids)])
        return {pk: f"{entries}:{grants}" for pk, entries, grants in cursor.fetchall()}


_RECORDED_BY_EVENT = """
SELECT p.id, p.member_id, p.kind, p.points, p.key, p.cause_key, p.derived, p.event_id, p.order_id,
       p.at, p.available_at, p.expires_at
FROM unnest(%b::bigint[]) AS c(id)
CROSS JOIN LATERAL (SELECT * FROM members_pointsentry AS e WHERE e.event_id = c.id OFFSET 0) AS p
"""


def _rows_by_event(event_ids: Iterable[int]) -> list[_Row]:
    """The ledger rows these events caused, whoever holds them."""
    return _rows_read(_RECORDED_BY_EVENT, [sorted(set(event_ids))])


def _checkpoints_write(
    derivations: dict[int, Derivation],
    program: Program,
    held: dict[str, tuple[int, int]],
    *,
    facts: dict[int, str],
) -> None:
    """Keep where each derivation stood after its last step, with the causes time called for
    after it (``held``: the points and rows the ledger holds for each cause now) and the
    facts it was derived with (``_facts_of``, read before this reconciliation wrote)."""
    fingerprint = program_fingerprint(program)
    rows = []
    for member_id, derivation in derivations.items():
        if derivation.checkpoint is None:
            continue
        tail = [
            [due.key, *held.get(due.key, (due.points, 1)), str(due.kind), due.event_id, due.order_id]
            for due in derivation.due[derivation.tail_from :]
        ]
        checkpoint = derivation.checkpoint
        # A cold part the derivation did not write again is left as stored (NULL: keep it).
        rows.append((member_id, checkpoint.at, checkpoint.state, checkpoint.cold if checkpoint.cold_written else None,
                     fingerprint, facts.get(member_id, _NO_FACTS), json.dumps(tail)))  # fmt: skip
    if not rows:
        return
    with binary_parameters_cursor() as cursor:
        cursor.execute(_UPSERT_CHECKPOINTS, [list(column) for column in zip(*rows, strict=True)])


_UPSERT_CHECKPOINTS = (
    "INSERT INTO members_pointscheckpoint AS c (member_id, at, state, cold, program, facts, tail, written_at) "
    "SELECT v.m, v.at, v.s, v.c, v.p, v.f, v.t::jsonb, now() "
    "FROM unnest(%b::bigint[], %b::timestamptz[], %b::bytea[], %b::bytea[], %b::text[], %b::text[], %b::text[]) "
    "AS v(m, at, s, c, p, f, t) "
    # The cold part kept as stored is not written again (nor its TOAST copy: the value stays).
    "ON CONFLICT (member_id) DO UPDATE SET at = EXCLUDED.at, state = EXCLUDED.state, "
    "cold = coalesce(EXCLUDED.cold, c.cold), program = EXCLUDED.program, "
    "facts = EXCLUDED.facts, tail = EXCLUDED.tail, written_at = now()"
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A derived ledger row to append (the columns ``_INSERT_ENTRIES`` writes)."""

    member_id: int
    kind: str
    points: int
    key: str
    cause_key: str
    reason: str
    event_id: int | None
    order_id: str
    at: datetime
    available_at: datetime | None
    expires_at: datetime | None


def _entry(member_id: int, due: Due, points: int, already: int, now: datetime) -> _Entry:
    """A ledger row bringing cause ``due.key`` to ``due.points``: the first under the cause's
    own key, later ones (corrections) under ``<key>#<n>``."""
    corrected = already > 0
    return _Entry(
        member_id=member_id,
        kind=str(due.kind),
        points=points,
        key=f"{due.key}#{already + 1}" if corrected else due.key,
        cause_key=due.key,
        reason=(f"recomputed: {due.reason}" if corrected else due.reason)[:500],
        event_id=due.event_id,
        order_id=due.order_id,
        at=now if corrected else due.at,
        available_at=due.available_at,
        expires_at=due.expires_at,
    )


# The refresh writes a few hundred members' rows per statement, parameters as binary arrays
# (Django's bulk_create built and quoted a placeholder per value: most of a reconciliation).
_INSERT_ENTRIES = (
    "INSERT INTO members_pointsentry (member_id, kind, points, key, cause_key, reason, derived, event_id, "
    "order_id, channel, staff_user_id, at, available_at, expires_at, created_at) "
    "SELECT v.m, v.k, v.p, v.key, v.ck, v.r, true, v.e, v.o, '', NULL, v.at, v.av, v.ex, now() "
    "FROM unnest(%b::bigint[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::bigint[], "
    "%b::text[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[]) "
    "AS v(m, k, p, key, ck, r, e, o, at, av, ex)"
)


def _entries_insert(entries: list[_Entry]) -> None:
    """Append these rows in this order, in one statement (the balance trigger, per statement,
    adds them to their accounts)."""
    if not entries:
        return
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _INSERT_ENTRIES,
            [[getattr(e, name) for e in entries] for name in _Entry.__slots__],
        )


def _referrers(user_ids: set[str]) -> dict[str, int]:
    """The active member holding each referrer's user id, where there is exactly one."""
    found: dict[str, int] = {}
    for user_id in user_ids:
        try:
            values = identifier_lookup_values(IdentifierType.USER_ID, user_id)
        except (InvalidIdentifier, BlockedIdentifier):
            continue
        holders = members_holding(type_=IdentifierType.USER_ID, values=values)
        active = set(
            Member.objects.filter(id__in=holders, status=Member.Status.ACTIVE).values_list("id", flat=True)
        )
        if len(active) == 1:
            found[user_id] = active.pop()
    return found


def _rows_move(moves: dict[int, list[_Row]]) -> None:
    """Move these rows to their target members. A row another refresh moved meanwhile stays
    where it went: its account is not among those this one locked (``_accounts_lock``), and
    the member it left is marked to be refreshed again by whatever moved it."""
    moved = [(row.id, row.member_id, target) for target, rows in moves.items() for row in rows]
    if not moved:
        return
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            "UPDATE members_pointsentry AS e SET member_id = m.target "
            "FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[]) AS m(id, source, target) "
            "WHERE e.id = m.id AND e.member_id = m.source",
            [list(column) for column in zip(*moved, strict=True)],
        )


#: Lock points accounts one row after another in member-id order, creating those missing (as
#: the ledger trigger would, with the program's balance policy) and changing none: ``DO UPDATE
#: ... WHERE false`` locks a row it finds without writing it. Creating them here too matters:
#: two transactions inserting one member's account wait on each other like on a row lock.
_LOCK_ACCOUNTS = (
    "INSERT INTO members_pointsaccount AS account "
    "(member_id, balance, negative_allowed, tier, next_expiry_points, updated_at) "
    "SELECT m.id, 0, COALESCE((SELECT negative_balance = 'allow' FROM members_loyaltyprogram "
    "WHERE key = 'default'), true), '', 0, now() "
    "FROM unnest(%b::bigint[]) AS m(id) ORDER BY m.id "
    "ON CONFLICT (member_id) DO UPDATE SET balance = account.balance WHERE false"
)


def _accounts_lock(member_ids: Iterable[int]) -> None:
    """Hold these members' points accounts (created if missing) until the transaction ends,
    taken in the one global order of account locks: member id. Every writer of the ledger or
    of accounts takes all the accounts it will write here, in one call, before writing any;
    the balance trigger then never waits for an account lock."""
    if keys := sorted(set(member_ids)):
        with binary_parameters_cursor() as cursor:
            cursor.execute(_LOCK_ACCOUNTS, [keys])


# Only an account whose tier, review or expiry changed is rewritten (most refreshes change
# none of it); never the balance: only the ledger trigger writes it.
_UPSERT_ACCOUNTS = (
    "INSERT INTO members_pointsaccount (member_id, balance, negative_allowed, tier, tier_since, recheck_at, "
    "next_expiry_at, next_expiry_points, updated_at) "
    "SELECT v.m, 0, %b, v.t, v.ts, v.r, v.ea, v.ep, now() "
    "FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::bigint[]) "
    "AS v(m, t, ts, r, ea, ep) "
    "ON CONFLICT (member_id) DO UPDATE SET negative_allowed = EXCLUDED.negative_allowed, tier = EXCLUDED.tier, "
    "tier_since = EXCLUDED.tier_since, recheck_at = EXCLUDED.recheck_at, next_expiry_at = EXCLUDED.next_expiry_at, "
    "next_expiry_points = EXCLUDED.next_expiry_points, updated_at = now() "
    "WHERE (members_pointsaccount.negative_allowed, members_pointsaccount.tier, members_pointsaccount.tier_since, "
    "members_pointsaccount.recheck_at, members_pointsaccount.next_expiry_at, members_pointsaccount.next_expiry_points) "
    "IS DISTINCT FROM (EXCLUDED.negative_allowed, EXCLUDED.tier, EXCLUDED.tier_since, EXCLUDED.recheck_at, "
    "EXCLUDED.next_expiry_at, EXCLUDED.next_expiry_points)"
)
_INSERT_TIER_CHANGES = (
    "INSERT INTO members_tierchange (member_id, from_tier, to_tier, at, reason) "
    "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::timestamptz[], %b::text[])"
)


def _accounts_write(derivations: dict[int, Derivation], program: Program) -> None:
    ids = sorted(derivations)
    expiring = [derivations[pk].next_expiry for pk in ids]
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _UPSERT_ACCOUNTS,
            [
                program.negative_balance == NegativeBalance.ALLOW,
                ids,
                [derivations[pk].tier for pk in ids],
                [derivations[pk].tier_since for pk in ids],
                [derivations[pk].recheck_at for pk in ids],
                [e[0] if e else None for e in expiring],
                [e[1] if e else 0 for e in expiring],
            ],
        )


def _tier_changes_write(derivations: dict[int, Derivation]) -> None:
    rows_delete(TierChange, column="member", keys=derivations)
    changes = [(pk, c) for pk, d in derivations.items() for c in d.tier_changes]
    if changes:
        with binary_parameters_cursor() as cursor:
            cursor.execute(
                _INSERT_TIER_CHANGES,
                [
                    [pk for pk, _ in changes],
                    [c.from_tier for _, c in changes],
                    [c.to_tier for _, c in changes],
                    [c.at for _, c in changes],
                    [c.reason[:300] for _, c in changes],
                ],
            )


def _refunded_in_full(histories: dict[int, LoyaltyHistory]) -> list[str]:
    """The orders of these histories refunded in full (a coupon used on one can be used again)."""
    return [
        order.order_id
        for history in histories.values()
        for order in orders_of(history.orders).values()
        if order.placed_at is not None and order.refunded >= order.total > 0
    ]


def _survivors_of(member_ids: Iterable[int]) -> dict[int, int]:
    """The survivor of each of these members that a merge absorbed."""
    if not (member_ids := list(member_ids)):
        return {}
    return dict(
        Member.objects.filter(id__in=member_ids, status=Member.Status.MERGED).values_list(
            "id", "merged_into_id"
        )
    )


def _grants_held(member_ids: set[int], survivors: dict[int, int]) -> dict[TierGrant, int]:
    """The tier grants these members hold or were granted, each with the member that holds it
    now: the one it was granted to while they stand, else their survivor (read as the merges
    in ``survivors`` left it), else (an erased member) where it is. A grant whose holder
    changed is moved to it, and the members on both sides marked for a refresh: a split that
    brought back the one it was granted to gives it back."""
    found = list(TierGrant.objects.filter(Q(member_id__in=member_ids) | Q(granted_to_id__in=member_ids)))
    if not found:
        return {}
    states = {
        pk: (status, merged_into)
        for pk, status, merged_into in Member.objects.filter(
            id__in={grant.granted_to_id for grant in found}
        ).values_list("id", "status", "merged_into_id")
    }
    held: dict[TierGrant, int] = {}
    for grant in found:
        status, merged_into = states[grant.granted_to_id]
        if status == Member.Status.ACTIVE:
            held[grant] = grant.granted_to_id
        elif status == Member.Status.MERGED and merged_into is not None:
            held[grant] = merged_into
        else:
            held[grant] = survivors.get(grant.member_id, grant.member_id)
    moved = {grant: holder for grant, holder in held.items() if holder != grant.member_id}
    if moved:
        for grant, holder in moved.items():
            TierGrant.objects.filter(pk=grant.pk).update(member_id=holder)
        # The members it left and those it went to, unless this refresh derives them now.
        members_mark_dirty(member_ids={m for g, h in moved.items() for m in (g.member_id, h)} - member_ids)
    return {grant: holder for grant, holder in held.items() if holder in member_ids}


def _holding_points(survivors: dict[int, int]) -> set[int]:
    """Which of these absorbed members still hold ledger rows or an account."""
    if not survivors:
        return set()
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            "SELECT m.id FROM unnest(%b::bigint[]) AS m(id) "
            "WHERE EXISTS (SELECT 1 FROM members_pointsaccount AS a WHERE a.member_id = m.id) "
            "OR EXISTS (SELECT 1 FROM members_pointsentry AS e WHERE e.member_id = m.id)",
            [sorted(survivors)],
        )
        return {row[0] for row in cursor.fetchall()}


def _retired_move(survivors: dict[int, int]) -> None:
    """Everything loyalty of members absorbed by a merge goes to their survivor (ledger rows,
    coupons), and the survivor is marked for a refresh to reconcile with it. The caller holds
    the accounts of those holding points and of their survivors (``_holding_points``)."""
    if not survivors:
        return
    with binary_parameters_cursor() as cursor:
        arguments = [list(survivors), list(survivors.values())]
        cursor.execute(
            "UPDATE members_pointsentry AS e SET member_id = m.survivor "
            "FROM unnest(%b::bigint[], %b::bigint[]) AS m(id, survivor) WHERE e.member_id = m.id",
            arguments,
        )
        moved = cursor.rowcount
        cursor.execute(
            "UPDATE members_coupon AS c SET member_id = m.survivor "
            "FROM unnest(%b::bigint[], %b::bigint[]) AS m(id, survivor) WHERE c.member_id = m.id "
            "AND NOT EXISTS (SELECT 1 FROM members_coupon AS o WHERE o.member_id = m.survivor AND o.campaign_id = c.campaign_id)",
            arguments,
        )
        moved += cursor.rowcount
        cursor.execute(
            f"UPDATE {TierGrant._meta.db_table} AS g SET member_id = m.survivor "  # noqa: S608 - the model's table
            "FROM unnest(%b::bigint[], %b::bigint[]) AS m(id, survivor) WHERE g.member_id = m.id",
            arguments,
        )
        moved += cursor.rowcount
    retired_ids = list(survivors)
    TierChange.objects.filter(member_id__in=retired_ids).delete()
    PointsAccount.objects.filter(member_id__in=retired_ids, balance=0).delete()
    if moved:
        members_mark_dirty(member_ids=survivors.values())


# Staff and till commands -------------------------------------------------------------------


class PointsRefused(Exception):
    """A points command that cannot be done: ``field`` and ``reason`` say why; ``status`` is
    the HTTP status it maps to."""

    def __init__(self, field: str, reason: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.status = field, reason, status


def points_adjust(
    *, member: Member, points: int, reason: str, idempotency_key: str, user: User | AnonymousUser
) -> tuple[PointsEntry, bool]:
    """A staff adjustment (positive or negative) of an active member's points; returns the
    row and whether it was written now (False: this idempotency key was done before)."""
    if points == 0:
        raise PointsRefused("points", "must not be 0")
    if abs(points) > MAX_POINTS_MOVE:
        raise PointsRefused("points", f"at most {MAX_POINTS_MOVE:,} either way", status=400)
    if not reason.strip():
        raise PointsRefused("reason", "is required")
    return _command(
        member=member,
        kind=Kind.ADJUST,
        points=points,
        reason=reason.strip(),
        key=f"adjust:{idempotency_key}",
        user=user,
        order_id="",
        channel="",
        floor="balance",
    )


def points_redeem(
    *,
    member: Member,
    points: int,
    order_id: str,
    channel: str,
    idempotency_key: str,
    user: User | AnonymousUser,
) -> tuple[PointsEntry, bool]:
    """Spend an active member's available points on an order (a till or a web checkout)."""
    if points <= 0:
        raise PointsRefused("points", "must be a positive number of points to spend")
    if points > MAX_POINTS_MOVE:
        raise PointsRefused("points", f"at most {MAX_POINTS_MOVE:,}", status=400)
    return _command(
        member=member,
        kind=Kind.REDEEM,
        points=-points,
        reason=f"spent on order {order_id} ({channel})",
        key=f"redeem:{idempotency_key}",
        user=user,
        order_id=order_id,
        channel=channel,
        floor="available",
    )


def _command(
    *,
    member: Member,
    kind: Kind,
    points: int,
    reason: str,
    key: str,
    user: User | AnonymousUser,
    order_id: str,
    channel: str,
    floor: str,
) -> tuple[PointsEntry, bool]:
    with transaction.atomic():
        member_refresh_locks({member.pk})
        # Held before the balance is read: a refresh moving rows into or out of this account
        # (a merge, a referral) waits, so the floor checked below is the one written against.
        _accounts_lock({member.pk})
        done = PointsEntry.objects.filter(key=key).first()
        if done is not None:
            if (done.member_id, done.points, done.kind, done.order_id) != (member.pk, points, kind, order_id):
                raise PointsRefused("Idempotency-Key", "was already used for a different request", status=409)
            return done, False
        now = timezone.now()
        if points < 0:
            if floor == "available":
                spendable = points_available(member_id=member.pk, now=now)
                what = "available (spendable now)"
            else:
                spendable = (
                    PointsAccount.objects.filter(member_id=member.pk)
                    .values_list("balance", flat=True)
                    .first()
                    or 0
                )
                what = "in the balance"
            if -points > spendable:
                raise PointsRefused("points", f"only {max(spendable, 0)} points are {what}", status=409)
        try:
            with transaction.atomic():
                entry = PointsEntry.objects.create(
                    member=member,
                    kind=kind,
                    points=points,
                    key=key,
                    cause_key=key,
                    reason=reason[:500],
                    derived=False,
                    order_id=order_id,
                    channel=channel,
                    staff_user=user if isinstance(user, User) else None,
                    at=now,
                )
        except IntegrityError as error:  # the same key, written meanwhile for another member
            raise PointsRefused(
                "Idempotency-Key", "was already used for a different request", status=409
            ) from error
        # Lots, expiry dates and tiers follow from the new fact at the next refresh.
        members_mark_dirty(member_ids=[member.pk])
        transaction.on_commit(process_pending_enqueue)
    return entry, True


def points_recheck_due(*, now: datetime | None = None) -> int:
    """Mark for a refresh the members whose points change with time alone by now (a lot
    expired, a tier review fell due); returns how many. Run by beat; the refresh does the rest
    and moves ``recheck_at`` on, so a member is marked once per change."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT member_id FROM {PointsAccount._meta.db_table} WHERE recheck_at <= %b",  # noqa: S608
            [now or timezone.now()],
        )
        due = [row[0] for row in cursor.fetchall()]
    return members_mark_dirty(member_ids=due, unless_marked=True)


def program_policy_apply(*, program: LoyaltyProgram) -> None:
    """Hold every account to the program's balance policy. Accounts already in debt keep
    being allowed it (forbidding debt cannot undo it; their next earnings pay it back)."""
    forbid = program.negative_balance == NegativeBalance.FORBID
    with transaction.atomic():
        # Every account, locked in the one order first: two updates in table order would take
        # them in another order than a refresh does.
        list(PointsAccount.objects.order_by("member_id").select_for_update().values_list("member_id"))
        PointsAccount.objects.filter(balance__gte=0).update(negative_allowed=not forbid)
        PointsAccount.objects.filter(balance__lt=0).update(negative_allowed=True)


# Onboarding (members.imports) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpeningBalance:
    """A member's points carried over from a legacy programme: one ledger row, a fact (not
    derived), under its own idempotency key."""

    member_id: int
    points: int
    at: datetime
    key: str
    reason: str


_INSERT_OPENINGS = (
    "INSERT INTO members_pointsentry (member_id, kind, points, key, cause_key, reason, derived, order_id, "
    "channel, at, created_at) "
    "SELECT o.m, 'adjust', o.p, o.k, o.k, o.r, false, '', '', o.at, now() "
    "FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::timestamptz[]) AS o(m, p, k, r, at) "
    "ORDER BY o.m ON CONFLICT (key) DO NOTHING RETURNING key"
)


def points_open(*, balances: list[OpeningBalance]) -> set[str]:
    """Write these opening balances (positive, at most one per key); returns the keys written
    now (a key already in the ledger writes nothing: an import run twice adds nothing). Takes
    the members' refresh locks and their accounts in the one global order, as every writer of
    points does; the members are marked for a refresh, which derives their lots and tiers with
    the balance as a fact."""
    for balance in balances:
        if not 0 < balance.points <= MAX_POINTS_MOVE:
            raise PointsRefused("points", f"an opening balance is between 1 and {MAX_POINTS_MOVE:,}")
    if not balances:
        return set()
    ids = {b.member_id for b in balances}
    with transaction.atomic():
        member_refresh_locks(ids)
        _accounts_lock(ids)
        with binary_parameters_cursor() as cursor:
            cursor.execute(
                _INSERT_OPENINGS,
                [
                    [b.member_id for b in balances],
                    [b.points for b in balances],
                    [b.key for b in balances],
                    [b.reason[:500] for b in balances],
                    [b.at for b in balances],
                ],
            )
            written = {row[0] for row in cursor.fetchall()}
        members_mark_dirty(member_ids=[b.member_id for b in balances if b.key in written])
    return written


@dataclass(frozen=True, slots=True)
class TierReached:
    member_id: int
    tier: str
    at: datetime
    key: str
    reason: str


_INSERT_GRANTS = (
    f"INSERT INTO {TierGrant._meta.db_table} (member_id, granted_to_id, tier, at, key, reason, created_at) "  # noqa: S608 - the model's table
    "SELECT g.m, g.m, g.t, g.at, g.k, g.r, now() "
    "FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::text[], %b::text[]) AS g(m, t, at, k, r) "
    "ON CONFLICT (key) DO NOTHING RETURNING key"
)


def tiers_grant(*, grants: list[TierReached]) -> set[str]:
    """Record tiers members reached elsewhere; returns the keys recorded now (a key recorded
    before records nothing). A tier the programme does not have raises ``PointsRefused``. The
    members are marked for a refresh, which derives their tier from the grant on."""
    known = {tier.key for tier in program_load().tiers}
    for grant in grants:
        if grant.tier not in known:
            raise PointsRefused(
                "tier", f"{grant.tier!r} is not a tier of the programme ({', '.join(sorted(known))})"
            )
    if not grants:
        return set()
    with transaction.atomic(), binary_parameters_cursor() as cursor:
        cursor.execute(
            _INSERT_GRANTS,
            [
                [g.member_id for g in grants],
                [g.tier for g in grants],
                [g.at for g in grants],
                [g.key for g in grants],
                [g.reason[:300] for g in grants],
            ],
        )
        written = {row[0] for row in cursor.fetchall()}
        members_mark_dirty(member_ids=[g.member_id for g in grants if g.key in written])
    return written
