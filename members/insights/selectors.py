"""Reads of the KPI rollups: a KPI's series over a date range (by channel or store), and the
board's tiles (each KPI this period against the previous one). Every answer is counts and
sums of the rollups: no member is named, and no member table is read."""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from cdp.replica import read_connection
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


def _scope(source: str, breakdown: str) -> tuple[str, str, list[str]]:
    """The rollup's table, the breakdown's key expression and the rows it reads."""
    if source == "daily":
        table = DailyRollup._meta.db_table
        if breakdown == Breakdown.CHANNEL:
            return table, "channel", ["channel <> '*'", "store_code = '*'"]
        if breakdown == Breakdown.STORE:
            return table, "store_code", ["channel = 'pos'", "store_code <> '*'"]
        return table, "''", ["channel = '*'", "store_code = '*'"]
    if source == "points":
        table = PointsRollup._meta.db_table
        return (table, "channel", ["channel <> '*'"]) if breakdown else (table, "''", ["channel = '*'"])
    table = CouponRollup._meta.db_table
    if breakdown == Breakdown.REDEEMING_CHANNEL:
        # Issued coupons have no redeeming channel: they stay in every row's denominator.
        return table, "redeeming_channel", []
    return table, "issuing_channel" if breakdown == Breakdown.ISSUING_CHANNEL else "''", []


def _kpi_columns(kpi: kpis.Kpi) -> set[str]:
    """The rollup columns a KPI's numerator and denominator read."""
    terms = f"{kpi.numerator}+{kpi.denominator}".replace("/", "+").split("+")
    return {t for t in terms if t}


def _bucket_rows(
    source: str, breakdown: str, columns: Sequence[str], spans: list[tuple[date, date]], *, stock: bool
) -> list[tuple[date, str, dict]]:
    """(day, key, column sums) per bucket of ``spans`` and breakdown key, in day order: each
    bucket's row is dated its first day; with ``stock``, the days before the first bucket are
    summed into one more row, dated the day before it (running totals start there). One query:
    PostgreSQL sums the days, Python only the buckets (measured: adding every day's 28
    columns up in Python was a third of the board's request)."""
    table, key, where = _scope(source, breakdown)
    firsts = [first for first, _ in spans]
    where = [*where, "day <= %s"] + ([] if stock else ["day >= %s"])
    select = ", ".join(f"sum({c})" for c in columns)
    sql = (
        f"SELECT width_bucket(day, %s::date[]) AS bucket, {key}, {select} FROM {table} "  # noqa: S608 - our own names
        f"WHERE {' AND '.join(where)} GROUP BY 1, 2 ORDER BY 1"
    )
    with read_connection().cursor() as cursor:
        cursor.execute(sql, [firsts, spans[-1][1], *([] if stock else [firsts[0]])])
        return [
            (firsts[bucket - 1] if bucket else firsts[0] - timedelta(days=1), k,
             dict(zip(columns, values, strict=True)))
            for bucket, k, *values in cursor.fetchall()
        ]  # fmt: skip


def kpi_series(
    *, kpi: kpis.Kpi, start: date, end: date, interval: kpis.Period, breakdown: str = ""
) -> list[Point]:
    """The KPI per ``interval`` bucket of [start, end], per breakdown value. Stocks are read as
    of each bucket's last day (their running totals start at the first day held)."""
    return kpis_series(kpi_list=(kpi,), start=start, end=end, interval=interval, breakdown=breakdown)[kpi.key]


def kpis_series(
    *, kpi_list: Sequence[kpis.Kpi], start: date, end: date, interval: kpis.Period, breakdown: str = ""
) -> dict[str, list[Point]]:
    """``kpi_series`` of several KPIs of one rollup over the same buckets, in one query (the
    board's trends)."""
    (source,) = {kpi.source for kpi in kpi_list}
    stock = any(kpi.kind in (kpis.Kind.STOCK, kpis.Kind.STOCK_RATIO) for kpi in kpi_list)
    spans = kpis.buckets(start, end, interval)
    columns = sorted(set().union(*(_kpi_columns(kpi) for kpi in kpi_list)))
    rows = _bucket_rows(source, breakdown, columns, spans, stock=stock)
    coupons_by_redeeming = source == "coupons" and breakdown == Breakdown.REDEEMING_CHANNEL
    keys = sorted({k for _, k, _ in rows if not (coupons_by_redeeming and k == "*")}) or [""]
    out: dict[str, list[Point]] = {kpi.key: [] for kpi in kpi_list}
    for key in keys:
        mine = [(d, c) for d, k, c in rows if k == key or (coupons_by_redeeming and k == "*")]
        running: dict[str, int | Decimal] = {}
        i = 0
        for first, last in spans:
            # Rows are in day order: one pass adds each row to its bucket and the running total.
            flows: dict[str, int | Decimal] = {}
            while i < len(mine) and mine[i][0] <= last:
                day, sums = mine[i]
                running = kpis.columns_sum((running, sums))
                if day >= first:
                    flows = kpis.columns_sum((flows, sums))
                i += 1
            for kpi in kpi_list:
                out[kpi.key].append(Point(first, last, key, kpis.kpi_value(kpi, flows, running)))
    return out


def _window_sums(source: str, windows: Sequence[tuple[date | None, date]]) -> list[dict[str, int | Decimal]]:
    """Every column of the rollup (all channels) summed over each window ``[first, last]``
    (``first`` None: from the beginning), in one query."""
    table, _, where = _scope(source, "")
    columns = _COLUMNS[source]
    select = ", ".join(f"coalesce(sum({c}), 0)" for c in columns)
    sql = (
        f"SELECT w.n, {select} FROM unnest(%s::date[], %s::date[]) WITH ORDINALITY AS w(first, last, n) "  # noqa: S608
        f"LEFT JOIN {table} AS r ON r.day BETWEEN w.first AND w.last "
        f"{''.join(f' AND r.{c}' for c in where)} GROUP BY w.n ORDER BY w.n"
    )
    with read_connection().cursor() as cursor:
        cursor.execute(sql, [[first or date.min for first, _ in windows], [last for _, last in windows]])
        return [dict(zip(columns, values, strict=True)) for _, *values in cursor.fetchall()]


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
    query per rollup (the flows and running totals of both periods), whatever the number of KPIs."""
    current, previous = kpis.period_compare(end, period)
    totals: dict[str, list[tuple[dict, dict]]] = {}
    for source in _COLUMNS:
        cf, cs, pf, ps = _window_sums(source, [current, (None, current[1]), previous, (None, previous[1])])
        totals[source] = [(cf, cs), (pf, ps)]
    tiles = []
    for kpi in kpis.KPIS:
        now, before = (kpis.kpi_value(kpi, flows, stocks) for flows, stocks in totals[kpi.source])
        tiles.append(Tile(kpi, now, before, kpis.change(now, before), current, previous))
    return tiles


def kpi_total(*, kpi: kpis.Kpi, start: date, end: date) -> Decimal | None:
    """The KPI over [start, end] as one period."""
    flows, stocks = _window_sums(kpi.source, [(start, end), (None, end)])
    return kpis.kpi_value(kpi, flows, stocks)


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
    with read_connection().cursor() as cursor:
        cursor.execute(
            f"SELECT issuing_channel, redeeming_channel, sum(redeemed) FROM {CouponRollup._meta.db_table} "  # noqa: S608
            "WHERE day BETWEEN %s AND %s AND redeeming_channel <> '*' GROUP BY 1, 2",
            [start, end],
        )
        return {(i, r): int(n) for i, r, n in cursor.fetchall()}
