"""Admin of the loyalty app: where staff edit the program (rules, tiers, campaigns). The
ledger, accounts and redemptions are shown read-only: they change only through services."""

from django.contrib import admin
from django.db.models import Model
from django.forms import ModelForm
from django.http import HttpRequest

from cdp.admin import ReadOnlyAdmin
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
