"""The console's audit log page (admins and the privacy officer: ``cdp.view_auditentry``):
the entries the filters select, newest first, a page at a time, and the same selection as a
CSV download (recorded in the log itself)."""

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path

from cdp.api import audit_csv_response
from cdp.audit import AuditFilter, AuditFilterInvalid, audit_entries, audit_entry_json, audit_filter_parse
from cdp.models import AuditEntry
from cdp.permissions import request_staff
from cdp.services import audit_record

VIEW_AUDIT = "cdp.view_auditentry"
PAGE = 50


def _selected(request: HttpRequest) -> tuple[AuditFilter, str]:
    try:
        return audit_filter_parse(request.GET), ""
    except AuditFilterInvalid as error:
        return AuditFilter(), f"{error.field}: {error.reason}"


@login_required
@permission_required(VIEW_AUDIT, raise_exception=True)
def audit_log(request: HttpRequest) -> HttpResponse:
    selected, problem = _selected(request)
    entries = audit_entries(selected) if not problem else AuditEntry.objects.none()
    before = request.GET.get("before", "")
    if before.isascii() and before.isdigit() and len(before) <= 19:
        entries = entries.filter(id__lt=int(before))
    page = [audit_entry_json(e) for e in entries[: PAGE + 1]]
    query = request.GET.copy()
    query.pop("before", None)
    return render(
        request,
        "cdp/audit.html",
        {
            "entries": page[:PAGE],
            "older": page[PAGE - 1]["id"] if len(page) > PAGE else None,
            "filters": {
                name: request.GET.get(name, "") for name in ("actor", "action", "member", "since", "until")
            },
            "actions": AuditEntry.Action.choices,
            "problem": problem,
            "query": query.urlencode(),
        },
        status=400 if problem else 200,
    )


@login_required
@permission_required(VIEW_AUDIT, raise_exception=True)
def audit_export(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    selected, problem = _selected(request)
    if problem:
        return HttpResponse(f"Bad filter {problem}", status=400, content_type="text/plain; charset=utf-8")
    audit_record(
        user=request_staff(request), action=AuditEntry.Action.EXPORT_AUDIT, member_ids=(),
        channel="console", detail=f"audit entries: {selected.describe()}",
    )  # fmt: skip
    return audit_csv_response(audit_entries(selected))


#: Added to the console's URLs (namespace ``console``) by ``config.urls``.
urlpatterns = [
    path("audit/", audit_log, name="audit"),
    path("audit/export/", audit_export, name="audit-export"),
]
