"""The demo's loyalty program: tiers, one seasonal earning rule and a coupon campaign, so a
newcomer's demo members have tiers and points worth looking at. Safe to run again."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from members.loyalty.coupons import CouponRefused, coupon_redeem, coupons_issue
from members.loyalty.models import Coupon, CouponCampaign, EarnRule, Tier
from members.models import Member, MemberOrder

DEMO_TIERS = (("member", "Member", 0, 0), ("silver", "Silver", 1, 1000), ("gold", "Gold", 2, 5000),
              ("black", "Black", 3, 20000))  # fmt: skip
STORE_RULE = "Double points in stores this month (demo)"
CAMPAIGN = "Welcome back: 20 off 100 (demo)"


def loyalty_demo_setup(*, now: datetime | None = None) -> None:
    now = now or timezone.now()
    for key, name, rank, threshold in DEMO_TIERS:
        Tier.objects.get_or_create(
            key=key, defaults={"name": name, "rank": rank, "threshold": Decimal(threshold)}
        )
    if not EarnRule.objects.filter(name=STORE_RULE).exists() and not EarnRule.objects.exists():
        month = timezone.localtime(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        EarnRule.objects.create(
            name=STORE_RULE, valid_from=month, valid_until=(month + timedelta(days=32)).replace(day=1),
            channel_multipliers={"pos": 2},
        )  # fmt: skip
    CouponCampaign.objects.get_or_create(
        name=CAMPAIGN,
        defaults={"benefit": "amount", "value": Decimal(20), "minimum_spend": Decimal(100),
                  "valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=60)},
    )  # fmt: skip


STORE_CAMPAIGN = "In-store voucher: 20 off 100 (demo)"
#: Of the demo members with an order of at least the minimum spend, every Nth gets a coupon of
#: each campaign; of those, every Mth spends it on their latest order.
_ISSUE_EVERY, _UNUSED_EVERY = 2, 3


def loyalty_demo_coupons(*, now: datetime | None = None) -> int:
    """Coupons issued to the processed demo members and spent on their latest orders, in the
    channel of each order, so the insights board's coupon matrix (issuing x redeeming channel)
    has figures: the any-channel campaign redeemed in stores, the app and the mini-program, the
    store-only one at the tills. Deterministic and safe to run again (one coupon per member and
    campaign; a redeemed coupon answers its redemption again). Returns how many were redeemed."""
    now = now or timezone.now()
    anywhere = CouponCampaign.objects.get(name=CAMPAIGN)
    in_store, _ = CouponCampaign.objects.get_or_create(
        name=STORE_CAMPAIGN,
        defaults={"benefit": "amount", "value": Decimal(20), "minimum_spend": Decimal(100), "channels": ["pos"],
                  "valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=60)},
    )  # fmt: skip
    latest: dict[int, MemberOrder] = {}
    for order in MemberOrder.objects.filter(
        member__status=Member.Status.ACTIVE, total__gte=100, placed_at__isnull=False
    ).order_by("member_id", "placed_at", "id"):
        latest[order.member_id] = order
    redeemed = 0
    for n, (member_id, order) in enumerate(sorted(latest.items())):
        campaign = in_store if order.channel == "pos" and n % 4 == 0 else anywhere
        if n % _ISSUE_EVERY:
            continue
        coupons_issue(campaign=campaign, member_ids=[member_id])
        if n % (_ISSUE_EVERY * _UNUSED_EVERY) == 0:
            continue  # issued, never used
        coupon = Coupon.objects.get(campaign=campaign, member_id=member_id)
        try:
            coupon_redeem(code=coupon.code, order_id=order.order_id, channel=order.channel,
                          order_total=order.total, member=order.member, user=None, now=now)  # fmt: skip
        except CouponRefused:
            continue  # e.g. an order in another currency: left unused
        redeemed += 1
    return redeemed
