"""Writes of the members app: refresh what is computed from a member's events."""

from collections import defaultdict

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from identity.models import EventResolution  # which member an event belongs to: read, never written here
from members.models import DirtyMark, Member, MemberTrait
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
    MemberTrait.objects.filter(member_id__in=member_ids - active).delete()


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
