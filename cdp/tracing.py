"""The request id, and the request's latency metric: one small middleware.

Every request gets an id: the caller's ``X-Request-ID`` when it is a plausible one (a load
balancer or the client's own), else a new one. It is sent back in ``X-Request-ID``, written on
every log line of the request (``RequestIdFilter``), and carried by every Celery task the
request sends (a message header, ``config.celery``), so the worker's log lines of the pipeline
run that the ingestion nudged, and of the member refresh that follows it, carry the id of the
request whose events they processed (with the batch's event ids: ``events.pipeline``).

Why not store the id on each event: it would add a column to every row of the largest table,
written on the hottest path, to answer a question the logs already answer — the nudge a
request sends is what processes its events (unless another worker's run took them first,
whose log lines then name the event ids they processed: the event's id and messageId join the
two). Each log line costs nothing when nobody reads it; a column costs on every event.

The middleware also times the request into ``cdp_http_request_duration_seconds`` by the URL
pattern that answered: one ``perf_counter`` pair and one histogram observation, a few
microseconds, measured in ``tests/cdp/test_metrics.py``.
"""

import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

from cdp.metrics import REQUEST_SECONDS

HEADER = "X-Request-ID"
_META_HEADER = "HTTP_X_REQUEST_ID"
#: What is taken from a caller: letters, digits and ``.-_:`` up to 64 (a UUID, a trace id);
#: anything else (too long, spaces, control characters) is replaced, never logged.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{8,64}")

_request_id: ContextVar[str] = ContextVar("cdp_request_id", default="")


#: The request attribute a middleware that answers before URL resolution sets to its route.
ANSWERED_ROUTE = "answered_route"


def current_request_id() -> str:
    """The id of the request (or of the request that sent the running task); empty outside."""
    return _request_id.get()


def request_id_set(value: str) -> object:
    """Make ``value`` the current id (a task that a request sent); returns the token to reset."""
    return _request_id.set(value if _ACCEPTED.fullmatch(value or "") else "")


def request_id_reset(token: object) -> None:
    _request_id.reset(token)  # type: ignore[arg-type]  # the token request_id_set returned


def request_id_clear(**kwargs: object) -> None:
    """The request is over (a ``request_finished`` receiver, ``cdp.apps``)."""
    _request_id.set("")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every log record (empty outside a request or a task it sent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestMiddleware:
    """Request id in, request id out, and the request's duration by endpoint. First in the
    chain, so the time includes every other middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        began = time.perf_counter()
        given = request.META.get(_META_HEADER, "")
        request_id = given if _ACCEPTED.fullmatch(given) else new_request_id()
        # Not reset when the view returns: Django logs the response's status ("Forbidden: /metrics",
        # a 500's traceback) after the middleware, and those lines need the id most. It is
        # cleared when the response is closed (``request_finished``), and set anew by each request.
        _request_id.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        match = getattr(request, "resolver_match", None)
        # A middleware that answers before URL resolution names the route it answered for
        # (events.api.single: the single-event calls).
        endpoint = match.route if match is not None else getattr(request, ANSWERED_ROUTE, "unmatched")
        REQUEST_SECONDS.labels(endpoint, request.method or "", f"{response.status_code // 100}xx").observe(
            time.perf_counter() - began
        )
        return response
