"""Keyset (cursor) pagination: stable under inserts, no OFFSET scans."""

from typing import overload

from rest_framework.pagination import CursorPagination
from rest_framework.request import Request

from cdp.errors import ApiError, FieldError


class IdCursorPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 1000


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
