"""Keyset (cursor) pagination: stable under inserts, no OFFSET scans, and one page shape for
every list endpoint of the staff API::

    {"results": [...], "next_cursor": <cursor or null>}

A client passes ``next_cursor`` back as ``?cursor=`` (``page_size`` sets the page's length)
until it is null. A cursor is opaque: a member id for the keyset reads written by hand
(``page_json``), a token for the querysets paged by ``IdCursorPagination`` (the default of
every ``GenericViewSet``) and ``paginated`` (for an ``APIView``).
"""

from collections.abc import Callable, Iterable
from typing import Any, overload
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError

CURSOR_HELP = "Pass as ?cursor= for the next page; null on the last page."


def page_json(results: Iterable[Any], next_cursor: object) -> dict[str, object]:
    """A page in the one shape every list endpoint answers with."""
    return {"results": list(results), "next_cursor": next_cursor}


def page_serializer(item: type[serializers.Serializer], *, cursor: serializers.Field | None = None) -> type:
    """The OpenAPI shape of a page of ``item`` (for ``extend_schema``): ``results`` and
    ``next_cursor`` (a string token unless ``cursor`` says otherwise)."""
    name = item.__name__.removesuffix("Output").removesuffix("Serializer")
    return type(
        f"{name}Page",
        (serializers.Serializer,),
        {
            "results": item(many=True),
            "next_cursor": cursor or serializers.CharField(allow_null=True, help_text=CURSOR_HELP),
            "__module__": item.__module__,
        },
    )


def _cursor_invalid() -> ApiError:
    return ApiError(
        code="invalid",
        message="The cursor is not one this list gave.",
        errors=[FieldError("cursor", "not a cursor this list gave: pass next_cursor back as it is")],
    )


class IdCursorPagination(CursorPagination):
    """DRF's cursor pagination over a queryset (newest id first unless a subclass or
    ``paginated`` orders otherwise), answering in the one page shape: the next page's cursor
    itself rather than a link (no ``previous``: a client pages forward)."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_ordering(self, request: Request, queryset: QuerySet, view: APIView) -> tuple[str, ...]:
        # DRF asks this just before decode_cursor, which checks a cursor against the model.
        self._model = queryset.model
        return super().get_ordering(request, queryset, view)

    def decode_cursor(self, request: Request) -> Cursor | None:
        """The page's cursor; one this list never gave (edited, cut short, another list's, a
        position that is not a value of the list's ordering field) is a 400 naming ``cursor``,
        not DRF's 404 (nothing is missing: the request is wrong) nor a 500."""
        try:
            cursor = super().decode_cursor(request)
        except NotFound as error:
            raise _cursor_invalid() from error
        if cursor is None or cursor.position is None:
            return cursor
        if "\x00" in str(cursor.position):
            raise _cursor_invalid()
        ordering = self.ordering if isinstance(self.ordering, str) else self.ordering[0]
        field = self._model._meta.get_field(ordering.lstrip("-"))
        try:
            field.get_prep_value(field.to_python(cursor.position))
        except (ValueError, TypeError, DjangoValidationError) as error:
            raise _cursor_invalid() from error
        return cursor

    def next_cursor(self) -> str | None:
        link = self.get_next_link()
        return parse_qs(urlsplit(link).query)[self.cursor_query_param][0] if link else None

    def get_paginated_response(self, data: Iterable[Any]) -> Response:
        return Response(page_json(data, self.next_cursor()))

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["results", "next_cursor"],
            "properties": {
                "results": schema,
                "next_cursor": {"type": "string", "nullable": True, "description": CURSOR_HELP},
            },
        }


def paginated(
    request: Request,
    view: APIView,
    queryset: QuerySet,
    *,
    ordering: str | tuple[str, ...],
    serialize: Callable[[list], Iterable[Any]],
    max_page_size: int = 1000,
) -> Response:
    """A page of ``queryset`` for an ``APIView`` in the one shape, keyset on ``ordering`` (a
    unique field, or ending in one)."""
    paginator = IdCursorPagination()
    paginator.ordering = ordering  # type: ignore[assignment]  # DRF takes a tuple too; its stubs say str
    paginator.max_page_size = max_page_size
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serialize(page or []))


def query_cursor(request: Request, *, legacy: str, low: int = 1) -> int | None:
    """The keyset cursor of a page read by hand: ``?cursor=`` (the last page's
    ``next_cursor``), or the name the endpoint first had for it (``legacy``: ``before``,
    ``after``), still understood; None for the first page."""
    name = "cursor" if request.query_params.get("cursor", "") != "" else legacy
    return query_int(request, name, default=None, low=low, high=2**63 - 1)


def cursor_parameter(legacy: str) -> OpenApiParameter:
    return OpenApiParameter(
        "cursor",
        OpenApiTypes.INT,
        description=f"next_cursor of the last page (formerly ?{legacy}=, still read)",
    )


@overload
def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int: ...
@overload
def query_int(request: Request, name: str, *, default: None, low: int, high: int) -> int | None: ...
def query_int(request: Request, name: str, *, default: int | None, low: int, high: int) -> int | None:
    """An integer query parameter (a page size, a keyset cursor, a window in days) between
    ``low`` and ``high``; ``default`` when absent. Anything else is a 400 naming it."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    # ASCII digits ("²".isdigit() is true, yet int() refuses it), and few enough of them for
    # int() (which refuses past 4,300 digits): every bound here has at most 19.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not low <= int(raw) <= high:
        raise ApiError(
            code="invalid",
            message=f"Bad {name}.",
            errors=[FieldError(name, f"an integer from {low} to {high}")],
        )
    return int(raw)
