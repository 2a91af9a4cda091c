"""Partitions of events into members: as stored, and as the reference definition gives them."""

from collections.abc import Iterable

from events.models import Event
from identity.identifiers import Identifier, identifiers_extract
from identity.models import EventIdentifier, EventResolution
from identity.models import Identifier as IdentifierRow
from identity.resolution import (
    Decision,
    InMemoryResolver,
    ResolvableEvent,
    Separation,
    resolve_in_event_order,
)
from identity.services import identity_rules, normalization_policy
from identity.store import event_key
from tests.factories.sealed import stored


def _resolvable(events: list[Event]) -> list[ResolvableEvent]:
    policy = normalization_policy()
    resolvable = []
    for e in events:
        extraction = identifiers_extract(
            user_id=e.user_id,
            anonymous_id=e.anonymous_id,
            traits=e.traits,
            context=e.context,
            policy=policy,
            message_type=e.type,
            previous_id=e.previous_id,
        )
        # As the database engine holds them: a phone or an email by its blind index (cdp.vault).
        identifiers = frozenset(Identifier(i.type, stored(i.type, i.value)) for i in extraction.identifiers)
        resolvable.append(ResolvableEvent(event_key(e), identifiers, extraction.vouches))
    return resolvable


def reference_partition(events: list[Event], separations: Iterable[Separation] = ()) -> set[frozenset[int]]:
    by_key = {event_key(e): e.id for e in events}
    partition = resolve_in_event_order(_resolvable(events), identity_rules(), separations).partition()
    return {frozenset(by_key[key] for key in group) for group in partition}


def reference_alias_classes(events: list[Event]) -> dict[str, str]:
    """ "type:value" -> its alias class, for every identifier an alias made one with another."""
    resolver = resolve_in_event_order(_resolvable(events), identity_rules())
    return {
        str(identifier): name
        for state in resolver.graph.members.values()
        for identifier, name in state.alias_class.items()
    }


def stored_alias_classes() -> dict[str, str]:
    return {
        f"{type_}:{value}": name
        for type_, value, name in IdentifierRow.objects.exclude(alias_class="").values_list(
            "type", "value", "alias_class"
        )
    }


def reference_dropped(events: list[Event]) -> set[tuple[int, str]]:
    """(event id, "type:value") of every identifier the event-time-order engine dropped."""

    class Recording(InMemoryResolver):
        dropped: dict = {}

        def _apply(self, decision: Decision) -> None:
            super()._apply(decision)
            self.dropped[decision.event] = decision.dropped  # a replay's decision replaces the first

    by_key = {event_key(e): e.id for e in events}
    resolver = Recording(identity_rules())
    resolver.dropped = {}
    for event in sorted(_resolvable(events), key=lambda e: e.key):
        resolver.add(event)
    return {(by_key[key], str(i)) for key, dropped in resolver.dropped.items() for i in dropped}


def stored_dropped() -> set[tuple[int, str]]:
    return {
        (event_id, f"{type_}:{value}")
        for event_id, type_, value in EventIdentifier.objects.filter(dropped=True).values_list(
            "event_id", "identifier__type", "identifier__value"
        )
    }


def stored_partition() -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for event_id, member_id in EventResolution.objects.values_list("event_id", "member_id"):
        groups.setdefault(member_id, set()).add(event_id)
    return {frozenset(group) for group in groups.values()}


def reference_holdings(events: list[Event]) -> dict[str, tuple[frozenset[int] | None, tuple | None]]:
    """ "type:value" -> (the events of the member owning it, or None; its last sighting as
    (timestamp, messageId, source id), or None) for every mergeable identifier the
    event-time-order engine saw."""
    by_key = {event_key(e): e.id for e in events}
    resolver = resolve_in_event_order(_resolvable(events), identity_rules())
    graph = resolver.graph
    seen = {i for event in resolver.events.values() for i in event.identifiers if graph.merges(i)}
    holdings = {}
    for identifier in seen:
        owner = graph.owner.get(identifier)
        events_of = frozenset(by_key[key] for key in resolver.events_of[owner]) if owner is not None else None
        last = graph.last_seen.get(identifier)
        holdings[str(identifier)] = (
            events_of,
            (last.timestamp, last.message_id, last.source_id) if last else None,
        )
    return holdings


def stored_holdings(types: Iterable[str]) -> dict[str, tuple[frozenset[int] | None, tuple | None]]:
    """The same, as the identifier rows of these (mergeable) types hold it."""
    events_of: dict[int, set[int]] = {}
    for event_id, member_id in EventResolution.objects.values_list("event_id", "member_id"):
        events_of.setdefault(member_id, set()).add(event_id)
    rows = IdentifierRow.objects.filter(type__in=list(types)).values_list(
        "type", "value", "member_id", "last_seen_at", "last_seen_message_id", "last_seen_source_id"
    )
    return {
        f"{type_}:{value}": (
            frozenset(events_of[member_id]) if member_id is not None else None,
            (at, message_id, source_id) if at is not None else None,
        )
        for type_, value, member_id, at, message_id, source_id in rows
    }
