"""Reads of the events app."""

import time
from collections.abc import Iterable
from dataclasses import dataclass

from cdp.credentials import credential_hash
from cdp.db import statement_run
from events.models import Event, Source


def source_for_write_key(write_key: str) -> Source | None:
    """The enabled source holding this write key. Not cached: disabling a source must stop
    its key at once in every process."""
    try:
        return Source.objects.get(write_key_hash=credential_hash(write_key), enabled=True)
    except Source.DoesNotExist:
        return None


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
