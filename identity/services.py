"""Writes of the identity app: resolve accepted events into members."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from django.contrib.auth.models import User
from django.db import connection, transaction

from cdp.db import binary_parameters_cursor, queue_vacuum_due
from cdp.metrics import RESOLVED_EVENTS
from cdp.vault import SEALED_IDENTIFIER_TYPES, identifier_index, text_seal
from events.erasure import ERASED_EVENTS, events_erase_arrived
from events.models import Event, Source
from events.pipeline import ClaimedEvent
from identity.erasure import (
    ErasureCheck,
    erased_resolutions,
    erased_resolutions_restore,
    erasure_check,
    redactor_of,
)
from identity.identifiers import (
    BlockedIdentifier,
    Identifier,
    InvalidIdentifier,
    NormalizationPolicy,
    identifiers_extract,
    normalize,
)
from identity.models import (
    EventIdentifier,
    EventResolution,
    Member,
    MemberChange,
    MemberIdentifier,
    MergeRecord,
    SplitRecord,
)
from identity.models import Identifier as IdentifierRow
from identity.policy import IDENTITY_LOCK as IDENTITY_LOCK
from identity.policy import identity_lock
from identity.policy import identity_rules as identity_rules
from identity.policy import normalization_policy as normalization_policy
from identity.resolution import EventKey, ResolvableEvent
from identity.rules import Rules
from identity.store import DatabaseResolver, event_key, merge_rule


def identity_resolve_events(events: Sequence[ClaimedEvent | Event]) -> None:
    """The pipeline stage: attach every event to exactly one member, in the caller's
    transaction (the one that takes the events out of the queue). An event carrying an
    identifier an erasure removed is not resolved: it is stripped of its personal data (or
    deleted, by its source's rule) instead of bringing the person back (``identity.erasure``)."""
    if not events:
        return
    policy = normalization_policy()
    batch = _extract(events, policy)  # pure work: before the lock
    _blind_indexes(batch)  # so is hashing phones and emails: the lock's holder waits for none of it
    _identity_lock()
    check = _erasure_check(events, batch, release=True)
    if check.blocked:
        events_erase_arrived(
            event_ids=sorted(check.blocked),
            redactor=redactor_of({i for found in check.blocked.values() for i in found}),
        )
    _resolve(batch, lambda: DatabaseResolver(identity_rules()), known_first=True)


def _identity_lock() -> None:
    identity_lock()


@dataclass
class _ExtractedBatch:
    identifiers: dict[EventKey, frozenset[Identifier]] = field(default_factory=dict)
    vouching: set[EventKey] = field(default_factory=set)  # aliases (``ResolvableEvent.vouches``)
    #: Phones and emails as their blind index (``cdp.vault``), when hashed ahead (``_blind_indexes``).
    indexes: dict[Identifier, Identifier] = field(default_factory=dict)
    event_ids: dict[EventKey, int] = field(default_factory=dict)
    problems: dict[EventKey, list[dict]] = field(default_factory=dict)


def _extract(events: Sequence[ClaimedEvent | Event], policy: NormalizationPolicy) -> _ExtractedBatch:
    """Each event's normalized identifiers, and the values it carried that cannot be used."""
    appids = dict(
        Source.objects.filter(id__in={e.source_id for e in events}).values_list("id", "wechat_appid")
    )
    batch = _ExtractedBatch()
    for event in events:
        extraction = identifiers_extract(
            user_id=event.user_id,
            anonymous_id=event.anonymous_id,
            traits=event.traits,
            context=event.context,
            policy=policy,
            openid_scope=appids[event.source_id],
            message_type=event.type,
            previous_id=event.previous_id,
        )
        key = event_key(event)
        batch.identifiers[key] = extraction.identifiers
        if extraction.vouches:
            batch.vouching.add(key)
        batch.event_ids[key] = event.id
        if extraction.problems:
            batch.problems[key] = [
                {"type": p.type, "value": p.value, "reason": p.reason, "detail": p.detail}
                for p in extraction.problems
            ]
    return batch


def _erasure_check(
    events: Sequence[ClaimedEvent | Event],
    batch: _ExtractedBatch,
    *,
    release: bool,
) -> ErasureCheck:
    """Take the events carrying an erased identifier out of the batch (``identity.erasure``)."""
    keys = {event_id: key for key, event_id in batch.event_ids.items()}
    check = erasure_check(events, batch.identifiers, keys, release=release)
    for event_id in check.blocked:
        key = keys[event_id]
        del batch.identifiers[key], batch.event_ids[key]
        batch.vouching.discard(key)
        batch.problems.pop(key, None)
    return check


def _blind_indexes(batch: _ExtractedBatch) -> None:
    """Hash the batch's phones and emails into their blind index ahead (``batch.indexes``): pure
    work, which the pipeline does before it takes the identity lock, so that ``_indexed`` under
    it only looks them up. One HMAC per value."""
    for identifiers in batch.identifiers.values():
        for identifier in identifiers:
            if identifier.type in SEALED_IDENTIFIER_TYPES and identifier not in batch.indexes:
                batch.indexes[identifier] = _blind_index(identifier)


def _blind_index(identifier: Identifier) -> Identifier:
    return Identifier(identifier.type, identifier_index(identifier.type, identifier.value))


def _indexed(batch: _ExtractedBatch) -> dict[Identifier, str]:
    """Phones and emails from here on as their blind index (``cdp.vault``: what the graph
    matches and stores); returns the value of each, for the resolver to seal new ones. After
    the erasure check, which fingerprints the values themselves. The ones not hashed ahead
    (``_blind_indexes``) are hashed here."""
    values: dict[Identifier, str] = {}
    for key, identifiers in batch.identifiers.items():
        if not any(i.type in SEALED_IDENTIFIER_TYPES for i in identifiers):
            continue
        indexed = set()
        for identifier in identifiers:
            if identifier.type in SEALED_IDENTIFIER_TYPES:
                stored = batch.indexes.get(identifier) or _blind_index(identifier)
                values[stored] = identifier.value
                indexed.add(stored)
            else:
                indexed.add(identifier)
        batch.identifiers[key] = frozenset(indexed)
    return values


def _resolve(
    batch: _ExtractedBatch, new_resolver: Callable[[], DatabaseResolver], *, known_first: bool = False
) -> None:
    """Resolve the batch. ``known_first``: the events that only name identifiers of one stored
    member are resolved set-based (``DatabaseResolver.resolve_known``: what the engine would
    write), the rest by the engine; when the engine reaches one of those members after all
    (a late event's replay), the whole batch is resolved again by the engine alone (nothing
    was written yet). Not for a rebuild, which resolves every event from an empty graph."""
    values_to_seal = _indexed(batch)
    events = [
        ResolvableEvent(key, identifiers, key in batch.vouching)
        for key, identifiers in batch.identifiers.items()
    ]

    def prepared() -> DatabaseResolver:
        resolver = new_resolver()
        resolver.values_to_seal.update(values_to_seal)
        resolver.event_ids.update(batch.event_ids)
        resolver.problems.update(batch.problems)
        return resolver

    if known_first:
        resolver = prepared()
        rest = resolver.resolve_known(events)
        resolver.add_batch(rest)
        if not resolver.known_overlaps():
            RESOLVED_EVENTS.labels(path="known").inc(len(resolver.known))
            RESOLVED_EVENTS.labels(path="engine").inc(len(rest))
            resolver.flush()
            return
        RESOLVED_EVENTS.labels(path="known_overlap").inc(len(resolver.known))
    resolver = prepared()
    resolver.load_graph({i for identifiers in batch.identifiers.values() for i in identifiers})
    resolver.add_batch(events)
    RESOLVED_EVENTS.labels(path="engine").inc(len(events))
    resolver.flush()


#: What resolution reads of an event (not its properties or integrations).
_RESOLUTION_FIELDS = (
    "id",
    "source_id",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "anonymous_id",
    "previous_id",
    "traits",
    "context",
    "event",
)
_GRAPH_TABLES = (EventResolution, EventIdentifier, MemberIdentifier, MergeRecord, IdentifierRow)


def identity_rebuild(*, batch_size: int = 5000, progress: Callable[[int], None] = lambda done: None) -> int:
    """Rebuild the identity graph from the event log; returns how many events it resolved.

    Events are resolved in event-time order, which is the definition of the answer, so the
    result equals what incremental resolution built. Member ids are kept: a member founded by
    the same event keeps its id, and an old id no longer needed leads to the member that now
    holds the event that founded it. One transaction under the identity lock: readers see
    the old graph until the new one is complete, and the pipeline waits.

    The merge history is rebuilt too, *equivalent* to the incremental one, which means:

    - the same members are merged (every member that is not active has a record, and the
      incremental history has a record for each of them too), each leading to the same
      active member;
    - every record tells the truth: its event resolves to the member its survivor leads to,
      and the identifiers it names are that event's, held by the survivor (at the merge, one
      side's each);
    - but not necessarily the same records: where several events link the same members any
      may be cited, the merges may happen in another order (event time, not arrival), so an
      intermediate survivor may differ, and members that stood between two batches of the
      rebuild and then merged have a record of their own (one for each merged member).
      ``identity.selectors.merge_history_audit`` checks the result.

    Erasures hold (``identity.erasure``): events stripped by an erasure and events carrying an
    erased identifier are not resolved; the events of erased members go back to them as they
    were, so an erased person is never rebuilt and the figures kept under them stay.
    """
    with transaction.atomic():
        _identity_lock()
        erased = erased_resolutions()
        old_members = {
            EventKey(at, message_id, source_id): pk
            # A retired member can share its founding event with the active member a replay
            # re-created; ordered so that the active one's id wins. Erased members are not
            # re-created (their events are not resolved), whatever their founding event.
            for pk, at, message_id, source_id in Member.objects.exclude(status=Member.Status.ERASED)
            .order_by("-status", "pk")
            .values_list("pk", "first_event_at", "first_event_message_id", "first_event_source_id")
        }
        with connection.cursor() as cursor:
            # TRUNCATE refuses while deferred foreign-key checks are pending in this transaction.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"TRUNCATE {', '.join(m._meta.db_table for m in _GRAPH_TABLES)}")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        rules, policy = identity_rules(), normalization_policy()
        done = 0
        batch: list[Event] = []
        events = (
            Event.objects.exclude(ERASED_EVENTS)
            .order_by("timestamp", "message_id", "source_id")
            .only(*_RESOLUTION_FIELDS)
        )
        for event in events.iterator(chunk_size=batch_size):
            batch.append(event)
            if len(batch) == batch_size:
                _rebuild_batch(batch, rules, policy, old_members)
                done += len(batch)
                progress(done)
                batch = []
        if batch:
            _rebuild_batch(batch, rules, policy, old_members)
            done += len(batch)
            progress(done)
        erased_resolutions_restore(erased)
        _retire_unused_members(rules)
    return done


def _rebuild_batch(
    events: list[Event], rules: Rules, policy: NormalizationPolicy, old_members: dict[EventKey, int]
) -> None:
    extracted = _extract(events, policy)
    _erasure_check(events, extracted, release=False)
    _resolve(extracted, lambda: DatabaseResolver(rules, reuse_ids=old_members))


def _retire_unused_members(rules: Rules) -> None:
    """Old members the rebuild did not re-create lead to whoever holds their founding event.

    The resolver retires, with a merge record, every old member it knew by its founding event;
    what is left here are old members that shared a founding event with another (a replay had
    re-created a member under a new id). Each gets a record too, citing that event and the
    identifiers of it the survivor holds: the event and the survivor's own, never another's.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH retired AS (
                UPDATE {Member._meta.db_table} AS m
                   SET status = 'merged', merged_into_id = r.member_id, updated_at = now()
                  FROM {Event._meta.db_table} AS e
                  JOIN {EventResolution._meta.db_table} AS r ON r.event_id = e.id
                 WHERE e.timestamp = m.first_event_at
                   AND e.message_id = m.first_event_message_id
                   AND e.source_id = m.first_event_source_id
                   AND r.member_id <> m.id
                   AND NOT EXISTS (SELECT 1 FROM {MergeRecord._meta.db_table} WHERE absorbed_id = m.id)
             RETURNING m.id AS absorbed, r.member_id AS survivor, e.id AS event
            )
            INSERT INTO {MergeRecord._meta.db_table}
                   (survivor_id, absorbed_id, event_id, identifiers, rule, cause, created_at)
            SELECT retired.survivor, retired.absorbed, retired.event, COALESCE((
                       SELECT jsonb_agg(i.type || ':' || i.value ORDER BY i.type, i.value)
                         FROM {EventIdentifier._meta.db_table} AS x
                         JOIN {IdentifierRow._meta.db_table} AS i ON i.id = x.identifier_id
                        WHERE x.event_id = retired.event AND NOT x.dropped AND i.member_id = retired.survivor
                   ), '[]'::jsonb), %s::jsonb, %s, now()
              FROM retired
            """,  # noqa: S608 - model tables only
            [orjson.dumps(merge_rule(rules)).decode(), MergeRecord.Cause.EVENT],
        )


class SplitRefused(ValueError):
    """A split that cannot be made, with the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def member_split(
    *, member_id: int, identifiers: Sequence[str], reason: str, staff: User | None = None
) -> SplitRecord:
    """Split a wrong merge: ``identifiers`` (``"type:value"``) belong to another person.

    Recorded as a separation that every later resolution respects, then the member's events
    (and everything linked to them) are re-resolved: the result is what resolution gives when
    the wrong merge never happened, and a rebuild gives it again. A member that had been
    absorbed gets its old id back when it is re-created from the same first event. The
    members it changed are in identity's outbox (``MemberChange``) for members to refresh.
    """
    if not reason.strip():
        raise SplitRefused("reason", "Say why the member is split.")
    with transaction.atomic():
        _identity_lock()
        member = Member.objects.filter(pk=member_id).first()
        if member is None or member.status != Member.Status.ACTIVE:
            raise SplitRefused("member", f"Member {member_id} is not an active member.")
        given = {_identifier_as_stored(text): text for text in identifiers}
        chosen = set(given)
        owned = {
            Identifier(t, v)
            for t, v in IdentifierRow.objects.filter(member=member).values_list("type", "value")
        }
        if not chosen:
            raise SplitRefused("identifiers", "Choose the identifiers that belong to another person.")
        if missing := chosen - owned:
            raise SplitRefused(
                "identifiers",
                f"Not held by member {member_id}: {', '.join(sorted(given[i] for i in missing))}.",
            )
        if not (others := owned - chosen):
            raise SplitRefused(
                "identifiers", "That is every identifier of the member: nothing would be left."
            )
        record = SplitRecord.objects.create(
            member=member,
            identifiers=sorted(map(str, chosen)),
            others=sorted(map(str, others)),
            staff=staff,
            reason=text_seal(SplitRecord.REASON, reason.strip()),  # it may name the person
        )
        resolver = DatabaseResolver(identity_rules())  # its replay brings back the members absorbed
        resolver.load_events(
            set(EventResolution.objects.filter(member=member).values_list("event_id", flat=True))
        )
        resolver.replay_members_of(set(resolver.events))
        resolver.flush()
        owners = {
            (type_, value): owner
            for type_, value, owner in IdentifierRow.objects.filter(
                member__isnull=False, value__in={i.value for i in chosen | others}
            ).values_list("type", "value", "member_id")
        }
        record.resulting_members = sorted(
            {owners[(i.type, i.value)] for i in chosen | others if (i.type, i.value) in owners}
        )
        record.save(update_fields=["resulting_members"])
    return record


def _identifier_as_stored(text: str) -> Identifier:
    type_, _, value = text.partition(":")
    if not type_ or not value:
        raise SplitRefused("identifiers", f"{text!r} is not 'type:value'.")
    if type_ == "wechat_openid":
        return Identifier(type_, value.strip())  # stored scoped by appid, as given
    try:
        normalized = normalize(type_, value, normalization_policy())
    except (InvalidIdentifier, BlockedIdentifier) as exc:
        raise SplitRefused("identifiers", f"{text!r}: {exc}") from exc
    return Identifier(type_, identifier_index(type_, normalized))  # a phone or an email: its index


# Identity's outbox to members --------------------------------------------------------------

# The oldest rows no other consumer holds, out of the queue in one statement.
_TAKE_CHANGES = f"""
DELETE FROM {MemberChange._meta.db_table} WHERE id = ANY(ARRAY(
    SELECT id FROM {MemberChange._meta.db_table} ORDER BY id LIMIT %b FOR UPDATE SKIP LOCKED))
RETURNING member_id
"""  # noqa: S608 - model table only


def member_changes_vacuum_due(*, taken: int, every: int) -> bool:
    """Count ``taken`` rows out of identity's outbox, and vacuum it after every ``every``
    (``cdp.db.queue_vacuum_due``: its consumer calls this outside its transactions)."""
    return queue_vacuum_due(MemberChange._meta.db_table, taken=taken, every=every)


def member_changes_take(*, limit: int) -> list[int]:
    """Take up to ``limit`` of the oldest "member changed" rows out of identity's outbox, in
    the caller's transaction; returns their member ids (repeats included, oldest first). The
    caller hands them on in the same transaction (a rollback puts them back): rows other
    consumers hold are skipped, not waited for."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_TAKE_CHANGES, [limit])
        return [row[0] for row in cursor.fetchall()]
