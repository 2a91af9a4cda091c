"""Reads of loyalty: the program as plain data, a member's points, members about to lose points."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Q, Subquery, Sum
from django.utils import timezone

from cdp.scopes import UNSCOPED, Scope
from members.loyalty.models import (
    Coupon,
    CouponRedemption,
    EarnRule,
    LoyaltyProgram,
    PointsAccount,
    PointsEntry,
    Tier,
    TierChange,
    TierGrant,
)
from members.loyalty.points import Kind, Lot, Lots, Recorded, lots_of
from members.loyalty.program import (
    Downgrade,
    Expiry,
    NegativeBalance,
    Program,
    TierBasis,
    TierRule,
    multiplier_of,
)
from members.loyalty.program import EarnRule as Rule
from members.selectors import seen_within

logger = logging.getLogger(__name__)


def program_settings() -> LoyaltyProgram:
    program, _ = LoyaltyProgram.objects.get_or_create(key="default")
    return program


def program_load() -> Program:
    """The program, its earning rules and tiers as the pure derivation reads them (3 queries)."""
    row = program_settings()
    return Program(
        rules=tuple(_rule(rule) for rule in EarnRule.objects.all()),
        tiers=tuple(
            TierRule(key=t.key, name=t.name, rank=t.rank, threshold=t.threshold)
            for t in Tier.objects.order_by("rank")
        ),
        tier_basis=TierBasis(row.tier_basis),
        tier_window_days=row.tier_window_days,
        downgrade=Downgrade(row.tier_downgrade),
        review_months=row.tier_review_months,
        negative_balance=NegativeBalance(row.negative_balance),
        refund_returns_redeemed_points=row.refund_returns_redeemed_points,
        currency=settings.CDP_CURRENCY,
        zone=ZoneInfo(settings.TIME_ZONE),
    )


def _rule(rule: EarnRule) -> Rule:
    return Rule(
        key=str(rule.pk),
        valid_from=rule.valid_from,
        valid_until=rule.valid_until,
        points_per_unit=rule.points_per_unit,
        channel_multipliers=_multipliers(rule, "channel_multipliers"),
        tier_multipliers=_multipliers(rule, "tier_multipliers"),
        excluded_skus=frozenset(rule.excluded_skus),
        excluded_categories=frozenset(rule.excluded_categories),
        first_purchase_bonus=rule.first_purchase_bonus,
        signup_bonus=rule.signup_bonus,
        referral_bonus=rule.referral_bonus,
        pending_days=rule.pending_days,
        expiry=Expiry(rule.expiry),
        expiry_days=rule.expiry_days,
    )


def _multipliers(rule: EarnRule, field: str) -> dict[str, Decimal]:
    """A rule's multipliers as numbers. A rule stored before they were validated may hold
    anything: what is not a number is left out (as if not set) and logged, rather than fail
    the loading of the program, and so every member's refresh. The derivation holds the
    numbers to their bounds."""
    stored = getattr(rule, field)
    if not isinstance(stored, dict):
        logger.warning("Earning rule %s: %s is not an object; ignored", rule.pk, field)
        return {}
    multipliers: dict[str, Decimal] = {}
    for key, value in stored.items():
        if (number := multiplier_of(value)) is None:
            logger.warning(
                "Earning rule %s: %s[%r] = %r is not a number; ignored", rule.pk, field, key, value
            )
        else:
            multipliers[key] = number
    return multipliers


def recorded_of(entry: PointsEntry) -> Recorded:
    return Recorded(
        key=entry.key,
        kind=Kind(entry.kind),
        points=entry.points,
        at=entry.at,
        order_id=entry.order_id,
        cause_key=entry.cause_key,
        available_at=entry.available_at,
        expires_at=entry.expires_at,
        derived=entry.derived,
        event_id=entry.event_id,
    )


@dataclass(frozen=True, slots=True)
class PointsSummary:
    balance: int
    available: int
    pending: int
    expiring: list[Lot]  # lots expiring within the program's "soon", soonest first
    expiring_within_days: int
    tier: Tier | None
    tier_since: datetime | None
    tier_changes: list[TierChange]
    coupons: list[Coupon]
    now: datetime


def points_summary(*, member_id: int, now: datetime | None = None) -> PointsSummary:
    """A member's balance split into spendable and pending, what expires soon, tier and coupons."""
    now = now or timezone.now()
    account = PointsAccount.objects.filter(member_id=member_id).first()
    balance = account.balance if account else 0
    lots, pending = _lots_and_pending(member_id, balance, now)
    program = program_settings()
    expiring = sorted(
        lots.expiring(now, now + timedelta(days=program.expiring_soon_days)),
        key=lambda lot: lot.expires_at or now,
    )  # expiring lots all have an expiry
    tier = Tier.objects.filter(key=account.tier).first() if account and account.tier else None
    return PointsSummary(
        balance=balance,
        available=balance - pending,
        pending=pending,
        expiring=expiring,
        expiring_within_days=program.expiring_soon_days,
        tier=tier,
        tier_since=account.tier_since if account else None,
        tier_changes=list(TierChange.objects.filter(member_id=member_id).order_by("-at")[:20]),
        coupons=list(
            Coupon.objects.filter(member_id=member_id)
            .select_related("campaign")
            .prefetch_related("redemptions")
            .order_by("-issued_at")[:50]
        ),
        now=now,
    )


def points_available(*, member_id: int, now: datetime) -> int:
    """Points the member can spend now: the balance less what is still pending."""
    balance = PointsAccount.objects.filter(member_id=member_id).values_list("balance", flat=True).first() or 0
    return balance - _lots_and_pending(member_id, balance, now)[1]


def _lots_and_pending(member_id: int, balance: int, now: datetime) -> tuple[Lots, int]:
    """The member's lots from their ledger, and how much of the balance is still pending (never
    more than a positive balance: a debt is paid from pending points first)."""
    lots = lots_of(recorded_of(e) for e in PointsEntry.objects.filter(member_id=member_id))
    return lots, min(lots.pending(now), max(balance, 0))


@dataclass(frozen=True)
class LedgerLine:
    """A ledger entry and the balance once it and every entry before it (in time) counted."""

    entry: PointsEntry
    balance_after: int


def ledger_page(*, member_id: int, before: int | None, size: int) -> list[LedgerLine]:
    """A page of a member's ledger, newest first in the order things happened (``at``; the
    entry id among entries of one moment), each with the running balance after it: what a
    customer reads on a statement. Keyset on (at, id): ``before`` is the id of the last entry
    of the previous page. Two queries (the page; the sum of everything older than it)."""
    entries = PointsEntry.objects.filter(member_id=member_id)
    rows = entries.select_related("staff_user")
    if before is not None:
        anchor = Subquery(entries.filter(pk=before).values("at")[:1])
        rows = rows.filter(Q(at__lt=anchor) | Q(at=anchor, id__lt=before))
    page = list(rows.order_by("-at", "-id")[:size])
    if not page:
        return []
    oldest = page[-1]
    balance = (
        entries.filter(Q(at__lt=oldest.at) | Q(at=oldest.at, id__lt=oldest.pk)).aggregate(
            total=Sum("points")
        )["total"]
        or 0
    )
    lines = []
    for entry in reversed(page):
        balance += entry.points
        lines.append(LedgerLine(entry, balance))
    return lines[::-1]


def members_expiring(
    *,
    within_days: int,
    after_member: int | None,
    size: int,
    now: datetime | None = None,
    scope: Scope = UNSCOPED,
) -> list[PointsAccount]:
    """Members whose next points expire within ``within_days``, by member id (keyset on it),
    those seen within ``scope`` only."""
    now = now or timezone.now()
    rows = PointsAccount.objects.filter(
        next_expiry_at__isnull=False,
        next_expiry_at__lte=now + timedelta(days=within_days),
        next_expiry_points__gt=0,
    )
    if not scope.unrestricted:
        rows = rows.filter(seen_within(scope, "member_id"))
    if after_member is not None:
        rows = rows.filter(member_id__gt=after_member)
    return list(rows.order_by("member_id")[:size])


def coupon_redemption_active(*, coupon: Coupon) -> CouponRedemption | None:
    """The coupon's redemption in force (at most one: a partial unique index), if any."""
    return coupon.redemptions.filter(released_at__isnull=True).first()


def tier_grants_of(*, member_id: int) -> list[TierGrant]:
    """The tiers the member was granted from elsewhere (an imported legacy programme's), oldest
    first: facts their tier is derived from, so an access export names them with the tier."""
    return list(TierGrant.objects.filter(member_id=member_id).order_by("at", "id"))
