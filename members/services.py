"""Writes of the members app: refresh what is computed from a member's events."""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings
from django.db import connection, transaction

from cdp.db import rows_delete
from events.commerce import ORDER_COMPLETED, ORDER_EVENTS
from members.aggregates import CHANNELS, OrderEvent, aggregates_of, order_event, orders_of
from members.locks import member_refresh_locks
from members.loyalty.points import LOYALTY_EVENTS, LoyaltyEvent
from members.loyalty.services import LoyaltyHistory, order_lines, points_move_retired, points_reconcile
from members.models import ORDER_FIELDS, DirtyMark, Member, MemberAggregate, MemberOrder, MemberTrait
from members.traits import TraitObservation, latest_traits, traits_of_event


def members_refresh_batch(*, batch_size: int | None = None) -> int:
    """Claim a batch of dirty marks and refresh their members, in one transaction; returns how
    many members were refreshed (0: nothing waiting, or every mark is being refreshed).

    Runs after resolution committed, in its own transaction, so resolving the next batch never
    waits on computing the last one. Marks are claimed ``FOR UPDATE SKIP LOCKED`` and deleted
    by id: a mark added meanwhile survives for the next refresh.
    """
    size = batch_size or settings.MEMBER_REFRESH_BATCH_SIZE
    with transaction.atomic():
        marks = list(
            DirtyMark.objects.order_by("id")
            .select_for_update(skip_locked=True)
            .values_list("id", "member_id")[:size]
        )
        if not marks:
            return 0
        member_ids = {member_id for _, member_id in marks}
        member_refresh_locks(member_ids)
        members_recompute(member_ids)
        DirtyMark.objects.filter(id__in=[mark_id for mark_id, _ in marks]).delete()
    return len(member_ids)


def members_refresh() -> int:
    """Refresh every member marked dirty; returns how many refreshes ran."""
    refreshed = 0
    while done := members_refresh_batch():
        refreshed += done
    return refreshed


def members_rebuild(
    *, batch_size: int = 1000, points_only: bool = False, progress: Callable[[int], None] = lambda done: None
) -> int:
    """Recompute every active member from the event log, a batch per transaction; returns how
    many. What the incremental refresh keeps current, computed again from scratch.
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
        retired = Member.objects.exclude(status=Member.Status.ACTIVE).values("id")
        for model in (MemberTrait, MemberOrder, MemberAggregate):
            model.objects.filter(member_id__in=retired).delete()
    return done


def members_recompute(member_ids: set[int]) -> None:
    """Everything computed from these members' events, from their events as they are now.

    A member absorbed by a merge keeps nothing: its computed state lives on the survivor.
    """
    active = set(
        Member.objects.filter(id__in=member_ids, status=Member.Status.ACTIVE).values_list("id", flat=True)
    )
    events = _events_of(active)
    order_events = _order_events_of(events)
    _traits_write(active, events)
    _aggregates_write(active, events, order_events)
    retired = member_ids - active
    points_move_retired(retired)
    points_reconcile(histories=_loyalty_histories(active, events, order_events))
    for model in (MemberTrait, MemberOrder, MemberAggregate):
        rows_delete(model, column="member", keys=retired)


def points_recompute(member_ids: set[int]) -> None:
    """The points ledgers and tiers of these active members, from the events that earn."""
    events = _events_of(member_ids, only=ORDER_EVENTS | LOYALTY_EVENTS)
    points_reconcile(histories=_loyalty_histories(member_ids, events, _order_events_of(events)))


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
    traits: dict | None  # None: states none
    context_traits: object
    properties: dict | None  # only for order and loyalty events


# One query for everything the refresh reads. The lateral join walks each member's events by
# index whatever the planner believes about table sizes (stale statistics must not turn a
# refresh of 500 members into a scan of every event).
_EVENTS_OF_MEMBERS = """
SELECT m.id, e.id, e.event, e.channel, e.store_code, e.timestamp, e.message_id, e.source_id,
       CASE WHEN e.traits <> '{}'::jsonb THEN e.traits END, e.context -> 'traits',
       CASE WHEN e.event = ANY(%s) THEN e.properties END
FROM unnest(%s::bigint[]) AS m(id)
CROSS JOIN LATERAL (
    SELECT ev.* FROM identity_eventresolution AS r
    JOIN events_event AS ev ON ev.id = r.event_id
    WHERE r.member_id = m.id AND (%s::text[] IS NULL OR ev.event = ANY(%s::text[]))
    OFFSET 0  -- keeps the subquery lateral (not flattened into a join): one index walk per member
) AS e
"""


def _events_of(member_ids: set[int], *, only: frozenset[str] | None = None) -> list[_MemberEvent]:
    """The events of these members (only those named ``only``, if given), in one query."""
    if not member_ids:
        return []
    names = sorted(only) if only is not None else None
    with connection.cursor() as cursor:
        cursor.execute(
            _EVENTS_OF_MEMBERS, [sorted(ORDER_EVENTS | LOYALTY_EVENTS), sorted(member_ids), names, names]
        )
        # Django reads jsonb as text (its JSONField decodes); so does this raw query.
        return [
            _MemberEvent(*row[:8], *(None if v is None else orjson.loads(v) for v in row[8:]))
            for row in cursor.fetchall()
        ]


def _traits_write(member_ids: set[int], events: list[_MemberEvent]) -> None:
    """Every trait of these members, from all their events: exact after merges and splits."""
    observations: dict[int, list[TraitObservation]] = defaultdict(list)
    for e in events:
        if e.traits is None and not isinstance(e.context_traits, dict):
            continue
        stated = traits_of_event(
            e.traits or {}, {"traits": e.context_traits} if isinstance(e.context_traits, dict) else {}
        )
        observations[e.member_id] += [
            TraitObservation(key[:255], value, e.at, e.channel, e.message_id, e.source_id, e.event_id)
            for key, value in stated.items()
        ]
    rows_delete(MemberTrait, column="member", keys=member_ids)
    MemberTrait.objects.bulk_create(
        MemberTrait(
            member_id=member_id,
            key=o.key,
            value=o.value,
            observed_at=o.observed_at,
            channel=o.channel,
            source_id=o.source_id,
            event_id=o.event_id,
        )
        for member_id, found in observations.items()
        for o in latest_traits(found, settings.MEMBER_TRAIT_CHANNEL_PRECEDENCE).values()
    )


def _order_events_of(events: list[_MemberEvent]) -> dict[int, list[OrderEvent]]:
    found: dict[int, list[OrderEvent]] = defaultdict(list)
    for e in events:
        if e.properties is not None and e.name in ORDER_EVENTS:
            order = order_event(
                event_id=e.event_id, name=e.name, properties=e.properties, at=e.at,
                channel=e.channel, store_code=e.store_code, message_id=e.message_id,
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
) -> None:
    """Orders and figures of these members, from all their events (``members.aggregates``)."""
    rows = {member_id: MemberAggregate(member_id=member_id) for member_id in member_ids}
    stores: dict[int, set[str]] = defaultdict(set)
    for e in events:
        aggregate = rows[e.member_id]
        aggregate.events += 1
        if e.channel in CHANNELS:
            setattr(aggregate, f"events_{e.channel}", getattr(aggregate, f"events_{e.channel}") + 1)
        if e.store_code:
            stores[e.member_id].add(e.store_code)
        if aggregate.last_event_at is None or e.at > aggregate.last_event_at:
            aggregate.last_event_at = e.at
    orders: list[MemberOrder] = []
    for member_id, aggregate in rows.items():
        aggregate.stores_visited = sorted(stores[member_id])
        found = orders_of(order_events.get(member_id, ()))
        figures = aggregates_of(found.values(), settings.CDP_CURRENCY)
        aggregate.currency = figures.currency
        aggregate.orders = figures.orders
        aggregate.spend = figures.spend
        aggregate.refunded = figures.refunded
        aggregate.average_order_value = figures.average_order_value
        aggregate.first_purchase_at = figures.first_purchase_at
        aggregate.last_purchase_at = figures.last_purchase_at
        aggregate.orders_in_other_currencies = figures.orders_in_other_currencies
        for channel, channel_figures in figures.by_channel.items():
            setattr(aggregate, f"orders_{channel}", channel_figures.orders)
            setattr(aggregate, f"spend_{channel}", channel_figures.spend)
        orders += [
            MemberOrder(member_id=member_id, **{k: getattr(o, k) for k in ORDER_FIELDS})
            for o in found.values()
        ]
    rows_delete(MemberOrder, column="member", keys=member_ids)
    MemberOrder.objects.bulk_create(orders)
    MemberAggregate.objects.bulk_create(
        rows.values(),
        update_conflicts=True,
        unique_fields=["member"],
        update_fields=[f.name for f in MemberAggregate._meta.concrete_fields if not f.primary_key],
    )
