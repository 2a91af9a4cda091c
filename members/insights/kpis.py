"""The omnichannel KPIs: what each one counts, and the per-member, per-day facts they add up.

Pure (no Django, no ORM; the ``pure`` import contract). ``member_days`` is the definition of a
member's rows from its history (``MemberHistory``: resolved events and orders); the rollup job
computes their sums per day, channel and store set-wise in SQL, straight from members' facts
(``members.insights.member_days_sql``, held to the sums of ``member_days`` by a property test)
into the daily rollups (``insights_dailyrollup``). Every KPI below is then a ratio, a sum or a
running total of those daily columns, so any period's value is read from the rollups alone.

Why per member and day: a merge, a split, a late POS upload or a refund changes a member's
history, and with it the figures of exactly the days on which that member's rows change. The
rollup job keeps each member's facts as last counted; when they change, it adds the rollup rows
of the new facts less those of the old to the days they touch (``services.insights_refresh``).

Conventions, for every KPI:

- A *day* is a calendar day in ``TIME_ZONE``; an event counts on the day of its (skew-corrected)
  ``timestamp``, an order on the day it was placed. A refund is taken off its order, on the
  order's day: net sales of a day change when a refund of that day's order arrives.
- An *order* is a member's order in ``CDP_CURRENCY`` whose net (total less refunds) is above
  zero; an order refunded in full is no order. Orders in other currencies are left out (they
  are never summed as if the same money).
- *Online* channels are ``app``, ``mini_program`` and ``web``; the *store* channel is ``pos``.
- **Consent** (purpose ``analytics``): a member whose ``analytics`` consent in force is not
  granted (denied, withdrawn, or never stated: no statement means no consent, as for every
  purpose) is counted in the business's counts and sums only — events, orders, sales,
  buyers, points, coupons — and in no behavioural measure (omnichannel or single, repurchase,
  conversion, lifecycle, unification). Behavioural KPIs therefore divide by the ``analysed_*``
  columns (members who granted it), never by the totals. No answer names a member either way.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

ONLINE_CHANNELS = frozenset({"app", "mini_program", "web"})
STORE_CHANNEL = "pos"
#: The breakdown key of "every channel" / "every store" in the rollups.
ALL = "*"
#: Online-to-store (and store-to-online) conversion window: a purchase on the day of the
#: activity or within this many days after it.
CONVERSION_WINDOW_DAYS = 30
#: Repurchase windows, in days before the purchase day.
REPURCHASE_WINDOWS = (30, 90, 365)
#: Lifecycle: active while the latest purchase is under ACTIVE_DAYS old, at risk until
#: AT_RISK_DAYS, churned after that (until the next purchase).
ACTIVE_DAYS = 90
AT_RISK_DAYS = 180
ZERO = Decimal("0.00")

#: The member-day and daily rollup columns, in order. Money columns are Decimal, the rest int.
COLUMNS: tuple[str, ...] = (
    "events",  # events of the day (every member)
    "analysed_events",  # events of members who granted analytics
    "identified_events",  # ... of those, events of identified members
    "orders",
    "sales",  # net of refunds
    "buyers",  # members with an order (1 per member and key)
    "analysed_buyers",
    "omni_orders",  # orders of members who, by that day, had bought in >= 2 channels
    "omni_sales",
    "single_orders",  # orders of members who, by that day, had bought in one channel only
    "single_sales",
    "new_buyers",  # first purchase ever on that day
    *(f"repeat_{n}" for n in REPURCHASE_WINDOWS),  # buyers who had bought in the n days before
    "online_active",  # members with an online event that day
    "online_to_store",  # ... who bought in a store that day or within the window after
    "store_active",  # members with a store (pos) event that day
    "store_to_online",  # ... who bought online that day or within the window after
    "omni_delta",  # +1 the day a member becomes omnichannel (running total: omni members)
    "identified_delta",  # +1 on an identified member's first event day
    "unified_delta",  # +1 the day an identified member's events span a second channel
    "active_delta",  # lifecycle transitions; their running totals are the counts per state
    "at_risk_delta",
    "churned_delta",
)
MONEY_COLUMNS = frozenset({"sales", "omni_sales", "single_sales"})
#: Columns filled on the member's all-channels row only (one member, one count per day).
MEMBER_LEVEL = frozenset(COLUMNS) - {
    "events", "analysed_events", "identified_events", "orders", "sales", "buyers", "analysed_buyers",
    "omni_orders", "omni_sales", "single_orders", "single_sales",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class EventCount:
    day: date
    channel: str
    store_code: str
    count: int


@dataclass(frozen=True, slots=True)
class OrderFact:
    day: date
    channel: str
    store_code: str
    net: Decimal  # total less refunds, in CDP_CURRENCY


@dataclass(frozen=True, slots=True)
class MemberHistory:
    """What the KPIs read of one active (or erased) member, as resolved now."""

    member_id: int
    identified: bool  # holds an identifier other than an anonymous or device id
    analytics: bool  # True: granted the ``analytics`` purpose, in force now
    events: tuple[EventCount, ...]
    orders: tuple[OrderFact, ...]


Key = tuple[int, date, str, str]  # member, day, channel, store
Values = tuple[int | Decimal, ...]  # in COLUMNS order


def member_days(history: MemberHistory) -> dict[Key, Values]:
    """The member's rows: one per day with activity (or a lifecycle / unification transition)
    on the all-channels key ``(ALL, ALL)``, one per channel ``(channel, ALL)`` and, for stores,
    one per ``(channel, store)``. Rows whose values are all zero are left out."""
    rows: dict[Key, dict[str, int | Decimal]] = defaultdict(_zero_row)
    m = history.member_id
    analysed = history.analytics
    orders = [o for o in history.orders if o.net > 0]
    purchase_days = sorted({o.day for o in orders})
    omni_since = _omni_since(orders)
    for e in history.events:
        for channel, store in _keys(e.channel, e.store_code):
            row = rows[(m, e.day, channel, store)]
            row["events"] += e.count
            if analysed:
                row["analysed_events"] += e.count
                if history.identified:
                    row["identified_events"] += e.count
    for o in orders:
        omni = omni_since is not None and o.day >= omni_since
        for channel, store in _keys(o.channel, o.store_code):
            row = rows[(m, o.day, channel, store)]
            row["orders"] += 1
            row["sales"] += o.net
            row["buyers"] = 1
            if analysed:
                row["analysed_buyers"] = 1
                prefix = "omni" if omni else "single"
                row[f"{prefix}_orders"] += 1
                row[f"{prefix}_sales"] += o.net
    if analysed:
        _member_level(history, orders, purchase_days, omni_since, rows)
    # Each row is a copy of the template, so its values are in COLUMNS order.
    return {key: tuple(values.values()) for key, values in rows.items() if any(values.values())}


_ZERO_ROW: dict[str, int | Decimal] = {c: ZERO if c in MONEY_COLUMNS else 0 for c in COLUMNS}


def _zero_row() -> dict[str, int | Decimal]:
    return dict(_ZERO_ROW)  # a copy of the template: the hot path, measured 3x a comprehension


def _keys(channel: str, store_code: str) -> list[tuple[str, str]]:
    keys = [(ALL, ALL), (channel, ALL)]
    if store_code:
        keys.append((channel, store_code))
    return keys


def _omni_since(orders: Sequence[OrderFact]) -> date | None:
    """The day the member's orders first span two channels (None: never)."""
    first: dict[str, date] = {}
    for o in orders:
        if o.channel not in first or o.day < first[o.channel]:
            first[o.channel] = o.day
    days = sorted(first.values())
    return days[1] if len(days) >= 2 else None


def _member_level(
    history: MemberHistory, orders: Sequence[OrderFact], purchase_days: list[date], omni_since: date | None,
    rows: dict[Key, dict[str, int | Decimal]],
) -> None:  # fmt: skip
    m = history.member_id

    def total(day: date) -> dict[str, int | Decimal]:
        return rows[(m, day, ALL, ALL)]

    for i, day in enumerate(purchase_days):
        row = total(day)
        if i == 0:
            row["new_buyers"] = 1
        for n in REPURCHASE_WINDOWS:
            if i > 0 and (day - purchase_days[i - 1]).days <= n:
                row[f"repeat_{n}"] = 1
    if omni_since is not None:
        total(omni_since)["omni_delta"] = 1
    # Lifecycle: each purchase starts (or continues) an active spell; without a next purchase
    # the member turns at risk ACTIVE_DAYS later and churned AT_RISK_DAYS later.
    state_on: dict[date, str] = {}
    for i, day in enumerate(purchase_days):
        following = purchase_days[i + 1] if i + 1 < len(purchase_days) else None
        state_on[day] = "active"
        for after, state in ((ACTIVE_DAYS, "at_risk"), (AT_RISK_DAYS, "churned")):
            turn = day + timedelta(days=after)
            if following is None or turn < following:
                state_on[turn] = state
    previous = None
    for day in sorted(state_on):
        state = state_on[day]
        if state == previous:
            continue
        if previous is not None:
            total(day)[f"{previous}_delta"] = -1
        total(day)[f"{state}_delta"] = 1
        previous = state
    by_day: dict[date, set[str]] = defaultdict(set)
    pos_purchases = sorted({o.day for o in orders if o.channel == STORE_CHANNEL})
    online_purchases = sorted({o.day for o in orders if o.channel in ONLINE_CHANNELS})
    for e in history.events:
        by_day[e.day].add(e.channel)
    if history.identified and by_day:
        days = sorted(by_day)
        total(days[0])["identified_delta"] = 1
        seen: set[str] = set()
        for day in days:
            before = len(seen)
            seen |= by_day[day]
            if before < 2 <= len(seen):
                total(day)["unified_delta"] = 1
                break
    for day, channels in by_day.items():
        if channels & ONLINE_CHANNELS:
            total(day)["online_active"] = 1
            if _bought_within(pos_purchases, day):
                total(day)["online_to_store"] = 1
        if STORE_CHANNEL in channels:
            total(day)["store_active"] = 1
            if _bought_within(online_purchases, day):
                total(day)["store_to_online"] = 1


def _bought_within(purchase_days: Sequence[date], day: date) -> bool:
    last = day + timedelta(days=CONVERSION_WINDOW_DAYS)
    return any(day <= p <= last for p in purchase_days)


def days_changed(before: dict[Key, Values], after: dict[Key, Values]) -> set[date]:
    """The days on which a member's rows differ (a row added, removed or changed)."""
    return {key[1] for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


# --- The KPIs -------------------------------------------------------------------------------


class Kind(StrEnum):
    FLOW = "flow"  # a sum over the days of the period
    RATIO = "ratio"  # sum of a numerator over sum of a denominator, over the days of the period
    STOCK = "stock"  # a running total of daily deltas, as of the period's last day
    STOCK_RATIO = "stock_ratio"  # one running total over another, as of the period's last day


@dataclass(frozen=True, slots=True)
class Kpi:
    key: str
    label: str
    kind: Kind
    numerator: str  # a rollup column (or a sum of them, "a+b")
    denominator: str = ""
    source: str = "daily"  # the rollup it reads: daily, points, coupons
    target: float | None = None  # the seed's target, drawn as a reference line
    percent: bool = False
    money: bool = False
    breakdown: bool = False  # has channel / store breakdowns
    doc: str = ""


KPIS: tuple[Kpi, ...] = (
    Kpi("unification_rate", "Member data unification", Kind.STOCK_RATIO, "unified_delta", "identified_delta",
        target=0.80, percent=True,
        doc="Identified members (holding an identifier other than an anonymous or device id) whose events "
            "span two or more channels, over all identified members; as of the period's last day (each "
            "member counts from its first event; the second channel from the day it first appears)."),
    Kpi("identified_event_share", "Events of identified members", Kind.RATIO, "identified_events",
        "analysed_events", percent=True, breakdown=True,
        doc="Events resolved to an identified member, over all events, of the period."),
    Kpi("omni_members", "Omnichannel members", Kind.STOCK, "omni_delta",
        doc="Members whose orders, by the period's last day, span two or more channels."),
    Kpi("omni_sales_share", "Omnichannel share of sales", Kind.RATIO, "omni_sales", "omni_sales+single_sales",
        percent=True, breakdown=True,
        doc="Net sales of the period by members already omnichannel on the day of the order, over net "
            "sales (of members who granted analytics)."),
    *(Kpi(f"repurchase_{n}", f"Repurchase rate ({n} d)", Kind.RATIO, f"repeat_{n}", "analysed_buyers",
          percent=True,
          doc=f"Buyer-days of the period whose member had bought on an earlier day within {n} days before, "
              "over buyer-days (a member buying on a day is one buyer-day).")
      for n in REPURCHASE_WINDOWS),
    Kpi("aov", "Average order value", Kind.RATIO, "sales", "orders", money=True, breakdown=True,
        doc="Net sales over orders, of the period."),
    Kpi("aov_omni", "AOV, omnichannel members", Kind.RATIO, "omni_sales", "omni_orders", money=True,
        breakdown=True, doc="Net sales over orders of members already omnichannel on the order's day."),
    Kpi("aov_single", "AOV, single-channel members", Kind.RATIO, "single_sales", "single_orders", money=True,
        breakdown=True, doc="Net sales over orders of members who had bought in one channel only by that day."),
    Kpi("aov_omni_uplift", "Omnichannel AOV uplift", Kind.RATIO, "omni_sales/omni_orders",
        "single_sales/single_orders", target=0.20, percent=True,
        doc="AOV of omnichannel members over AOV of single-channel members, less 1 (target: +20%)."),
    Kpi("online_to_store", "Online-to-store conversion", Kind.RATIO, "online_to_store", "online_active",
        percent=True,
        doc=f"Member-days with an online event (app, mini-program, web) followed by a store purchase the "
            f"same day or within {CONVERSION_WINDOW_DAYS} days, over member-days with an online event. "
            f"The last {CONVERSION_WINDOW_DAYS} days are still open and rise as purchases arrive."),
    Kpi("store_to_online", "Store-to-online conversion", Kind.RATIO, "store_to_online", "store_active",
        percent=True, doc="The reverse: a store (pos) event day followed by an online purchase within the window."),
    Kpi("coupon_redemption_rate", "Coupon redemption", Kind.RATIO, "redeemed", "issued", source="coupons",
        percent=True,
        doc="Coupons redeemed (and not released) in the period, over coupons issued in the period; by "
            "issuing channel (the campaign's one channel, or 'any') x redeeming channel."),
    Kpi("points_issued", "Points issued", Kind.FLOW, "issued", source="points",
        doc="Points earned (ledger rows of kind earn) in the period, by their effective time."),
    Kpi("points_redeemed", "Points redeemed", Kind.FLOW, "redeemed", source="points",
        doc="Points spent (kind redeem), as a positive number."),
    Kpi("points_expired", "Points expired", Kind.FLOW, "expired", source="points",
        doc="Points expired (kind expire), as a positive number."),
    Kpi("points_liability", "Points outstanding", Kind.STOCK, "net", source="points",
        doc="Every ledger row's points summed up to the period's last day: the balance owed to members."),
    Kpi("active_members", "Active members", Kind.STOCK, "active_delta",
        doc=f"Members whose latest purchase is under {ACTIVE_DAYS} days old on the period's last day."),
    Kpi("new_members", "New buyers", Kind.FLOW, "new_buyers",
        doc="Members whose first purchase ever falls in the period."),
    Kpi("at_risk_members", "At-risk members", Kind.STOCK, "at_risk_delta",
        doc=f"Members whose latest purchase is {ACTIVE_DAYS} to {AT_RISK_DAYS} days old."),
    Kpi("churned_members", "Churned members", Kind.STOCK, "churned_delta",
        doc=f"Members whose latest purchase is over {AT_RISK_DAYS} days old."),
    Kpi("sales", "Net sales", Kind.FLOW, "sales", money=True, breakdown=True,
        doc="Orders' totals less refunds, in CDP_CURRENCY, by channel and store of the order."),
    Kpi("orders", "Orders", Kind.FLOW, "orders", breakdown=True, doc="Orders with a net above zero."),
    Kpi("buyers", "Buyers", Kind.FLOW, "buyers", breakdown=True,
        doc="Buyer-days: members buying on a day, summed over the days of the period."),
)  # fmt: skip
KPI_BY_KEY = {k.key: k for k in KPIS}


def _sum(totals: dict[str, int | Decimal], expression: str) -> Decimal:
    return sum((Decimal(totals.get(c, 0)) for c in expression.split("+")), Decimal(0))


def _term(totals: dict[str, int | Decimal], expression: str) -> Decimal | None:
    """A sum of columns, or a quotient of two such sums (None when dividing by zero)."""
    if "/" in expression:
        top, bottom = expression.split("/")
        below = _sum(totals, bottom)
        return _sum(totals, top) / below if below else None
    return _sum(totals, expression)


def kpi_value(kpi: Kpi, flows: dict[str, int | Decimal], stocks: dict[str, int | Decimal]) -> Decimal | None:
    """A KPI's value from its rollup's column sums over the period (``flows``) and running totals
    as of the period's last day (``stocks``); None when its denominator is zero."""
    totals = stocks if kpi.kind in (Kind.STOCK, Kind.STOCK_RATIO) else flows
    top = _term(totals, kpi.numerator)
    if kpi.kind in (Kind.FLOW, Kind.STOCK):
        return top
    bottom = _term(totals, kpi.denominator)
    if top is None or not bottom:
        return None
    value = top / bottom
    return value - 1 if kpi.key == "aov_omni_uplift" else value


# --- Periods --------------------------------------------------------------------------------


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


def period_start(day: date, period: Period) -> date:
    """The first day of the period (ISO week: Monday) holding ``day``."""
    if period == Period.DAY:
        return day
    if period == Period.WEEK:
        return day - timedelta(days=day.weekday())
    if period == Period.MONTH:
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _shift(day: date, period: Period, back: int = 1) -> date:
    """The same day one period earlier (a month's 31st becomes the previous month's last day)."""
    if period == Period.DAY:
        return day - timedelta(days=back)
    if period == Period.WEEK:
        return day - timedelta(weeks=back)
    months = 12 * back if period == Period.YEAR else back
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    for last in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has a 28th")


def period_compare(end: date, period: Period) -> tuple[tuple[date, date], tuple[date, date]]:
    """Period to date and the previous period to the same point: ``end`` in its week is compared
    with the same weekday of the week before, the 1st-to-15th of a month with the 1st-to-15th of
    the month before (clamped to its length), and so on."""
    start = period_start(end, period)
    return (start, end), (_shift(start, period), _shift(end, period))


def buckets(start: date, end: date, interval: Period) -> list[tuple[date, date]]:
    """The consecutive periods of ``interval`` covering [start, end], the first and last clipped."""
    out: list[tuple[date, date]] = []
    cursor = start
    while cursor <= end:
        nxt = _shift(period_start(cursor, interval), interval, back=-1)
        last = min(end, nxt - timedelta(days=1))
        out.append((cursor, last))
        cursor = last + timedelta(days=1)
    return out


def change(current: Decimal | None, previous: Decimal | None) -> Decimal | None:
    """Relative change against the previous period (None when there is nothing to compare to)."""
    if current is None or previous is None or previous == 0:
        return None
    return (current - previous) / abs(previous)


def columns_sum(rows: Iterable[dict[str, int | Decimal]]) -> dict[str, int | Decimal]:
    out: dict[str, int | Decimal] = defaultdict(int)
    for row in rows:
        for k, v in row.items():
            out[k] += v
    return dict(out)
