"""The ingestion contract: one Segment HTTP Tracking API message in, a ``Message`` ready to
store or a ``Rejection`` saying exactly what is wrong out.

Pure: no ORM, no I/O, so the rules are cheap to test exhaustively. Types are checked by a
pydantic model (fast, with precise locations); the Segment rules that span fields
(one of userId / anonymousId, per-call required fields, commerce properties) are plain code.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError

from cdp.errors import FieldError
from events.commerce import commerce_errors, order_currency_defaulted

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_LENGTH = 255
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "alias", "group"})
_EXCERPT_CHARS = 2048


def _id_from_number(value: Any) -> Any:
    # SDKs in typed languages often send numeric ids; Segment treats them as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Identifier = Annotated[str, BeforeValidator(_id_from_number), StringConstraints(max_length=MAX_ID_LENGTH)]
Label = Annotated[str, StringConstraints(max_length=MAX_ID_LENGTH)]
JsonObject = dict[str, Any]


class _WireMessage(BaseModel):
    """The spec's fields and their types; unknown top-level fields are ignored as Segment does."""

    model_config = ConfigDict(extra="ignore")

    type: str | None = None
    userId: Identifier | None = None
    anonymousId: Identifier | None = None
    messageId: Identifier | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: JsonObject | None = None
    traits: JsonObject | None = None
    properties: JsonObject | None = None
    integrations: JsonObject | None = None
    event: Label | None = None
    name: Label | None = None
    previousId: Identifier | None = None
    groupId: Identifier | None = None


@dataclass(frozen=True, slots=True)
class BatchDefaults:
    """Batch-level ``sentAt``, ``context`` and ``integrations``; a message's own values win."""

    sent_at: datetime | None = None
    context: JsonObject = field(default_factory=dict)
    integrations: JsonObject = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    message_id: str
    user_id: str
    anonymous_id: str
    event: str
    name: str
    previous_id: str
    group_id: str
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    context: JsonObject
    traits: JsonObject
    properties: JsonObject
    integrations: JsonObject


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    message: str
    errors: tuple[FieldError, ...] = ()
    index: int | None = None
    message_id: str = ""
    payload: Any = None
    raw_excerpt: str = ""


def corrected_timestamp(
    *, original: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """When the event happened, on the server's clock (Segment's rule).

    With both the client's event time and its send time, the client's clock offset
    (``sent_at - received_at``) is removed: ``received_at - (sent_at - original)``.
    With only the event time, it is trusted; with neither, the event happened on arrival.
    """
    if original is None:
        return received_at
    if sent_at is None:
        return original
    return received_at - (sent_at - original)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _present(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def _type_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    return tuple(
        FieldError(".".join(str(part) for part in error["loc"]), error["msg"])
        for error in exc.errors(include_url=False)
    )


def _rule_errors(wire: _WireMessage, message_type: str, *, currency_required: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    if not (_present(wire.userId) or _present(wire.anonymousId)):
        errors.append(FieldError("userId", "userId or anonymousId is required"))
    if message_type == "track":
        if not _present(wire.event):
            errors.append(FieldError("event", "track calls require an event name"))
        else:
            errors.extend(
                commerce_errors(wire.event, wire.properties or {}, currency_required=currency_required)
            )
    elif message_type == "alias":
        if not _present(wire.previousId):
            errors.append(FieldError("previousId", "alias calls require previousId"))
        if not _present(wire.userId):
            errors.append(FieldError("userId", "alias calls require userId"))
    elif message_type == "group" and not _present(wire.groupId):
        errors.append(FieldError("groupId", "group calls require groupId"))
    return errors


def _excerpt(raw: bytes) -> str:
    return raw[:_EXCERPT_CHARS].decode("utf-8", errors="replace")


def _message_id_of(raw: Mapping[str, Any]) -> str:
    value = raw.get("messageId")
    return str(value)[:MAX_ID_LENGTH] if isinstance(value, str | int) else ""


def message_parse(
    raw: Any,
    *,
    received_at: datetime,
    call_type: str | None = None,
    defaults: BatchDefaults | None = None,
    index: int | None = None,
    default_currency: str | None = None,
) -> Message | Rejection:
    """Check one message. ``call_type`` is the endpoint's type (None inside a batch, where
    each message names its own). ``default_currency`` is the sending source's, given to an
    order event that names none (None: such an event is refused)."""
    if not isinstance(raw, dict):
        return Rejection("invalid_event", "An event must be a JSON object.", index=index, payload=raw)
    try:
        encoded = orjson.dumps(raw)
    except orjson.JSONEncodeError:
        return Rejection(
            "invalid_event",
            "The event holds a number beyond the 64-bit range; send large ids as strings.",
            index=index,
            message_id=_message_id_of(raw),
            payload=raw,
        )
    size = len(encoded)
    if size > MAX_EVENT_BYTES:
        return Rejection(
            "event_too_large",
            f"The event is {size} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB).",
            index=index,
            message_id=_message_id_of(raw),
            raw_excerpt=_excerpt(encoded),
        )
    if b"\\u0000" in encoded:
        # PostgreSQL can store NUL in neither text nor jsonb; one such event must not sink its batch.
        return Rejection(
            "invalid_event",
            "The event contains a NUL character (\\u0000), which cannot be stored.",
            index=index,
            message_id=_message_id_of(raw).replace("\x00", ""),
            raw_excerpt=_excerpt(encoded),
        )
    try:
        wire = _WireMessage.model_validate(raw)
    except ValidationError as exc:
        return Rejection(
            "invalid_event",
            "The event has fields of the wrong type.",
            _type_errors(exc),
            index=index,
            message_id=_message_id_of(raw),
            payload=raw,
        )

    message_type = call_type or wire.type
    if message_type not in MESSAGE_TYPES:
        reason = "is required" if message_type is None else f"{message_type!r} is not a call type"
        errors = [FieldError("type", f"{reason}; use one of {', '.join(sorted(MESSAGE_TYPES))}")]
    else:
        errors = _rule_errors(wire, message_type, currency_required=default_currency is None)
    if errors:
        return Rejection(
            "invalid_event",
            errors[0].reason if len(errors) == 1 else "The event breaks several rules.",
            tuple(errors),
            index=index,
            message_id=_message_id_of(raw),
            payload=raw,
        )

    defaults = defaults or BatchDefaults()
    original = _aware(wire.timestamp or wire.originalTimestamp)
    sent_at = _aware(wire.sentAt) or defaults.sent_at
    try:
        timestamp = corrected_timestamp(original=original, sent_at=sent_at, received_at=received_at)
    except OverflowError:
        return Rejection(
            "invalid_event",
            "timestamp and sentAt are too far apart to correct for clock skew.",
            (FieldError("sentAt", "is implausibly far from timestamp"),),
            index=index,
            message_id=_message_id_of(raw),
            payload=raw,
        )
    context = {**defaults.context, **wire.context} if wire.context else dict(defaults.context)
    integrations = (
        {**defaults.integrations, **wire.integrations} if wire.integrations else dict(defaults.integrations)
    )
    properties = wire.properties or {}
    if (
        message_type == "track"
        and default_currency is not None
        and (defaulted := order_currency_defaulted(wire.event or "", properties, context, default_currency))
    ):
        properties, context = defaulted
    return Message(
        type=message_type,
        message_id=wire.messageId if _present(wire.messageId) else str(uuid.uuid4()),
        user_id=wire.userId or "",
        anonymous_id=wire.anonymousId or "",
        event=wire.event or "",
        name=wire.name or "",
        previous_id=wire.previousId or "",
        group_id=wire.groupId or "",
        timestamp=timestamp,
        original_timestamp=original,
        sent_at=sent_at,
        context=context,
        traits=wire.traits or {},
        properties=properties,
        integrations=integrations,
    )


class _WireBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch: list[Any]
    sentAt: datetime | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None


def batch_parse(body: Mapping[str, Any]) -> tuple[list[Any], BatchDefaults] | Rejection:
    """Split a batch body into its raw messages and the defaults they share."""
    try:
        wire = _WireBatch.model_validate(body)
    except ValidationError as exc:
        return Rejection("invalid_batch", "The batch request is malformed.", _type_errors(exc))
    if not wire.batch:
        return Rejection(
            "invalid_batch", "The batch is empty.", (FieldError("batch", "must hold at least one event"),)
        )
    defaults = BatchDefaults(
        sent_at=_aware(wire.sentAt), context=wire.context or {}, integrations=wire.integrations or {}
    )
    return wire.batch, defaults
