"""Staff API of the shared kernel, mounted at /api/v1/: the audit log, for admins and the
privacy officer (permission ``cdp.view_auditentry``), filtered (``cdp.audit``) and exportable
as CSV. An export is itself in the audit log."""

from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.audit import (
    AuditFilter,
    AuditFilterInvalid,
    audit_csv_chunks,
    audit_entries,
    audit_entry_json,
    audit_filter_parse,
)
from cdp.errors import ApiError, FieldError
from cdp.models import AuditEntry
from cdp.pagination import page_serializer, paginated
from cdp.permissions import permissions_required, request_staff
from cdp.services import audit_record

VIEW_AUDIT = "cdp.view_auditentry"

_FILTERS = [
    OpenApiParameter("actor", OpenApiTypes.STR, description="The staff user name, exactly."),
    OpenApiParameter("action", OpenApiTypes.STR, enum=AuditEntry.Action.values),
    OpenApiParameter("member", OpenApiTypes.INT, description="A member id among the entry's subjects."),
    OpenApiParameter(
        "since", OpenApiTypes.DATETIME, description="From this time (included); a date is its midnight."
    ),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Before this time (excluded)."),
]


class AuditEntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    actor = serializers.CharField(help_text="The staff user name; empty for the platform itself.")
    action = serializers.ChoiceField(choices=AuditEntry.Action.choices)
    action_label = serializers.CharField()
    member_ids = serializers.ListField(child=serializers.IntegerField(), help_text="The members it concerns.")
    channel = serializers.CharField(help_text="api, console, admin or cli")
    address = serializers.CharField(allow_null=True, help_text="The client's IP address.")
    personal_fields = serializers.ListField(
        child=serializers.CharField(), help_text="Personal fields given in full (empty: none)."
    )
    detail = serializers.CharField()


def _filter(request: Request) -> AuditFilter:
    try:
        return audit_filter_parse(request.query_params)
    except AuditFilterInvalid as error:
        raise ApiError(
            code="invalid", message=f"Bad {error.field}.", errors=[FieldError(error.field, error.reason)]
        ) from error


class AuditEntriesView(APIView):
    permission_classes = (permissions_required(VIEW_AUDIT),)

    @extend_schema(
        parameters=[*_FILTERS, OpenApiParameter("cursor", OpenApiTypes.STR),
                    OpenApiParameter("page_size", OpenApiTypes.INT)],
        responses={200: page_serializer(AuditEntryOutput)}, tags=["audit"],
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        """Who saw or changed personal data, what, when, from where: newest first, cursor
        paginated, filtered by actor, action, member and time."""
        entries = audit_entries(_filter(request))
        return paginated(request, self, entries, ordering="-id",
                         serialize=lambda page: AuditEntryOutput([audit_entry_json(e) for e in page], many=True).data)  # fmt: skip


class CsvRenderer(BaseRenderer):
    """Lets a client ask for ``Accept: text/csv``; the view streams the body itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"


class AuditExportView(APIView):
    permission_classes = (permissions_required(VIEW_AUDIT),)
    renderer_classes = (JSONRenderer, CsvRenderer)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        """An unknown ``?format=`` is a 400 naming it (DRF would answer 404)."""
        wanted = request.query_params.get("format")
        if wanted and not force and wanted not in {renderer.format for renderer in self.get_renderers()}:
            raise ApiError(
                code="invalid", message=f"Bad format {wanted!r}.", errors=[FieldError("format", "csv")]
            )
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request: Request, response: Any, *args: object, **kwargs: object) -> Any:
        # Success streams its own body; a DRF Response here is an error, always in JSON.
        if isinstance(response, Response):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        parameters=_FILTERS,
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="A header row, then an entry per row, newest first.")},
        tags=["audit"],
    )  # fmt: skip
    def get(self, request: Request) -> StreamingHttpResponse:
        """The entries the filters select as a CSV download (streamed). The export is itself
        recorded, with its filters."""
        selected = _filter(request)
        audit_record(
            user=request_staff(request), action=AuditEntry.Action.EXPORT_AUDIT, member_ids=(),
            channel="api", detail=f"audit entries: {selected.describe()}",
        )  # fmt: skip
        return audit_csv_response(audit_entries(selected))


def audit_csv_response(entries: QuerySet[AuditEntry]) -> StreamingHttpResponse:
    """The download of ``entries`` (the API's and the console's)."""
    response = StreamingHttpResponse(audit_csv_chunks(entries), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{timezone.now():%Y%m%dT%H%M%SZ}.csv"'
    response["Cache-Control"] = "no-store"
    return response
