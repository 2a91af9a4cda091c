"""Multi-touch attribution: which touches get credit for each conversion, under five models,
as SQL and as a plain-Python reference of the same answer. Pure: no Django, no database driver.

**Touches** are a member's events (after identity resolution, across every channel and
identifier) that carry a campaign (``context.campaign``, Segment's UTM object: ``name``,
``source``, ``medium``; on any call, so page and screen views with a campaign count), and the
track events ``Coupon Claimed``, ``Push Opened`` and ``Store Visited``. A touch's *channel* is
its event's channel, its *store* the event's store code, its *campaign* ``context.campaign.name``
(else ``properties.campaign``, else ""), its *source* ``context.campaign.source`` (else ``push``,
``coupon`` or ``store`` by event, else "").

**Conversions** are orders (``Order Completed`` in any channel, ``members.orders``) placed in
``[start, end)`` in one currency, valued net of their refunds (never below 0), of the members
an ``AnalysedMembers`` lets in (the services: consent to ``analytics``); the reference is given
only their conversions and touches. A conversion's
touches are its member's touches in the ``lookback`` before it (``at - lookback <= t < at``),
ordered by (time, event id), numbered i = 1..n.

**Models** (each gives touch i a share; the shares of a conversion sum to 1):

- ``first``: all to i = 1; ``last``: all to i = n; ``linear``: 1/n each;
- ``time_decay``: proportional to 2^(-(at - t_i) / half_life);
- ``position``: 40% to the first, 40% to the last, 20% shared by those between (n = 1: all to it;
  n = 2: half each).

A conversion without touches is credited whole to the group ``(no touch)``, so under every model
the credits add up to the conversions' value. Credit of a touch = share x value; the answer per
group of the chosen dimension (channel, source, campaign, store) is the credited value and the
credited conversions (sum of shares) under each model.
"""

# SQL text built from constants only; every value from a request is a parameter:
# ruff: noqa: S608

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from members.insights.analysed import AnalysedMembers

MODELS = ("first", "last", "linear", "time_decay", "position")
DIMENSIONS = ("channel", "source", "campaign", "store")
TOUCH_EVENTS = ("Coupon Claimed", "Push Opened", "Store Visited")
NO_TOUCH = "(no touch)"
MAX_LOOKBACK_DAYS = 90
MAX_HALF_LIFE_DAYS = 90


class AttributionInvalid(ValueError):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in errors))


@dataclass(frozen=True, slots=True)
class AttributionSpec:
    lookback: timedelta
    half_life: timedelta
    dimension: str = "channel"


@dataclass(frozen=True, slots=True)
class Credit:
    """What one group of the dimension is credited with, per model (by ``MODELS``' names)."""

    group: str
    value: dict[str, Decimal]
    conversions: dict[str, float]


def attribution_parse(
    *, lookback_days: object, half_life_hours: object, dimension: object
) -> AttributionSpec:
    errors = []
    if (
        isinstance(lookback_days, bool)
        or not isinstance(lookback_days, int)
        or not 1 <= lookback_days <= MAX_LOOKBACK_DAYS
    ):
        errors.append(("lookback_days", f"expected a whole number of days from 1 to {MAX_LOOKBACK_DAYS}"))
    limit = MAX_HALF_LIFE_DAYS * 24
    if (
        isinstance(half_life_hours, bool)
        or not isinstance(half_life_hours, int)
        or not 1 <= half_life_hours <= limit
    ):
        errors.append(("half_life_hours", f"expected a whole number of hours from 1 to {limit}"))
    if dimension not in DIMENSIONS:
        errors.append(("by", f"unknown dimension {dimension!r}; one of {', '.join(DIMENSIONS)}"))
    if errors:
        raise AttributionInvalid(errors)
    assert isinstance(lookback_days, int)
    assert isinstance(half_life_hours, int)
    return AttributionSpec(timedelta(days=lookback_days), timedelta(hours=half_life_hours), str(dimension))


# --- shares: the models, one definition ---------------------------------------------------------


def touch_shares(model: str, ages: Sequence[float], half_life: float) -> list[float]:
    """Each touch's share of a conversion (touches in time order, ``ages`` in seconds before
    the conversion; ``half_life`` in seconds)."""
    n = len(ages)
    if model == "first":
        return [1.0 if i == 0 else 0.0 for i in range(n)]
    if model == "last":
        return [1.0 if i == n - 1 else 0.0 for i in range(n)]
    if model == "linear":
        return [1.0 / n] * n
    if model == "position":
        if n <= 2:
            return [1.0 / n] * n
        return [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)]
    if model == "time_decay":
        # Relative to the youngest touch (weight 1): the same shares, and never 0/0 when every
        # touch is many half-lives old.
        youngest = min(ages)
        weights = [0.5 ** ((age - youngest) / half_life) for age in ages]
        total = sum(weights)
        return [w / total for w in weights]
    raise ValueError(model)


# --- SQL ----------------------------------------------------------------------------------------

_GROUP = {
    "channel": "t.channel",
    "store": "t.store_code",
    "campaign": "t.campaign",
    "source": "t.source",
}


def attribution_sql(
    spec: AttributionSpec, *, start: datetime, end: datetime, currency: str, analysed: AnalysedMembers
) -> tuple[str, list[Any]]:
    """Rows ``(group, value_<model>..., conversions_<model>...)`` over the conversions of the
    members ``analysed`` lets in (touches join conversions by member, so nobody else's touch
    is read into the answer either): one pass over the events of
    ``[start - lookback, end)`` for touches, the orders of ``[start, end)`` for conversions,
    joined by member, and every model's share from window functions over each conversion's
    touches (number, count, and the time-decay weights' sum)."""
    half_life = spec.half_life.total_seconds()
    lookback = spec.lookback.total_seconds()
    # Time-decay weights relative to each conversion's latest touch (weight 1): the same shares,
    # and no underflow to 0/0 when every touch is many half-lives old.
    shares = {
        "first": "(CASE WHEN i = 1 THEN 1.0 ELSE 0.0 END)",
        "last": "(CASE WHEN i = n THEN 1.0 ELSE 0.0 END)",
        "linear": "(1.0 / n)",
        "time_decay": "(w / sum(w) OVER (PARTITION BY conversion))",
        "position": "(CASE WHEN n <= 2 THEN 1.0 / n WHEN i = 1 OR i = n THEN 0.4 ELSE 0.2 / (n - 2) END)",
    }
    share_columns = ", ".join(f"{expr}::float8 AS share_{model}" for model, expr in shares.items())
    values = ", ".join(f"sum((value * share_{m}::numeric))::numeric(20, 2) AS value_{m}" for m in MODELS)
    counts = ", ".join(f"sum(share_{m}) AS conversions_{m}" for m in MODELS)
    untouched_values = ", ".join(f"sum(c.value)::numeric(20, 2) AS value_{m}" for m in MODELS)
    untouched_counts = ", ".join(f"count(*)::float8 AS conversions_{m}" for m in MODELS)
    analysed_test, analysed_params = analysed.sql("COALESCE(m.merged_into_id, m.id)")
    sql = (
        "WITH conversions AS MATERIALIZED ("
        " SELECT o.id AS conversion, COALESCE(m.merged_into_id, m.id) AS member, o.placed_at AS at,"
        " GREATEST(o.total - o.refunded, 0) AS value"
        " FROM members_memberorder o JOIN members_member m ON m.id = o.member_id"
        f" WHERE o.placed_at >= %s AND o.placed_at < %s AND o.currency = %s AND {analysed_test}"
        "), touches AS MATERIALIZED ("
        " SELECT COALESCE(m.merged_into_id, m.id) AS member, e.id, e.timestamp AS at, e.channel, e.store_code,"
        " COALESCE(NULLIF(e.context #>> '{campaign,name}', ''), NULLIF(e.properties ->> 'campaign', ''), '')"
        " AS campaign,"
        " COALESCE(NULLIF(e.context #>> '{campaign,source}', ''), CASE e.event WHEN 'Push Opened' THEN 'push'"
        " WHEN 'Coupon Claimed' THEN 'coupon' WHEN 'Store Visited' THEN 'store' ELSE '' END) AS source"
        " FROM events_event e JOIN identity_eventresolution r ON r.event_id = e.id"
        " JOIN members_member m ON m.id = r.member_id"
        " WHERE e.timestamp >= %s AND e.timestamp < %s"
        " AND (e.context ? 'campaign' OR e.event = ANY(%s::text[]))"
        "), paired AS ("
        " SELECT c.conversion, c.value, t.*,"
        " row_number() OVER (PARTITION BY c.conversion ORDER BY t.at, t.id) AS i,"
        " count(*) OVER (PARTITION BY c.conversion) AS n,"
        " power(0.5::float8, extract(epoch FROM max(t.at) OVER (PARTITION BY c.conversion) - t.at)::float8 / %s) AS w"
        " FROM conversions c JOIN touches t ON t.member = c.member AND t.at < c.at"
        " AND t.at >= c.at - %s * interval '1 second'"
        "), shared AS ("
        f" SELECT *, {share_columns} FROM paired"
        ") "
        f"SELECT {_GROUP[spec.dimension]} AS grp, {values}, {counts} FROM shared t GROUP BY 1"
        f" UNION ALL SELECT %s::text, {untouched_values}, {untouched_counts} FROM conversions c"
        " WHERE NOT EXISTS (SELECT 1 FROM touches t WHERE t.member = c.member AND t.at < c.at"
        " AND t.at >= c.at - %s * interval '1 second') HAVING count(*) > 0"
        " ORDER BY 1"
    )
    params: list[Any] = [
        start, end, currency, *analysed_params, start - spec.lookback, end, list(TOUCH_EVENTS), half_life, lookback, NO_TOUCH, lookback,
    ]  # fmt: skip
    return sql, params


def credits_from_rows(rows: Iterable[Sequence[Any]]) -> list[Credit]:
    """``attribution_sql``'s rows as credits."""
    credits = []
    for row in rows:
        group = row[0]
        values = {m: Decimal(row[1 + i]) for i, m in enumerate(MODELS)}
        conversions = {m: float(row[1 + len(MODELS) + i]) for i, m in enumerate(MODELS)}
        credits.append(Credit(group, values, conversions))
    return credits


# --- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversion:
    id: int
    member: int
    at: datetime
    value: Decimal


@dataclass(frozen=True, slots=True)
class Touch:
    member: int
    id: int
    at: datetime
    channel: str = ""
    store_code: str = ""
    campaign: str = ""
    source: str = ""


def attribution_reference(
    spec: AttributionSpec, conversions: Iterable[Conversion], touches: Iterable[Touch]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per group, per model: (credited value, credited conversions), in plain loops (floats:
    the test compares within a cent)."""
    by_member: dict[int, list[Touch]] = defaultdict(list)
    for touch in touches:
        by_member[touch.member].append(touch)
    answer: dict[str, dict[str, list[float]]] = defaultdict(lambda: {m: [0.0, 0.0] for m in MODELS})
    for conversion in conversions:
        mine = sorted(
            (
                t
                for t in by_member[conversion.member]
                if conversion.at - spec.lookback <= t.at < conversion.at
            ),
            key=lambda t: (t.at, t.id),
        )
        if not mine:
            for model in MODELS:
                answer[NO_TOUCH][model][0] += float(conversion.value)
                answer[NO_TOUCH][model][1] += 1.0
            continue
        ages = [(conversion.at - t.at).total_seconds() for t in mine]
        for model in MODELS:
            for touch, share in zip(
                mine, touch_shares(model, ages, spec.half_life.total_seconds()), strict=True
            ):
                group = getattr(touch, {"store": "store_code"}.get(spec.dimension, spec.dimension))
                answer[group][model][0] += float(conversion.value) * share
                answer[group][model][1] += share
    return {group: {m: (v[0], v[1]) for m, v in models.items()} for group, models in answer.items()}
