"""Segments API for marketing tools, under /api/v1/segments/: definitions (``read``), members
by keyset pages (``members``) and the changes feed. Role ``marketing`` (and admin):
permission ``segments.view_segment``."""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import status

from cdp.errors import ApiError, FieldError
from members.consent.selectors import purposes_declared
from members.consent.statements import ALL_MARKETING
from members.segments.models import Segment

VIEW_SEGMENTS = "segments.view_segment"

PURPOSE_HELP = (
    "What the members are pulled for: a consent purpose (" + ", ".join(settings.CONSENT_PURPOSES) + "), or "
    f"`{ALL_MARKETING}` (the default, the strictest: every marketing purpose). A member without consent to "
    "it in force when the rows are read is left out and counted in `withheld`."
)
PURPOSE_PARAMETER = OpenApiParameter("purpose", OpenApiTypes.STR, description=PURPOSE_HELP)


def declared_purpose(value: object, *, field: str = "purpose") -> tuple[str, tuple[str, ...]]:
    """A declared outflow purpose (None or "": ``marketing``) and the purposes it needs granted,
    or a 400 naming ``field``."""
    declared = ALL_MARKETING if value in (None, "") else value
    purposes = purposes_declared(declared) if isinstance(declared, str) else None
    if purposes is None:
        known = ", ".join([ALL_MARKETING, *settings.CONSENT_PURPOSES])
        raise ApiError(code="invalid", message=f"Bad {field}.", errors=[FieldError(field, f"one of {known}")])
    return str(declared), purposes


def segment_by_key(key: str) -> Segment:
    """The segment of this key, or a 404 naming it."""
    segment = Segment.objects.filter(key=key).first()
    if segment is None:
        raise ApiError(
            code="not_found", message=f"No segment {key!r}.", status_code=status.HTTP_404_NOT_FOUND
        )
    return segment
