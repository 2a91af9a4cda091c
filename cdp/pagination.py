"""Keyset (cursor) pagination: stable under inserts, no OFFSET scans."""

from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 1000
