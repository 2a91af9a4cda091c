"""Reads of the events app."""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import DEFAULT_DB_ALIAS, connection

from cdp.credentials import credential_hash
from cdp.db import statement_run
from events.models import Channel, Event, RejectedEvent, Source

#: Every column of a source, in the model's order (``Source.from_db`` reads them so).
_SOURCE_COLUMNS = tuple(field.attname for field in Source._meta.concrete_fields)
_SOURCE_BY_KEY_SQL = (
    f"SELECT {', '.join(_SOURCE_COLUMNS)} FROM {Source._meta.db_table} "  # noqa: S608 - the model's own names
    "WHERE write_key_hash = %b AND enabled"
)


def source_for_write_key(write_key: str) -> Source | None:
    """The enabled source holding this write key. Not cached: disabling a source must stop
    its key at once in every process.

    Read by one prepared statement (``cdp.db.statement_run``), not the ORM: every batch request
    starts here, and the queryset's compilation and Django's health check before it (a
    ``SELECT 1`` round trip) cost half a millisecond of CPU per request, about 8 µs per event of
    a batch as an SDK flushes one (bench/ingest_cpu.py)."""
    rows = statement_run(_SOURCE_BY_KEY_SQL, [credential_hash(write_key)])
    return Source.from_db(DEFAULT_DB_ALIAS, _SOURCE_COLUMNS, rows[0]) if rows else None


@dataclass(frozen=True, slots=True)
class SourceCard:
    """What storing one event needs of its source, as a process last read it. Every use
    checks it in the statement that stores the event (``events.services.event_ingest_one``):
    a disabled source, a rotated key or a changed setting is noticed by the next request."""

    pk: int
    write_key_hash: str
    name: str
    kind: str
    store_code: str
    default_currency: str


#: Cards by write key hash, per process; a card found stale is forgotten (``source_card_forget``).
_source_cards: dict[str, SourceCard] = {}
_SOURCE_CARDS_MAX = 1024
_SOURCE_CARD_SQL = (
    f"SELECT id, name, kind, store_code, default_currency FROM {Source._meta.db_table} "  # noqa: S608
    "WHERE write_key_hash = %b AND enabled"
)


def source_card_for_write_key(write_key: str) -> SourceCard | None:
    """The card of the enabled source holding this write key: this process's copy, else read
    (one query). Unlike ``source_for_write_key`` it may be stale, so whoever stores with it
    checks it in the same statement."""
    digest = credential_hash(write_key)
    card = _source_cards.get(digest)
    if card is None:
        rows = statement_run(_SOURCE_CARD_SQL, [digest])
        if not rows:
            return None
        pk, name, kind, store_code, default_currency = rows[0]
        card = SourceCard(pk, digest, name, kind, store_code, default_currency)
        if len(_source_cards) >= _SOURCE_CARDS_MAX:  # keys by the thousand: start afresh
            _source_cards.clear()
        _source_cards[digest] = card
    return card


def source_card_forget(card: SourceCard) -> None:
    """Drop a card found stale; the next request reads the source again."""
    _source_cards.pop(card.write_key_hash, None)


#: Source names change rarely and label every timeline line: each process keeps them this long
#: (a renamed source shows its new name within this time; a new source at once).
SOURCE_NAMES_TTL_SECONDS = 60.0
_source_names: tuple[float, dict[int, str]] = (0.0, {})


def source_names(wanted: Iterable[int] = ()) -> dict[int, str]:
    """Source names by id, from a per-process copy reloaded (one query) when it is older than
    the TTL or lacks one of the ``wanted`` ids."""
    global _source_names
    loaded_at, names = _source_names
    if time.monotonic() - loaded_at > SOURCE_NAMES_TTL_SECONDS or not set(wanted) <= names.keys():
        names = dict(Source.objects.values_list("id", "name"))
        _source_names = (time.monotonic(), names)
    return names


def source_names_forget(**kwargs: object) -> None:
    """Drop this process's copy (a ``post_save`` receiver of ``Source``)."""
    global _source_names
    _source_names = (0.0, {})


#: What an access export gives of each event: all of it, as the source sent it.
EXPORTED_EVENT_FIELDS = (
    "id", "message_id", "type", "event", "name", "user_id", "anonymous_id", "previous_id", "group_id",
    "channel", "store_code", "timestamp", "original_timestamp", "sent_at", "received_at", "context", "traits",
    "properties", "integrations", "source_id",
)  # fmt: skip


def events_exported(*, event_ids: Iterable[int]) -> list[dict]:
    """These events whole (as stored), oldest first, with their source's name: an access
    request's copy of everything a person's events hold."""
    names = source_names()
    rows = list(
        Event.objects.filter(id__in=sorted(set(event_ids)))
        .order_by("timestamp", "id")
        .values(*EXPORTED_EVENT_FIELDS)
    )
    for row in rows:
        row["source"] = names.get(row["source_id"], "")
    return rows


def events_stated_names(*, event_ids: Iterable[int], keys: Iterable[str]) -> set[str]:
    """Every name these events stated for their person (``traits`` and ``context.traits`` under
    ``keys``), whatever later events said: what an erasure looks for in free text."""
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    rows = (
        Event.objects.filter(id__in=sorted(set(event_ids)))
        .exclude(type="group")
        .values_list("traits", "context")
    )
    for traits, context in rows.iterator(chunk_size=2000):
        stated = [traits, context.get("traits") if isinstance(context, dict) else None]
        for document in stated:
            if isinstance(document, dict):
                found.update(v.strip() for k in wanted if isinstance(v := document.get(k), str) and v.strip())
    return found


_TRAFFIC = """
SELECT source_id, date_trunc('hour', received_at), count(*), max(received_at), max(id)
FROM {table} WHERE id > %s AND id <= %s GROUP BY 1, 2
"""
_SETTLED_HEAD = "SELECT id FROM {table} WHERE received_at < %s ORDER BY id DESC LIMIT 1"


def events_traffic(
    *, after_id: int, settled_before: datetime, rejected: bool = False
) -> tuple[list[tuple[int, datetime, int, datetime]], int]:
    """Events (or rejections) stored after ``after_id`` and received before ``settled_before``,
    counted per source and hour: [(source id, hour, count, last received)], and the id read up
    to (the next call's ``after_id``).

    An id is taken when its row is inserted, not when it commits: a row received after
    ``settled_before`` is left for the next call, so a request still committing (ingestion
    commits within milliseconds of its receipt time) is never skipped. The walk is by primary
    key from ``after_id``: each call reads only what arrived since the last."""
    table = (RejectedEvent if rejected else Event)._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(_SETTLED_HEAD.format(table=table), [settled_before])  # model tables only
        head = cursor.fetchone()
        if head is None or head[0] <= after_id:
            return [], after_id
        cursor.execute(_TRAFFIC.format(table=table), [after_id, head[0]])
        return [(row[0], row[1], row[2], row[3]) for row in cursor.fetchall()], head[0]


def events_last_id(*, rejected: bool = False) -> int:
    """The newest id of the event (or rejection) table; 0 when it is empty."""
    model = RejectedEvent if rejected else Event
    return model.objects.order_by("-id").values_list("id", flat=True).first() or 0


def store_sources() -> list[tuple[int, str, str]]:
    """The enabled sources of stores' tills (kind pos with a store code): (id, name, store code)."""
    return list(
        Source.objects.filter(kind=Channel.POS, enabled=True)
        .exclude(store_code="")
        .order_by("id")
        .values_list("id", "name", "store_code")
    )
