from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from members.consent.models import ConsentStatement


@admin.register(ConsentStatement)
class ConsentStatementAdmin(admin.ModelAdmin):
    """The consent history, read-only: statements come from events and from staff through the
    API or the console (audited); the database refuses changes."""

    list_display = ("id", "member", "purpose", "state", "at", "version", "origin", "channel", "store_code")
    list_filter = ("purpose", "state", "origin", "channel")
    search_fields = ("=member__id", "=subject_id", "=event_id")
    raw_id_fields = ("member", "recorded_by")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
