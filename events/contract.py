"""The ingestion contract: one Segment HTTP Tracking API message in, a ``Message`` ready to
store or a ``Rejection`` saying exactly what is wrong out.

Pure: no ORM, no I/O, so the rules are cheap to test exhaustively. Types are checked by a
pydantic model (fast, with precise locations); the Segment rules that span fields
(one of userId / anonymousId, per-call required fields, commerce properties) are plain code.

Every value is bounded before it is stored, because a value PostgreSQL or a later stage cannot
handle, once accepted, fails every pipeline batch that reads it: the event as stored (with the
batch's ``context`` merged in) is at most 32 KB and nests at most ``MAX_JSON_DEPTH`` levels;
it holds no NUL, no lone UTF-16 surrogate and no integer beyond 64 bits; its times lie in the
``TimestampWindow``; its commerce amounts within ``events.commerce``'s bounds.
"""

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Annotated, Any, TypeGuard, overload

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError

from cdp.errors import FieldError
from cdp.json_limits import MAX_JSON_DEPTH, JsonTooDeep, json_depth
from events.commerce import commerce_errors, order_currency_defaulted
from events.wire import TOO_DEEP, Unreadable, printable

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_LENGTH = 255
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "alias", "group"})
_EXCERPT_CHARS = 2048
#: The integers orjson (and so the event store) keeps exactly.
_INT64_RANGE = range(-(2**63), 2**64)
# A real NUL in orjson's output: ``\u0000`` after an even number of backslashes (none
# included); after an odd number it is the text ``\u0000`` written with an escaped backslash.
_ENCODED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


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
class TimestampWindow:
    """The event times accepted: from ``earliest`` to ``days_ahead`` days after receipt.

    Outside it an event is refused, not stored: a time PostgreSQL cannot hold or later stages
    cannot compute with (year 10000, or BC after the time-zone shift) once stopped the
    pipeline. The deployed window is in the settings (``EVENT_TIMESTAMP_*``); the defaults
    here are theirs.
    """

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    days_ahead: int = 7

    def latest(self, *, received_at: datetime) -> datetime:
        try:
            return received_at + timedelta(days=self.days_ahead)
        except OverflowError:  # a window configured wider than the calendar
            return datetime.max.replace(tzinfo=UTC)

    def error(self, field_name: str, value: datetime, *, received_at: datetime) -> FieldError | None:
        latest = self.latest(received_at=received_at)
        if self.earliest <= value <= latest:
            return None
        return FieldError(
            field_name,
            f"{value.isoformat()} is outside the accepted window: from {self.earliest.isoformat()} "
            f"to {self.days_ahead} days after the event was received ({latest.isoformat()})",
        )


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


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _present(value: str | None) -> TypeGuard[str]:
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
    return printable(str(value))[:MAX_ID_LENGTH] if isinstance(value, str | int) else ""


_NUL = "contains a NUL character (\\u0000), which cannot be stored"
_SURROGATE = "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
_LONG_INTEGER = "is an integer beyond the 64-bit range; send large ids as strings"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return _NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE
    return None


def _value_problems(value: Any, path: str = "") -> Iterator[FieldError]:
    """Each value (or object key) in ``value`` that cannot be stored, with its path and why.
    Iterative, and only walked once an event was found to hold one."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{where}.{printable(key)}" if where else printable(key)
                if (problem := _text_problem(key)) is not None:
                    yield FieldError(child_path, f"(the key) {problem}")
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", child) for index, child in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            if (problem := _text_problem(item)) is not None:
                yield FieldError(where, problem)
        elif isinstance(item, int) and not isinstance(item, bool) and item not in _INT64_RANGE:
            yield FieldError(where, _LONG_INTEGER)


def _unstorable(
    raw: Any,
    problems: list[FieldError],
    *,
    code: str = "invalid_event",
    what: str = "event",
    index: int | None = None,
) -> Rejection:
    """A refusal of ``raw`` for the values it holds that cannot be stored."""
    not_text = [problem.reason for problem in problems if problem.reason != _LONG_INTEGER]
    if problems and not not_text:
        # jsonb keeps any number exactly, so the message is kept as it came.
        message, payload, raw_excerpt = (
            f"The {what} holds a number beyond the 64-bit range; send large ids as strings.",
            raw,
            "",
        )
    else:
        reason = not_text[0].removeprefix("(the key) ") if not_text else "cannot be stored"
        message, payload = f"The {what} {reason}.", None
        raw_excerpt = json.dumps(raw)[:_EXCERPT_CHARS]  # ASCII: NULs and surrogates as escapes
    return Rejection(
        code,
        message,
        tuple(problems[:10]),
        index=index,
        message_id=_message_id_of(raw) if isinstance(raw, Mapping) else "",
        payload=payload,
        raw_excerpt=raw_excerpt,
    )


def _kept(raw: Any) -> tuple[Any, str]:
    """How a refused value is kept: as JSON when jsonb can hold it, else as an ASCII excerpt."""
    try:
        encoded = orjson.dumps(raw)
    except orjson.JSONEncodeError:  # a lone surrogate, an integer beyond 64 bits
        return None, json.dumps(raw)[:_EXCERPT_CHARS]
    if b"\\u0000" in encoded and _ENCODED_NUL.search(encoded):
        return None, _excerpt(encoded)
    return raw, ""


def _timestamp_errors(
    wire: _WireMessage, *, sent_at: datetime | None, received_at: datetime, window: TimestampWindow
) -> list[FieldError]:
    given = (
        ("timestamp", wire.timestamp),
        ("originalTimestamp", wire.originalTimestamp),
        ("sentAt", sent_at),
    )
    return [
        error
        for name, value in given
        if value is not None and (error := window.error(name, _aware(value), received_at=received_at))
    ]


def _with_defaults(raw: dict[str, Any], defaults: BatchDefaults) -> dict[str, Any]:
    """The message as it will be stored: the batch's context and integrations under its own."""
    merged = dict(raw)
    for key, shared in (("context", defaults.context), ("integrations", defaults.integrations)):
        own = raw.get(key)
        if shared and (own is None or isinstance(own, dict)):
            merged[key] = {**shared, **own} if own else dict(shared)
    return merged


def _too_deep_to_store(value: Any) -> bool:
    return json_depth(value, stop_at=MAX_JSON_DEPTH) > MAX_JSON_DEPTH


def _too_deep(raw: Any, *, index: int | None) -> Rejection:
    return Rejection(
        TOO_DEEP,
        f"The event nests objects and arrays more than {MAX_JSON_DEPTH} levels deep, the limit.",
        index=index,
        message_id=_message_id_of(raw) if isinstance(raw, Mapping) else "",
    )


def message_parse(
    raw: Any,
    *,
    received_at: datetime,
    call_type: str | None = None,
    defaults: BatchDefaults | None = None,
    index: int | None = None,
    window: TimestampWindow = TimestampWindow(),
    default_currency: str | None = None,
) -> Message | Rejection:
    """Check one message. ``call_type`` is the endpoint's type (None inside a batch, where
    each message names its own). ``default_currency`` is the sending source's, given to an
    order event that names none (None: such an event is refused)."""
    if isinstance(raw, Unreadable):
        return Rejection(raw.code, raw.message, index=index, raw_excerpt=raw.excerpt)
    if not isinstance(raw, dict):
        payload, raw_excerpt = _kept(raw)
        return Rejection(
            "invalid_event",
            "An event must be a JSON object.",
            index=index,
            payload=payload,
            raw_excerpt=raw_excerpt,
        )
    defaults = defaults or BatchDefaults()
    stored = _with_defaults(raw, defaults)
    try:
        encoded = orjson.dumps(stored)
    except orjson.JSONEncodeError:  # also past orjson's own nesting limit (254)
        if _too_deep_to_store(stored):
            return _too_deep(raw, index=index)
        return _unstorable(raw, list(_value_problems(stored)), index=index)
    # Fewer brackets than the limit cannot nest past it: the exact walk only for the rest.
    if encoded.count(b"{") + encoded.count(b"[") > MAX_JSON_DEPTH and _too_deep_to_store(stored):
        return _too_deep(raw, index=index)
    size = len(encoded)
    if size > MAX_EVENT_BYTES:
        with_context = " with the batch's context" if defaults.context or defaults.integrations else ""
        return Rejection(
            "event_too_large",
            f"The event is {size} bytes as stored{with_context}; the limit is {MAX_EVENT_BYTES} bytes (32 KB).",
            index=index,
            message_id=_message_id_of(raw),
            raw_excerpt=_excerpt(encoded),
        )
    if b"\\u0000" in encoded and _ENCODED_NUL.search(encoded):
        # PostgreSQL can store NUL in neither text nor jsonb; one such event must not sink its batch.
        return Rejection(
            "invalid_event",
            "The event contains a NUL character (\\u0000), which cannot be stored.",
            tuple(islice(_value_problems(stored), 10)),
            index=index,
            message_id=_message_id_of(raw),
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

    original = _aware(wire.timestamp or wire.originalTimestamp)
    sent_at = _aware(wire.sentAt) or defaults.sent_at
    message_type = call_type or wire.type
    if message_type not in MESSAGE_TYPES:
        reason = "is required" if message_type is None else f"{message_type!r} is not a call type"
        errors = [FieldError("type", f"{reason}; use one of {', '.join(sorted(MESSAGE_TYPES))}")]
    else:
        errors = _rule_errors(wire, message_type, currency_required=default_currency is None)
    errors += _timestamp_errors(wire, sent_at=sent_at, received_at=received_at, window=window)
    if not errors:
        try:
            timestamp = corrected_timestamp(original=original, sent_at=sent_at, received_at=received_at)
        except OverflowError:
            errors.append(FieldError("sentAt", "is implausibly far from timestamp"))
        else:
            if (error := window.error("timestamp", timestamp, received_at=received_at)) is not None:
                # Each time is in the window, but the device's clock offset (sentAt) moves it out.
                errors.append(FieldError("sentAt", f"corrects timestamp to {error.reason}"))
    if errors:
        return Rejection(
            "invalid_event",
            errors[0].reason if len(errors) == 1 else "The event breaks several rules.",
            tuple(errors),
            index=index,
            message_id=_message_id_of(raw),
            payload=raw,
        )

    context: dict = stored.get("context") or {}
    properties = wire.properties or {}
    if (
        message_type == "track"
        and default_currency is not None
        and (defaulted := order_currency_defaulted(wire.event or "", properties, context, default_currency))
    ):
        properties, context = defaulted
    assert message_type is not None  # refused above when missing
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
        integrations=stored.get("integrations") or {},
    )


class _WireBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batch: list[Any]
    sentAt: datetime | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None


def _shared_errors(name: str, value: JsonObject) -> Rejection | None:
    """Why a batch-level ``context`` or ``integrations``, merged into every event of the batch,
    cannot be: the checks of an event's own, and room left for the event within 32 KB."""
    if json_depth(value, stop_at=MAX_JSON_DEPTH - 1) > MAX_JSON_DEPTH - 1:
        # One level below the event it is merged into.
        return Rejection(
            TOO_DEEP,
            f"The batch's {name} nests more than {MAX_JSON_DEPTH - 1} levels deep; merged into each "
            f"event it would pass the limit of {MAX_JSON_DEPTH}.",
            (FieldError(name, str(JsonTooDeep(MAX_JSON_DEPTH - 1))),),
        )
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        encoded = b""
    if not encoded or _ENCODED_NUL.search(encoded):
        problems = list(_value_problems(value, name))
        return _unstorable(value, problems, code="invalid_batch", what=f"batch's {name}")
    if len(encoded) > MAX_EVENT_BYTES:
        return Rejection(
            "invalid_batch",
            f"The batch's {name} is {len(encoded)} bytes; merged into each event it leaves no room "
            f"within the event limit of {MAX_EVENT_BYTES} bytes (32 KB).",
            (FieldError(name, f"must be under {MAX_EVENT_BYTES} bytes"),),
        )
    return None


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
    for name in ("context", "integrations"):
        if (value := getattr(wire, name)) and (rejection := _shared_errors(name, value)) is not None:
            return rejection
    defaults = BatchDefaults(
        sent_at=_aware(wire.sentAt), context=wire.context or {}, integrations=wire.integrations or {}
    )
    return wire.batch, defaults
