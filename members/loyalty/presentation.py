"""The JSON shapes of loyalty, one place for the API and the console."""

from datetime import datetime

from members.loyalty.models import Coupon, CouponRedemption, PointsEntry, TierGrant
from members.loyalty.selectors import LedgerLine, PointsSummary


def entry_json(entry: PointsEntry, balance_after: int | None = None) -> dict:
    """An entry; in a ledger page, with the running balance after it."""
    return {
        "id": entry.pk,
        "kind": entry.kind,
        "points": entry.points,
        "reason": entry.reason,
        "at": entry.at,
        "order_id": entry.order_id,
        "channel": entry.channel,
        "event_id": entry.event_id,
        "staff": entry.staff_user.get_username() if entry.staff_user else None,  # no query when unset
        "available_at": entry.available_at,
        "expires_at": entry.expires_at,
        "key": entry.key,
        **({} if balance_after is None else {"balance_after": balance_after}),
    }


def coupon_status(coupon: Coupon, redemption: CouponRedemption | None, now: datetime) -> str:
    if redemption is not None:
        return "redeemed"
    if now < coupon.campaign.valid_from:
        return "not_yet_valid"
    if now >= coupon.campaign.valid_until:
        return "expired"
    return "usable"


def coupon_json(coupon: Coupon, redemption: CouponRedemption | None, now: datetime) -> dict:
    campaign = coupon.campaign
    return {
        "code": coupon.code,
        "campaign": campaign.name,
        "benefit": campaign.benefit,
        "value": campaign.value,
        "minimum_spend": campaign.minimum_spend,
        "valid_from": campaign.valid_from,
        "valid_until": campaign.valid_until,
        "channels": campaign.channels,
        "member_id": coupon.member_id,
        "status": coupon_status(coupon, redemption, now),
        "redeemed_order_id": redemption.order_id if redemption else None,
    }


def points_json(member_id: int, summary: PointsSummary, ledger: list[LedgerLine], *, more: bool) -> dict:
    return {
        "member_id": member_id,
        "balance": summary.balance,
        "available": summary.available,
        "pending": summary.pending,
        "expiring": [{"points": lot.remaining, "expires_at": lot.expires_at} for lot in summary.expiring],
        "expiring_within_days": summary.expiring_within_days,
        "tier": (
            {"key": summary.tier.key, "name": summary.tier.name, "since": summary.tier_since}
            if summary.tier
            else None
        ),
        "tier_changes": [
            {"at": c.at, "from_tier": c.from_tier, "to_tier": c.to_tier, "reason": c.reason}
            for c in summary.tier_changes
        ],
        "coupons": [coupon_json(c, _in_force(c), summary.now) for c in summary.coupons],
        "ledger": [entry_json(line.entry, line.balance_after) for line in ledger],
        "next_cursor": ledger[-1].entry.pk if more and ledger else None,
    }


def _in_force(coupon: Coupon) -> CouponRedemption | None:
    # Redemptions are prefetched by the selector: no query per coupon.
    return next((r for r in coupon.redemptions.all() if r.released_at is None), None)


def tier_grant_json(grant: TierGrant) -> dict:
    return {
        "tier": grant.tier,
        "at": grant.at,
        "key": grant.key,
        "reason": grant.reason,
        "recorded_at": grant.created_at,
    }
