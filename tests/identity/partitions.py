"""Partitions of events into members: as stored, and as the reference definition gives them."""

from collections.abc import Iterable

from events.models import Event
from identity.identifiers import identifiers_extract
from identity.models import EventResolution
from identity.resolution import ResolvableEvent, Separation, resolve_in_event_order
from identity.services import identity_rules, normalization_policy
from identity.store import event_key


def reference_partition(events: list[Event], separations: Iterable[Separation] = ()) -> set[frozenset[int]]:
    policy, rules = normalization_policy(), identity_rules()
    by_key = {event_key(e): e.id for e in events}
    resolvable = [
        ResolvableEvent(
            event_key(e),
            identifiers_extract(
                user_id=e.user_id,
                anonymous_id=e.anonymous_id,
                traits=e.traits,
                context=e.context,
                policy=policy,
            ).identifiers,
        )
        for e in events
    ]
    partition = resolve_in_event_order(resolvable, rules, separations).partition()
    return {frozenset(by_key[key] for key in group) for group in partition}


def stored_partition() -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for event_id, member_id in EventResolution.objects.values_list("event_id", "member_id"):
        groups.setdefault(member_id, set()).add(event_id)
    return {frozenset(group) for group in groups.values()}
