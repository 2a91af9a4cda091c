"""Writes of the identity app: resolve processed events into members."""

from collections.abc import Sequence

from django.conf import settings
from django.db import connection

from events.models import Event, Source
from identity.identifiers import NormalizationPolicy, identifiers_extract
from identity.resolution import ResolvableEvent
from identity.rules import Rules
from identity.store import DatabaseResolver, event_key

#: One transaction-scoped advisory lock for all identity writes. Resolution of a batch reads
#: a subgraph, decides, and writes it back; holding this lock makes that read-decide-write
#: atomic against other workers without row locks in any order, so there is no deadlock and
#: no duplicate member. On two cores one resolver at a time is also the fastest; beyond one
#: machine, the graph would be striped by component.
IDENTITY_LOCK = 0x1D_E4_71_7E


def identity_rules() -> Rules:
    return Rules().with_overrides(settings.IDENTITY_RULES)


def normalization_policy() -> NormalizationPolicy:
    return NormalizationPolicy(
        default_region=settings.IDENTITY_DEFAULT_REGION,
        blocked_values=frozenset(v.casefold() for v in settings.IDENTITY_BLOCKED_VALUES),
    )


def identity_resolve_events(events: Sequence[Event]) -> None:
    """The pipeline stage: attach every event to exactly one member, in the caller's
    transaction (the one that marks the events processed)."""
    if not events:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [IDENTITY_LOCK])
    policy = normalization_policy()
    sources = Source.objects.in_bulk({event.source_id for event in events})
    resolver = DatabaseResolver(identity_rules())
    extracted = {}
    for event in events:
        extraction = identifiers_extract(
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            traits=event.traits,
            context=event.context,
            policy=policy,
            openid_scope=sources[event.source_id].wechat_appid,
        )
        key = event_key(event)
        extracted[key] = extraction
        resolver.event_ids[key] = event.id
        if extraction.problems:
            resolver.problems[key] = [
                {"type": p.type, "value": p.value, "reason": p.reason, "detail": p.detail}
                for p in extraction.problems
            ]
    resolver.load_graph({i for extraction in extracted.values() for i in extraction.identifiers})
    for key in sorted(extracted):
        resolver.add(ResolvableEvent(key, extracted[key].identifiers))
    resolver.flush()
