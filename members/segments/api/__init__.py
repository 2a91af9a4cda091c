"""Segments API for marketing tools, under /api/v1/segments/: definitions (``read``), members
by keyset pages (``members``) and the changes feed. Role ``marketing`` (and admin):
permission ``segments.view_segment``."""

from rest_framework import status

from cdp.errors import ApiError
from members.segments.models import Segment

VIEW_SEGMENTS = "segments.view_segment"


def segment_by_key(key: str) -> Segment:
    """The segment of this key, or a 404 naming it."""
    segment = Segment.objects.filter(key=key).first()
    if segment is None:
        raise ApiError(
            code="not_found", message=f"No segment {key!r}.", status_code=status.HTTP_404_NOT_FOUND
        )
    return segment
