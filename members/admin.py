"""Admin of the members app: where staff edit the loyalty program (rules, tiers, campaigns).
The ledger, accounts and redemptions are shown read-only: they change only through services."""

from django.contrib import admin
from django.db import transaction
from django.db.models import Model, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from cdp.models import AuditEntry
from cdp.services import audit_record
from events.tasks import process_pending_enqueue
from members.loyalty.models import (
    Coupon,
    CouponCampaign,
    CouponRedemption,
    EarnRule,
    LoyaltyProgram,
    PointsAccount,
    PointsEntry,
    Tier,
)
from members.loyalty.services import program_policy_apply
from members.models import ParkedMember
from members.parking import parked_members_replay
from members.segments.models import SegmentWebhook, WebhookDelivery
from members.segments.webhooks.services import webhook_update


@admin.register(LoyaltyProgram)
class LoyaltyProgramAdmin(admin.ModelAdmin):
    list_display = (
        "key",
        "negative_balance",
        "tier_basis",
        "tier_window_days",
        "tier_downgrade",
        "updated_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one program, created by the migrations

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: LoyaltyProgram, form: ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        program_policy_apply(program=obj)


@admin.register(EarnRule)
class EarnRuleAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "valid_from",
        "valid_until",
        "points_per_unit",
        "pending_days",
        "expiry",
        "expiry_days",
    )
    ordering = ("-valid_from",)


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ("rank", "key", "name", "threshold")


@admin.register(CouponCampaign)
class CouponCampaignAdmin(admin.ModelAdmin):
    list_display = ("name", "benefit", "value", "minimum_spend", "valid_from", "valid_until", "channels")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(PointsEntry)
class PointsEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "member", "kind", "points", "reason", "at", "key")
    list_filter = ("kind", "derived")
    search_fields = ("=member__id", "=order_id", "key")
    raw_id_fields = ("member", "staff_user")


@admin.register(PointsAccount)
class PointsAccountAdmin(ReadOnlyAdmin):
    list_display = ("member", "balance", "tier", "tier_since", "next_expiry_at", "next_expiry_points")
    search_fields = ("=member__id",)
    raw_id_fields = ("member",)


@admin.register(Coupon)
class CouponAdmin(ReadOnlyAdmin):
    list_display = ("code", "campaign", "member", "issued_at")
    search_fields = ("=code", "=member__id")
    raw_id_fields = ("member",)


@admin.register(CouponRedemption)
class CouponRedemptionAdmin(ReadOnlyAdmin):
    list_display = (
        "coupon",
        "order_id",
        "channel",
        "discount",
        "redeemed_at",
        "released_at",
        "release_reason",
    )
    search_fields = ("=order_id", "=coupon__code")


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


@admin.register(ParkedMember)
class ParkedMemberAdmin(ReadOnlyAdmin):
    """Members whose refresh failed; select and replay them after a fix."""

    list_display = ("id", "member_id", "error", "attempts", "last_failed_at", "replayed_at")
    list_filter = (("replayed_at", admin.EmptyFieldListFilter),)
    fields = readonly_fields = (
        "member_id", "error", "traceback", "attempts", "first_failed_at", "last_failed_at", "replayed_at",
    )  # fmt: skip
    actions = ("replay",)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("members.replay_parkedmember")

    @admin.action(description="Replay (after a fix): refresh the members again", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[ParkedMember]) -> None:
        with transaction.atomic():
            member_ids = parked_members_replay(ids=list(queryset.values_list("id", flat=True)))
            if member_ids:
                audit_record(
                    user=request.user, action=AuditEntry.Action.REPLAY_PARKED, member_ids=member_ids,
                    channel="console", detail="parked members replayed",
                )  # fmt: skip
                transaction.on_commit(process_pending_enqueue)
        self.message_user(request, f"{len(member_ids)} members marked for a refresh again.")
