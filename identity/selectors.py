"""Reads of the identity app: who holds an identifier, and a member's identity card."""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.contrib.auth import get_user_model
from django.db import connection

from events.models import Channel, Source
from identity.identifiers import IdentifierType, normalize
from identity.models import Identifier, MemberIdentifier
from identity.services import normalization_policy


def identifier_lookup_values(type_: str, raw: str) -> list[str]:
    """The stored forms ``raw`` can take as an identifier of ``type_``, normalized exactly as
    at ingestion: any written form of a phone finds the member. Raises ``InvalidIdentifier``
    or ``BlockedIdentifier`` for a value that can never match.

    An openid is stored scoped by its mini-program (``<appid>:<openid>``): a bare openid is
    looked for under every mini-program's appid.
    """
    if type_ != IdentifierType.WECHAT_OPENID:
        return [normalize(type_, raw, normalization_policy())]
    value = normalize(type_, raw, normalization_policy())
    if ":" in value:
        return [value]
    appids = (
        Source.objects.filter(kind=Channel.MINI_PROGRAM)
        .exclude(wechat_appid="")
        .values_list("wechat_appid", flat=True)
    )
    return [value, *(f"{appid}:{value}" for appid in sorted(set(appids)))]


def members_holding(*, type_: str, values: list[str]) -> set[int]:
    """Ids of the members holding any of these identifier values (owners, and holders of
    types that never merge). One query."""
    owners = Identifier.objects.filter(type=type_, value__in=values, member__isnull=False).values_list(
        "member_id", flat=True
    )
    holders = MemberIdentifier.objects.filter(
        identifier__type=type_, identifier__value__in=values
    ).values_list("member_id", flat=True)
    return set(owners.union(holders))


def openid_appids() -> list[str]:
    """The appids of the mini-programs, which scope their openids (``<appid>:<openid>``)."""
    appids = (
        Source.objects.filter(kind=Channel.MINI_PROGRAM)
        .exclude(wechat_appid="")
        .values_list("wechat_appid", flat=True)
    )
    return sorted(set(appids))


def identifier_holders(*, type_: str, values: Collection[str]) -> dict[str, set[int]]:
    """The members holding each of these stored (normalized) values of one type: owners, and
    holders of types that never merge; a value nobody holds is left out. One query for a whole
    batch, walking the (type, value) index key by key whatever the table's statistics."""
    holders: dict[str, set[int]] = {}
    for value, owner, holder in _rows(_HOLDERS_OF_VALUES, [sorted(set(values)), type_]):
        holders.setdefault(value, set()).update(m for m in (owner, holder) if m is not None)
    return {value: members for value, members in holders.items() if members}


@dataclass(frozen=True)
class HeldIdentifier:
    type: str
    value: str
    last_seen_at: datetime | None
    merges: bool  # False: a type that never merges (stored, never used to join members)


def member_identifiers(*, member_id: int) -> list[HeldIdentifier]:
    """Everything a member holds, by type then value (one query)."""
    rows = _rows(_HELD_BY_MEMBER, [member_id, member_id])
    return [HeldIdentifier(*row) for row in rows]


def members_contacts(*, member_ids: Collection[int], types: Collection[str]) -> dict[int, dict[str, str]]:
    """For each member, the identifier of each of ``types`` seen last (ties: the lowest value),
    in its stored, normalized form: a phone in E.164, an email in lower case, never a
    placeholder (those are never stored). Members holding none are left out. One query."""
    contacts: dict[int, dict[str, str]] = {}
    if not member_ids or not types:
        return contacts
    ids, wanted = sorted(set(member_ids)), sorted(set(types))
    for member_id, type_, value in _rows(_CONTACTS_OF_MEMBERS, [ids, wanted, ids, wanted]):
        contacts.setdefault(member_id, {})[type_] = value
    return contacts


@dataclass(frozen=True)
class HistoryEntry:
    kind: str  # "merge" or "split"
    at: datetime
    survivor_id: int | None
    absorbed_id: int | None
    identifiers: list[str]
    cause: str
    event_id: int | None
    staff: str
    reason: str
    resulting_members: list[int]


def member_history(*, member_id: int) -> list[HistoryEntry]:
    """Merges into this member (also into members it absorbed since) and splits of it, newest
    first (two queries, each by index)."""
    entries = [
        HistoryEntry("merge", at, survivor, gone, orjson.loads(identifiers), cause, event_id, "", "", [])
        for at, survivor, gone, identifiers, cause, event_id in _rows(_MERGES_OF_MEMBER, [member_id] * 3)
    ]
    entries += [
        HistoryEntry(
            "split", at, member, None, orjson.loads(identifiers), "staff", None, staff or "", reason,
            orjson.loads(result),
        )
        for at, member, identifiers, staff, reason, result in _rows(
            _SPLITS_OF_MEMBER, [member_id, orjson.dumps([member_id]).decode()]
        )
    ]  # fmt: skip
    return sorted(entries, key=lambda e: e.at, reverse=True)


# The 360 view's reads, in plain SQL: at one member they cost a fraction of a millisecond in
# PostgreSQL, and building them through the ORM cost several times that. (Django reads jsonb
# as text: decoded here.)
_HELD_BY_MEMBER = """
SELECT type, value, last_seen_at, true FROM identity_identifier WHERE member_id = %s
UNION ALL
SELECT i.type, i.value, i.last_seen_at, false FROM identity_memberidentifier AS h
JOIN identity_identifier AS i ON i.id = h.identifier_id WHERE h.member_id = %s
ORDER BY 1, 2
"""
_CONTACTS_OF_MEMBERS = """
SELECT DISTINCT ON (member_id, type) member_id, type, value FROM (
    SELECT member_id, type, value, last_seen_at FROM identity_identifier
    WHERE member_id = ANY(%s) AND type = ANY(%s)
    UNION ALL
    SELECT h.member_id, i.type, i.value, i.last_seen_at FROM identity_memberidentifier AS h
    JOIN identity_identifier AS i ON i.id = h.identifier_id WHERE h.member_id = ANY(%s) AND i.type = ANY(%s)
) AS held
ORDER BY member_id, type, last_seen_at DESC NULLS LAST, value
"""
_HOLDERS_OF_VALUES = """
SELECT k.value, i.member_id, h.member_id FROM unnest(%s::text[]) AS k(value)
CROSS JOIN LATERAL (SELECT id, member_id FROM identity_identifier WHERE type = %s AND value = k.value OFFSET 0) AS i
LEFT JOIN identity_memberidentifier AS h ON h.identifier_id = i.id
"""
_MERGES_OF_MEMBER = """
SELECT created_at, survivor_id, absorbed_id, identifiers, cause, event_id FROM identity_mergerecord
WHERE survivor_id = %s OR absorbed_id = %s
UNION
SELECT r.created_at, r.survivor_id, r.absorbed_id, r.identifiers, r.cause, r.event_id
FROM members_member AS a JOIN identity_mergerecord AS r ON r.survivor_id = a.id WHERE a.merged_into_id = %s
"""
_SPLITS_OF_MEMBER = f"""
SELECT s.created_at, s.member_id, s.identifiers, u.{get_user_model().USERNAME_FIELD}, s.reason, s.resulting_members
FROM identity_splitrecord AS s LEFT JOIN {get_user_model()._meta.db_table} AS u ON u.id = s.staff_id
WHERE s.member_id = %s OR s.resulting_members @> %s::jsonb
"""  # noqa: S608 - model metadata only


def _rows(statement: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()
