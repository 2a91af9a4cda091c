"""Coupons across channels: issue to members, redeem exactly once at any till or checkout,
release when the order is refunded.

Exactly once is the database's job: a partial unique index allows one redemption in force per
coupon, so of two tills redeeming one code at the same moment one insert wins and the other
fails and is told where the coupon went. Redeeming again for the same order and channel is a
retry and answers with the redemption already made.
"""

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from cdp.models import AuditEntry
from cdp.services import audit_record
from members.consent.selectors import members_with_consent
from members.consent.statements import NO_CONSENT
from members.loyalty.models import Coupon, CouponCampaign, CouponRedemption
from members.loyalty.selectors import coupon_redemption_active
from members.models import Member
from members.segments.models import SegmentMember

#: Code alphabet without look-alikes (0/O, 1/I/L), read out at tills.
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_CODE_LENGTH = 10


class CouponRefused(Exception):
    """A coupon that cannot be used as asked: ``field`` and ``reason`` say why; ``status``
    is the HTTP status (404 unknown, 409 already used, 422 not usable on this order)."""

    def __init__(self, field: str, reason: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.status = field, reason, status


def coupon_code_new() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(_CODE_LENGTH))


def coupons_issue(*, campaign: CouponCampaign, member_ids: Iterable[int]) -> int:
    """Give each active member (absorbed ids count as their survivor) one coupon of the
    campaign; returns how many were issued now. Issuing again issues nothing twice."""
    wanted = set(member_ids)
    survivors = dict(Member.objects.filter(id__in=wanted).values_list("id", "merged_into_id"))
    active = {merged_into or member_id for member_id, merged_into in survivors.items()}
    have = set(
        Coupon.objects.filter(campaign=campaign, member_id__in=active).values_list("member_id", flat=True)
    )
    new = [Coupon(code=coupon_code_new(), campaign=campaign, member_id=m) for m in sorted(active - have)]
    created = Coupon.objects.bulk_create(new, ignore_conflicts=True, batch_size=2000)
    return len(created)


@dataclass(frozen=True, slots=True)
class Issued:
    issued: int  # coupons issued now
    withheld: dict[str, int]  # members skipped, by reason


def coupons_issue_checked(
    *,
    campaign: CouponCampaign,
    member_ids: Iterable[int] | None = None,
    segment: str = "",
    purpose: str = "",
    purposes: tuple[str, ...] | None = None,
    user: User | None = None,
) -> Issued:
    """Issue the campaign to these members, or to every member of ``segment`` now, skipping
    members without consent in force to ``purposes`` (declared as ``purpose``; None: no check,
    for coupons given to named members outside any marketing use); audited with what was
    issued and skipped. A segment's campaign is always a marketing outflow: the caller passes
    the purposes it declared, ``marketing`` by default."""
    with transaction.atomic():
        if segment:
            wanted = list(
                SegmentMember.objects.filter(segment__key=segment)
                .order_by("member_id")
                .values_list("member_id", flat=True)
            )
        else:
            wanted = sorted(set(member_ids or ()))
        allowed = set(wanted) if purposes is None else members_with_consent(
            member_ids=wanted, purposes=purposes, at=timezone.now()
        )  # fmt: skip
        withheld = {NO_CONSENT: len(set(wanted) - allowed)}
        issued = coupons_issue(campaign=campaign, member_ids=allowed)
        audit_record(
            user=user,
            action=AuditEntry.Action.ISSUE_COUPONS,
            member_ids=(),
            channel="api",
            detail=f"campaign {campaign.pk} to {f'segment {segment}' if segment else f'{len(wanted)} members'}"
            + (f" for {purpose}" if purposes is not None else "")
            + f": {issued} issued, withheld {NO_CONSENT}={withheld[NO_CONSENT]}",
        )
    return Issued(issued, withheld)


@dataclass(frozen=True, slots=True)
class Redemption:
    redemption: CouponRedemption
    created: bool  # False: a retry of a redemption already made


def coupon_redeem(
    *,
    code: str,
    order_id: str,
    channel: str,
    order_total: Decimal,
    member: Member | None,
    user: User | AnonymousUser | None,
    now: datetime | None = None,
) -> Redemption:
    """Use a coupon on an order. Raises ``CouponRefused`` with the reason it cannot be."""
    now = now or timezone.now()
    coupon = Coupon.objects.select_related("campaign").filter(code=code.strip().upper()).first()
    if coupon is None:
        raise CouponRefused("code", "no such coupon", status=404)
    active = coupon_redemption_active(coupon=coupon)
    if active is not None:
        return _already(active, order_id=order_id, channel=channel)
    _usable(coupon, order_total=order_total, channel=channel, member=member, now=now)
    campaign = coupon.campaign
    if campaign.benefit == CouponCampaign.Benefit.PERCENT:
        discount = (order_total * campaign.value / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    else:
        discount = min(campaign.value, order_total)
    try:
        with transaction.atomic():
            redemption = CouponRedemption.objects.create(
                coupon=coupon,
                member=member,
                order_id=order_id,
                channel=channel,
                order_total=order_total,
                discount=discount,
                redeemed_by=user if isinstance(user, User) else None,
            )
    except IntegrityError:
        # Another till got there first (the unique index waited for its commit).
        active = coupon_redemption_active(coupon=coupon)
        if active is None:
            raise
        return _already(active, order_id=order_id, channel=channel)
    return Redemption(redemption, created=True)


def _already(active: CouponRedemption, *, order_id: str, channel: str) -> Redemption:
    if (active.order_id, active.channel) == (order_id, channel):
        return Redemption(active, created=False)
    raise CouponRefused(
        "code",
        f"already redeemed on order {active.order_id} ({active.channel}) at {active.redeemed_at:%Y-%m-%d %H:%M:%S %Z}",
        status=409,
    )


def _usable(
    coupon: Coupon, *, order_total: Decimal, channel: str, member: Member | None, now: datetime
) -> None:
    campaign = coupon.campaign
    if now < campaign.valid_from:
        raise CouponRefused("code", f"not valid yet: valid from {campaign.valid_from:%Y-%m-%d %H:%M %Z}")
    if now >= campaign.valid_until:
        raise CouponRefused("code", f"expired at {campaign.valid_until:%Y-%m-%d %H:%M %Z}")
    if campaign.channels and channel not in campaign.channels:
        raise CouponRefused(
            "channel", f"this coupon is valid in {', '.join(campaign.channels)} only, not {channel}"
        )
    if order_total < campaign.minimum_spend:
        raise CouponRefused("order_total", f"below the minimum spend of {campaign.minimum_spend}")
    if coupon.member_id is not None:
        if member is None:
            raise CouponRefused("member_id", "this coupon was issued to a member: say which member is paying")
        if member.pk != coupon.member_id:
            raise CouponRefused("member_id", "this coupon was issued to another member")


def coupon_release(*, code: str, order_id: str, reason: str) -> CouponRedemption:
    """Undo a redemption (its order was refunded or cancelled): the coupon can be used again."""
    coupon = Coupon.objects.filter(code=code.strip().upper()).first()
    if coupon is None:
        raise CouponRefused("code", "no such coupon", status=404)
    active = coupon_redemption_active(coupon=coupon)
    if active is None or active.order_id != order_id:
        raise CouponRefused(
            "order_id", f"coupon {coupon.code} is not redeemed on order {order_id}", status=409
        )
    CouponRedemption.objects.filter(pk=active.pk, released_at__isnull=True).update(
        released_at=timezone.now(), release_reason=reason[:200]
    )
    active.refresh_from_db()
    return active


def coupons_release_for_orders(*, order_ids: list[str], reason: str) -> int:
    """Release the redemptions in force on these orders; returns how many. Locked in id
    order first: two refreshes releasing redemptions of one order id never deadlock."""
    in_force = CouponRedemption.objects.filter(order_id__in=order_ids, released_at__isnull=True)
    ids = list(in_force.order_by("pk").select_for_update().values_list("pk", flat=True))
    return in_force.filter(pk__in=ids).update(released_at=timezone.now(), release_reason=reason[:200])


# Onboarding (members.imports) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CouponCarried:
    """A coupon already in a customer's hands in a legacy system. ``campaign`` names the
    campaign (created from this row's terms when no campaign has that name); a redeemed one
    carries its redemption."""

    code: str
    campaign: str
    member_id: int | None
    benefit: str
    value: Decimal | None
    currency: str
    minimum_spend: Decimal
    valid_from: datetime | None
    valid_until: datetime | None
    redeemed_at: datetime | None
    order_id: str
    channel: str
    order_total: Decimal


def _campaign_for(carried: CouponCarried, campaigns: dict[str, CouponCampaign]) -> CouponCampaign:
    if (campaign := campaigns.get(carried.campaign)) is not None:
        return campaign
    if carried.value is None or carried.valid_from is None or carried.valid_until is None:
        raise CouponRefused(
            "campaign",
            f"no campaign is named {carried.campaign!r}: value, valid_from and valid_until create it",
        )
    campaign = CouponCampaign(
        name=carried.campaign,
        benefit=carried.benefit,
        value=carried.value,
        currency=carried.currency,
        minimum_spend=carried.minimum_spend,
        valid_from=carried.valid_from,
        valid_until=carried.valid_until,
    )
    try:
        campaign.full_clean()
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise CouponRefused(field if field != "__all__" else "campaign", "; ".join(messages)) from exc
    campaign.save()
    campaigns[carried.campaign] = campaign
    return campaign


def coupons_carry_over(*, coupons: list[CouponCarried]) -> dict[str, str]:
    """Issue these legacy coupons under their own codes (and record the redemption of those
    used); returns, by code, why a coupon was not issued now: ``"duplicate"`` when the same
    coupon was issued before (an import run twice issues nothing twice), else the reason it
    cannot be (its code held by another coupon, a second coupon of one campaign for one
    member, a campaign that cannot be made)."""
    outcome: dict[str, str] = {}
    if not coupons:
        return outcome
    with transaction.atomic():
        names = {c.campaign for c in coupons}
        campaigns: dict[str, CouponCampaign] = {}
        for campaign in CouponCampaign.objects.filter(name__in=names).order_by("-id"):
            campaigns[campaign.name] = campaign  # the earliest of a name wins (ordered last)
        existing = {c.code: c for c in Coupon.objects.filter(code__in=[c.code for c in coupons])}
        wanted: list[tuple[CouponCarried, Coupon]] = []
        taken: set[tuple[int, int]] = set()
        seen: set[str] = set()
        for carried in coupons:
            if carried.code in seen:
                outcome[carried.code] = "duplicate"  # the same code twice in one batch: once
                continue
            seen.add(carried.code)
            try:
                campaign = _campaign_for(carried, campaigns)
            except CouponRefused as refused:
                outcome[carried.code] = f"{refused.field}: {refused.reason}"
                continue
            held = existing.get(carried.code)
            if held is not None:
                same = held.campaign_id == campaign.pk and held.member_id == carried.member_id
                outcome[carried.code] = "duplicate" if same else "code: already the code of another coupon"
                continue
            if carried.member_id is not None:
                pair = (campaign.pk, carried.member_id)
                if pair in taken:
                    outcome[carried.code] = "member: already holds a coupon of this campaign"
                    continue
                taken.add(pair)
            wanted.append(
                (carried, Coupon(code=carried.code, campaign=campaign, member_id=carried.member_id))
            )
        held_pairs = set(
            Coupon.objects.filter(
                member_id__in=[c.member_id for c, _ in wanted if c.member_id is not None],
                campaign__in=[coupon.campaign for _, coupon in wanted],
            ).values_list("campaign_id", "member_id")
        )
        issued = []
        for carried, coupon in wanted:
            if carried.member_id is not None and (coupon.campaign.pk, carried.member_id) in held_pairs:
                outcome[carried.code] = "member: already holds a coupon of this campaign"
            else:
                issued.append((carried, coupon))
        Coupon.objects.bulk_create([coupon for _, coupon in issued])
        for carried, coupon in issued:
            if carried.redeemed_at is None:
                continue
            campaign = coupon.campaign
            discount = (
                campaign.value
                if campaign.benefit == CouponCampaign.Benefit.AMOUNT
                else (carried.order_total * campaign.value / 100).quantize(Decimal("0.01"))
            )
            redemption = CouponRedemption.objects.create(
                coupon=coupon,
                member_id=carried.member_id,
                order_id=carried.order_id,
                channel=carried.channel,
                order_total=carried.order_total,
                discount=discount,
            )
            # auto_now_add stamps the import's time; a carried redemption keeps its own.
            CouponRedemption.objects.filter(pk=redemption.pk).update(redeemed_at=carried.redeemed_at)
    return outcome
