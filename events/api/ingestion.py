"""The Segment-compatible tracking API: ``POST /v1/{identify,track,page,screen,alias,group,batch}``.

Views check shape and hand over to ``events.contract`` (rules) and ``events.services``
(storage). A request costs one query to find its source and one statement to store all
its events, whatever their number.
"""

import base64
import binascii
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError
from cdp.metrics import EVENTS
from events.api.throttling import WriteKeyThrottle
from events.contract import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    Message,
    Rejection,
    TimestampWindow,
    batch_parse,
    message_parse,
)
from events.models import Source
from events.selectors import source_for_write_key
from events.services import IngestOutcome, events_ingest
from events.wire import BodyUnreadable, body_read, excerpt, printable


class BodyRejected(ApiError):
    """The request body as a whole is unusable; ``excerpt`` keeps its start for inspection."""

    def __init__(
        self, *, code: str, message: str, excerpt: str = "", errors: tuple[FieldError, ...] = ()
    ) -> None:
        super().__init__(code=code, message=message, errors=errors)
        self.excerpt = excerpt


def _too_large(limit: int, what: str) -> BodyRejected:
    return BodyRejected(
        code="request_too_large" if limit == MAX_BATCH_BYTES else "event_too_large",
        message=f"The {what} is larger than {limit // 1024} KB, the limit for this call.",
    )


class SegmentJSONParser(BaseParser):
    """JSON body of any declared media type (browsers' beacons send text/plain), optionally
    gzip-encoded, never read or inflated past the view's limit, read by ``events.wire`` (a
    batch's unreadable events are left for the contract to refuse one by one)."""

    media_type = "*/*"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        context = parser_context or {}
        limit: int = context["view"].body_limit
        what = context["view"].body_name
        request = context["request"]
        raw = stream.read(limit + 1) if stream is not None else b""
        if request.META.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
            inflater = zlib.decompressobj(wbits=31)
            try:
                raw = inflater.decompress(raw, limit + 1)
            except zlib.error as exc:
                raise BodyRejected(
                    code="invalid_encoding", message=f"The body is not valid gzip: {exc}"
                ) from exc
        if len(raw) > limit:
            raise _too_large(limit, what)
        try:
            return body_read(raw, batch=context["view"].endpoint == "batch")
        except BodyUnreadable as exc:
            unreadable = exc.unreadable
            raise BodyRejected(
                code=unreadable.code,
                message=unreadable.message,
                excerpt=excerpt(raw),
                errors=(FieldError(exc.field, unreadable.message),) if exc.field else (),
            ) from exc


def _basic_username(request: Request) -> str | None:
    header = get_authorization_header(request).split()
    if len(header) != 2 or header[0].lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(header[1], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise exceptions.AuthenticationFailed("The Basic credentials are not valid base64.") from exc
    return decoded.partition(":")[0]


class WriteKeyAuthentication(BaseAuthentication):
    """A source's write key, as the HTTP Basic user name (empty password) or ``writeKey``
    in the body. Only write keys are accepted here; staff tokens never are."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, Source]:
        write_key = _basic_username(request)
        if not write_key:
            body = request.data
            write_key = body.get("writeKey") if isinstance(body, dict) else None
        if not isinstance(write_key, str) or not write_key:
            raise exceptions.NotAuthenticated(
                "Send the source's write key as the HTTP Basic user name (empty password) or as writeKey."
            )
        if printable(write_key) != write_key:  # a NUL or lone surrogate: no key, and no text to hash
            raise exceptions.AuthenticationFailed("Unknown or disabled write key.")
        source = source_for_write_key(write_key)
        if source is None:
            raise exceptions.AuthenticationFailed("Unknown or disabled write key.")
        return AnonymousUser(), source

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="ingestion"'


def _rejection_body(rejection: Rejection) -> dict[str, Any]:
    body: dict[str, Any] = {"code": rejection.code, "message": rejection.message}
    body["errors"] = [error.as_dict() for error in rejection.errors]
    if rejection.index is not None:
        body = {"index": rejection.index, "messageId": rejection.message_id, **body}
    return body


class _IngestionView(APIView):
    authentication_classes = (WriteKeyAuthentication,)
    permission_classes = ()
    parser_classes = (SegmentJSONParser,)
    throttle_classes = (WriteKeyThrottle,)
    body_limit = MAX_EVENT_BYTES
    body_name = "event"
    endpoint = ""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.received_at = timezone.now()
        self.window = TimestampWindow(
            earliest=settings.EVENT_TIMESTAMP_EARLIEST, days_ahead=settings.EVENT_TIMESTAMP_DAYS_AHEAD
        )
        super().initial(request, *args, **kwargs)

    def body(self, request: Request) -> dict[str, Any]:
        """The parsed body; an unusable one is recorded against the source, then refused."""
        try:
            data = request.data
        except BodyRejected as exc:
            self.reject(request, Rejection(exc.code, exc.message, exc.errors, raw_excerpt=exc.excerpt))
            raise
        if not isinstance(data, dict):  # SegmentJSONParser gives an object or refuses the body
            raise TypeError(f"the ingestion parser gave {type(data).__name__}, not an object")
        return data

    def reject(self, request: Request, rejection: Rejection) -> None:
        events_ingest(
            source=request_source(request),
            endpoint=self.endpoint,
            received_at=self.received_at,
            messages=(),
            rejections=(rejection,),
        )
        EVENTS.labels(str(request_source(request).pk), "rejected", rejection.code).inc()


def request_source(request: Request) -> Source:
    """The source whose write key authenticated the request (``WriteKeyAuthentication``)."""
    source = request.auth
    if not isinstance(source, Source):
        raise exceptions.NotAuthenticated()
    return source


def _count(source: Source, outcome: IngestOutcome, rejections: Sequence[Rejection] = ()) -> None:
    """The request's events in ``cdp_events_total`` (after they are stored: a request that
    failed counts nothing)."""
    key = str(source.pk)
    if outcome.accepted:
        EVENTS.labels(key, "accepted", "").inc(outcome.accepted)
    if outcome.duplicates:
        EVENTS.labels(key, "duplicate", "").inc(outcome.duplicates)
    for code, count in Counter(rejection.code for rejection in rejections).items():
        EVENTS.labels(key, "rejected", code).inc(count)


class SingleCallView(_IngestionView):
    call_type = ""

    def post(self, request: Request) -> Response:
        parsed = message_parse(
            self.body(request),
            received_at=self.received_at,
            call_type=self.call_type,
            window=self.window,
            default_currency=request_source(request).default_currency,
        )
        if isinstance(parsed, Rejection):
            self.reject(request, parsed)
            raise ApiError(code=parsed.code, message=parsed.message, errors=parsed.errors)
        outcome = events_ingest(
            source=request_source(request),
            endpoint=self.endpoint,
            received_at=self.received_at,
            messages=(parsed,),
        )
        _count(request_source(request), outcome)
        return Response(
            {"success": True, "messageId": parsed.message_id, "duplicate": outcome.duplicates > 0}
        )


def _single_call_view(call_type: str) -> type[SingleCallView]:
    @extend_schema(
        tags=["ingestion"],
        auth=[{"writeKey": []}],  # type: ignore[list-item]  # an OpenAPI security requirement; the stub says str
        request={"application/json": {"type": "object"}},
        responses={200: {"type": "object"}},
        summary=f"Record a {call_type} call (Segment HTTP Tracking API)",
        examples=[
            OpenApiExample(
                call_type,
                request_only=True,
                value={
                    "userId": "u-1",
                    "event": "Order Completed",
                    "properties": {"order_id": "o-1", "total": 99, "currency": "CNY"},
                }
                if call_type == "track"
                else {"userId": "u-1", "traits": {"phone": "+8613800138000"}},
            )
        ],
    )
    class View(SingleCallView):
        pass

    View.call_type = View.endpoint = call_type
    View.__name__ = f"{call_type.capitalize()}View"
    return View


IdentifyView = _single_call_view("identify")
TrackView = _single_call_view("track")
PageView = _single_call_view("page")
ScreenView = _single_call_view("screen")
AliasView = _single_call_view("alias")
GroupView = _single_call_view("group")


@extend_schema(
    tags=["ingestion"],
    auth=[{"writeKey": []}],  # type: ignore[list-item]  # an OpenAPI security requirement; the stub says str
    request={"application/json": {"type": "object"}},
    responses={200: {"type": "object"}, 400: {"type": "object"}},
    summary="Record a batch of calls (Segment HTTP Tracking API)",
    description=(
        "Valid events are stored even when others in the batch are not; the response lists each "
        "rejected event with its index and reason. 400 when no event was accepted."
    ),
)
class BatchView(_IngestionView):
    body_limit = MAX_BATCH_BYTES
    body_name = "batch request"
    endpoint = "batch"

    def post(self, request: Request) -> Response:
        parsed = batch_parse(self.body(request))
        if isinstance(parsed, Rejection):
            self.reject(request, parsed)
            raise ApiError(code=parsed.code, message=parsed.message, errors=parsed.errors)
        raw_messages, defaults = parsed
        default_currency = request_source(request).default_currency
        messages: list[Message] = []
        rejections: list[Rejection] = []
        for index, raw in enumerate(raw_messages):
            result = message_parse(
                raw,
                received_at=self.received_at,
                defaults=defaults,
                index=index,
                window=self.window,
                default_currency=default_currency,
            )
            if isinstance(result, Rejection):
                rejections.append(result)
            else:
                messages.append(result)
        outcome = events_ingest(
            source=request_source(request),
            endpoint=self.endpoint,
            received_at=self.received_at,
            messages=messages,
            rejections=rejections,
        )
        _count(request_source(request), outcome, rejections)
        rejected = [_rejection_body(rejection) for rejection in rejections]
        if not messages:
            return Response(
                {
                    "success": False,
                    "code": "invalid_batch",
                    "message": f"None of the {len(raw_messages)} events was accepted.",
                    "errors": [],
                    "rejected": rejected,
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(
            {
                "success": True,
                "accepted": outcome.accepted,
                "duplicates": outcome.duplicates,
                "rejected": rejected,
            }
        )
