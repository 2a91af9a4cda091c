"""Loyalty data: the program and its versioned earning rules, tiers, the points ledger with
its accounts, tier history, and coupons: the ``loyalty`` app's models (tables named
``members_*``, from when loyalty lived in the members app)."""

from enum import StrEnum

from django.conf import settings
from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import ArrayField, RangeOperators
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Func, Q

from members.loyalty.points import Kind
from members.loyalty.program import (
    MAX_MULTIPLIER,
    MAX_POINTS_PER_UNIT,
    Downgrade,
    Expiry,
    NegativeBalance,
    TierBasis,
    multiplier_problem,
)

_KIND_CHOICES = [(kind.value, kind.value) for kind in Kind]


def _choices(enum: type[StrEnum]) -> list[tuple[str, str]]:
    return [(member.value, member.value.replace("_", " ")) for member in enum]


def validate_multipliers(value: object) -> None:
    """An object of names (channels, tiers) to multipliers within ``MAX_MULTIPLIER``: the
    bound that keeps an order's points far inside the ledger's 64 bits."""
    # Not the code "invalid": a model form would show its field's own message for it instead.
    if not isinstance(value, dict):
        raise ValidationError(
            'Must be an object of names to multipliers, e.g. {"pos": 2}.', code="multipliers"
        )
    problems = [f"{key}: {reason}" for key, item in value.items() if (reason := multiplier_problem(item))]
    if problems:
        raise ValidationError("; ".join(problems) + ".", code="multipliers")


class LoyaltyProgram(models.Model):
    """The program's settings that are not versioned by date: tiers and the balance policy.
    One row (``key = "default"``), created by the migration; edit it in the admin."""

    key = models.CharField(max_length=32, unique=True, default="default")
    negative_balance = models.CharField(
        max_length=16,
        choices=_choices(NegativeBalance),
        default=NegativeBalance.ALLOW,
        help_text="allow: a refund takes back points already spent and the member owes them; "
        "forbid: a refund takes back at most the balance and the rest is written off.",
    )
    refund_returns_redeemed_points = models.BooleanField(
        default=True, help_text="A refunded order gives back, in proportion, the points spent on it."
    )
    tier_basis = models.CharField(max_length=16, choices=_choices(TierBasis), default=TierBasis.POINTS)
    tier_window_days = models.PositiveIntegerField(default=365)
    tier_downgrade = models.CharField(max_length=16, choices=_choices(Downgrade), default=Downgrade.NONE)
    tier_review_months = models.PositiveIntegerField(
        default=12, help_text="Reviews fall on the first day of every N-th month, counted from January."
    )
    expiring_soon_days = models.PositiveIntegerField(default=30)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_loyaltyprogram"

    def __str__(self) -> str:
        return f"loyalty program {self.key}"


class EarnRule(models.Model):
    """How points are earned between two dates. Validity ranges never overlap (a database
    constraint); outside every rule the default applies: 1 point per currency unit, spendable
    at once, never expiring, no bonuses. Change a rule by ending it and starting a new one, so
    past orders keep the points of the rule they were earned under."""

    name = models.CharField(max_length=200)
    valid_from = models.DateTimeField(null=True, blank=True, help_text="Empty: since always.")
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Empty: until further notice.")
    points_per_unit = models.DecimalField(
        max_digits=8,
        decimal_places=4,
        default=1,
        validators=[MinValueValidator(0), MaxValueValidator(MAX_POINTS_PER_UNIT)],
    )
    channel_multipliers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_multipliers],
        help_text=f'Channel to multiplier, from 0 to {MAX_MULTIPLIER}: e.g. {{"pos": 2}}',
    )
    tier_multipliers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_multipliers],
        help_text=f'Tier to multiplier, from 0 to {MAX_MULTIPLIER}: e.g. {{"gold": 1.5}}',
    )
    excluded_skus = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    excluded_categories = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    first_purchase_bonus = models.PositiveIntegerField(default=0)
    signup_bonus = models.PositiveIntegerField(default=0)
    referral_bonus = models.PositiveIntegerField(default=0)
    pending_days = models.PositiveIntegerField(default=0, help_text="Days before earned points can be spent.")
    expiry = models.CharField(max_length=16, choices=_choices(Expiry), default=Expiry.NEVER)
    expiry_days = models.PositiveIntegerField(null=True, blank=True, help_text="For expiry = days.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_earnrule"
        ordering = ["valid_from"]
        constraints = [
            ExclusionConstraint(
                name="earn_rules_do_not_overlap",
                expressions=[
                    (Func(F("valid_from"), F("valid_until"), function="tstzrange"), RangeOperators.OVERLAPS)
                ],
            ),
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True)
                | Q(valid_until__isnull=True)
                | Q(valid_from__lt=F("valid_until")),
                name="earn_rule_valid_range",
            ),
            models.CheckConstraint(
                condition=~Q(expiry="days") | Q(expiry_days__gt=0), name="earn_rule_expiry_days_given"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Tier(models.Model):
    """A tier, qualified for by points earned (or spend) in the program's rolling window."""

    key = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)
    rank = models.PositiveSmallIntegerField(unique=True, help_text="0 is the tier every member starts in.")
    threshold = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    class Meta:
        db_table = "members_tier"
        ordering = ["rank"]
        constraints = [
            models.CheckConstraint(condition=~Q(rank=0) | Q(threshold=0), name="entry_tier_has_no_threshold")
        ]

    def __str__(self) -> str:
        return self.name


class PointsAccount(models.Model):
    """A member's points balance and tier. ``balance`` is the sum of the member's ledger: a
    database trigger adds every ledger row as it is written or moved (never application
    code). A deferred constraint trigger refuses, at commit, a balance below 0 on an account
    whose program forbids debt (``negative_allowed`` false): checked at commit rather than per
    row so a merge or split may move rows between accounts in any order. Both triggers are
    defined in ``members/loyalty/sql/ledger.sql``."""

    member = models.OneToOneField(
        "members.Member", primary_key=True, on_delete=models.CASCADE, related_name="points"
    )
    # 64-bit: the sum of a member's every order at the highest rate fits, 32 bits not (an order
    # of ``events.commerce.MAX_AMOUNT`` at 10^4 points per unit is 10^12 points, 10^14 with
    # both multipliers at their bound: ``members.loyalty.program.MAX_MULTIPLIER``).
    balance = models.BigIntegerField(default=0)
    negative_allowed = models.BooleanField(default=True)
    tier = models.CharField(max_length=32, blank=True)
    tier_since = models.DateTimeField(null=True, blank=True)
    #: The soonest moment time alone changes this account (a lot expires, a tier review).
    recheck_at = models.DateTimeField(null=True, blank=True)
    next_expiry_at = models.DateTimeField(null=True, blank=True)
    next_expiry_points = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_pointsaccount"
        indexes = [
            models.Index(fields=["recheck_at"], name="points_recheck", condition=Q(recheck_at__isnull=False)),
            models.Index(
                fields=["next_expiry_at"],
                name="points_next_expiry",
                condition=Q(next_expiry_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.balance} points"


class PointsEntry(models.Model):
    """One row of the append-only points ledger. ``key`` is unique and named after the
    row's cause (an order, a refund event, a staff request's idempotency key), so writing
    the same cause twice writes nothing. A recomputation that finds a cause's points changed
    (a merge, a split, a late upload) appends a correction with the same ``cause_key``.
    Rows are never updated or deleted (database triggers refuse it, ``sql/ledger.sql``),
    except that a row follows its member through a merge or a split."""

    member = models.ForeignKey("members.Member", on_delete=models.PROTECT, related_name="+", db_index=False)
    kind = models.CharField(max_length=8, choices=_KIND_CHOICES)
    points = models.BigIntegerField()
    # Unique by a constraint, not ``unique=True``: that also made Django build a second index on
    # ``key`` (``varchar_pattern_ops``, for LIKE) that no query uses, and every ledger row
    # written went into both; the keys are random (an order id, an event's), so each index
    # took a page from a random place of its own, a buffer miss and a dirty page per row once
    # the ledger outgrew the cache (issue 16: the refresh's cost per event grew with it).
    key = models.CharField(max_length=255)
    cause_key = models.CharField(max_length=255)
    reason = models.CharField(max_length=500)
    derived = models.BooleanField(
        help_text="Computed from events (true) or recorded by staff or a till (false)."
    )
    event_id = models.BigIntegerField(null=True, blank=True, help_text="The event that caused it.")
    order_id = models.CharField(max_length=255, blank=True)
    channel = models.CharField(max_length=16, blank=True)
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    at = models.DateTimeField(help_text="When it took effect: the event's time, or the request's.")
    available_at = models.DateTimeField(null=True, blank=True, help_text="Pending until then (credits only).")
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "members_pointsentry"
        verbose_name_plural = "points entries"
        permissions = [
            ("adjust_points", "Can add or take away a member's points by hand"),
            ("redeem_points", "Can spend a member's points at checkout"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(points=0), name="points_entry_not_zero"),
            models.UniqueConstraint(fields=["key"], name="members_pointsentry_key_key"),
        ]
        indexes = [
            models.Index(fields=["member", "id"], name="points_ledger_of_member"),
            models.Index(fields=["event_id"], name="points_by_event", condition=Q(event_id__isnull=False)),
            # The rows a member's derivation takes as given (``services.points_refresh`` counts
            # them on every refresh): those staff or tills recorded, and referral bonuses.
            models.Index(
                fields=["member", "id"],
                name="points_facts_of_member",
                condition=Q(derived=False) | Q(cause_key__startswith="bonus:referred:"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.points:+d} (member {self.member_id}, {self.key})"


class PointsCheckpoint(models.Model):
    """Where a member's points derivation stood after the events their last refresh covered
    (``points.Checkpoint``), so that the next refresh of later events resumes from it instead of
    replaying the member's whole history (``services.points_refresh``).

    Valid only as long as what it was derived from stands: the program (``program``: its
    fingerprint), the member's facts (``facts``: the count and id sum of the ledger rows staff,
    tills and referrals gave them, and of their tier grants), and the events it covered (the
    refresh's watermark, written in the same transaction). ``tail`` holds what the derivation
    found due after its last event, as time ran on (expiries): each cause with the points and
    rows the ledger then held for it, so a resumed derivation corrects them without reading
    the ledger. Derived, like a member's figures: any full recompute writes it again.

    The state is kept in two parts (``points._Replay.freeze``): ``state``, small, rewritten by
    every refresh, and ``cold``, what grows with the member's history (orders and lots only a
    refund naming them or a spend reaching them reads), written again only now and then; a
    refresh that keeps it leaves the column as it is (``services._UPSERT_CHECKPOINTS``)."""

    member = models.OneToOneField(
        "members.Member", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    at = models.DateTimeField(null=True, help_text="The time of the last step it covers.")
    state = models.BinaryField(help_text="The hot part: rewritten by every refresh.")
    cold = models.BinaryField(
        null=True, help_text="The cold part: what grows with the history, rewritten only now and then."
    )
    program = models.CharField(max_length=64)
    facts = models.CharField(max_length=100)
    tail = models.JSONField(default=list)
    written_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "members_pointscheckpoint"

    def __str__(self) -> str:
        return f"member {self.member_id}: points replayed up to {self.at}"


class TierChange(models.Model):
    """A member's tier changing, with why. Derived: rewritten with the member's points."""

    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    from_tier = models.CharField(max_length=32, blank=True)
    to_tier = models.CharField(max_length=32)
    at = models.DateTimeField()
    reason = models.CharField(max_length=300)

    class Meta:
        db_table = "members_tierchange"

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.from_tier or '—'} → {self.to_tier} at {self.at}"


class TierGrant(models.Model):
    """A tier a member reached elsewhere (a legacy programme's, imported), with the date reached.
    A fact, like a staff adjustment in the ledger: the derivation of the member's tier starts
    from it (``points.TierGrant``), and the programme's reviews apply to it from then on.

    It is the person's it was granted to (``granted_to``): ``member`` holds it, the one granted
    while they stand, their survivor while a merge has absorbed them, them again once a staff
    split brings them back (``services.points_reconcile`` moves it)."""

    member = models.ForeignKey(
        "members.Member", on_delete=models.PROTECT, related_name="+", help_text="Who holds it now."
    )
    granted_to = models.ForeignKey(
        "members.Member",
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The member it was granted to (the one its row named when it was recorded).",
    )
    tier = models.CharField(max_length=32)
    at = models.DateTimeField(help_text="When the member reached it.")
    key = models.CharField(max_length=255, unique=True, help_text="What granted it: one grant per key.")
    reason = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"member {self.member_id}: {self.tier} since {self.at:%Y-%m-%d} ({self.key})"


class CouponCampaign(models.Model):
    """Coupons issued together: what each is worth, from when to when, where it may be used."""

    class Benefit(models.TextChoices):
        AMOUNT = "amount"
        PERCENT = "percent"

    name = models.CharField(max_length=200)
    benefit = models.CharField(max_length=8, choices=Benefit.choices)
    value = models.DecimalField(max_digits=12, decimal_places=2, help_text="Money off, or percent off.")
    currency = models.CharField(max_length=3, blank=True)
    minimum_spend = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField()
    channels = ArrayField(
        models.CharField(max_length=16), default=list, blank=True, help_text="Empty: every channel."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "members_couponcampaign"
        constraints = [
            models.CheckConstraint(condition=Q(valid_from__lt=F("valid_until")), name="campaign_valid_range"),
            models.CheckConstraint(condition=Q(value__gt=0), name="campaign_value_positive"),
            models.CheckConstraint(
                condition=~Q(benefit="percent") | Q(value__lte=100), name="campaign_percent_at_most_100"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Coupon(models.Model):
    """A coupon code issued to a member (or to anyone who holds the code)."""

    code = models.CharField(max_length=64, unique=True)
    campaign = models.ForeignKey(CouponCampaign, on_delete=models.PROTECT, related_name="coupons")
    member = models.ForeignKey(
        "members.Member", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    issued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "members_coupon"
        permissions = [("redeem_coupon", "Can redeem and release coupons at checkout")]
        indexes = [
            models.Index(fields=["member"], name="coupons_of_member", condition=Q(member__isnull=False))
        ]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "member"], name="one_coupon_per_member_per_campaign")
        ]

    def __str__(self) -> str:
        return self.code


class CouponRedemption(models.Model):
    """A coupon used on an order. At most one redemption of a coupon is in force (a partial
    unique index): two tills redeeming one code at once cannot both succeed. Undoing it (the
    order was refunded) sets ``released_at`` and the coupon can be used again."""

    coupon = models.ForeignKey(Coupon, on_delete=models.PROTECT, related_name="redemptions")
    member = models.ForeignKey(
        "members.Member", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    order_id = models.CharField(max_length=255)
    channel = models.CharField(max_length=16)
    order_total = models.DecimalField(max_digits=14, decimal_places=2)
    discount = models.DecimalField(max_digits=14, decimal_places=2)
    redeemed_at = models.DateTimeField(auto_now_add=True)
    redeemed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        db_table = "members_couponredemption"
        constraints = [
            models.UniqueConstraint(
                fields=["coupon"], condition=Q(released_at__isnull=True), name="coupon_redeemed_once"
            )
        ]
        indexes = [models.Index(fields=["order_id"], name="coupon_redemption_by_order")]

    def __str__(self) -> str:
        return f"{self.coupon_id} on order {self.order_id}"
