"""Writes of the members app: refresh what is computed from a member's events."""

from collections import defaultdict
from collections.abc import Callable

from django.conf import settings
from django.contrib.postgres.aggregates import ArrayAgg
from django.db import connection, transaction
from django.db.models import Count, Max, Q

from events.commerce import ORDER_EVENTS
from identity.models import EventResolution  # which member an event belongs to: read, never written here
from members.aggregates import OrderEvent, aggregates_of, order_event, orders_of
from members.models import DirtyMark, Member, MemberAggregate, MemberOrder, MemberTrait
from members.traits import TraitObservation, latest_traits, traits_of_event

#: Advisory-lock key space of member refreshes (the two-key form, apart from the identity
#: lock's one-key form). Two workers may claim marks of the same member; the lock makes the
#: second refresh wait for the first and then recompute from what it committed.
MEMBER_REFRESH_LOCK_SPACE = 0x4D52
_LOCK_KEY_RANGE = 2**31 - 1


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
        _member_refresh_locks(member_ids)
        members_recompute(member_ids)
        DirtyMark.objects.filter(id__in=[mark_id for mark_id, _ in marks]).delete()
    return len(member_ids)


def members_refresh() -> int:
    """Refresh every member marked dirty; returns how many refreshes ran."""
    refreshed = 0
    while done := members_refresh_batch():
        refreshed += done
    return refreshed


def members_rebuild(*, batch_size: int = 1000, progress: Callable[[int], None] = lambda done: None) -> int:
    """Recompute every active member from the event log, a batch per transaction; returns how
    many. What the incremental refresh keeps current, computed again from scratch."""
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
            _member_refresh_locks(batch)
            members_recompute(batch)
        after = max(batch)
        done += len(batch)
        progress(done)
    with transaction.atomic():
        retired = Member.objects.exclude(status=Member.Status.ACTIVE).values("id")
        for model in (MemberTrait, MemberOrder, MemberAggregate):
            model.objects.filter(member_id__in=retired).delete()
    return done


def _member_refresh_locks(member_ids: set[int]) -> None:
    # Taken in one global order (sorted keys), so two refreshes never deadlock.
    keys = sorted({member_id % _LOCK_KEY_RANGE for member_id in member_ids})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k",
            [MEMBER_REFRESH_LOCK_SPACE, keys],
        )


def members_recompute(member_ids: set[int]) -> None:
    """Everything computed from these members' events, from their events as they are now.

    A member absorbed by a merge keeps nothing: its computed state lives on the survivor.
    """
    active = set(
        Member.objects.filter(id__in=member_ids, status=Member.Status.ACTIVE).values_list("id", flat=True)
    )
    member_traits_recompute(member_ids=active)
    member_aggregates_recompute(member_ids=active)
    retired = member_ids - active
    for model in (MemberTrait, MemberOrder, MemberAggregate):
        model.objects.filter(member_id__in=retired).delete()


def member_traits_recompute(*, member_ids: set[int]) -> None:
    """Every trait of these members, from all their events: exact after merges and splits."""
    if not member_ids:
        return
    stating = (
        EventResolution.objects.filter(member_id__in=member_ids)
        .filter(~Q(event__traits={}) | Q(event__context__has_key="traits"))
        .values_list(
            "member_id", "event_id", "event__traits", "event__context__traits", "event__timestamp",
            "event__channel", "event__message_id", "event__source_id",
        )
    )  # fmt: skip
    observations: dict[int, list[TraitObservation]] = defaultdict(list)
    for member_id, event_id, traits, context_traits, at, channel, message_id, source_id in stating:
        stated = traits_of_event(
            traits or {}, {"traits": context_traits} if isinstance(context_traits, dict) else {}
        )
        observations[member_id] += [
            TraitObservation(key[:255], value, at, channel, message_id, source_id, event_id)
            for key, value in stated.items()
        ]
    MemberTrait.objects.filter(member_id__in=member_ids).delete()
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


def member_aggregates_recompute(*, member_ids: set[int]) -> None:
    """Orders and figures of these members, from all their events (``members.aggregates``)."""
    if not member_ids:
        return
    ordering = (
        EventResolution.objects.filter(member_id__in=member_ids, event__event__in=ORDER_EVENTS)
        .values_list(
            "member_id", "event_id", "event__event", "event__properties", "event__timestamp",
            "event__channel", "event__store_code", "event__message_id",
        )
    )  # fmt: skip
    order_events: dict[int, list[OrderEvent]] = defaultdict(list)
    for member_id, event_id, name, properties, at, channel, store_code, message_id in ordering:
        found = order_event(
            event_id=event_id, name=name, properties=properties, at=at,
            channel=channel, store_code=store_code, message_id=message_id,
        )  # fmt: skip
        if found is not None:
            order_events[member_id].append(found)
    activity = (
        EventResolution.objects.filter(member_id__in=member_ids)
        .values("member_id", "event__channel")
        .annotate(
            events=Count("event_id"),
            last_event_at=Max("event__timestamp"),
            stores=ArrayAgg("event__store_code", distinct=True, filter=~Q(event__store_code="")),
        )
        .order_by()
    )
    rows = {member_id: MemberAggregate(member_id=member_id) for member_id in member_ids}
    for row in activity:
        aggregate = rows[row["member_id"]]
        aggregate.events += row["events"]
        setattr(aggregate, f"events_{row['event__channel']}", row["events"])
        aggregate.stores_visited = sorted({*aggregate.stores_visited, *(row["stores"] or ())})
        if aggregate.last_event_at is None or row["last_event_at"] > aggregate.last_event_at:
            aggregate.last_event_at = row["last_event_at"]
    orders: list[MemberOrder] = []
    for member_id, aggregate in rows.items():
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
            MemberOrder(member_id=member_id, **{k: getattr(o, k) for k in _ORDER_FIELDS})
            for o in found.values()
        ]
    MemberOrder.objects.filter(member_id__in=member_ids).delete()
    MemberOrder.objects.bulk_create(orders)
    MemberAggregate.objects.bulk_create(
        rows.values(),
        update_conflicts=True,
        unique_fields=["member"],
        update_fields=[f.name for f in MemberAggregate._meta.concrete_fields if not f.primary_key],
    )


_ORDER_FIELDS = (
    "order_id",
    "currency",
    "total",
    "refunded",
    "placed_at",
    "channel",
    "store_code",
    "event_id",
)
