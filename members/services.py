"""Writes of the members app: refresh what is computed from a member's events."""

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.module_loading import import_string

from cdp.db import binary_parameters_cursor, rows_delete
from cdp.metrics import REFRESH_MEMBERS, REFRESH_SECONDS
from cdp.retries import database_error_is_transient, transient_retry
from cdp.vault import trait_lookup, trait_seal
from events.commerce import ORDER_COMPLETED, ORDER_EVENTS
from members.aggregates import CHANNELS, Order, OrderEvent, aggregates_of, order_event, orders_of
from members.consent.services import ConsentSource, consent_refresh
from members.consent.statements import CONSENT_EVENT, CONSENT_TRAIT, ConsentFact
from members.groups import GroupCall, groups_refresh
from members.locks import member_refresh_locks
from members.loyalty.points import LOYALTY_EVENTS, LoyaltyEvent
from members.loyalty.services import LoyaltyHistory, order_lines, points_reconcile
from members.marks import member_changes_accept
from members.models import (
    ORDER_FIELDS,
    DirtyMark,
    GroupMembership,
    Member,
    MemberAggregate,
    MemberOrder,
    MemberTrait,
    ParkedMember,
)
from members.orders import order_owners_refresh
from members.parking import member_park
from members.segments.evaluate import memberships_refresh
from members.segments.rules.interpret import EventFact, MemberFacts
from members.segments.rules.syntax import AGGREGATES
from members.segments.selectors import definitions_load
from members.segments.webhooks.services import webhooks_nudge
from members.traits import GROUP_CALL, TraitObservation, latest_traits, traits_of_event

logger = logging.getLogger(__name__)


def members_refresh_batch(*, batch_size: int | None = None) -> int:
    """Take identity's "members changed" rows into the refresh queue (``members.marks``), then
    claim a batch of dirty marks and refresh their members, in one transaction; returns how
    many members it took out of the queue (refreshed, or parked when they failed; 0: nothing
    waiting, or every mark is being refreshed). The pipeline's follow-up and the members
    refresh task run it.

    Runs after resolution committed, in its own transactions, so resolving the next batch never
    waits on computing the last one. Marks are claimed ``FOR UPDATE SKIP LOCKED`` and deleted
    by id: a mark added meanwhile survives for the next refresh. The marks of parked members
    (``members.parking``) are not claimed.

    A transient database error is retried (``cdp.retries``), and raised when it persists (the
    marks stay). Any other failure bisects the batch: its members are refreshed again in
    halves, each in its own transaction, down to the single members that fail, which are
    parked; the happy path pays nothing for it.
    """
    size = batch_size or settings.MEMBER_REFRESH_BATCH_SIZE
    began = time.perf_counter()
    transient_retry(member_changes_accept)
    claimed: list[int] = []
    try:
        done = transient_retry(partial(_refresh, partial(_marks_claim, size), claimed))
    except Exception as exc:
        if database_error_is_transient(exc) or not claimed:
            raise
        done = _refresh_bisect(claimed, exc)
    if done:
        elapsed = time.perf_counter() - began
        REFRESH_SECONDS.observe(elapsed)
        REFRESH_MEMBERS.inc(done)
        logger.info("member refresh: %d members in %.3f s", done, elapsed, extra={"members": done})
    return done


def _refresh(claim: Callable[[], list[tuple[int, int]]], claimed: list[int]) -> int:
    """One transaction: claim marks (id, member), refresh their members, delete the marks;
    ``claimed`` receives the members' ids (to bisect on failure)."""
    with transaction.atomic():
        marks = claim()
        if not marks:
            return 0
        member_ids = {member_id for _, member_id in marks}
        claimed[:] = sorted(member_ids)
        claimed_marks = {mark_id for mark_id, _ in marks} | _later_marks_claim(member_ids)
        member_refresh_locks(member_ids)
        members_recompute(member_ids)
        rows_delete(DirtyMark, column="id", keys=claimed_marks)
    return len(member_ids)


def _marks_claim(size: int) -> list[tuple[int, int]]:
    """The oldest ``size`` marks no other refresh holds, but for parked members'."""
    parked = ParkedMember.objects.filter(member_id=OuterRef("member_id"), replayed_at__isnull=True)
    return list(
        DirtyMark.objects.filter(~Exists(parked))
        .order_by("id")
        .select_for_update(skip_locked=True)
        .values_list("id", "member_id")[:size]
    )


def _refresh_bisect(member_ids: list[int], error: Exception) -> int:
    """Refresh these members (whose batch failed with ``error``) in halves, down to the single
    members that fail, and park those; returns how many left the queue. A member whose marks
    another refresh took meanwhile is that refresh's."""
    done = 0
    parts: list[tuple[list[int], Exception | None]] = [(member_ids, error)]  # a stack
    while parts:
        ids, known = parts.pop()
        if known is None:
            try:
                done += transient_retry(partial(_refresh, partial(_marks_of, ids), []))
                continue
            except Exception as exc:
                if database_error_is_transient(exc):
                    raise
                known = exc
        if len(ids) == 1:
            done += transient_retry(partial(member_park, member_id=ids[0], error=known))
            continue
        middle = len(ids) // 2
        parts += [(ids[middle:], None), (ids[:middle], None)]
    return done


def _later_marks_claim(member_ids: set[int]) -> set[int]:
    """The other marks already made for these members (not held by another refresh).

    The recompute reads each member's events as committed after these marks were, so it
    answers them too: under a backlog, a member marked by several resolution batches is
    recomputed once instead of once per batch.
    """
    return {mark_id for mark_id, _ in _marks_of(member_ids)}


def _marks_of(member_ids: Collection[int]) -> list[tuple[int, int]]:
    """These members' marks (id, member) no other refresh holds, locked."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_MARKS_OF_MEMBERS, [sorted(member_ids)])
        return cursor.fetchall()


def members_refresh() -> int:
    """Refresh every member marked dirty; returns how many refreshes ran."""
    refreshed = 0
    while done := members_refresh_batch():
        refreshed += done
    return refreshed


def members_refresh_pending(*, time_budget: float = 30.0) -> tuple[int, bool]:
    """Refresh batches until nothing is waiting or the time budget is spent; returns (members
    taken out of the queue, whether work may remain)."""
    deadline = time.monotonic() + time_budget
    refreshed = 0
    while done := members_refresh_batch():
        refreshed += done
        if time.monotonic() >= deadline:
            return refreshed, True
    return refreshed, False


def members_rebuild(
    *, batch_size: int = 1000, points_only: bool = False, progress: Callable[[int], None] = lambda done: None
) -> int:
    """Recompute every active member from the event log, a batch per transaction; returns how
    many. Erased members are not recomputed: nothing brings them back. What the incremental refresh keeps current, computed again from scratch.
    ``points_only``: just the points ledger and tiers (after an earning rule was edited),
    reading only the events that earn."""
    recompute = points_recompute if points_only else members_recompute
    done, after = 0, 0
    while True:
        with transaction.atomic():
            batch = set(
                Member.objects.filter(status=Member.Status.ACTIVE, id__gt=after)
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            if not batch:
                break
            member_refresh_locks(batch)
            recompute(batch)
        after = max(batch)
        done += len(batch)
        progress(done)
    with transaction.atomic():
        # Absorbed members keep nothing; erased ones keep their figures (members_recompute).
        retired = Member.objects.filter(status=Member.Status.MERGED).values("id")
        for model in (MemberTrait, MemberOrder, MemberAggregate, GroupMembership):
            model.objects.filter(member_id__in=retired).delete()
    return done


def members_recompute(member_ids: set[int]) -> None:
    """Everything computed from these members' events, from their events as they are now:
    traits, consent statements (``members.consent``), groups, orders (those each member owns:
    ``members.orders``) and figures, points and tier, then tags and segments.

    A member absorbed by a merge keeps nothing: its computed state lives on the survivor. An
    erased member (``members.privacy``) is left as its erasure left it: its figures, orders
    and points stay, computed once from what its events were, and nothing is recomputed.
    """
    erased = _erased_of(member_ids)
    member_ids = member_ids - erased
    active = _active_of(member_ids)
    definitions = definitions_load()
    events = _events_of(active, properties_of=definitions.property_events | {CONSENT_EVENT})
    order_events = order_owners_refresh(order_events=_order_events_of(events))
    traits, consent_sources = _traits_write(active, events)
    consents = consent_refresh(member_ids=member_ids, active=active, sources=consent_sources)
    groups_refresh(
        member_ids=member_ids,
        calls=[
            GroupCall(e.member_id, e.group_id, e.at) for e in events if e.type == GROUP_CALL and e.group_id
        ],
    )
    figures = _aggregates_write(active, events, order_events)
    retired = member_ids - active
    points_reconcile(histories=_loyalty_histories(active, events, order_events), retired=retired)
    for model in (MemberTrait, MemberOrder, MemberAggregate):
        rows_delete(model, column="member", keys=retired)
    changed = memberships_refresh(
        members=_facts_of(active, events, traits, figures, consents), retired=retired, now=timezone.now(),
        definitions=definitions,
    )  # fmt: skip
    webhooks_nudge(changed)
    for hook in refresh_hooks():
        hook(member_ids)


@cache
def refresh_hooks() -> list[Callable[[set[int]], None]]:
    """What else wants to know which members a refresh recomputed (``MEMBERS_REFRESH_HOOKS``,
    dotted paths: the KPI rollups' queue). Called in the refresh's transaction, after its
    writes; named in settings so that members never imports the apps above it."""
    return [import_string(path) for path in settings.MEMBERS_REFRESH_HOOKS]


def _active_of(member_ids: set[int]) -> set[int]:
    """Which of these members are active (one index probe per id: a Django ``IN`` list of a
    few hundred literals was parsed and planned afresh at every refresh)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_ACTIVE_OF, [sorted(member_ids), Member.Status.ACTIVE.value])
        return {row[0] for row in cursor.fetchall()}


def _erased_of(member_ids: set[int]) -> set[int]:
    """Which of these members are erased (one index probe per id)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_ACTIVE_OF, [sorted(member_ids), Member.Status.ERASED.value])
        return {row[0] for row in cursor.fetchall()}


def points_recompute(member_ids: set[int]) -> None:
    """The points ledgers and tiers of these active members, from the events that earn."""
    events = _events_of(member_ids, only=ORDER_EVENTS | LOYALTY_EVENTS)
    order_events = order_owners_refresh(order_events=_order_events_of(events))
    points_reconcile(histories=_loyalty_histories(member_ids, events, order_events))


@dataclass(frozen=True, slots=True)
class _MemberEvent:
    member_id: int
    event_id: int
    name: str
    channel: str
    store_code: str
    at: datetime
    message_id: str
    source_id: int
    type: str  # the Segment call
    group_id: str  # a group call's group
    traits: dict | None  # None: states none
    context_traits: object
    properties: dict | None  # only for order and loyalty events, and those rules filter on


# One query for everything the refresh reads. The lateral join walks each member's events by
# index whatever the planner believes about table sizes (stale statistics must not turn a
# refresh of 500 members into a scan of every event).
_EVENTS_OF_MEMBERS = """
SELECT m.id, e.id, e.event, e.channel, e.store_code, e.timestamp, e.message_id, e.source_id, e.type, e.group_id,
       CASE WHEN e.traits <> '{}'::jsonb THEN e.traits END, e.context -> 'traits',
       CASE WHEN e.event = ANY(%b::text[]) THEN e.properties END
FROM unnest(%b::bigint[]) AS m(id)
CROSS JOIN LATERAL (
    SELECT ev.* FROM identity_eventresolution AS r
    JOIN events_event AS ev ON ev.id = r.event_id
    WHERE r.member_id = m.id AND (%b::text[] IS NULL OR ev.event = ANY(%b::text[]))
    OFFSET 0  -- keeps the subquery lateral (not flattened into a join): one index walk per member
) AS e
"""


def _events_of(
    member_ids: set[int], *, only: frozenset[str] | None = None, properties_of: frozenset[str] = frozenset()
) -> list[_MemberEvent]:
    """The events of these members (only those named ``only``, if given), in one query, with
    the properties of order and loyalty events and of those named ``properties_of``."""
    if not member_ids:
        return []
    names = sorted(only) if only is not None else None
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _EVENTS_OF_MEMBERS,
            [sorted(ORDER_EVENTS | LOYALTY_EVENTS | properties_of), sorted(member_ids), names, names],
        )
        # Django reads jsonb as text (its JSONField decodes); so does this raw query.
        return [
            _MemberEvent(*row[:10], *(None if v is None else orjson.loads(v) for v in row[10:]))
            for row in cursor.fetchall()
        ]


def _traits_write(
    member_ids: set[int], events: list[_MemberEvent]
) -> tuple[dict[int, dict[str, object]], list[ConsentSource]]:
    """Every trait of these members, from all their events: exact after merges and splits.
    Returns each member's traits (key: latest value), and the events that may state consent
    (a consent trait, the legacy one, or a ``Consent Updated`` event) for ``members.consent``."""
    observations: dict[int, list[TraitObservation]] = defaultdict(list)
    consent: list[ConsentSource] = []
    legacy = settings.MARKETING_CONSENT_TRAIT
    for e in events:
        stating = e.name == CONSENT_EVENT and e.type == "track" and e.properties is not None
        if not stating and e.traits is None and not isinstance(e.context_traits, dict):
            continue
        stated = traits_of_event(
            e.traits or {}, {"traits": e.context_traits} if isinstance(e.context_traits, dict) else {}, e.type
        )
        if stating or CONSENT_TRAIT in stated or legacy in stated:
            consent.append(ConsentSource(e.member_id, e.event_id, stated, e.properties if stating else None))
        observations[e.member_id] += [
            TraitObservation(key[:255], value, e.at, e.channel, e.message_id, e.source_id, e.event_id)
            for key, value in stated.items()
        ]
    rows = [
        (member_id, o)
        for member_id, found in observations.items()
        for o in latest_traits(found, settings.MEMBER_TRAIT_CHANNEL_PRECEDENCE).values()
    ]
    rows_delete(MemberTrait, column="member", keys=member_ids)
    traits: dict[int, dict[str, object]] = defaultdict(dict)
    for member_id, o in rows:
        traits[member_id][o.key] = o.value
    if rows:
        _sql(
            _INSERT_TRAITS,
            [
                [member_id for member_id, _ in rows],
                [o.key for _, o in rows],
                # None is SQL NULL, as the model's JSONField(null=True) stores it; phones, emails and
                # names are sealed (cdp.vault), names found by their terms' blind indexes.
                [
                    None if o.value is None else orjson.dumps(trait_seal(o.key, o.value)).decode()
                    for _, o in rows
                ],
                [o.observed_at for _, o in rows],
                [o.channel for _, o in rows],
                [o.source_id for _, o in rows],
                [o.event_id for _, o in rows],
                [",".join(trait_lookup(o.key, o.value)) for _, o in rows],
            ],
        )
    return traits, consent


def _order_events_of(events: list[_MemberEvent]) -> dict[int, list[OrderEvent]]:
    found: dict[int, list[OrderEvent]] = defaultdict(list)
    for e in events:
        if e.properties is not None and e.name in ORDER_EVENTS:
            order = order_event(
                event_id=e.event_id, name=e.name, properties=e.properties, at=e.at,
                channel=e.channel, store_code=e.store_code, message_id=e.message_id, source_id=e.source_id,
            )  # fmt: skip
            if order is not None:
                found[e.member_id].append(order)
    return found


def _loyalty_histories(
    member_ids: set[int], events: list[_MemberEvent], order_events: dict[int, list[OrderEvent]]
) -> dict[int, LoyaltyHistory]:
    histories = {
        member_id: LoyaltyHistory(orders=order_events.get(member_id, [])) for member_id in member_ids
    }
    for e in events:
        if e.properties is None:
            continue
        history = histories[e.member_id]
        if e.name == ORDER_COMPLETED:
            history.lines[e.event_id] = order_lines(e.properties)
        elif e.name in LOYALTY_EVENTS:
            referrer = e.properties.get("referrer")
            history.events.append(
                LoyaltyEvent(event_id=e.event_id, name=e.name, at=e.at, message_id=e.message_id,
                             referrer=str(referrer).strip() or None if isinstance(referrer, str | int) else None)
            )  # fmt: skip
    return histories


def _aggregates_write(
    member_ids: set[int], events: list[_MemberEvent], order_events: dict[int, list[OrderEvent]]
) -> dict[int, dict[str, object]]:
    """Orders and figures of these members, from all their events (``members.aggregates``).
    Returns each member's figures as stored (the names rules read: ``rules.syntax.AGGREGATES``)."""
    counts: dict[int, dict[str, int]] = {member_id: defaultdict(int) for member_id in member_ids}
    last_event_at: dict[int, datetime] = {}
    stores: dict[int, set[str]] = defaultdict(set)
    for e in events:
        count = counts[e.member_id]
        count["events"] += 1
        if e.channel in CHANNELS:
            count[e.channel] += 1
        if e.store_code:
            stores[e.member_id].add(e.store_code)
        if e.member_id not in last_event_at or e.at > last_event_at[e.member_id]:
            last_event_at[e.member_id] = e.at
    aggregates: list[list] = []
    orders: list[tuple[int, Order]] = []
    for member_id in sorted(member_ids):
        found = orders_of(order_events.get(member_id, ()))
        figures = aggregates_of(found.values(), settings.CDP_CURRENCY)
        count = counts[member_id]
        aggregates.append([
            member_id, figures.currency, figures.orders, figures.spend, figures.refunded,
            figures.average_order_value, figures.first_purchase_at, figures.last_purchase_at,
            *(figures.by_channel[channel].orders for channel in CHANNELS),
            *(figures.by_channel[channel].spend for channel in CHANNELS),
            figures.orders_in_other_currencies, count["events"],
            *(count[channel] for channel in CHANNELS),
            orjson.dumps(sorted(stores[member_id])).decode(), last_event_at.get(member_id),
        ])  # fmt: skip
        orders += [(member_id, order) for order in found.values()]
    rows_delete(MemberOrder, column="member", keys=member_ids)
    if orders:
        _sql(
            _INSERT_ORDERS,
            [[member_id for member_id, _ in orders]]
            + [[getattr(order, name) for _, order in orders] for name in ORDER_FIELDS],
        )
    if not aggregates:
        return {}
    with binary_parameters_cursor() as cursor:
        cursor.execute(_UPSERT_AGGREGATES, [list(column) for column in zip(*aggregates, strict=True)])
        return {row[0]: dict(zip(AGGREGATES, row[1:], strict=True)) for row in cursor.fetchall()}


def _facts_of(
    member_ids: set[int], events: list[_MemberEvent], traits: dict[int, dict[str, object]],
    figures: dict[int, dict[str, object]], consents: dict[int, tuple[ConsentFact, ...]],
) -> dict[int, MemberFacts]:  # fmt: skip
    """What rules read of each member that the refresh has in hand (``memberships_refresh``
    reads the rest)."""
    seen: dict[int, list[EventFact]] = defaultdict(list)
    for e in events:
        seen[e.member_id].append(EventFact(e.name, e.at, e.channel, e.store_code, e.properties or {}))
    return {
        member_id: MemberFacts(
            member_id, traits=traits.get(member_id, {}), aggregates=figures.get(member_id, {}),
            events=tuple(seen[member_id]), consents=consents.get(member_id, ()),
        )
        for member_id in member_ids
    }  # fmt: skip


def _sql(statement: str, params: list) -> None:
    with binary_parameters_cursor() as cursor:
        cursor.execute(statement, params)


# The refresh writes a few hundred members' rows per statement: parameters go as binary arrays
# through ``unnest`` (Django's bulk_create builds and quotes one placeholder per value, which
# cost more than the recomputation itself). Only model table names are interpolated.
# Each member's marks by index (the lateral subquery with its own locking clause is walked per
# member, never flattened into a join the planner could turn into a scan of the queue).
_MARKS_OF_MEMBERS = (
    "SELECT d.id, k.id FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL "
    f"(SELECT id FROM {DirtyMark._meta.db_table} WHERE member_id = k.id FOR UPDATE SKIP LOCKED) AS d"
)
_ACTIVE_OF = f"SELECT id FROM {Member._meta.db_table} WHERE id = ANY(%b::bigint[]) AND status = %b"
_INSERT_TRAITS = (
    f"INSERT INTO {MemberTrait._meta.db_table} (member_id, key, value, observed_at, channel, source_id, event_id, "
    "lookup) SELECT v.m, v.k, v.val::jsonb, v.at, v.ch, v.s, v.e, string_to_array(v.l, ',') "
    "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::bigint[], %b::bigint[], "
    "%b::text[]) AS v(m, k, val, at, ch, s, e, l)"
)
_INSERT_ORDERS = (
    f"INSERT INTO {MemberOrder._meta.db_table} (member_id, {', '.join(ORDER_FIELDS)}) "
    "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::numeric[], %b::numeric[], "
    "%b::timestamptz[], %b::text[], %b::text[], %b::bigint[], %b::bigint[])"
)
_CHANNEL_COLUMNS = (
    *(f"orders_{channel}" for channel in CHANNELS),
    *(f"spend_{channel}" for channel in CHANNELS),
)
_AGGREGATE_COLUMNS = (
    "member_id", "currency", "orders", "spend", "refunded", "average_order_value",
    "first_purchase_at", "last_purchase_at", *_CHANNEL_COLUMNS, "orders_in_other_currencies",
    "events", *(f"events_{channel}" for channel in CHANNELS), "stores_visited", "last_event_at",
)  # fmt: skip
_AGGREGATE_TYPES = (
    "bigint", "text", "integer", "numeric", "numeric", "numeric", "timestamptz", "timestamptz",
    *("integer" for _ in CHANNELS), *("numeric" for _ in CHANNELS), "integer", "integer",
    *("integer" for _ in CHANNELS), "text", "timestamptz",
)  # fmt: skip
_UPSERT_AGGREGATES = (
    f"INSERT INTO {MemberAggregate._meta.db_table} ({', '.join(_AGGREGATE_COLUMNS)}, computed_at) "
    f"SELECT {', '.join(f'v.c{n}' for n in range(len(_AGGREGATE_COLUMNS) - 2))}, "
    # stores_visited travels as a JSON list: unnest cannot carry an array per row.
    f"ARRAY(SELECT jsonb_array_elements_text(v.c{len(_AGGREGATE_COLUMNS) - 2}::jsonb)), "
    f"v.c{len(_AGGREGATE_COLUMNS) - 1}, now() "
    f"FROM unnest({', '.join(f'%b::{t}[]' for t in _AGGREGATE_TYPES)}) "
    f"AS v({', '.join(f'c{n}' for n in range(len(_AGGREGATE_COLUMNS)))}) "
    "ON CONFLICT (member_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in (*_AGGREGATE_COLUMNS[1:], "computed_at"))
    # As stored (numeric rounding included): what a segment's SQL would read.
    + f" RETURNING member_id, {', '.join(AGGREGATES)}"
)
