"""Reads of tags and segments: the definitions to evaluate (in dependency order), members by
keyset, the changes feed."""

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from django.db import connection

from members.consent.selectors import members_with_consent
from members.segments.models import Segment, SegmentChange, SegmentMember, SegmentWebhook, Tag
from members.segments.rules.analysis import leaves, rule_references
from members.segments.rules.interpret import window_key
from members.segments.rules.parse import RuleInvalid, rule_parse
from members.segments.rules.syntax import (
    Condition,
    Did,
    DidNot,
    EventFilter,
    FirstTime,
    HasIdentifier,
    Stopped,
    event_filter_key,
)


@dataclass(frozen=True, slots=True)
class Definition:
    """A rule tag or a dynamic segment: what decides membership."""

    kind: Literal["tag", "segment"]
    id: int
    key: str
    condition: Condition
    time_based: bool


@dataclass(frozen=True, slots=True)
class Definitions:
    """Every rule tag and dynamic segment that can be evaluated, each after the tags and
    segments its rule reads (``ordered``), and why the others cannot (``broken``: an invalid
    rule, or a reference cycle)."""

    ordered: tuple[Definition, ...]
    broken: dict[tuple[str, int], str]
    #: Every tag and segment (any kind) by id, and the computed tags by key.
    tag_keys: dict[int, str]
    segment_keys: dict[int, str]
    computed_tag_ids: dict[str, int]
    #: The tags and segments whose membership the platform decides (evaluated rule tags and
    #: dynamic segments, computed tags); the others are staff's (manual tags, static lists)
    #: or wait for their rule to be mended.
    decided_tag_ids: frozenset[int]
    decided_segment_ids: frozenset[int]
    #: Events whose properties some rule filters on: the incremental path loads those.
    property_events: frozenset[str]
    #: The filters some rule counts over all time ("did it ever", "never did", a first time's
    #: "never before"), by ``event_filter_key``: each member's figures keep their counts
    #: (``MemberAggregate.event_counts``), so a refresh never reads a member's whole history
    #: for them.
    ever_filters: Mapping[str, EventFilter] = field(default_factory=dict)
    #: The filters windowed leaves count, by ``window_key``, each with how many days back the
    #: rules read it: each member's figures keep the times of their events passing it that
    #: far back (``MemberAggregate.event_times``), so the incremental refresh reads none of
    #: the member's earlier events for them.
    window_filters: Mapping[str, tuple[EventFilter, int]] = field(default_factory=dict)
    #: The identifier types some rule asks a member to hold (``has_identifier``): the refresh
    #: looks up only these for each member (none: no lookup), not every identifier the member
    #: ever gained, which a long history makes many.
    identifier_types: frozenset[str] = frozenset()


def _days_read(leaf: Did | DidNot | FirstTime | Stopped) -> int | None:
    """How many days back a behaviour condition reads events (None: none, its count of all
    time decides)."""
    if isinstance(leaf, Stopped):
        return leaf.in_last_days + leaf.before_days
    return leaf.in_last_days  # a first time's "never before" is its count less the window's


def _ever_filter(leaf: Did | DidNot | FirstTime | Stopped) -> EventFilter | None:
    """The filter whose count of all time the condition reads, if any."""
    if isinstance(leaf, FirstTime) or (isinstance(leaf, Did | DidNot) and leaf.in_last_days is None):
        return leaf.event
    return None


def event_reads(
    conditions: Iterable[Condition],
) -> tuple[dict[str, tuple[EventFilter, int]], dict[str, EventFilter]]:
    """What these rules read of a member's events: the filters windowed leaves count, by
    ``window_key``, each with the most days back a leaf reads it (``Definitions.window_filters``),
    and the filters counted over all time, by ``event_filter_key`` (``Definitions.ever_filters``)."""
    windowed: dict[str, tuple[EventFilter, int]] = {}
    ever_filters: dict[str, EventFilter] = {}
    for condition in conditions:
        for leaf in leaves(condition):
            if isinstance(leaf, Did | DidNot | FirstTime | Stopped):
                if (days := _days_read(leaf)) is not None:
                    key = event_filter_key(leaf.event)
                    windowed[key] = (leaf.event, max(days, windowed.get(key, (leaf.event, 0))[1]))
                if (ever := _ever_filter(leaf)) is not None:
                    ever_filters[event_filter_key(ever)] = ever
    return {window_key(wanted, days): (wanted, days) for wanted, days in windowed.values()}, ever_filters


def definitions_load() -> Definitions:
    """Parse every rule tag and dynamic segment and order them by what they read (two queries)."""
    tags = list(Tag.objects.values_list("id", "key", "kind", "rule"))
    segments = list(Segment.objects.values_list("id", "key", "kind", "rule"))
    parsed: dict[tuple[str, str], Definition] = {}
    broken: dict[tuple[str, int], str] = {}
    reads: dict[tuple[str, str], set[tuple[str, str]]] = {}
    candidates: list[tuple[Literal["tag", "segment"], tuple[int, str, str, Any]]] = [
        ("tag", row) for row in tags if row[2] == Tag.Kind.RULE
    ] + [("segment", row) for row in segments if row[2] == Segment.Kind.DYNAMIC]
    for kind, (pk, key, _, rule) in candidates:
        try:
            condition = rule_parse(rule)
        except RuleInvalid as error:
            broken[(kind, pk)] = str(error)
            continue
        refs = rule_references(condition)
        parsed[(kind, key)] = Definition(kind, pk, key, condition, refs.time_based)
        reads[(kind, key)] = {("tag", t) for t in refs.tags} | {("segment", s) for s in refs.segments}
    ordered: list[Definition] = []
    pending = set(parsed)
    while pending:
        # What a rule reads that is not itself evaluated here (manual, computed or unknown tags,
        # static segments) is a given; an unknown key simply matches nobody.
        ready = sorted(node for node in pending if not (reads[node] & pending))
        if not ready:
            for node in sorted(pending):
                names = ", ".join(f"{k} {key}" for k, key in sorted(reads[node] & pending))
                broken[(node[0], parsed[node].id)] = f"its rule reads what reads it back: {names}"
            break
        for node in ready:
            ordered.append(parsed[node])
        pending -= set(ready)
    property_events = frozenset(
        leaf.event.name
        for definition in ordered
        for leaf in leaves(definition.condition)
        if isinstance(leaf, Did | DidNot | FirstTime | Stopped)
        and any(field.startswith("properties.") for field, _ in leaf.event.where)
    )
    window_filters, ever_filters = event_reads(d.condition for d in ordered)
    identifier_types = frozenset(
        leaf.type
        for definition in ordered
        for leaf in leaves(definition.condition)
        if isinstance(leaf, HasIdentifier)
    )
    computed_tag_ids = {key: pk for pk, key, kind, _ in tags if kind == Tag.Kind.COMPUTED}
    return Definitions(
        ordered=tuple(ordered),
        broken=broken,
        tag_keys={pk: key for pk, key, _, _ in tags},
        segment_keys={pk: key for pk, key, _, _ in segments},
        computed_tag_ids=computed_tag_ids,
        decided_tag_ids=frozenset(d.id for d in ordered if d.kind == "tag")
        | frozenset(computed_tag_ids.values()),
        decided_segment_ids=frozenset(d.id for d in ordered if d.kind == "segment"),
        property_events=property_events,
        ever_filters=ever_filters,
        window_filters=window_filters,
        identifier_types=identifier_types,
    )


def segment_members(*, segment: Segment, after: int, size: int) -> list[tuple[int, datetime]]:
    """(member id, entered at) of the segment's members with ids above ``after``, lowest first."""
    return list(
        SegmentMember.objects.filter(segment=segment, member_id__gt=after)
        .order_by("member_id")
        .values_list("member_id", "entered_at")[:size]
    )


#: The transactions, other than this one, writing the changes feed right now: a change they have
#: not committed may hold a lower id than one already visible (ids are taken at insert, not
#: at commit), so a reader that moved its cursor past it would never see it.
FEED_WRITERS = f"""
    SELECT l.virtualtransaction FROM pg_locks AS l
    WHERE l.locktype = 'relation' AND l.relation = '{SegmentChange._meta.db_table}'::regclass
      AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""  # noqa: S608 - the model's table name
_WRITERS_LEFT = f"SELECT count(*) FROM ({FEED_WRITERS}) AS l WHERE l.virtualtransaction = ANY(%s)"  # noqa: S608
_HORIZON = f"SELECT (SELECT max(id) FROM {SegmentChange._meta.db_table}), ARRAY({FEED_WRITERS})"  # noqa: S608
_POLL_SECONDS = 0.02


def feed_writers_finished(writers: tuple[str, ...] | list[str], *, wait: float) -> bool:
    """Whether these transactions (``FEED_WRITERS``) have all ended, waiting up to ``wait``
    seconds for them."""
    deadline = time.monotonic() + wait
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_WRITERS_LEFT, [list(writers)])
            if cursor.fetchone()[0] == 0:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def feed_horizon(*, wait: float = 2.0) -> int | None:
    """The highest change id up to which the feed is settled (no change with a lower id can
    still commit): the highest id now, once the transactions writing the feed at this moment
    have ended. None if they did not end within ``wait`` seconds."""
    with connection.cursor() as cursor:
        cursor.execute(_HORIZON)
        horizon, writers = cursor.fetchone()
    if writers and not feed_writers_finished(writers, wait=wait):
        return None
    return horizon or 0


def segment_changes(*, segment: Segment, since: int, size: int, until: int) -> list[SegmentChange]:
    """The segment's entries and exits after cursor ``since`` (a change's id) up to ``until``
    (``feed_horizon``), oldest first."""
    return list(
        SegmentChange.objects.filter(segment=segment, id__gt=since, id__lte=until).order_by("id")[:size]
    )


#: A row of the changes feed as a caller reads it: (cursor, member id, change, purpose, ...).
FeedRow = TypeVar("FeedRow", bound=tuple[Any, ...])


def changes_consented(
    changes: list[FeedRow], *, purposes: tuple[str, ...] | None, at: datetime
) -> tuple[list[FeedRow], int]:
    """The changes of the feed (cursor, member, change, purpose, then what else the caller
    reads) that may leave for ``purposes`` at ``at``, and how many entries were withheld for
    want of consent. A membership change (no ``purpose``): every exit (it only tells a tool to
    drop an id it may hold), and the entries of members with consent to every purpose in force
    (none if ``purposes`` is None: a purpose no longer configured). A change consent made (a
    member staying in the segment withdrew or granted again one ``purpose``,
    ``SegmentChange.CONSENT_*``) is heard only by outflows declaring that purpose: its exit when
    the member lacks consent to them now, its entry when they have it (else withheld, as an
    entry). One query."""
    declared = frozenset(purposes or ())
    heard = [c for c in changes if not c[3] or c[3] in declared]
    judged = {c[1] for c in heard if c[2] == SegmentChange.Change.ENTERED or c[3]}
    allowed = (
        members_with_consent(member_ids=judged, purposes=purposes, at=at) if purposes is not None else set()
    )
    given, withheld = [], 0
    for c in heard:
        if c[2] == SegmentChange.Change.ENTERED:
            if c[1] in allowed:
                given.append(c)
            else:
                withheld += 1
        elif not c[3] or c[1] not in allowed:
            given.append(c)
    return given, withheld


def webhooks_inactive() -> list[tuple[int, str, str, str]]:
    """Webhooks turned off (by failures or by staff): (id, segment key, url, why)."""
    return list(
        SegmentWebhook.objects.filter(active=False)
        .order_by("id")
        .values_list("id", "segment__key", "url", "disabled_reason")
    )


def segments_failing() -> list[tuple[int, str, str]]:
    """Segments whose last compute failed: (id, key, error)."""
    return list(Segment.objects.exclude(error="").order_by("id").values_list("id", "key", "error"))
