"""Admin pages of the privacy app: the requests and the retention runs, read-only (requests are
made through the API or the console, which carry them out and audit them)."""

from django.contrib import admin
from django.http import HttpRequest

from members.privacy.models import PrivacyRequest, RetentionRun


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PrivacyRequest)
class PrivacyRequestAdmin(_ReadOnly):
    list_display = (
        "id",
        "kind",
        "status",
        "member_id",
        "requested_by",
        "reference",
        "received_at",
        "done_at",
    )
    list_filter = ("kind", "status")
    search_fields = ("=member_id", "reference")
    date_hierarchy = "received_at"


@admin.register(RetentionRun)
class RetentionRunAdmin(_ReadOnly):
    list_display = ("started_at", "finished_at", "dry_run", "counts")
    list_filter = ("dry_run",)
