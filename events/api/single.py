"""The single-call path: ``POST /v1/{identify,track,page,screen,alias,group}`` that will be
accepted, answered by a middleware before the rest of Django's middleware and DRF.

A till posts each sale as it happens: one event per request, thousands of requests a second,
where the fixed costs of a request are the whole cost. Through DRF a ``/v1/track`` took
5.9 ms in-process (bench/profile_batch.py --track), with five database round trips (the
source's query, Django's health check, BEGIN, the insert, COMMIT) and two to Redis (the rate
limit and a Celery publish), and the session, CSRF, auth and message middleware, DRF's
request, negotiation and rendering around them. Here a request that is going to be accepted
costs one query for its source (cached per process, checked again by the statement that
stores), one Redis round trip for its rate limit and one statement that stores the event and
commits (``events.services.event_ingest_one``); the pipeline's nudge is coalesced per process
(``events.tasks.process_pending_nudge``). Measured in docs/benchmarks.md (bench/ingest_single.py).

Everything else goes on to the DRF views unchanged, which answer as they always did: no
Basic credentials (a ``writeKey`` in the body), an unknown or disabled key (401), a body that
is gzip, chunked, too large or no JSON, an event the contract refuses (400, kept as
rejected), a rate limit refusal (429 with Retry-After: a refused hit is not counted, so the
throttle counts it afresh and refuses it). Only what this path reads before handing over is
read twice. The same rules apply either way: ``events.contract`` checks the event, the
limit is the write key's counter (``write_key_allows``), and the answer has the same body.
It sits after the security middleware (HTTPS redirect, HSTS) and the client address, and
checks the Host header as Django's common middleware would.
"""

import base64
import binascii
from collections.abc import Callable

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from cdp.errors import database_outage_response, is_database_outage
from cdp.metrics import EVENTS
from cdp.tracing import ANSWERED_ROUTE
from events.api.throttling import write_key_allows
from events.contract import MAX_EVENT_BYTES, MESSAGE_TYPES, Message, TimestampWindow, message_parse
from events.selectors import SourceCard, source_card_for_write_key, source_card_forget
from events.services import event_ingest_one
from events.wire import BodyUnreadable, body_read, printable

#: The single calls' paths and their call types (``events/urls/ingestion.py`` mounts the views at /v1/).
SINGLE_CALL_PATHS = {f"/v1/{call}": call for call in MESSAGE_TYPES}


def _write_key(request: HttpRequest) -> str | None:
    """The Basic user name, if the request carries one that may be a write key."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    write_key = decoded.partition(":")[0]
    return write_key if write_key and printable(write_key) == write_key else None


def _body(request: HttpRequest) -> bytes | None:
    """The body, if it is plain (not encoded), of a declared length within the event limit."""
    meta = request.META
    if meta.get("HTTP_CONTENT_ENCODING") or not meta.get("CONTENT_TYPE"):
        return None
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= MAX_EVENT_BYTES:
        return None
    return request.body


def single_call_accept(request: HttpRequest, call_type: str) -> HttpResponse | None:
    """Store the request's event and answer, or None to leave the request to the DRF view
    (which then answers it whole, as if this had not looked)."""
    write_key = _write_key(request)
    if write_key is None:
        return None
    raw = _body(request)
    if raw is None:
        return None
    card: SourceCard | None = source_card_for_write_key(write_key)
    if card is None:
        return None
    try:
        body = body_read(raw, batch=False)
    except BodyUnreadable:
        return None
    received_at = timezone.now()
    message = message_parse(
        body,
        received_at=received_at,
        call_type=call_type,
        window=TimestampWindow(
            earliest=settings.EVENT_TIMESTAMP_EARLIEST, days_ahead=settings.EVENT_TIMESTAMP_DAYS_AHEAD
        ),
        default_currency=card.default_currency,
    )
    if not isinstance(message, Message):
        return None
    if not write_key_allows(source_pk=card.pk, source_name=card.name):
        return None
    duplicate = event_ingest_one(card=card, received_at=received_at, message=message)
    if duplicate is None:  # the card was stale (and this request counted once too often)
        source_card_forget(card)
        return None
    # cdp_events_total, as the views count (events.api.ingestion._count)
    EVENTS.labels(str(card.pk), "duplicate" if duplicate else "accepted", "").inc()
    content = orjson.dumps({"success": True, "messageId": message.message_id, "duplicate": duplicate})
    response = HttpResponse(content, content_type="application/json")
    response["Content-Length"] = str(len(content))  # as CommonMiddleware sets it: no chunked encoding
    return response


class SingleCallMiddleware:
    """Answers the single calls that will be accepted (``single_call_accept``); every other
    request goes on down the middleware stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        call_type = SINGLE_CALL_PATHS.get(request.path_info)
        if call_type is not None and request.method == "POST":
            request.get_host()  # DisallowedHost (400) for a Host not allowed, as CommonMiddleware does
            try:
                response = single_call_accept(request, call_type)
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                # 503 with Retry-After and a warning, as the views answer it (no traceback logged).
                return database_outage_response(request, exc)
            if response is not None:
                setattr(request, ANSWERED_ROUTE, request.path_info.lstrip("/"))  # its URL pattern: v1/track
                return response
        return self.get_response(request)
