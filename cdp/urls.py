"""Staff API of the shared kernel, mounted at /api/v1/."""

from django.urls import path

from cdp.api import AuditEntriesView, AuditExportView

urlpatterns = [
    path("audit/", AuditEntriesView.as_view(), name="audit"),
    path("audit/export/", AuditExportView.as_view(), name="audit-export"),
]
