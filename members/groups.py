"""Segment ``group`` calls: the groups they name (an account, a company, a store club) with
their traits, and which members belong to which groups.

A group call's ``traits`` are the group's, never the person's: they give the person no trait
(``members.traits``) and no identifier (``identity.identifiers``). Both tables are derived
from events by the member refresh, so they are exact after merges, splits and rebuilds:
a refreshed member's memberships are rewritten from its events, and each group one of its
calls names is recomputed from every group call naming it (latest value per trait by event
time, with the tie-breaks of a person's traits).
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings

from cdp.db import binary_parameters_cursor, rows_delete
from events.models import Event, EventType
from members.models import Group, GroupMembership
from members.traits import TraitObservation, latest_traits


@dataclass(frozen=True, slots=True)
class GroupCall:
    """A member's group call, as the refresh read it."""

    member_id: int
    group_id: str
    at: datetime


def groups_refresh(*, member_ids: set[int], calls: Iterable[GroupCall]) -> None:
    """Rewrite these members' memberships from their group calls (a member absorbed by a
    merge, or without calls, keeps none) and recompute the groups those calls name.

    The caller holds the members' refresh locks; groups are shared between members, so they
    are written in one upsert in ``group_id`` order, never overwritten by a refresh that read
    fewer calls."""
    spans: dict[tuple[int, str], tuple[datetime, datetime]] = {}
    for call in calls:
        first, last = spans.get((call.member_id, call.group_id), (call.at, call.at))
        spans[(call.member_id, call.group_id)] = (min(first, call.at), max(last, call.at))
    group_ids = sorted({group_id for _, group_id in spans})
    if group_ids:
        _groups_write(group_ids)
    rows_delete(GroupMembership, column="member", keys=member_ids)
    if not spans:
        return
    pks = dict(Group.objects.filter(group_id__in=group_ids).values_list("group_id", "pk"))
    rows = sorted(spans.items())
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _INSERT_MEMBERSHIPS,
            [
                [member_id for (member_id, _), _ in rows],
                [pks[group_id] for (_, group_id), _ in rows],
                [first for _, (first, _) in rows],
                [last for _, (_, last) in rows],
            ],
        )


def groups_recompute(*, group_ids: Iterable[str]) -> None:
    """Recompute these groups from the calls naming them now, even from fewer calls than
    before: an erasure stripped or deleted some of them (``members.erasure``)."""
    if ids := sorted(set(group_ids)):
        _groups_write(ids, force=True)


def _groups_write(group_ids: list[str], *, force: bool = False) -> None:
    """Each group's traits from every group call naming it (one indexed read, one upsert)."""
    observations: dict[str, list[TraitObservation]] = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    last_call: dict[str, datetime] = {}
    with binary_parameters_cursor() as cursor:
        cursor.execute(_CALLS_OF_GROUPS, [EventType.GROUP.value, group_ids])
        for event_id, group_id, at, channel, message_id, source_id, traits in cursor.fetchall():
            calls[group_id] += 1
            last_call[group_id] = max(last_call.get(group_id, at), at)
            stated = orjson.loads(traits)
            observations[group_id] += [
                TraitObservation(key[:255], value, at, channel, message_id, source_id, event_id)
                for key, value in (stated.items() if isinstance(stated, dict) else ())
            ]
    precedence = settings.MEMBER_TRAIT_CHANNEL_PRECEDENCE
    traits = {
        group_id: {key: o.value for key, o in sorted(latest_traits(found, precedence).items())}
        for group_id, found in observations.items()
    }
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _UPSERT_GROUPS_FORCED if force else _UPSERT_GROUPS,
            [
                group_ids,
                [orjson.dumps(traits.get(group_id, {})).decode() for group_id in group_ids],
                [calls[group_id] for group_id in group_ids],
                [last_call.get(group_id) for group_id in group_ids],
            ],
        )


# Only model table names are interpolated. The calls of a group are found through the
# partial index on group calls (events 0005), never by a pass over the event log.
_CALLS_OF_GROUPS = (
    f"SELECT id, group_id, timestamp, channel, message_id, source_id, traits FROM {Event._meta.db_table} "  # noqa: S608
    "WHERE type = %b AND group_id = ANY(%b::text[])"
)
_UPSERT_GROUPS = (
    f"INSERT INTO {Group._meta.db_table} AS g (group_id, traits, calls, last_call_at, updated_at) "  # noqa: S608
    "SELECT v.id, v.traits::jsonb, v.calls, v.at, now() "
    "FROM unnest(%b::text[], %b::text[], %b::integer[], %b::timestamptz[]) AS v(id, traits, calls, at) "
    "ON CONFLICT (group_id) DO UPDATE SET traits = EXCLUDED.traits, calls = EXCLUDED.calls, "
    "last_call_at = EXCLUDED.last_call_at, updated_at = now() WHERE g.calls <= EXCLUDED.calls"
)
_UPSERT_GROUPS_FORCED = _UPSERT_GROUPS.removesuffix(" WHERE g.calls <= EXCLUDED.calls")
_INSERT_MEMBERSHIPS = (
    f"INSERT INTO {GroupMembership._meta.db_table} (member_id, group_id, first_call_at, last_call_at) "  # noqa: S608
    "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::timestamptz[], %b::timestamptz[])"
)
