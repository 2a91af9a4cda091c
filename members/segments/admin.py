"""Admin of the segments app: segment webhooks with their latest deliveries."""

from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from cdp.admin import ReadOnlyAdmin
from members.segments.models import SegmentWebhook, WebhookDelivery
from members.segments.webhooks.services import webhook_update


@admin.register(SegmentWebhook)
class SegmentWebhookAdmin(admin.ModelAdmin):
    """Webhooks are made through the API, which shows the secret once; here staff see them with
    their latest deliveries and may turn one off or on again (failures forgotten)."""

    list_display = ("id", "segment", "url", "changes", "active", "failures", "next_attempt_at", "cursor",
                    "last_success_at", "disabled_reason")  # fmt: skip
    list_filter = ("active", "changes")
    search_fields = ("url", "segment__key")
    fields = ("segment", "url", "changes", "active", "cursor", "failures", "next_attempt_at", "disabled_reason",
              "last_success_at", "created_by", "created_at", "recent_deliveries")  # fmt: skip
    readonly_fields = tuple(name for name in fields if name != "active")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: SegmentWebhook, form: ModelForm, change: bool) -> None:
        webhook_update(webhook=obj, active=obj.active)

    @admin.display(description="latest deliveries")
    def recent_deliveries(self, obj: SegmentWebhook) -> str:
        rows = WebhookDelivery.objects.filter(webhook=obj).order_by("-pk")[:10]
        return format_html(
            "<table><tr><th>at</th><th>ok</th><th>status</th><th>changes</th><th>attempt</th><th>ms</th>"
            "<th>error</th></tr>{}</table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                ((d.at, "yes" if d.succeeded else "no", d.status_code or "-", f"{d.first_cursor}-{d.last_cursor} ({d.count})",
                  d.attempt, d.duration_ms, d.error) for d in rows),
            ),
        )  # fmt: skip


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("at", "webhook", "succeeded", "status_code", "count", "first_cursor", "last_cursor", "attempt",
                    "duration_ms", "error")  # fmt: skip
    list_filter = ("succeeded",)
    search_fields = ("=webhook__id", "=delivery_id")
    list_select_related = ("webhook",)
