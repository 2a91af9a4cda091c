"""Writes of the members app: refresh what is computed from a member's events."""

from collections import defaultdict
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from events.models import Event
from identity.models import EventResolution  # which member an event belongs to: read, never written here
from members.models import DirtyMember, Member, MemberTrait
from members.traits import TraitObservation, latest_traits, traits_of_event


def members_refresh(events: Sequence[Event] = ()) -> int:
    """Pipeline stage (after identity): recompute dirty members' traits; returns how many.

    Runs in the transaction that resolved the events, so it sees exactly the members that
    resolution marked, and nobody else's half-done work.
    """
    with transaction.atomic():
        dirty = list(DirtyMember.objects.select_for_update().values_list("member_id", flat=True))
        if not dirty:
            return 0
        active = set(
            Member.objects.filter(id__in=dirty, status=Member.Status.ACTIVE).values_list("id", flat=True)
        )
        member_traits_recompute(member_ids=active)
        MemberTrait.objects.filter(member_id__in=set(dirty) - active).delete()
        DirtyMember.objects.filter(member_id__in=dirty).delete()
    return len(dirty)


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
