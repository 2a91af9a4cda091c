from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from events.models import Event, RejectedEvent, Source
from events.services import source_rotate_key, source_set_enabled


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "store_code",
        "default_currency",
        "write_key_prefix",
        "enabled",
        "created_at",
    )
    list_filter = ("kind", "enabled")
    search_fields = ("name", "store_code")
    readonly_fields = ("write_key_prefix", "created_at", "updated_at")
    exclude = ("write_key_hash",)
    actions = ("disable", "enable", "rotate_key")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a write key is shown once: create sources with the API or create_source

    @admin.action(description="Disable (their keys stop working at once)")
    def disable(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        for source in queryset:
            source_set_enabled(source=source, enabled=False)

    @admin.action(description="Enable")
    def enable(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        for source in queryset:
            source_set_enabled(source=source, enabled=True)

    @admin.action(description="Rotate write key (shows the new key once)")
    def rotate_key(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        for source in queryset:
            rotated = source_rotate_key(source=source)
            self.message_user(request, f"{source.name}: new write key {rotated.write_key}", messages.WARNING)


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(_ReadOnlyAdmin):
    list_display = (
        "id",
        "type",
        "event",
        "channel",
        "store_code",
        "user_id",
        "anonymous_id",
        "timestamp",
    )
    list_filter = ("type", "channel")
    search_fields = ("message_id", "user_id", "anonymous_id", "event")
    list_select_related = ("source",)
    show_full_result_count = False


@admin.register(RejectedEvent)
class RejectedEventAdmin(_ReadOnlyAdmin):
    list_display = ("id", "source", "endpoint", "batch_index", "code", "reason", "received_at")
    list_filter = ("code", "endpoint", "source")
    list_select_related = ("source",)
