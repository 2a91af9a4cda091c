"""One error shape for every API: ``{"code", "message", "errors": [{"field", "reason"}]}``.

``code`` is stable and machine-readable, ``message`` is for people, ``errors`` names each
offending field (empty when the error is not about a field).

The shape holds for every answer under the API paths (ingestion ``/v1/`` and the staff API
``/api/``), not only those DRF renders: a path no route matches is a JSON 404
(``not_found``), a crash a JSON 500, and a database that cannot be reached (PostgreSQL down,
restarting, the connection lost) a ``503 service_unavailable`` with ``Retry-After``, from
DRF's handler, ``cdp.middleware.DatabaseOutageMiddleware`` (any view) or ``server_error``
(anything before or after a view).
"""

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from cdp.metrics import DATABASE_CONNECTION_ERRORS

logger = logging.getLogger(__name__)

#: Paths whose answers are JSON in this shape, whoever answers (the console and admin keep HTML).
API_PATH_PREFIXES = ("/v1/", "/api/")
#: What a client is told to wait before retrying while the database is out: PostgreSQL
#: restarting or failing over takes seconds.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class ApiError(exceptions.APIException):
    """An error with an explicit code, message and field errors."""

    def __init__(
        self,
        *,
        code: str,
        message: str,
        errors: Sequence[FieldError] = (),
        status_code: int = status.HTTP_400_BAD_REQUEST,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.errors = tuple(errors)


def error_body(*, code: str, message: str, errors: Iterable[FieldError] = ()) -> dict[str, Any]:
    return {"code": code, "message": message, "errors": [e.as_dict() for e in errors]}


def _flatten(detail: Any, prefix: str = "") -> list[FieldError]:
    if isinstance(detail, Mapping):
        out: list[FieldError] = []
        for key, value in detail.items():
            field = key if not prefix else f"{prefix}.{key}"
            if key == "non_field_errors":
                field = prefix
            out.extend(_flatten(value, field))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [FieldError(prefix, str(item)) for item in detail]
        out = []
        for index, item in enumerate(detail):
            out.extend(_flatten(item, f"{prefix}[{index}]"))
        return out
    return [FieldError(prefix, str(detail))]


def is_database_outage(exc: BaseException | None) -> bool:
    """The database cannot be reached or dropped the connection (refused, reset, closed,
    shutting down): nothing the request did, and a retry shortly may succeed. psycopg also
    raises ``OperationalError`` for deadlocks and serialization failures, equally transient."""
    return isinstance(exc, OperationalError | InterfaceError)


def _outage_body() -> dict[str, Any]:
    return error_body(
        code="service_unavailable",
        message="The database cannot be reached right now; nothing was changed. Try again shortly.",
    )


def database_outage_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """503 with ``Retry-After``: JSON in the one shape on the API paths, plain text elsewhere."""
    DATABASE_CONNECTION_ERRORS.labels("web").inc()
    logger.warning("Database unavailable answering %s %s: %s", request.method, request.path, exc)
    if is_api_path(request):
        response: HttpResponse = JsonResponse(_outage_body(), status=status.HTTP_503_SERVICE_UNAVAILABLE)
    else:
        response = HttpResponse(
            "The service is briefly unavailable (its database cannot be reached). Try again shortly.\n",
            content_type="text/plain; charset=utf-8",
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith(API_PATH_PREFIXES)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if is_database_outage(exc):
        DATABASE_CONNECTION_ERRORS.labels("web").inc()
        logger.warning("Database unavailable in %s: %s", type(context.get("view")).__name__, exc)
        return Response(
            _outage_body(),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DataError):
        # A value PostgreSQL cannot store (a number past its column's range, a NUL in text)
        # that no check before caught: the request's fault, so a 400, but logged with its
        # traceback, since the check that should have named the field is missing.
        logger.error("Unchecked value refused by the database: %s", exc, exc_info=exc)
        return Response(
            error_body(code="invalid", message="A value in the request is beyond what can be stored."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    # As DRF's handler does, so that get_object_or_404 and Django's PermissionDenied take the shape.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ApiError):
        response.data = error_body(code=exc.code, message=exc.message, errors=exc.errors)
    elif isinstance(exc, exceptions.ValidationError):
        response.data = error_body(
            code="invalid", message="The request has invalid fields.", errors=_flatten(exc.detail)
        )
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(code=str(code), message=str(exc.detail))
    return response


# --- Django's own error views (config.urls handler404 / handler500) ----------------------------


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """No route matched (a malformed id does not match an ``<int:>`` or slug route either)."""
    if not is_api_path(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse(
        error_body(code="not_found", message=f"Nothing at {request.path}."), status=status.HTTP_404_NOT_FOUND
    )


def server_error(request: HttpRequest) -> HttpResponse:
    """An exception no view handled, including one raised by a middleware or while saving the
    session, where no view's handler can see it (Django calls this inside its ``except``)."""
    exc = sys.exception()
    if exc is not None and is_database_outage(exc):
        return database_outage_response(request, exc)
    if not is_api_path(request):
        return defaults.server_error(request)
    return JsonResponse(
        error_body(code="server_error", message="Something went wrong on our side; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
