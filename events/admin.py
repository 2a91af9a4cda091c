from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from cdp.admin import ReadOnlyAdmin
from cdp.models import AuditEntry
from cdp.services import audit_record
from events.models import Event, ParkedEvent, RejectedEvent, Source
from events.parking import parked_events_replay
from events.services import source_rotate_key, source_set_enabled
from events.tasks import process_pending_enqueue


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "kind",
        "store_code",
        "default_currency",
        "erasure",
        "write_key_prefix",
        "enabled",
        "created_at",
    )
    list_filter = ("kind", "enabled", "erasure")
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


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
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
class RejectedEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "source", "endpoint", "batch_index", "code", "reason", "received_at")
    list_filter = ("code", "endpoint", "source")
    list_select_related = ("source",)


@admin.register(ParkedEvent)
class ParkedEventAdmin(ReadOnlyAdmin):
    """Events a stage failed on; select and replay them after a fix. The event itself is shown
    by id only: an event parked because it cannot be read back must still be listed."""

    list_display = ("id", "event_id", "stage", "error", "attempts", "last_failed_at", "replayed_at")
    list_filter = ("stage", ("replayed_at", admin.EmptyFieldListFilter))
    fields = readonly_fields = (
        "event_id", "stage", "error", "traceback", "attempts", "first_failed_at", "last_failed_at", "replayed_at",
    )  # fmt: skip
    actions = ("replay",)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.replay_parkedevent")

    @admin.action(description="Replay (after a fix): queue the events again", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[ParkedEvent]) -> None:
        with transaction.atomic():
            event_ids = parked_events_replay(ids=list(queryset.values_list("id", flat=True)))
            if event_ids:
                audit_record(
                    user=request.user, action=AuditEntry.Action.REPLAY_PARKED, member_ids=(),
                    channel="console", detail=f"events {', '.join(map(str, event_ids))}",
                )  # fmt: skip
                transaction.on_commit(process_pending_enqueue)
        self.message_user(
            request, f"{len(event_ids)} events queued again (those already replayed were skipped)."
        )
