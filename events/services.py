"""Writes of the events app: sources and their keys, and the ingestion of a request's events."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from cdp.credentials import credential_hash, credential_new, credential_prefix
from cdp.db import binary_parameters_cursor, statement_run, text_array
from events.contract import Message, Rejection
from events.models import Channel, Event, RejectedEvent, Source
from events.selectors import SourceCard
from events.tasks import process_pending_nudge

WRITE_KEY_KIND = "wk"


@dataclass(frozen=True)
class SourceWithKey:
    source: Source
    write_key: str  # shown once, never stored


def source_create(
    *, name: str, kind: Channel, store_code: str = "", default_currency: str | None = None
) -> SourceWithKey:
    """A new source and its write key; ``default_currency`` (None: the platform's) prices its
    orders that name no currency."""
    write_key = credential_new(kind=WRITE_KEY_KIND)
    source = Source(
        name=name,
        kind=kind,
        store_code=store_code,
        write_key_hash=credential_hash(write_key),
        write_key_prefix=credential_prefix(write_key),
    )
    if default_currency is not None:
        source.default_currency = default_currency
    source.full_clean()
    try:
        with transaction.atomic():
            source.save()
    except IntegrityError as exc:  # a concurrent create took the name after full_clean looked
        raise ValidationError({"name": "A source with this name already exists."}) from exc
    return SourceWithKey(source=source, write_key=write_key)


def source_rotate_key(*, source: Source) -> SourceWithKey:
    """Issue a new write key; the old one stops working at once."""
    write_key = credential_new(kind=WRITE_KEY_KIND)
    source.write_key_hash = credential_hash(write_key)
    source.write_key_prefix = credential_prefix(write_key)
    source.save(update_fields=["write_key_hash", "write_key_prefix", "updated_at"])
    return SourceWithKey(source=source, write_key=write_key)


def source_set_default_currency(*, source: Source, currency: str) -> Source:
    """The currency given from now on to the source's orders that name none (events already
    stored keep the one they were given). Raises ``ValidationError`` for a non-code."""
    source.default_currency = currency
    source.full_clean(validate_unique=False, validate_constraints=False)
    source.save(update_fields=["default_currency", "updated_at"])
    return source


def source_set_erasure(*, source: Source, rule: str) -> Source:
    """What erasing a person does to this source's events from now on (``ErasureRule``)."""
    source.erasure = rule
    source.full_clean(validate_unique=False, validate_constraints=False)
    source.save(update_fields=["erasure", "updated_at"])
    return source


def source_set_enabled(*, source: Source, enabled: bool) -> Source:
    source.enabled = enabled
    source.save(update_fields=["enabled", "updated_at"])
    return source


@dataclass(frozen=True)
class IngestOutcome:
    accepted: int
    duplicates: int
    #: The messageIds stored now (the others were stored before): an import tells a row it
    #: wrote from one it had written in an earlier run.
    accepted_ids: frozenset[str] = frozenset()


_TEXT_COLUMNS = (
    "message_id", "type", "event", "name", "user_id", "anonymous_id", "previous_id", "group_id",
)  # fmt: skip
_TIME_COLUMNS = ("timestamp", "original_timestamp", "sent_at")
_JSON_COLUMNS = ("context", "traits", "properties", "integrations")


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _insert_sql() -> str:
    table = Event._meta.db_table
    batch_columns = _TEXT_COLUMNS + _TIME_COLUMNS + _JSON_COLUMNS
    unnest_args = ", ".join(
        ["%b::text[]"] * len(_TEXT_COLUMNS)
        + ["%b::timestamptz[]"] * len(_TIME_COLUMNS)
        + ["%b::text[]"] * len(_JSON_COLUMNS)
    )
    selected = ", ".join(
        [f"m.{c}" for c in _TEXT_COLUMNS + _TIME_COLUMNS] + [f"m.{c}::jsonb" for c in _JSON_COLUMNS]
    )
    # Only identifiers from this module and the model's table name are interpolated.
    return (
        f"INSERT INTO {table} (source_id, channel, store_code, received_at, {', '.join(batch_columns)}) "  # noqa: S608
        f"SELECT %b, %b, %b, %b, {selected} "
        f"FROM unnest({unnest_args}) AS m({', '.join(batch_columns)}) "
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id"
    )


_INSERT_SQL = _insert_sql()


def _events_insert(*, source: Source, received_at: datetime, messages: Sequence[Message]) -> frozenset[str]:
    """One statement for the whole request; the unique constraint drops repeated messageIds
    (also within the request), so concurrent retries can never store an event twice."""
    params: list[Any] = [source.pk, source.kind, source.store_code, received_at]
    params += [text_array([getattr(m, column).encode() for m in messages]) for column in _TEXT_COLUMNS]
    params += [[getattr(m, column) for m in messages] for column in _TIME_COLUMNS]
    params += [text_array([orjson.dumps(getattr(m, column)) for m in messages]) for column in _JSON_COLUMNS]
    with binary_parameters_cursor() as cursor:
        cursor.execute(_INSERT_SQL, params)
        return frozenset(row[0] for row in cursor.fetchall())


def _insert_one_sql() -> str:
    columns = _TEXT_COLUMNS + _TIME_COLUMNS + _JSON_COLUMNS
    values = ", ".join(["%b"] * len(_TEXT_COLUMNS + _TIME_COLUMNS) + ["%b::jsonb"] * len(_JSON_COLUMNS))
    # Only identifiers from this module and the models' table names are interpolated.
    return (
        f"WITH card AS (SELECT id, kind, store_code FROM {Source._meta.db_table} "  # noqa: S608
        "WHERE id = %b AND write_key_hash = %b AND enabled AND name = %b AND default_currency = %b), "
        f"stored AS (INSERT INTO {Event._meta.db_table} "
        f"(source_id, channel, store_code, received_at, {', '.join(columns)}) "
        f"SELECT card.id, card.kind, card.store_code, %b, {values} FROM card "
        "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING 1) "
        "SELECT (SELECT count(*) FROM card), (SELECT count(*) FROM stored)"
    )


_INSERT_ONE_SQL = _insert_one_sql()


def event_ingest_one(*, card: SourceCard, received_at: datetime, message: Message) -> bool | None:
    """Store one accepted event, durably, in one statement (outside a transaction it commits
    on its own: one round trip); whether it was a duplicate. None, storing nothing, when the
    card is no longer the source's (disabled, key rotated, renamed, another default currency):
    the caller reads the source again.

    The statement checks the card and inserts together, so a source disabled a moment ago
    stores nothing, in every process, as ``source_for_write_key`` promises. The pipeline is
    nudged by ``process_pending_nudge`` (after the commit of an enclosing transaction, if any).
    """
    params: list[Any] = [card.pk, card.write_key_hash, card.name, card.default_currency, received_at]
    params += [getattr(message, column) for column in _TEXT_COLUMNS + _TIME_COLUMNS]
    params += [_json_text(getattr(message, column)) for column in _JSON_COLUMNS]
    ((found, stored),) = statement_run(_INSERT_ONE_SQL, params)
    if not found:
        return None
    if stored:
        transaction.on_commit(process_pending_nudge)  # at once outside a transaction
    return not stored


def events_ingest(
    *,
    source: Source,
    endpoint: str,
    received_at: datetime,
    messages: Sequence[Message],
    rejections: Sequence[Rejection] = (),
) -> IngestOutcome:
    """Store a request's accepted events and its rejections together, durably.

    When this returns, the events are committed; the pipeline is nudged after the commit
    (and the periodic sweep finds them if that nudge is lost) by ``process_pending_nudge``,
    coalesced per process: a Celery publish per request cost a batch request as much CPU as
    reading its body (a tenth of a 60-event batch's), and one worker woken processes every
    event waiting.
    """
    with transaction.atomic():
        accepted_ids = (
            _events_insert(source=source, received_at=received_at, messages=messages)
            if messages
            else frozenset()
        )
        accepted = len(accepted_ids)
        if rejections:
            rejections_record(
                source=source, endpoint=endpoint, received_at=received_at, rejections=rejections
            )
        if accepted:
            transaction.on_commit(process_pending_nudge)
    return IngestOutcome(accepted=accepted, duplicates=len(messages) - accepted, accepted_ids=accepted_ids)


def rejections_record(
    *, source: Source, endpoint: str, received_at: datetime, rejections: Sequence[Rejection]
) -> None:
    RejectedEvent.objects.bulk_create(
        RejectedEvent(
            source=source,
            received_at=received_at,
            endpoint=endpoint,
            batch_index=rejection.index,
            message_id=rejection.message_id,
            code=rejection.code,
            reason=rejection.message,
            errors=[error.as_dict() for error in rejection.errors],
            payload=rejection.payload,
            raw_excerpt=rejection.raw_excerpt,
        )
        for rejection in rejections
    )
