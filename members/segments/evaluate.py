"""The incremental path: the tags and segments of the members a refresh just recomputed,
evaluated in Python (``rules.interpret.rule_matches``) inside the refresh's transaction, so membership
follows an event within seconds and bursts for one member coalesce with its refresh.

For each member: the computed tags (RFM group, lifecycle stage, channel preference) from its
figures, then every rule tag and dynamic segment in dependency order (a rule may read tags
and segments decided before it), each from the facts the refresh has just written. Manual
tags and static lists are givens here. Only the differences are written: a handful of
statements per batch, whatever its size, each appending to the tag changes and the segment
history (the changes feed), and moving segment sizes by what entered and left.

A member absorbed by a merge leaves every tag and segment (the exit is recorded, so a tool
syncing the changes feed drops the absorbed id), and its manual tags and static-list places
move to its survivor. A split member is refreshed like any other.

Full recomputes (``services``) and this path never interleave on one tag or segment: a full
recompute holds the definition's lock exclusively for its one statement, this path holds
every definition's lock shared from before it reads memberships until it commits.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings

from cdp.db import binary_parameters_cursor, rows_delete
from members.consent.statements import consent_granted
from members.locks import memberships_lock
from members.segments.builtins import lifecycle_windows, rfm_edges_load
from members.segments.computed import (
    LifecycleWindows,
    RfmEdges,
    computed_tags_of,
    lifecycle_changes_at,
    purchase_facts_of,
)
from members.segments.models import (
    ConsentSeen,
    MemberTag,
    SegmentChange,
    SegmentMember,
    SegmentsRecheck,
    TagChange,
)
from members.segments.rules.analysis import rule_window_expiry
from members.segments.rules.interpret import MemberFacts, rule_matches
from members.segments.selectors import Definitions, definitions_load


@dataclass(frozen=True, slots=True)
class _Computing:
    """What the computed tags are judged by in this batch."""

    definitions: Definitions
    edges: RfmEdges | None
    windows: LifecycleWindows
    now: datetime


@dataclass(slots=True)
class _Outcome:
    tags_added: list[tuple[int, int]]
    tags_removed: list[tuple[int, int]]
    entered: list[tuple[int, int]]
    exited: list[tuple[int, int]]
    recheck: dict[int, datetime]
    #: The segments each member was in before and stays in (consent changes are told for these).
    kept: dict[int, set[int]]


def memberships_refresh(
    *,
    members: Mapping[int, MemberFacts],
    retired: set[int],
    now: datetime,
    definitions: Definitions | None = None,
) -> set[int]:
    """Bring these active members' rule and computed tags and dynamic segments up to date with
    their facts (``members`` carry traits, figures and events; identifiers, points, tier, tags
    and segments are read here), and take the retired (absorbed) ids out of everything.
    Returns the ids of the segments whose membership changed."""
    definitions = definitions or definitions_load()
    if not members and not retired:
        return set()
    memberships_lock(
        tag_ids=list(definitions.tag_keys), segment_ids=list(definitions.segment_keys), exclusive=False
    )
    sizes = _retired_leave(retired, now)
    if not members:
        return _sizes_move(sizes)
    computing = _Computing(definitions, rfm_edges_load(), lifecycle_windows(), now)
    outcome = _Outcome([], [], [], [], {}, {})
    for facts, tag_ids, segment_ids in _state_of(members, definitions.identifier_types):
        _member_evaluate(computing, facts, set(tag_ids), set(segment_ids), outcome)
    _pairs_write(_TAGS_DIFF, outcome.tags_added, outcome.tags_removed, now)
    for segment_id, delta in _pairs_write(_SEGMENTS_DIFF, outcome.entered, outcome.exited, now).items():
        sizes[segment_id] = sizes.get(segment_id, 0) + delta
    for segment_id in _consent_changes_write(members, outcome.kept, now):
        sizes.setdefault(segment_id, 0)  # its webhooks are nudged; its size does not move
    _rechecks_write(set(members), outcome.recheck)
    return _sizes_move(sizes)


def _member_evaluate(
    computing: _Computing, facts: MemberFacts, tag_ids: set[int], segment_ids: set[int], outcome: _Outcome
) -> None:
    definitions, now = computing.definitions, computing.now
    tag_keys, segment_keys = definitions.tag_keys, definitions.segment_keys
    purchases = purchase_facts_of(facts.aggregates)
    computed = {
        definitions.computed_tag_ids[key]
        for key in computed_tags_of(purchases, computing.edges, computing.windows, now)
        if key in definitions.computed_tag_ids
    }
    # What this path does not decide (manual tags, static lists, broken rules) is kept as is.
    tags = {pk for pk in tag_ids if pk not in definitions.decided_tag_ids} | computed
    segments = {pk for pk in segment_ids if pk not in definitions.decided_segment_ids}
    facts = replace(
        facts,
        tags=frozenset(tag_keys[pk] for pk in tags),
        segments=frozenset(segment_keys[pk] for pk in segments),
    )
    due = lifecycle_changes_at(
        purchases.first_purchase_at, purchases.last_purchase_at, now, computing.windows
    )
    for definition in definitions.ordered:
        if rule_matches(definition.condition, facts, now=now):
            if definition.kind == "tag":
                tags.add(definition.id)
                facts = replace(facts, tags=facts.tags | {definition.key})
            else:
                segments.add(definition.id)
                facts = replace(facts, segments=facts.segments | {definition.key})
        if definition.time_based:
            moment = rule_window_expiry(definition.condition, facts, now)
            if moment is not None and (due is None or moment < due):
                due = moment
    member_id = facts.member_id
    outcome.tags_added += [(member_id, pk) for pk in tags - tag_ids]
    outcome.tags_removed += [(member_id, pk) for pk in tag_ids - tags]
    outcome.entered += [(member_id, pk) for pk in segments - segment_ids]
    outcome.exited += [(member_id, pk) for pk in segment_ids - segments]
    if kept := segments & segment_ids:
        outcome.kept[member_id] = kept
    if due is not None:
        outcome.recheck[member_id] = due


# What the refresh did not compute, read for the whole batch in one query. Each member's rows are
# walked by index (lateral, OFFSET 0): see members.services._EVENTS_OF_MEMBERS. Of the member's
# identifiers, only whether it holds each type some rule asks about (``Definitions.identifier_types``,
# the first array): a probe per type that stops at the first row found, where reading every type
# it holds walked all its identifiers, more the longer its history (devices, cookies, openids).
_STATE_OF_MEMBERS = """
SELECT m.id,
       ARRAY(SELECT k.type FROM unnest(%b::text[]) AS k(type)
             WHERE EXISTS (SELECT 1 FROM identity_identifier AS i WHERE i.member_id = m.id AND i.type = k.type)
                OR EXISTS (SELECT 1 FROM identity_memberidentifier AS mi
                           JOIN identity_identifier AS i ON i.id = mi.identifier_id
                           WHERE mi.member_id = m.id AND i.type = k.type)),
       coalesce(p.balance, 0), coalesce(p.tier, ''),
       ARRAY(SELECT t.tag_id FROM members_membertag AS t WHERE t.member_id = m.id),
       ARRAY(SELECT s.segment_id FROM members_segmentmember AS s WHERE s.member_id = m.id)
FROM unnest(%b::bigint[]) AS m(id)
LEFT JOIN LATERAL (
    SELECT a.balance, a.tier FROM members_pointsaccount AS a WHERE a.member_id = m.id OFFSET 0
) AS p ON TRUE
"""


def _state_of(
    members: Mapping[int, MemberFacts], identifier_types: frozenset[str]
) -> list[tuple[MemberFacts, list[int], list[int]]]:
    """Each member's facts completed with points, tier and which of ``identifier_types`` it
    holds (the ones rules ask about), and the ids of the tags and segments it holds now."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_STATE_OF_MEMBERS, [sorted(identifier_types), sorted(members)])
        rows = cursor.fetchall()
    return [
        (
            replace(members[member_id], identifier_types=frozenset(types), points=balance, tier=tier),
            tag_ids,
            segment_ids,
        )
        for member_id, types, balance, tier, tag_ids, segment_ids in rows
    ]


# Pairs travel as two binary arrays; deletes find each pair's row by index and delete by row
# address (see cdp.db.rows_delete). Only model table and column names are interpolated.
_MT, _TC = MemberTag._meta.db_table, TagChange._meta.db_table
_SM, _SC = SegmentMember._meta.db_table, SegmentChange._meta.db_table


def _diff_sql(*, members: str, changes: str, target: str, since: str, verb: str, gone: str, came: str) -> str:
    """Remove and add (member, ``target``) pairs of ``members``, append both to ``changes``
    and answer, per target, by how much its membership moved."""
    return f"""
WITH gone AS (
    DELETE FROM {members} WHERE ctid = ANY(ARRAY(
        SELECT r.ctid FROM unnest(%b::bigint[], %b::bigint[]) AS k(m, t)
        CROSS JOIN LATERAL (SELECT ctid FROM {members} WHERE member_id = k.m AND {target} = k.t OFFSET 0) AS r))
    RETURNING member_id, {target}
),
came AS (
    INSERT INTO {members} (member_id, {target}, {since})
    SELECT k.m, k.t, %b FROM unnest(%b::bigint[], %b::bigint[]) AS k(m, t)
    ON CONFLICT DO NOTHING
    RETURNING member_id, {target}
),
logged AS (
    INSERT INTO {changes} (member_id, {target}, {verb}, at)
    SELECT member_id, {target}, '{gone}', %b FROM gone
    UNION ALL
    SELECT member_id, {target}, '{came}', %b FROM came
    RETURNING {target}, {verb}
)
SELECT {target}, sum(CASE {verb} WHEN '{came}' THEN 1 ELSE -1 END) FROM logged GROUP BY {target}
"""  # noqa: S608


_TAGS_DIFF = _diff_sql(members=_MT, changes=_TC, target="tag_id", since="added_at", verb="action",
                       gone="removed", came="added")  # fmt: skip
_SEGMENTS_DIFF = _diff_sql(members=_SM, changes=_SC, target="segment_id", since="entered_at", verb="change",
                           gone="exited", came="entered")  # fmt: skip


def _pairs_write(
    statement: str, added: list[tuple[int, int]], removed: list[tuple[int, int]], now: datetime
) -> dict[int, int]:
    """Run a ``_diff_sql`` statement; returns by how much each target's membership moved."""
    if not added and not removed:
        return {}
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            statement,
            [[m for m, _ in removed], [t for _, t in removed], now, [m for m, _ in added], [t for _, t in added],
             now, now],
        )  # fmt: skip
        return dict(cursor.fetchall())


def _sizes_move(sizes: dict[int, int]) -> set[int]:
    """Move the segments' sizes by what entered and left; returns the segments that changed.

    Last in the refresh (the rows stay locked until it commits) and in segment order, so
    refreshes touching the same segments queue briefly instead of deadlocking."""
    ids = sorted(pk for pk, delta in sizes.items() if delta)
    if ids:
        with binary_parameters_cursor() as cursor:
            cursor.execute(
                "SELECT id FROM members_segment WHERE id = ANY(%b) ORDER BY id FOR NO KEY UPDATE", [ids]
            )
            cursor.execute(
                "UPDATE members_segment AS s SET size = s.size + d.delta "
                "FROM unnest(%b::bigint[], %b::int[]) AS d(id, delta) WHERE s.id = d.id",
                [ids, [sizes[pk] for pk in ids]],
            )
    return set(sizes)


_SEEN = ConsentSeen._meta.db_table
_SEEN_OF = f"SELECT member_id, granted FROM {_SEEN} WHERE member_id = ANY(%b::bigint[])"  # noqa: S608
# Upserted in member order (the rows of one batch's members: no two refreshes share a member).
_SEEN_UPSERT = (
    f"INSERT INTO {_SEEN} (member_id, granted) SELECT v.m, string_to_array(v.g, ',') "  # noqa: S608
    "FROM unnest(%b::bigint[], %b::text[]) AS v(m, g) ORDER BY v.m "
    "ON CONFLICT (member_id) DO UPDATE SET granted = EXCLUDED.granted"
)
_CONSENT_CHANGES = (
    f"INSERT INTO {_SC} (member_id, segment_id, change, reason, purpose, at) "  # noqa: S608
    "SELECT *, %b FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[])"
)


def _consent_changes_write(
    members: Mapping[int, MemberFacts], kept: Mapping[int, set[int]], now: datetime
) -> set[int]:
    """Tell the changes feed which members, staying in a segment, withdrew or granted again
    consent to a purpose since the feed last heard of them (``ConsentSeen``): per purpose, an
    exit with the reason ``consent_withdrawn`` or an entry with ``consent_granted``, which only
    the outflows declaring that purpose hear (``selectors.changes_consented``). A member's
    entry and exit themselves are judged by consent when they leave, so only segments the
    member stays in need telling. Returns the segments told (their webhooks are nudged). Two
    queries, and two writes when anything changed."""
    purposes = tuple(settings.CONSENT_PURPOSES)
    granted = {
        member_id: frozenset(p for p in purposes if consent_granted(facts.consents, (p,), now))
        for member_id, facts in members.items()
    }
    with binary_parameters_cursor() as cursor:
        cursor.execute(_SEEN_OF, [sorted(members)])
        seen = {member_id: frozenset(g) & set(purposes) for member_id, g in cursor.fetchall()}
        moved = {m: g for m, g in granted.items() if g != seen.get(m, frozenset())}
        if not moved:
            return set()
        ids = sorted(moved)
        cursor.execute(_SEEN_UPSERT, [ids, [",".join(sorted(moved[m])) for m in ids]])
        rows = [
            (member_id, segment_id, change, reason, purpose)
            for member_id in ids
            for change, reason, changed in (
                (SegmentChange.Change.EXITED, SegmentChange.CONSENT_WITHDRAWN,
                 seen.get(member_id, frozenset()) - moved[member_id]),
                (SegmentChange.Change.ENTERED, SegmentChange.CONSENT_GRANTED,
                 moved[member_id] - seen.get(member_id, frozenset())),
            )
            for purpose in sorted(changed)
            for segment_id in sorted(kept.get(member_id, ()))
        ]  # fmt: skip
        if rows:
            cursor.execute(_CONSENT_CHANGES, [now, *(list(column) for column in zip(*rows, strict=True))])
    return {segment_id for _, segment_id, *_ in rows}


_RECHECKS_UPSERT = (
    f"INSERT INTO {SegmentsRecheck._meta.db_table} (member_id, due_at) "  # noqa: S608
    "SELECT * FROM unnest(%b::bigint[], %b::timestamptz[]) "
    "ON CONFLICT (member_id) DO UPDATE SET due_at = EXCLUDED.due_at"
)


def _rechecks_write(member_ids: set[int], due: dict[int, datetime]) -> None:
    """Each member's next moment time alone may change its tags or segments (none: no row)."""
    rows_delete(SegmentsRecheck, column="member", keys=member_ids - due.keys())
    if due:
        ids = sorted(due)
        with binary_parameters_cursor() as cursor:
            cursor.execute(_RECHECKS_UPSERT, [ids, [due[pk] for pk in ids]])


# An absorbed member leaves every tag and segment; its manual tags and static-list places go to
# its survivor (unless the survivor has them already). One statement for tags, one for segments.
_RETIRED_TAGS = f"""
WITH gone AS (
    DELETE FROM {_MT} WHERE ctid = ANY(ARRAY(
        SELECT r.ctid FROM unnest(%b::bigint[]) AS k(m)
        CROSS JOIN LATERAL (SELECT ctid FROM {_MT} WHERE member_id = k.m OFFSET 0) AS r))
    RETURNING member_id, tag_id, added_at, added_by_id
),
moved AS (
    INSERT INTO {_MT} (member_id, tag_id, added_at, added_by_id)
    SELECT survivor.id, g.tag_id, g.added_at, g.added_by_id FROM gone AS g
    CROSS JOIN LATERAL (SELECT merged_into_id AS id FROM members_member WHERE id = g.member_id OFFSET 0) AS survivor
    WHERE survivor.id IS NOT NULL AND g.tag_id IN (SELECT id FROM members_tag WHERE kind = 'manual')
    ON CONFLICT (member_id, tag_id) DO NOTHING
    RETURNING member_id, tag_id, added_by_id
)
INSERT INTO {_TC} (member_id, tag_id, action, by_id, at)
SELECT member_id, tag_id, 'removed', NULL, %b FROM gone
UNION ALL
SELECT member_id, tag_id, 'added', added_by_id, %b FROM moved
"""  # noqa: S608
_RETIRED_SEGMENTS = f"""
WITH gone AS (
    DELETE FROM {_SM} WHERE ctid = ANY(ARRAY(
        SELECT r.ctid FROM unnest(%b::bigint[]) AS k(m)
        CROSS JOIN LATERAL (SELECT ctid FROM {_SM} WHERE member_id = k.m OFFSET 0) AS r))
    RETURNING member_id, segment_id
),
moved AS (
    INSERT INTO {_SM} (member_id, segment_id, entered_at)
    SELECT survivor.id, g.segment_id, %b FROM gone AS g
    CROSS JOIN LATERAL (SELECT merged_into_id AS id FROM members_member WHERE id = g.member_id OFFSET 0) AS survivor
    WHERE survivor.id IS NOT NULL AND g.segment_id IN (SELECT id FROM members_segment WHERE kind = 'static')
    ON CONFLICT (segment_id, member_id) DO NOTHING
    RETURNING member_id, segment_id
),
logged AS (
    INSERT INTO {_SC} (member_id, segment_id, change, at)
    SELECT member_id, segment_id, 'exited', %b FROM gone
    UNION ALL
    SELECT member_id, segment_id, 'entered', %b FROM moved
    RETURNING segment_id, change
)
SELECT segment_id, sum(CASE change WHEN 'entered' THEN 1 ELSE -1 END) FROM logged GROUP BY segment_id
"""  # noqa: S608


def _retired_leave(retired: set[int], now: datetime) -> dict[int, int]:
    """Returns by how much each segment's size moved."""
    if not retired:
        return {}
    ids = sorted(retired)
    with binary_parameters_cursor() as cursor:
        cursor.execute(_RETIRED_TAGS, [ids, now, now])
        cursor.execute(_RETIRED_SEGMENTS, [ids, now, now, now])
        sizes = dict(cursor.fetchall())
    rows_delete(SegmentsRecheck, column="member", keys=retired)
    return sizes


# An erased member leaves every tag and segment, manual ones and static lists included, and
# nothing moves anywhere: the exits say why (``reason``), so a tool syncing the feed drops the
# person from what it holds too.
_ERASED_TAGS = f"""
WITH gone AS (
    DELETE FROM {_MT} WHERE ctid = ANY(ARRAY(
        SELECT r.ctid FROM unnest(%b::bigint[]) AS k(m)
        CROSS JOIN LATERAL (SELECT ctid FROM {_MT} WHERE member_id = k.m OFFSET 0) AS r))
    RETURNING member_id, tag_id
)
INSERT INTO {_TC} (member_id, tag_id, action, by_id, at) SELECT member_id, tag_id, 'removed', NULL, %b FROM gone
"""  # noqa: S608
_ERASED_SEGMENTS = f"""
WITH gone AS (
    DELETE FROM {_SM} WHERE ctid = ANY(ARRAY(
        SELECT r.ctid FROM unnest(%b::bigint[]) AS k(m)
        CROSS JOIN LATERAL (SELECT ctid FROM {_SM} WHERE member_id = k.m OFFSET 0) AS r))
    RETURNING member_id, segment_id
),
logged AS (
    INSERT INTO {_SC} (member_id, segment_id, change, reason, at)
    SELECT member_id, segment_id, 'exited', %b, %b FROM gone
    RETURNING segment_id
)
SELECT segment_id, -count(*) FROM logged GROUP BY segment_id
"""  # noqa: S608


def memberships_erase(*, member_ids: set[int], now: datetime) -> tuple[set[int], dict[str, int]]:
    """Take erased members out of every tag and segment (exits with the reason ``erased``) and
    of the rechecks and what the feed knew of their consent; the caller has made sure nothing puts them back (an erased member is never
    refreshed). Returns the segments whose membership changed, and counts."""
    if not member_ids:
        return set(), {"tags": 0, "segments": 0}
    definitions = definitions_load()
    memberships_lock(
        tag_ids=list(definitions.tag_keys), segment_ids=list(definitions.segment_keys), exclusive=False
    )
    ids = sorted(member_ids)
    with binary_parameters_cursor() as cursor:
        cursor.execute(_ERASED_TAGS, [ids, now])
        tags = cursor.rowcount
        cursor.execute(_ERASED_SEGMENTS, [ids, SegmentChange.ERASED, now])
        sizes = dict(cursor.fetchall())
    rows_delete(SegmentsRecheck, column="member", keys=member_ids)
    rows_delete(ConsentSeen, column="member", keys=member_ids)
    return _sizes_move(sizes), {"tags": tags, "segments": -sum(sizes.values())}
