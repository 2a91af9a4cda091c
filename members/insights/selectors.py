"""Reads of the KPI rollups: a KPI's series over a date range (by channel or store), and the
board's tiles (each KPI this period against the previous one). Every answer is counts and
sums of the rollups: no member is named, and no member table is read."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection

from members.insights import kpis
from members.insights.models import CouponRollup, DailyRollup, PointsRollup


class Breakdown:
    NONE = ""
    CHANNEL = "channel"
    STORE = "store"
    ISSUING_CHANNEL = "issuing_channel"
    REDEEMING_CHANNEL = "redeeming_channel"


#: Which breakdowns each rollup has.
BREAKDOWNS = {
    "daily": (Breakdown.NONE, Breakdown.CHANNEL, Breakdown.STORE),
    "points": (Breakdown.NONE, Breakdown.CHANNEL),
    "coupons": (Breakdown.NONE, Breakdown.ISSUING_CHANNEL, Breakdown.REDEEMING_CHANNEL),
}
_COLUMNS = {
    "daily": kpis.COLUMNS,
    "points": ("issued", "redeemed", "expired", "net"),
    "coupons": ("issued", "redeemed"),
}


@dataclass(frozen=True, slots=True)
class Point:
    start: date
    end: date
    key: str  # the breakdown's value ("" without a breakdown)
    value: Decimal | None


def _rows(source: str, breakdown: str, start: date | None, end: date) -> list[tuple[date, str, dict]]:
    """(day, key, columns) of the rollup from ``start`` (None: the beginning) to ``end``."""
    columns = _COLUMNS[source]
    select = ", ".join(f"sum({c})" for c in columns)
    where = ["day <= %s"]
    params: list[Any] = [end]
    if start is not None:
        where.append("day >= %s")
        params.append(start)
    if source == "daily":
        table = DailyRollup._meta.db_table
        if breakdown == Breakdown.CHANNEL:
            key, where = "channel", [*where, "channel <> '*'", "store_code = '*'"]
        elif breakdown == Breakdown.STORE:
            key, where = "store_code", [*where, "channel = 'pos'", "store_code <> '*'"]
        else:
            key, where = "''", [*where, "channel = '*'", "store_code = '*'"]
    elif source == "points":
        table = PointsRollup._meta.db_table
        key, where = (
            ("channel", [*where, "channel <> '*'"]) if breakdown else ("''", [*where, "channel = '*'"])
        )
    else:
        table = CouponRollup._meta.db_table
        if breakdown == Breakdown.REDEEMING_CHANNEL:
            # Issued coupons have no redeeming channel: they stay in every row's denominator.
            key = "redeeming_channel"
        else:
            key = "issuing_channel" if breakdown == Breakdown.ISSUING_CHANNEL else "''"
    sql = (
        f"SELECT day, {key}, {select} FROM {table} WHERE {' AND '.join(where)} "  # noqa: S608 - our own names
        "GROUP BY 1, 2 ORDER BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(row[0], row[1], dict(zip(columns, row[2:], strict=True))) for row in cursor.fetchall()]


def kpi_series(
    *, kpi: kpis.Kpi, start: date, end: date, interval: kpis.Period, breakdown: str = ""
) -> list[Point]:
    """The KPI per ``interval`` bucket of [start, end], per breakdown value. Stocks are read as
    of each bucket's last day (their running totals start at the first day held)."""
    stock = kpi.kind in (kpis.Kind.STOCK, kpis.Kind.STOCK_RATIO)
    rows = _rows(kpi.source, breakdown, None if stock else start, end)
    spans = kpis.buckets(start, end, interval)
    coupons_by_redeeming = kpi.source == "coupons" and breakdown == Breakdown.REDEEMING_CHANNEL
    keys = sorted({k for _, k, _ in rows if not (coupons_by_redeeming and k == "*")}) or [""]
    out: list[Point] = []
    for key in keys:
        mine = [(d, c) for d, k, c in rows if k == key or (coupons_by_redeeming and k == "*")]
        running: dict[str, int | Decimal] = {}
        i = 0
        for first, last in spans:
            # Rows are in day order: one pass adds each row to its bucket and the running total.
            flows: dict[str, int | Decimal] = {}
            while i < len(mine) and mine[i][0] <= last:
                day, columns = mine[i]
                running = kpis.columns_sum((running, columns))
                if day >= first:
                    flows = kpis.columns_sum((flows, columns))
                i += 1
            out.append(Point(first, last, key, kpis.kpi_value(kpi, flows, running)))
    return out


@dataclass(frozen=True, slots=True)
class Tile:
    kpi: kpis.Kpi
    value: Decimal | None
    previous: Decimal | None
    change: Decimal | None
    period: tuple[date, date]
    previous_period: tuple[date, date]


def kpi_tiles(*, end: date, period: kpis.Period) -> list[Tile]:
    """Every KPI for the period to ``end`` and the previous period to the same point: one
    query per rollup and one pass over its days, whatever the number of KPIs."""
    current, previous = kpis.period_compare(end, period)
    totals: dict[str, list[tuple[dict, dict]]] = {}
    for source in _COLUMNS:
        rows = _rows(source, "", None, end)
        totals[source] = [
            (kpis.columns_sum(c for d, _, c in rows if first <= d <= last),
             kpis.columns_sum(c for d, _, c in rows if d <= last))
            for first, last in (current, previous)
        ]  # fmt: skip
    tiles = []
    for kpi in kpis.KPIS:
        now, before = (kpis.kpi_value(kpi, flows, stocks) for flows, stocks in totals[kpi.source])
        tiles.append(Tile(kpi, now, before, kpis.change(now, before), current, previous))
    return tiles


def kpi_total(*, kpi: kpis.Kpi, start: date, end: date) -> Decimal | None:
    """The KPI over [start, end] as one period."""
    rows = _rows(kpi.source, "", None, end)
    flows = kpis.columns_sum(c for d, _, c in rows if start <= d <= end)
    return kpis.kpi_value(kpi, flows, kpis.columns_sum(c for _, _, c in rows))


def sales_by_channel(*, start: date, end: date, interval: kpis.Period) -> dict[str, list[Point]]:
    """Net sales per channel and bucket: the board's chart."""
    series: dict[str, list[Point]] = defaultdict(list)
    for point in kpi_series(
        kpi=kpis.KPI_BY_KEY["sales"], start=start, end=end, interval=interval, breakdown=Breakdown.CHANNEL
    ):
        series[point.key].append(point)
    return dict(series)


def default_range(end: date) -> tuple[date, date]:
    """The 90 days to ``end``."""
    return end - timedelta(days=89), end


def coupon_cells(*, start: date, end: date) -> dict[tuple[str, str], int]:
    """Coupons redeemed in [start, end] per (issuing channel, redeeming channel)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT issuing_channel, redeeming_channel, sum(redeemed) FROM {CouponRollup._meta.db_table} "  # noqa: S608
            "WHERE day BETWEEN %s AND %s AND redeeming_channel <> '*' GROUP BY 1, 2",
            [start, end],
        )
        return {(i, r): int(n) for i, r, n in cursor.fetchall()}
