from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from cdp.models import ApiToken, AuditEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that change only through services (ledgers, logs, parked work): shown, never edited."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("key_prefix", "user", "name", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("user__username", "name", "key_prefix")
    readonly_fields = ("key_hash", "key_prefix", "created_at")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "user", "action", "member_ids", "channel", "detail")
    list_filter = ("action", "channel")
    search_fields = ("user__username", "detail")
    date_hierarchy = "at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
