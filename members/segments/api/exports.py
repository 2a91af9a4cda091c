"""A segment's members as a CSV or NDJSON download, streamed: read by keyset batches and
written as they are read, so memory stays flat however big the segment."""

from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.errors import ApiError, FieldError
from cdp.permissions import Unscoped, permissions_required, request_staff
from cdp.privacy import Masking
from members.consent.statements import NO_CONSENT
from members.segments.api import PURPOSE_PARAMETER, VIEW_SEGMENTS, declared_purpose, segment_by_key
from members.segments.api.members import FIELDS_PARAMETER, requested_fields
from members.segments.exports import (
    csv_chunks,
    ndjson_chunks,
    segment_export_batches,
    segment_export_record,
)


class CsvRenderer(BaseRenderer):
    """Chooses CSV (``?format=csv`` or ``Accept: text/csv``); the view streams the body."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"


class NdjsonRenderer(BaseRenderer):
    """Chooses NDJSON (``?format=ndjson`` or ``Accept: application/x-ndjson``)."""

    media_type = "application/x-ndjson"
    format = "ndjson"
    charset = "utf-8"


_FORMATS = (
    "CSV: a header row (member_id, entered_at, the fields), then a row per member; null is empty, "
    "lists and objects are JSON, text a spreadsheet would run as a formula (starting with = + - @, "
    "tab or carriage return) is prefixed with '. NDJSON: one JSON object per member per line, as "
    "the members page gives them. Lowest member id first; named segment-<key>-<UTC time>.<format>. "
    "Members without consent to the purpose are left out: X-CDP-Withheld counts them (no_consent=N, "
    "counted when the export starts; each batch is checked again as it is read) and X-CDP-Purpose "
    "names the purpose."
)


class SegmentExportView(APIView):
    permission_classes = (permissions_required(VIEW_SEGMENTS), Unscoped)
    # CSV first: the format when neither ?format= nor Accept chooses.
    renderer_classes = (CsvRenderer, NdjsonRenderer)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        """``?format=`` wins over ``Accept``; an unknown format is a 400 naming it (DRF would
        answer 404)."""
        wanted = request.query_params.get("format")
        if wanted:
            for renderer in self.get_renderers():
                if renderer.format == wanted:
                    return renderer, renderer.media_type
            if not force:
                raise ApiError(
                    code="invalid",
                    message=f"Bad format {wanted!r}.",
                    errors=[FieldError("format", "csv or ndjson")],
                )
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request: Request, response: Any, *args: object, **kwargs: object) -> Any:
        # Success streams its own body; a DRF Response here is an error, always in JSON.
        if isinstance(response, Response):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "ndjson"],
                             description="csv (the default) or ndjson; or send Accept: text/csv / "
                                         "application/x-ndjson."),
            FIELDS_PARAMETER,
            PURPOSE_PARAMETER,
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description=_FORMATS),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description=_FORMATS),
        },
        tags=["segments"],
    )  # fmt: skip
    def get(self, request: Request, key: str) -> StreamingHttpResponse:
        """Every member of the segment with the fields asked for, streamed as CSV or NDJSON,
        lowest member id first, with the masking and consent of the members page. The export
        is in the audit log (who, segment, purpose, fields, rows, members left out), and so
        are the members whose phone or email it gives in full."""
        segment = segment_by_key(key)
        fields = requested_fields(request)
        purpose, purposes = declared_purpose(request.query_params.get("purpose"))
        renderer = request.accepted_renderer
        masking = Masking(request.user, channel="api", detail=f"export of segment {segment.key}")
        count = segment_export_record(
            user=request_staff(request), segment=segment, fields=fields, file_format=renderer.format,
            purpose=purpose, purposes=purposes, masking=masking,
        )  # fmt: skip
        batches = segment_export_batches(segment=segment, fields=fields, masking=masking, purposes=purposes)
        chunks = csv_chunks(fields, batches) if renderer.format == "csv" else ndjson_chunks(batches)
        response = StreamingHttpResponse(chunks, content_type=f"{renderer.media_type}; charset=utf-8")
        filename = f"segment-{segment.key}-{timezone.now():%Y%m%dT%H%M%SZ}.{renderer.format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-CDP-Purpose"] = purpose
        response["X-CDP-Withheld"] = f"{NO_CONSENT}={count.withheld}"
        response["Cache-Control"] = "no-store"  # personal data: no copies in caches on the way
        response["X-Accel-Buffering"] = "no"  # a proxy passes the rows on as they come
        return response
