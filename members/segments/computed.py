"""The computed tags: RFM group, lifecycle stage and channel preference of a member, decided
from their purchase figures alone. Pure (no ORM).

``computed_tags_of`` is what the incremental path asks for one member (the member refresh);
``members.segments.builtins.computed_tags_compute_all`` is its set-based SQL twin over all
members (the nightly recompute). A property test holds the two to the same answer.

- **Lifecycle stage** (``lifecycle_stage``): windows in days, ``LifecycleWindows``. "Within N
  days" means at ``now - N days`` or later (a purchase stamped in the future counts as recent),
  the same boundary as the rule language's behaviour windows.
- **Channel preference** (``channel_preference``): stores (``pos``) against online channels
  (``app``, ``mini_program``, ``web``).
- **RFM** (``rfm_scores``, ``rfm_group``): recency, frequency and monetary scores of 1 to 5
  against the quintile edges of all buyers (``RfmEdges``, computed nightly), then one of 11
  named groups from a grid of recency against the mean of frequency and monetary.

Members without orders carry none of these tags, and no member carries an RFM tag until the
edges were computed once.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, TypeVar

from members.moments import moment_plus

STORE_CHANNELS = frozenset({"pos"})
ONLINE_CHANNELS = frozenset({"app", "mini_program", "web"})

#: The smallest step of a stored moment (PostgreSQL and ``datetime`` keep microseconds): a
#: stage that holds up to and including a boundary changes this much after it.
TICK = timedelta(microseconds=1)

# --- lifecycle ----------------------------------------------------------------------------------

LIFECYCLE_NEW = "new"
LIFECYCLE_ACTIVE = "active"
LIFECYCLE_AT_RISK = "at_risk"
LIFECYCLE_CHURNED = "churned"
LIFECYCLE_STAGES = (LIFECYCLE_NEW, LIFECYCLE_ACTIVE, LIFECYCLE_AT_RISK, LIFECYCLE_CHURNED)


@dataclass(frozen=True, slots=True)
class LifecycleWindows:
    """The lifecycle windows in whole days (settings ``LIFECYCLE_NEW_DAYS``,
    ``LIFECYCLE_ACTIVE_DAYS``, ``LIFECYCLE_CHURN_DAYS``): a buyer is new for ``new_days`` after
    their first purchase, then active while their last purchase is within ``active_days``, at
    risk while it is within ``churn_days``, churned after."""

    new_days: int
    active_days: int
    churn_days: int

    def __post_init__(self) -> None:
        for name in ("new_days", "active_days", "churn_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of days, at least 1 (got {value!r})")
        if self.active_days > self.churn_days:
            raise ValueError(
                f"active_days ({self.active_days}) must not exceed churn_days ({self.churn_days}): "
                "a member is at risk between the two"
            )


def lifecycle_stage(
    first_purchase_at: datetime | None,
    last_purchase_at: datetime | None,
    now: datetime,
    windows: LifecycleWindows,
) -> str | None:
    """The member's lifecycle stage at ``now``, or None without purchases (either time None).

    The first test that holds decides, each window closed at its old end:

    - ``new``: ``first_purchase_at >= now - new_days``;
    - ``active``: ``last_purchase_at >= now - active_days``;
    - ``at_risk``: ``last_purchase_at >= now - churn_days``;
    - ``churned``: otherwise.

    So a purchase exactly ``N`` days old is still within ``N`` days, and a moment later it is
    not (``lifecycle_changes_at``).
    """
    if first_purchase_at is None or last_purchase_at is None:
        return None
    if _within(first_purchase_at, now, windows.new_days):
        return LIFECYCLE_NEW
    if _within(last_purchase_at, now, windows.active_days):
        return LIFECYCLE_ACTIVE
    if _within(last_purchase_at, now, windows.churn_days):
        return LIFECYCLE_AT_RISK
    return LIFECYCLE_CHURNED


def _within(moment: datetime, now: datetime, days: int) -> bool:
    """``moment >= now - days``; a window reaching back before the calendar holds everything."""
    since = moment_plus(now, -timedelta(days=days))
    return since is None or moment >= since


def lifecycle_changes_at(
    first_purchase_at: datetime | None,
    last_purchase_at: datetime | None,
    now: datetime,
    windows: LifecycleWindows,
) -> datetime | None:
    """The earliest moment after ``now`` at which ``lifecycle_stage`` gives another stage with
    time alone (no new purchase), or None if it never will (churned, or no purchases).

    Exact, not early: a window closes one microsecond after its boundary (the stage at the
    boundary itself is still the old one), so a recheck scheduled then finds the new stage.
    """
    if first_purchase_at is None or last_purchase_at is None:
        return None
    stage = lifecycle_stage(first_purchase_at, last_purchase_at, now, windows)
    # The stage is constant between these moments, so the first of them at which it differs
    # is the change (a stage may be skipped: new straight to at risk after a long gap). One
    # beyond the end of the calendar (a purchase stamped in year 9999) never comes.
    boundaries = sorted(
        moment
        for moment in (
            moment_plus(first_purchase_at, timedelta(days=windows.new_days) + TICK),
            moment_plus(last_purchase_at, timedelta(days=windows.active_days) + TICK),
            moment_plus(last_purchase_at, timedelta(days=windows.churn_days) + TICK),
        )
        if moment is not None and moment > now
    )
    for moment in boundaries:
        if lifecycle_stage(first_purchase_at, last_purchase_at, moment, windows) != stage:
            return moment
    return None


# --- channel preference -------------------------------------------------------------------------

CHANNEL_STORE_ONLY = "store_only"
CHANNEL_ONLINE_ONLY = "online_only"
CHANNEL_OMNICHANNEL = "omnichannel"
CHANNEL_PREFERENCES = (CHANNEL_STORE_ONLY, CHANNEL_ONLINE_ONLY, CHANNEL_OMNICHANNEL)


def channel_preference(orders_by_channel: Mapping[str, int]) -> str | None:
    """Where the member buys: ``store_only`` (only ``pos`` orders), ``online_only`` (only
    ``app``, ``mini_program`` or ``web`` orders), ``omnichannel`` (both), None without orders.
    Channels missing from the mapping count 0; any other channel is refused (ValueError)."""
    unknown = set(orders_by_channel) - STORE_CHANNELS - ONLINE_CHANNELS
    if unknown:
        raise ValueError(f"unknown channels {sorted(unknown)}")
    in_store = any(orders_by_channel.get(channel, 0) > 0 for channel in STORE_CHANNELS)
    online = any(orders_by_channel.get(channel, 0) > 0 for channel in ONLINE_CHANNELS)
    if in_store and online:
        return CHANNEL_OMNICHANNEL
    if in_store:
        return CHANNEL_STORE_ONLY
    if online:
        return CHANNEL_ONLINE_ONLY
    return None


# --- RFM ----------------------------------------------------------------------------------------

RFM_GROUPS = (
    "champions", "loyal", "potential_loyalist", "new", "promising", "need_attention",
    "about_to_sleep", "at_risk", "cant_lose_them", "hibernating", "lost",
)  # fmt: skip

#: Group by recency score (rows, 5 = most recent) and FM score (columns 1..5).
_RFM_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
}


@dataclass(frozen=True, slots=True)
class RfmEdges:
    """The 20th, 40th, 60th and 80th percentiles (ascending) of the buyers' last purchase
    moments, order counts and spend: the edges between the five scores."""

    recency: tuple[datetime, datetime, datetime, datetime]
    frequency: tuple[int, int, int, int]
    monetary: tuple[Decimal, Decimal, Decimal, Decimal]

    def __post_init__(self) -> None:
        for name in ("recency", "frequency", "monetary"):
            edges = getattr(self, name)
            if len(edges) != 4 or any(a > b for a, b in pairwise(edges)):
                raise ValueError(f"{name} must be 4 ascending edges (got {edges!r})")


_Figure = TypeVar("_Figure", datetime, int, Decimal)


def _score(value: _Figure, edges: tuple[_Figure, _Figure, _Figure, _Figure]) -> int:
    return 1 + sum(value > edge for edge in edges)


def rfm_scores(
    last_purchase_at: datetime, orders: int, spend: Decimal, edges: RfmEdges
) -> tuple[int, int, int]:
    """Recency, frequency and monetary scores, each 1 to 5: 1 + how many of the 4 edges the
    value is strictly above (a later last purchase is above an earlier one). Equal values get
    equal scores, wherever the quintiles fall (unlike ``ntile``), and a value equal to an edge
    gets the lower score."""
    return (
        _score(last_purchase_at, edges.recency),
        _score(orders, edges.frequency),
        _score(spend, edges.monetary),
    )


def rfm_group(r: int, f: int, m: int) -> str:
    """The named group of RFM scores (each 1 to 5): recency against FM = (f + m + 1) // 2, the
    mean of frequency and monetary rounded up, in this grid (docs/rules.md)::

             FM1             FM2                 FM3                 FM4        FM5
        R5   new             potential_loyalist  potential_loyalist  champions  champions
        R4   promising       potential_loyalist  potential_loyalist  loyal      loyal
        R3   about_to_sleep  about_to_sleep      need_attention      loyal      loyal
        R2   hibernating     hibernating         at_risk             at_risk    cant_lose_them
        R1   lost            hibernating         at_risk             at_risk    cant_lose_them
    """
    for name, score in (("r", r), ("f", f), ("m", m)):
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError(f"{name} must be a score from 1 to 5 (got {score!r})")
    return _RFM_GRID[r][(f + m + 1) // 2 - 1]


# --- the tags -----------------------------------------------------------------------------------


def rfm_tag_key(group: str) -> str:
    return f"rfm-{group.replace('_', '-')}"


def lifecycle_tag_key(stage: str) -> str:
    return f"lifecycle-{stage.replace('_', '-')}"


def channel_tag_key(preference: str) -> str:
    return f"channel-{preference.replace('_', '-')}"


@dataclass(frozen=True, slots=True)
class ComputedTag:
    """A tag the platform puts on members itself. ``description`` may name the lifecycle windows
    as ``{new_days}``, ``{active_days}`` and ``{churn_days}`` (``description_for``)."""

    key: str
    name: str
    description: str

    def description_for(self, windows: LifecycleWindows) -> str:
        return self.description.format(
            new_days=windows.new_days, active_days=windows.active_days, churn_days=windows.churn_days
        )


_RFM_TAGS = {
    "champions": ("Champions", "Bought recently, buy often and spend the most."),
    "loyal": ("Loyal", "Buy often and spend well, and bought not long ago."),
    "potential_loyalist": (
        "Potential Loyalist",
        "Bought recently, with average frequency and spend: could become loyal.",
    ),
    "new": ("New", "Bought very recently, but not often and not much yet."),
    "promising": ("Promising", "Bought fairly recently, but not often and not much yet."),
    "need_attention": (
        "Need Attention",
        "Average recency, frequency and spend: slipping away unless you reach out.",
    ),
    "about_to_sleep": ("About to Sleep", "Have not bought for a while, and never bought much."),
    "at_risk": ("At Risk", "Used to buy often and spend well, but not for a long time."),
    "cant_lose_them": (
        "Can't Lose Them",
        "Among the most frequent and biggest spenders, but gone quiet for a long time.",
    ),
    "hibernating": ("Hibernating", "Last bought long ago, and bought little and seldom."),
    "lost": ("Lost", "The lowest recency, frequency and spend of all buyers."),
}
_LIFECYCLE_TAGS = {
    LIFECYCLE_NEW: ("New customer", "First purchase in the last {new_days} days."),
    LIFECYCLE_ACTIVE: (
        "Active customer",
        "Bought in the last {active_days} days (first purchase more than {new_days} days ago).",
    ),
    LIFECYCLE_AT_RISK: (
        "At-risk customer",
        "Last purchase between {active_days} and {churn_days} days ago.",
    ),
    LIFECYCLE_CHURNED: ("Churned customer", "No purchase in the last {churn_days} days."),
}
_CHANNEL_TAGS = {
    CHANNEL_STORE_ONLY: ("Store only", "Has bought in stores only, never online."),
    CHANNEL_ONLINE_ONLY: (
        "Online only",
        "Has bought online only (app, mini-program, web), never in a store.",
    ),
    CHANNEL_OMNICHANNEL: ("Omnichannel", "Has bought both in stores and online."),
}

#: Every computed tag: RFM groups, lifecycle stages, channel preferences (in that order).
COMPUTED_TAGS: tuple[ComputedTag, ...] = (
    *(ComputedTag(rfm_tag_key(group), *_RFM_TAGS[group]) for group in RFM_GROUPS),
    *(ComputedTag(lifecycle_tag_key(stage), *_LIFECYCLE_TAGS[stage]) for stage in LIFECYCLE_STAGES),
    *(ComputedTag(channel_tag_key(pref), *_CHANNEL_TAGS[pref]) for pref in CHANNEL_PREFERENCES),
)
COMPUTED_TAG_KEYS = frozenset(tag.key for tag in COMPUTED_TAGS)


@dataclass(frozen=True, slots=True)
class PurchaseFacts:
    """A member's purchase figures (``members.models.MemberAggregate``): orders and spend in the
    platform's currency, their first and last moments, orders per channel. A member without
    a figures row has no orders."""

    orders: int = 0
    spend: Decimal = Decimal(0)
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    orders_by_channel: Mapping[str, int] | None = None


def purchase_facts_of(figures: Mapping[str, Any]) -> PurchaseFacts:
    """What the computed tags read of a member's figures, by ``MemberAggregate`` field name
    (empty: a member without figures)."""
    return PurchaseFacts(
        orders=figures.get("orders") or 0,
        spend=figures.get("spend") or Decimal(0),
        first_purchase_at=figures.get("first_purchase_at"),
        last_purchase_at=figures.get("last_purchase_at"),
        orders_by_channel={
            channel: figures.get(f"orders_{channel}") or 0 for channel in STORE_CHANNELS | ONLINE_CHANNELS
        },
    )


def computed_tags_of(
    purchases: PurchaseFacts, edges: RfmEdges | None, windows: LifecycleWindows, now: datetime
) -> frozenset[str]:
    """The keys of the computed tags the member should carry at ``now``: their lifecycle stage,
    their channel preference and, once RFM edges exist, their RFM group. None at all without
    orders (no orders, or no purchase times)."""
    if purchases.orders <= 0 or purchases.first_purchase_at is None or purchases.last_purchase_at is None:
        return frozenset()
    keys = set()
    stage = lifecycle_stage(purchases.first_purchase_at, purchases.last_purchase_at, now, windows)
    if stage is not None:
        keys.add(lifecycle_tag_key(stage))
    preference = channel_preference(purchases.orders_by_channel or {})
    if preference is not None:
        keys.add(channel_tag_key(preference))
    if edges is not None:
        scores = rfm_scores(purchases.last_purchase_at, purchases.orders, purchases.spend, edges)
        keys.add(rfm_tag_key(rfm_group(*scores)))
    return frozenset(keys)
