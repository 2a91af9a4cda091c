"""The demo's loyalty program: tiers, one seasonal earning rule and a coupon campaign, so a
newcomer's demo members have tiers and points worth looking at. Safe to run again."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from members.loyalty.models import CouponCampaign, EarnRule, Tier

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
