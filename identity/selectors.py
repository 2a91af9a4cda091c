"""Reads of the identity app: who holds an identifier, and a member's identity card."""

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

import orjson
from django.contrib.auth import get_user_model
from django.db import connection

from cdp.vault import SEALED_IDENTIFIER_TYPES, identifier_index, identifier_open, text_open
from events.models import Channel, Source
from identity.identifiers import IdentifierType, normalize
from identity.models import EventResolution, Identifier, MemberIdentifier, SplitRecord
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


def member_event_ids(*, member_id: int) -> list[int]:
    """The ids of the events resolved to a member (an absorbed member's are its survivor's)."""
    return sorted(EventResolution.objects.filter(member_id=member_id).values_list("event_id", flat=True))


def anonymous_members_inactive(
    *, last_event_before: datetime, types: Collection[str], after_id: int, limit: int
) -> list[int]:
    """Active members after ``after_id`` (by id) whose last event is older than
    ``last_event_before`` and who hold no identifier but of ``types`` (anonymous ids, devices):
    nobody a retailer could name. At most ``limit``, by id."""
    anonymous = sorted(set(types))
    rows = _rows(
        """
        SELECT m.id FROM members_member AS m
        WHERE m.status = 'active' AND m.id > %s AND m.last_event_at < %s
          AND NOT EXISTS (SELECT 1 FROM identity_identifier AS i
                           WHERE i.member_id = m.id AND NOT i.type = ANY(%s))
          AND NOT EXISTS (SELECT 1 FROM identity_memberidentifier AS h
                            JOIN identity_identifier AS i ON i.id = h.identifier_id
                           WHERE h.member_id = m.id AND NOT i.type = ANY(%s))
        ORDER BY m.id LIMIT %s
        """,
        [after_id, last_event_before, anonymous, anonymous, limit],
    )
    return [row[0] for row in rows]


def members_holding(*, type_: str, values: list[str]) -> set[int]:
    """Ids of the members holding any of these identifier values (normalized: a phone or an
    email is looked for by its blind index) (owners, and holders of types that never merge).
    One query."""
    values = [identifier_index(type_, value) for value in values]
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
    stored = {identifier_index(type_, value): value for value in values}  # a phone or an email: its index
    holders: dict[str, set[int]] = {}
    for value, owner, holder in _rows(_HOLDERS_OF_VALUES, [sorted(stored), type_]):
        holders.setdefault(stored[value], set()).update(m for m in (owner, holder) if m is not None)
    return {value: members for value, members in holders.items() if members}


@dataclass(frozen=True)
class HeldIdentifier:
    type: str
    value: str
    last_seen_at: datetime | None
    merges: bool  # False: a type that never merges (stored, never used to join members)
    stored: str = ""  # as stored, when it differs from ``value``: a phone's or an email's blind index


def member_identifiers(*, member_id: int) -> list[HeldIdentifier]:
    """Everything a member holds, by type then value (one query)."""
    rows = _rows(_HELD_BY_MEMBER, [member_id, member_id])
    return sorted(
        (HeldIdentifier(type_, identifier_open(type_, value, sealed), seen, merges, value if sealed else "")
         for type_, value, sealed, seen, merges in rows),
        key=lambda held: (held.type, held.value),
    )  # fmt: skip


def members_contacts(*, member_ids: Collection[int], types: Collection[str]) -> dict[int, dict[str, str]]:
    """For each member, the identifier of each of ``types`` seen last (ties: the lowest stored form),
    in its stored, normalized form: a phone in E.164, an email in lower case, never a
    placeholder (those are never stored). Members holding none are left out. One query."""
    contacts: dict[int, dict[str, str]] = {}
    if not member_ids or not types:
        return contacts
    ids, wanted = sorted(set(member_ids)), sorted(set(types))
    for member_id, type_, value, sealed in _rows(_CONTACTS_OF_MEMBERS, [ids, wanted, ids, wanted]):
        contacts.setdefault(member_id, {})[type_] = identifier_open(type_, value, sealed)
    return contacts


@dataclass(frozen=True)
class HistoryEntry:
    """A merge or split in a member's history, as the member may be shown it.

    ``identifiers`` are only those of the record that the member holds now, and ``event_id``
    is None unless the event is the member's now: a record can name what a later late event
    or split gave to another person, and their identifiers are not this member's to show.
    """

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


def member_history(*, member_id: int, held: Collection[HeldIdentifier] | None = None) -> list[HistoryEntry]:
    """Merges into this (active) member (also into members it absorbed since) and splits of
    it, newest first, each showing only what is the member's now (two queries, each by index).
    Records name phones and emails by their blind index: shown by their values, from ``held``
    (the member's ``member_identifiers``, which is all a record may show) or one more query."""
    entries = [
        HistoryEntry("merge", at, survivor, gone, orjson.loads(identifiers), cause, event_id, "", "", [])
        for at, survivor, gone, identifiers, cause, event_id in _rows(
            _MERGES_OF_MEMBER, {"member": member_id}
        )
    ]
    entries += [
        HistoryEntry(
            "split", at, member, None, orjson.loads(identifiers), "staff", None, staff or "",
            text_open(SplitRecord.REASON, reason),
            orjson.loads(result),
        )
        for at, member, identifiers, staff, reason, result in _rows(
            _SPLITS_OF_MEMBER, {"member": member_id, "member_list": orjson.dumps([member_id]).decode()}
        )
    ]  # fmt: skip
    texts = {text for entry in entries for text in entry.identifiers}
    opened = (
        {f"{h.type}:{h.stored}": f"{h.type}:{h.value}" for h in held if h.stored}
        if held is not None
        else identifier_texts_opened(texts)
    )
    entries = [replace(entry, identifiers=[opened.get(t, t) for t in entry.identifiers]) for entry in entries]
    return sorted(entries, key=lambda e: e.at, reverse=True)


def identifier_texts_opened(texts: Collection[str]) -> dict[str, str]:
    """``type:value`` texts of records (merges, splits) whose value is a blind index, each with
    the value opened (one query, only when there are any)."""
    sealed = [text.partition(":") for text in texts if text.partition(":")[0] in SEALED_IDENTIFIER_TYPES]
    if not sealed:
        return {}
    rows = _rows(_SEALED_OF_VALUES, [[t for t, _, _ in sealed], [v for _, _, v in sealed]])
    return {f"{type_}:{value}": f"{type_}:{identifier_open(type_, value, box)}" for type_, value, box in rows}


@dataclass(frozen=True)
class MergeHistoryAudit:
    """Whether the merge history tells the truth about the members as they are now.

    Each merged member's latest merge record must cite an event that resolves to the member
    its survivor leads to, and only identifiers that member holds; every merged member must
    have a record. Older records of the same member are what a later replay re-told.
    """

    records: int
    merged_members: int
    unrecorded: list[int]  # merged members without any merge record
    foreign_event: list[int]  # record ids whose event is another member's
    foreign_identifiers: list[int]  # record ids naming an identifier another member holds (or nobody)

    @property
    def truthful(self) -> bool:
        return not (self.unrecorded or self.foreign_event or self.foreign_identifiers)


def merge_history_audit() -> MergeHistoryAudit:
    """Check every merged member's latest merge record against the graph (one pass, in SQL)."""
    rows = _rows(_AUDIT_LATEST_MERGES, [])
    unrecorded = [absorbed for record, absorbed, *_ in rows if record is None]
    return MergeHistoryAudit(
        records=_rows("SELECT count(*) FROM identity_mergerecord", [])[0][0],
        merged_members=len(rows),
        unrecorded=sorted(unrecorded),
        foreign_event=sorted(record for record, _, foreign, _ in rows if record is not None and foreign),
        foreign_identifiers=sorted(
            record for record, _, _, foreign in rows if record is not None and foreign
        ),
    )


# The 360 view's reads, in plain SQL: at one member they cost a fraction of a millisecond in
# PostgreSQL, and building them through the ORM cost several times that. (Django reads jsonb
# as text: decoded here.)
_HELD_BY_MEMBER = """
SELECT type, value, sealed, last_seen_at, true FROM identity_identifier WHERE member_id = %s
UNION ALL
SELECT i.type, i.value, i.sealed, i.last_seen_at, false FROM identity_memberidentifier AS h
JOIN identity_identifier AS i ON i.id = h.identifier_id WHERE h.member_id = %s
"""
_CONTACTS_OF_MEMBERS = """
SELECT DISTINCT ON (member_id, type) member_id, type, value, sealed FROM (
    SELECT member_id, type, value, sealed, last_seen_at FROM identity_identifier
    WHERE member_id = ANY(%s) AND type = ANY(%s)
    UNION ALL
    SELECT h.member_id, i.type, i.value, i.sealed, i.last_seen_at FROM identity_memberidentifier AS h
    JOIN identity_identifier AS i ON i.id = h.identifier_id WHERE h.member_id = ANY(%s) AND i.type = ANY(%s)
) AS held
ORDER BY member_id, type, last_seen_at DESC NULLS LAST, value
"""
_SEALED_OF_VALUES = """
SELECT i.type, i.value, i.sealed FROM unnest(%s::text[], %s::text[]) AS k(t, v)
CROSS JOIN LATERAL (SELECT type, value, sealed FROM identity_identifier WHERE type = k.t AND value = k.v OFFSET 0) AS i
"""
_HOLDERS_OF_VALUES = """
SELECT k.value, i.member_id, h.member_id FROM unnest(%s::text[]) AS k(value)
CROSS JOIN LATERAL (SELECT id, member_id FROM identity_identifier WHERE type = %s AND value = k.value OFFSET 0) AS i
LEFT JOIN identity_memberidentifier AS h ON h.identifier_id = i.id
"""


def _held_by(text: str, member: str) -> str:
    """SQL: the identifier written ``type:value`` in ``text`` (the value may hold colons) is
    held by the member ``member`` (owned, or of a type that never merges). Both arguments are
    SQL expressions written in this module."""
    type_ = f"split_part({text}, ':', 1)"
    return f"""EXISTS (
        SELECT 1 FROM identity_identifier AS i
         WHERE i.type = {type_} AND i.value = substr({text}, length({type_}) + 2)
           AND (i.member_id = {member} OR EXISTS (SELECT 1 FROM identity_memberidentifier AS h
                                                   WHERE h.identifier_id = i.id AND h.member_id = {member})))"""  # noqa: S608 - see the docstring


def _held_only(identifiers: str, member: str) -> str:
    """SQL: the elements of the jsonb list ``identifiers`` that ``member`` holds, in order."""
    return f"""COALESCE((SELECT jsonb_agg(t.text ORDER BY t.n)
                          FROM jsonb_array_elements_text({identifiers}) WITH ORDINALITY AS t(text, n)
                         WHERE {_held_by("t.text", member)}), '[]'::jsonb)"""  # noqa: S608 - see _held_by


_MERGES_OF_MEMBER = f"""
SELECT r.created_at, r.survivor_id, r.absorbed_id, {_held_only("r.identifiers", "%(member)s")}, r.cause,
       CASE WHEN EXISTS (SELECT 1 FROM identity_eventresolution AS e
                          WHERE e.event_id = r.event_id AND e.member_id = %(member)s) THEN r.event_id END
FROM (
    SELECT * FROM identity_mergerecord WHERE survivor_id = %(member)s OR absorbed_id = %(member)s
    UNION
    SELECT r.* FROM members_member AS a JOIN identity_mergerecord AS r ON r.survivor_id = a.id
     WHERE a.merged_into_id = %(member)s
) AS r
"""  # noqa: S608 - fragments of this module only
_SPLITS_OF_MEMBER = f"""
SELECT s.created_at, s.member_id, {_held_only("s.identifiers", "%(member)s")},
       u.{get_user_model().USERNAME_FIELD}, s.reason, s.resulting_members
FROM identity_splitrecord AS s LEFT JOIN {get_user_model()._meta.db_table} AS u ON u.id = s.staff_id
WHERE s.member_id = %(member)s OR s.resulting_members @> %(member_list)s::jsonb
"""  # noqa: S608 - model metadata and fragments of this module only
# Each merged member with its latest merge record (None: it has none), and whether that cites an
# event or an identifier of another member than the one its survivor leads to now.
_AUDIT_LATEST_MERGES = f"""
SELECT r.id, a.id,
       r.id IS NOT NULL AND (
           SELECT COALESCE(m.merged_into_id, m.id) FROM identity_eventresolution AS e
             JOIN members_member AS m ON m.id = e.member_id WHERE e.event_id = r.event_id
       ) IS DISTINCT FROM COALESCE(s.merged_into_id, s.id),
       r.id IS NOT NULL AND EXISTS (
           SELECT 1 FROM jsonb_array_elements_text(r.identifiers) AS t(text)
            WHERE NOT {_held_by("t.text", "COALESCE(s.merged_into_id, s.id)")})
FROM members_member AS a
LEFT JOIN LATERAL (
    SELECT * FROM identity_mergerecord WHERE absorbed_id = a.id ORDER BY id DESC LIMIT 1
) AS r ON true
LEFT JOIN members_member AS s ON s.id = r.survivor_id
WHERE a.status = 'merged'
  -- a member merged into an erased one: its records name nothing any more (identity.erasure)
  AND NOT EXISTS (SELECT 1 FROM members_member AS x WHERE x.id = a.merged_into_id AND x.status = 'erased')
"""  # noqa: S608 - fragments of this module only


def _rows(statement: str, params: list | dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()
