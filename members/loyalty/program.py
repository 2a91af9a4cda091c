"""A loyalty program's rules as plain data (no ORM): what the derivation in
``members.loyalty.points`` reads, loaded from the database by ``members.loyalty.selectors``."""

from dataclasses import dataclass, field
from datetime import MAXYEAR, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from members.moments import local_of, moment_plus

#: The highest earning rate a rule may set, in points per currency unit: what
#: ``EarnRule.points_per_unit`` holds (4 + 4 digits).
MAX_POINTS_PER_UNIT = Decimal("9999.9999")
#: The highest channel or tier multiplier a rule may set (a promotion beyond it is a rule
#: with a higher rate). Bounded so that one order's points stay far inside the ledger's 64
#: bits: the largest amount ingestion accepts (``events.commerce.MAX_AMOUNT``, 10^8) at the
#: highest rate and both multipliers at most earns 10^8 x 10^4 x 10 x 10 = 10^14 points
#: (2^46.5), and a balance (2^63, about 9.2 x 10^18) holds 92,000 such orders.
MAX_MULTIPLIER = Decimal(10)
#: The most decimal places of a rate or multiplier (as ``points_per_unit`` is stored).
RATE_DECIMAL_PLACES = 4


def within_bounds(value: Decimal, limit: Decimal) -> Decimal:
    """``value`` held between 0 and ``limit`` (NaN counts as 0: ``Decimal.max`` returns the
    number beside a quiet NaN)."""
    return value.max(Decimal(0)).min(limit)


def multiplier_of(value: object) -> Decimal | None:
    """A stored multiplier as a number; None when it is none (a string of letters, a bool, a
    list, NaN or an infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        # A float through its shortest text (1.1, not its binary expansion); an int exactly,
        # however long (str() refuses ints beyond 4,300 digits).
        number = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    except ArithmeticError:  # decimal.InvalidOperation: not a number at all
        return None
    return number if number.is_finite() else None


def multiplier_problem(value: object) -> str | None:
    """Why ``value`` cannot be a multiplier of an earning rule, or None when it can: a JSON
    number from 0 to ``MAX_MULTIPLIER`` with at most ``RATE_DECIMAL_PLACES`` decimals."""
    number = multiplier_of(value) if isinstance(value, int | float) else None
    if number is None:
        return "must be a number"
    if not Decimal(0) <= number <= MAX_MULTIPLIER:
        return f"must be between 0 and {MAX_MULTIPLIER}"
    exponent = number.as_tuple().exponent  # an int: the number is finite
    if isinstance(exponent, int) and -exponent > RATE_DECIMAL_PLACES:
        return f"must have at most {RATE_DECIMAL_PLACES} decimal places"
    return None


class Expiry(StrEnum):
    NEVER = "never"
    DAYS = "days"
    END_OF_MONTH = "end_of_month"
    END_OF_YEAR = "end_of_year"


class NegativeBalance(StrEnum):
    #: A refund takes back the points the order earned even when they were spent: the member
    #: owes them and later earnings pay the debt first. The database allows a balance below 0.
    ALLOW = "allow"
    #: A refund takes back at most what the member still has; the rest is written off. The
    #: database refuses a balance below 0.
    FORBID = "forbid"


class TierBasis(StrEnum):
    POINTS = "points"  # points earned in the window (never the balance)
    SPEND = "spend"  # spend net of refunds in the window


class Downgrade(StrEnum):
    NONE = "none"  # a tier once reached is kept
    PERIODIC = "periodic"  # at each review the member gets the tier they qualify for
    ONE_STEP = "one_step"  # at each review the member drops at most one tier


@dataclass(frozen=True, slots=True)
class EarnRule:
    """How points are earned while the rule is valid (``valid_from`` ≤ event time <
    ``valid_until``; None is open). The default rule: one point per currency unit, at once,
    never expiring, no bonuses."""

    key: str = "default"
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    points_per_unit: Decimal = Decimal(1)
    channel_multipliers: dict[str, Decimal] = field(default_factory=dict)
    tier_multipliers: dict[str, Decimal] = field(default_factory=dict)
    excluded_skus: frozenset[str] = frozenset()
    excluded_categories: frozenset[str] = frozenset()
    first_purchase_bonus: int = 0
    signup_bonus: int = 0
    referral_bonus: int = 0
    pending_days: int = 0
    expiry: Expiry = Expiry.NEVER
    expiry_days: int | None = None

    def applies_at(self, at: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= at) and (
            self.valid_until is None or at < self.valid_until
        )

    def expires_at(self, earned_at: datetime, zone: ZoneInfo) -> datetime | None:
        """When a lot earned at ``earned_at`` expires; month and year ends are local midnights.
        None: never (also when that falls beyond the end of the calendar)."""
        if self.expiry == Expiry.NEVER:
            return None
        if self.expiry == Expiry.DAYS:
            return moment_plus(earned_at, timedelta(days=self.expiry_days or 0))
        if (local := local_of(earned_at, zone)) is None:
            return None
        if self.expiry == Expiry.END_OF_YEAR or local.month == 12:
            year, month = local.year + 1, 1
        else:
            year, month = local.year, local.month + 1
        return datetime(year, month, 1, tzinfo=zone) if year <= MAXYEAR else None


@dataclass(frozen=True, slots=True)
class TierRule:
    key: str
    name: str
    rank: int  # 0 is the entry tier
    threshold: Decimal  # points earned or spend in the window needed to qualify


@dataclass(frozen=True, slots=True)
class Program:
    rules: tuple[EarnRule, ...] = ()
    tiers: tuple[TierRule, ...] = ()
    tier_basis: TierBasis = TierBasis.POINTS
    tier_window_days: int = 365
    downgrade: Downgrade = Downgrade.NONE
    review_months: int = 12
    negative_balance: NegativeBalance = NegativeBalance.ALLOW
    refund_returns_redeemed_points: bool = True
    currency: str = "CNY"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    def rule_at(self, at: datetime) -> EarnRule:
        """The earning rule valid at ``at``; the default rule where none is."""
        for rule in self.rules:
            if rule.applies_at(at):
                return rule
        return DEFAULT_RULE

    def tiers_by_rank(self) -> tuple[TierRule, ...]:
        return tuple(sorted(self.tiers, key=lambda tier: tier.rank))

    def next_review(self, after: datetime) -> datetime | None:
        """The first review instant after ``after``: local midnight on the first day of a
        month counted in steps of ``review_months`` from January. None: beyond the end of the
        calendar (a moment stamped in year 9999), so never."""
        if (local := local_of(after, self.zone)) is None:
            return None
        step = max(1, self.review_months)
        index = (local.year * 12 + local.month - 1) // step * step
        while True:
            index += step
            if index // 12 > MAXYEAR:
                return None
            at = datetime(index // 12, index % 12 + 1, 1, tzinfo=self.zone)
            if at > after:
                return at


DEFAULT_RULE = EarnRule()
