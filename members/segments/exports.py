"""A segment's members with the fields a marketing tool asks for: the rows of the members page
(``?fields=``) and of the CSV / NDJSON exports, read the same way so the three always agree.

Fields (``FIELDS``; unknown names are refused): the profile's ``name`` trait, the ``phone`` and
``email`` identifiers seen last, normalized (as ``members.selectors.member_summaries`` reads
them; ``traits.phone`` and ``traits.email`` are the same), any trait as
``traits.<key>``, figures (``orders``, ``spend``, ...), loyalty (``points``, ``tier``), the
member's tag keys (``tags``), each built-in identifier type by its name (the value seen last)
and any identifier type as ``identifiers.<type>`` (every value, last seen first).

Personal data: every personal value a field gives (``cdp.privacy``: a phone or email at any
depth of a trait, ``traits.mobile``, ``traits.contact``, the name, an address, the phone and
email identifiers) is masked unless the role may see contact details, and every batch that
gives some in full is in the audit log with its members and fields. Consent: every pull
declares a purpose (``members.consent``; ``marketing``, every marketing purpose, unless it
names one), and a member without consent to it in force when the rows are read is left out
whole, and counted (``withheld``), whatever the caller's role.

One statement reads a page of members with every requested field; an export walks the
segment by keyset in batches of ``EXPORT_BATCH``, so its memory stays flat however big the
segment. Batches are separate reads (no snapshot held for the length of a download): a
member in the segment throughout appears exactly once, one who enters or leaves meanwhile
may or may not appear.
"""

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.utils import timezone

from cdp.models import AuditEntry
from cdp.privacy import CONTACT_TYPES, Masking
from cdp.services import audit_record
from cdp.vault import identifier_open, traits_open
from identity.identifiers import BUILT_IN_TYPES, custom_type
from members.aggregates import ZERO
from members.consent.selectors import consent_granted_sql
from members.consent.statements import NO_CONSENT
from members.segments.models import Segment, SegmentMember
from members.selectors import CONTACT_FIELDS

EXPORT_BATCH = 2000
MAX_FIELDS = 64

Source = Literal["trait", "figure", "points", "identifier", "identifiers", "tags"]

#: Figures of ``members.MemberAggregate``: column and the value of a member without figures yet.
_FIGURES: dict[str, tuple[str, object]] = {
    "orders": ("orders", 0),
    "spend": ("spend", ZERO),
    "currency": ("currency", ""),
    "average_order_value": ("average_order_value", None),
    "first_purchase_at": ("first_purchase_at", None),
    "last_purchase_at": ("last_purchase_at", None),
    "last_event_at": ("last_event_at", None),
}
_POINTS = {"points": "balance", "tier": "tier"}
#: Identifier types by bare name (phone and email too: the identifiers, not the traits as typed).
_IDENTIFIER_NAMES = frozenset(BUILT_IN_TYPES)

_ALWAYS = ("member_id", "entered_at")

#: Every field by name, with what it holds (the API documents these).
FIELDS: dict[str, str] = {
    "member_id": "The member's id (always included).",
    "entered_at": "When the member entered the segment (always included).",
    "name": "The name trait; personal: masked and withheld like phone.",
    "phone": "The phone number seen last, normalized (E.164, e.g. +8613800138000; never a "
    "placeholder such as 000000); masked unless the role sees contact details.",
    "email": "The email address seen last, normalized (lower case); masked like phone.",
    "orders": "Orders placed (0 before any).",
    "spend": "Spend net of refunds, in currency.",
    "currency": "The currency of spend.",
    "average_order_value": "Average order value.",
    "first_purchase_at": "First purchase.",
    "last_purchase_at": "Last purchase.",
    "last_event_at": "Last event on any channel.",
    "points": "Points balance.",
    "tier": "Loyalty tier key.",
    "tags": "Keys of the tags the member carries.",
    **{name: f"The {name} identifier seen last." for name in sorted(_IDENTIFIER_NAMES - CONTACT_TYPES)},
    "traits.<key>": "Any profile trait (traits.phone and traits.email as phone and email); its personal "
    "values masked and withheld like phone.",
    "identifiers.<type>": "Every identifier of a type, last seen first (identifiers.phone and "
    "identifiers.email masked like phone).",
}


@dataclass(frozen=True, slots=True)
class Field:
    """A requested field: its name in the output, where it is read from, and the key there."""

    name: str
    source: Source
    key: str

    @property
    def path(self) -> tuple[str, ...] | None:
        """Where ``cdp.privacy`` finds the value (``("traits", "mobile")``, ``("phone",)``), to
        mask, withhold and audit it; None for figures, points and tags, which are never personal."""
        if self.source == "trait":
            return ("traits", self.key)
        if self.source == "identifier":
            return (self.key,)
        if self.source == "identifiers":
            return ("identifiers", self.key)
        return None


class UnknownFields(ValueError):
    """Field names that are not in ``FIELDS`` (or too many names)."""

    def __init__(self, names: list[str], reason: str = "unknown field") -> None:
        super().__init__(", ".join(names))
        self.names, self.reason = names, reason


def fields_parse(names: Iterable[str]) -> tuple[Field, ...]:
    """The fields asked for, in the order asked, each once. Raises ``UnknownFields`` naming
    every name that is not a field."""
    wanted = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    if len(wanted) > MAX_FIELDS:
        raise UnknownFields([f"{len(wanted)} fields"], f"at most {MAX_FIELDS} fields")
    fields, unknown = [], []
    for name in wanted:
        if name in _ALWAYS:
            continue
        field = _field(name)
        if field is None:
            unknown.append(name)
        else:
            fields.append(field)
    if unknown:
        raise UnknownFields(unknown)
    return tuple(fields)


def _field(name: str) -> Field | None:
    prefix, dot, key = name.partition(".")
    if dot:
        if prefix == "traits" and key in CONTACT_FIELDS:
            return Field(name, "identifier", key)  # as phone and email: never a placeholder
        if prefix == "traits" and key and len(key) <= 255:
            return Field(name, "trait", key)
        if prefix == "identifiers" and custom_type(key) == key:
            return Field(name, "identifiers", key)
        return None
    if name in CONTACT_FIELDS:
        return Field(name, "identifier", name)
    if name == "name":
        return Field(name, "trait", name)
    if name in _FIGURES:
        return Field(name, "figure", name)
    if name in _POINTS:
        return Field(name, "points", name)
    if name in _IDENTIFIER_NAMES:
        return Field(name, "identifier", name)
    if name == "tags":
        return Field(name, "tags", name)
    return None


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A segment member with the requested fields, masked as the caller may see them.
    ``contact_shown``: some personal value (masked or not) is in ``values``. ``consented``: the
    member's consent to the pull's purposes was in force when read (a row without it never
    leaves)."""

    member_id: int
    entered_at: datetime
    values: dict[str, object]
    contact_shown: bool
    consented: bool = True


# --- reading ------------------------------------------------------------------------------------

_PAGE = """
FROM (SELECT member_id, entered_at FROM members_segmentmember
      WHERE segment_id = %s AND member_id > %s ORDER BY member_id LIMIT %s) AS m"""
_TRAITS = """
LEFT JOIN LATERAL (SELECT jsonb_object_agg(key, value) AS traits FROM members_membertrait
                   WHERE member_id = m.member_id AND key = ANY(%s)) AS t ON true"""
_FIGURES_JOIN = "\nLEFT JOIN members_memberaggregate AS a ON a.member_id = m.member_id"
_POINTS_JOIN = "\nLEFT JOIN members_pointsaccount AS p ON p.member_id = m.member_id"
# Owned identifiers and held ones of types that never merge, as identity.selectors reads them.
_IDENTIFIERS = """
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(type, ids) AS ids FROM (
        SELECT type, jsonb_agg(jsonb_build_array(value, sealed) ORDER BY last_seen_at DESC NULLS LAST, value) AS ids
        FROM (
            SELECT type, value, sealed, last_seen_at FROM identity_identifier
            WHERE member_id = m.member_id AND type = ANY(%s)
            UNION ALL
            SELECT i.type, i.value, i.sealed, i.last_seen_at FROM identity_memberidentifier AS h
            JOIN identity_identifier AS i ON i.id = h.identifier_id
            WHERE h.member_id = m.member_id AND i.type = ANY(%s)
        ) AS held GROUP BY type
    ) AS by_type
) AS i ON true"""
_TAGS = """
LEFT JOIN LATERAL (SELECT array_agg(g.key ORDER BY g.key) AS tags FROM members_membertag AS mt
                   JOIN members_tag AS g ON g.id = mt.tag_id WHERE mt.member_id = m.member_id) AS g ON true"""


def segment_rows(
    *, segment: Segment, fields: tuple[Field, ...], after: int, size: int, masking: Masking,
    purposes: tuple[str, ...], at: datetime | None = None,
) -> list[MemberRow]:  # fmt: skip
    """The segment's members with ids above ``after``, lowest first, at most ``size``, each
    with ``fields`` and whether its consent to every one of ``purposes`` is in force at ``at``
    (now by default; one query, whatever the fields). A row without consent holds no values:
    the caller counts it and leaves it out."""
    sources = {field.source for field in fields}
    trait_keys = sorted({f.key for f in fields if f.source == "trait"})
    types = sorted({f.key for f in fields if f.source in ("identifier", "identifiers")})
    # Only constant fragments and column names from _FIGURES / _POINTS reach the text.
    columns = [
        "m.member_id",
        "m.entered_at",
        f"{consent_granted_sql('m.member_id')} AS consented",
        "t.traits",
    ]
    joins = [_PAGE, _TRAITS]
    params: list[Any] = [list(purposes), at or timezone.now(), segment.pk, after, size, trait_keys]
    figures = [f.key for f in fields if f.source == "figure"]
    if figures:
        columns += [f"a.{_FIGURES[name][0]}" for name in figures]
        joins.append(_FIGURES_JOIN)
    points = [f.key for f in fields if f.source == "points"]
    if points:
        columns += [f"p.{_POINTS[name]}" for name in points]
        joins.append(_POINTS_JOIN)
    if types:
        columns.append("i.ids")
        joins.append(_IDENTIFIERS)
        params += [types, types]
    if "tags" in sources:
        columns.append("g.tags")
        joins.append(_TAGS)
    statement = f"SELECT {', '.join(columns)}{''.join(joins)}\nORDER BY m.member_id"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        fetched = cursor.fetchall()
    return [_row(record, fields, figures, points, bool(types), masking) for record in fetched]


def _row(
    record: tuple, fields: tuple[Field, ...], figures: list[str], points: list[str], with_identifiers: bool,
    masking: Masking,
) -> MemberRow:  # fmt: skip
    member_id, entered_at, consented, traits_text, *rest = record
    if not consented:
        return MemberRow(member_id, entered_at, {}, contact_shown=False, consented=False)
    # jsonb arrives as text (as Django's JSONField reads it).
    traits = traits_open(orjson.loads(traits_text)) if traits_text else {}
    figure_values = dict(zip(figures, rest[: len(figures)], strict=True))
    rest = rest[len(figures) :]
    point_values = dict(zip(points, rest[: len(points)], strict=True))
    rest = rest[len(points) :]
    identifiers = {
        type_: [identifier_open(type_, value, sealed) for value, sealed in held]
        for type_, held in (orjson.loads(rest.pop(0) or "{}") if with_identifiers else {}).items()
    }  # a phone's or an email's value opened (cdp.vault)
    tags = (rest.pop(0) if rest else None) or []
    values: dict[str, object] = {}
    given = masking.given
    for field in fields:
        if field.source == "trait":
            value: Any = traits.get(field.key)
        elif field.source == "figure":
            value = figure_values[field.key]
            if value is None:
                value = _FIGURES[field.key][1]
        elif field.source == "points":
            value = point_values[field.key]
            if field.key == "points" and value is None:
                value = 0  # no account yet: nothing in the ledger
            elif field.key == "tier":
                value = value or None
        elif field.source == "identifier":
            value = next(iter(identifiers.get(field.key, ())), None)
        elif field.source == "identifiers":
            value = identifiers.get(field.key, [])
        else:
            value = tags
        if field.path is not None and value is not None:
            value = masking.document(value, at=field.path)
        values[field.name] = value
    return MemberRow(member_id, entered_at, values, masking.given > given)


def segment_withheld_count(*, segment: Segment, purposes: tuple[str, ...], at: datetime | None = None) -> int:
    """How many of the segment's members lack consent to ``purposes`` at ``at`` (now)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM members_segmentmember AS m WHERE m.segment_id = %s "  # noqa: S608 - constant text
            f"AND NOT {consent_granted_sql('m.member_id')}",
            [segment.pk, list(purposes), at or timezone.now()],
        )
        return int(cursor.fetchone()[0])


@dataclass(frozen=True, slots=True)
class ExportCount:
    rows: int  # members given
    withheld: int  # members left out: no consent to the purpose


def segment_export_record(
    *,
    user: AbstractBaseUser | None,
    segment: Segment,
    fields: tuple[Field, ...],
    file_format: str,
    purpose: str,
    purposes: tuple[str, ...],
    masking: Masking,
) -> ExportCount:
    """Append the audit entry of an export before any row leaves (who, the segment, the
    purpose, the fields, how many members it gives and how many it leaves out now, and why,
    whether personal data goes out in full or masked, and the fields personal by their key
    that go out in full) and return those counts. Each batch that gives personal values in
    full adds an entry naming its members and fields (``segment_export_batches``): values
    found personal by what they hold, too."""
    members = SegmentMember.objects.filter(segment=segment).count()
    withheld = segment_withheld_count(segment=segment, purposes=purposes)
    names = ",".join(["member_id", "entered_at", *(f.name for f in fields)])
    personal = [f.name for f in fields if f.path is not None and masking.personal_by_key(f.path)]
    audit_record(
        user=user,
        action=AuditEntry.Action.EXPORT_SEGMENT,
        member_ids=(),
        channel="api",
        detail=f"segment {segment.key} as {file_format} for {purpose}, {members - withheld} rows, "
        f"withheld {NO_CONSENT}={withheld}, personal data {'in full' if masking.full else 'masked'}: {names}",
        personal_fields=personal if masking.full else (),
    )
    return ExportCount(members - withheld, withheld)


def segment_export_batches(
    *, segment: Segment, fields: tuple[Field, ...], masking: Masking, purposes: tuple[str, ...],
    batch_size: int | None = None,
) -> Iterator[list[MemberRow]]:  # fmt: skip
    """The segment's members a batch at a time (one query each; ``EXPORT_BATCH`` by default),
    lowest id first, each batch checked for consent to ``purposes`` as it is read (members
    without it are left out). The members of a batch whose phone or email is shown in full
    are audited before the batch is given."""
    batch_size = batch_size or EXPORT_BATCH
    after = 0
    while True:
        read = segment_rows(
            segment=segment, fields=fields, after=after, size=batch_size, masking=masking, purposes=purposes
        )
        if not read:
            return
        rows = [row for row in read if row.consented]
        masking.audit(row.member_id for row in rows if row.contact_shown)
        if rows:
            yield rows
        if len(read) < batch_size:
            return
        after = read[-1].member_id


# --- formats ------------------------------------------------------------------------------------


def datetime_text(value: datetime) -> str:
    """ISO 8601 in the current time zone, UTC as ``Z``: as the rest of the API writes times."""
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return datetime_text(value)
    if isinstance(value, Decimal):
        return str(value)  # as the API writes money: exact, never a float
    return value


def row_json(row: MemberRow) -> dict[str, object]:
    """A row as the members page and NDJSON give it: member_id, entered_at, then the fields in
    the order asked."""
    return {
        "member_id": row.member_id,
        "entered_at": datetime_text(row.entered_at),
        **{name: _json_value(value) for name, value in row.values.items()},
    }


def ndjson_chunks(batches: Iterable[list[MemberRow]]) -> Iterator[bytes]:
    """One JSON object per line, a chunk per batch."""
    for rows in batches:
        yield b"".join(orjson.dumps(row_json(row)) + b"\n" for row in rows)


#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as a CSV cell: null empty, true/false, lists and objects as JSON, and text that a
    spreadsheet would run as a formula prefixed with ``'`` (numbers we write are never
    prefixed, so -5.00 stays a number)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return str(_json_value(value))


def csv_chunks(fields: tuple[Field, ...], batches: Iterable[list[MemberRow]]) -> Iterator[bytes]:
    """A header row (member_id, entered_at, the fields), then a chunk of rows per batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> bytes:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode()

    writer.writerow(["member_id", "entered_at", *(csv_cell(f.name) for f in fields)])
    yield flush()
    for rows in batches:
        for row in rows:
            writer.writerow(
                [row.member_id, datetime_text(row.entered_at), *(csv_cell(v) for v in row.values.values())]
            )
        yield flush()
