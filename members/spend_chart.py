"""The member page's spend chart as SVG geometry, drawn on the server: stacked bars of net
spend per month and channel, every month of the range (a month without orders is a zero, not
a gap), a value axis with gridlines, the total over each bar, and the same figures as a table
for screen readers and for anyone who wants the numbers.

Pure (no ORM, no Django): ``members.console`` passes the months and the template draws what
this returns. Server-side SVG needs no script and loads nothing from anywhere.
"""

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

ZERO = Decimal("0.00")
#: Geometry, in SVG user units (the SVG scales to its card's width).
PLOT_HEIGHT = 160
AXIS_WIDTH = 56  # room for the value labels left of the plot
SLOT = 44  # one month: its bar and the gap after it
BAR = 28
TOP_MARGIN = 18  # room for the total over the tallest bar
BOTTOM_MARGIN = 34  # month and year under the bars
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class ChartSegment:
    channel: str
    label: str
    spend: Decimal
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class ChartBar:
    month: str  # YYYY-MM
    month_label: str  # "Sep"
    year_label: str  # "2026" under January and under the first month, else ""
    x: float
    center: float  # where the month and the total are written
    total: Decimal  # net of refunds: may be below zero in a month of returns
    total_label: str
    total_y: float
    segments: tuple[ChartSegment, ...]
    by_channel: tuple[Decimal, ...]  # in the order of ``SpendChart.channels``, for the table


@dataclass(frozen=True, slots=True)
class ChartTick:
    value: Decimal
    label: str
    y: float


@dataclass(frozen=True, slots=True)
class SpendChart:
    bars: tuple[ChartBar, ...]
    ticks: tuple[ChartTick, ...]
    channels: tuple[tuple[str, str], ...]  # (channel, label) of the legend and the table
    currency: str
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    bar: int
    total: Decimal
    summary: str  # one sentence: the chart's text alternative


def months_ending(last: str, count: int) -> list[str]:
    """``count`` calendar months (``YYYY-MM``) ending with ``last``, oldest first."""
    year, month = (int(part) for part in last.split("-"))
    index = year * 12 + month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


def nice_step(top: Decimal, *, ticks: int = 4) -> Decimal:
    """A round gridline step (1, 2, 2.5 or 5 times a power of ten) putting at most ``ticks``
    lines above zero at or over ``top``."""
    if top <= 0:
        return Decimal(1)
    raw = top / ticks
    power = Decimal(10) ** (raw.adjusted())
    for factor in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        if power * factor >= raw:
            return power * factor
    return power * 10  # pragma: no cover - the loop always returns


def amount_label(value: Decimal) -> str:
    """A short amount for an axis or a bar: ``950``, ``1.2k``, ``35k``, ``1.5M``."""
    sign, size = ("-" if value < 0 else ""), abs(value)
    for limit, suffix in ((Decimal(1_000_000), "M"), (Decimal(1_000), "k")):
        if size >= limit:
            scaled = size / limit
            text = f"{scaled:.1f}" if scaled < 10 else f"{scaled:.0f}"
            return f"{sign}{text.removesuffix('.0')}{suffix}"
    return f"{sign}{size:.0f}"


def spend_chart(
    spend: dict[str, dict[str, Decimal]],
    *,
    last_month: str,
    count: int,
    channels: tuple[tuple[str, str], ...],
    currency: str,
) -> SpendChart:
    """The chart of the ``count`` months ending with ``last_month``; ``spend`` maps a month
    (``YYYY-MM``) to its net spend per channel (months and channels absent are zero);
    ``channels`` are (channel, label) in stacking order, bottom first."""
    months = months_ending(last_month, count)
    per_month = [[spend.get(month, {}).get(channel, ZERO) for channel, _ in channels] for month in months]
    totals = [sum(values, ZERO) for values in per_month]
    stacked = [sum((v for v in values if v > 0), ZERO) for values in per_month]
    tallest = max(stacked, default=ZERO)
    step = nice_step(tallest)
    # The axis ends at the first gridline at or over the tallest bar.
    top = step * max(Decimal(1), (tallest / step).to_integral_value(rounding=ROUND_CEILING))
    plot_top, plot_bottom = TOP_MARGIN, TOP_MARGIN + PLOT_HEIGHT

    def y_of(value: Decimal) -> float:
        return round(plot_bottom - float(value / top) * PLOT_HEIGHT, 1)

    ticks = []
    value = ZERO
    while value <= top:
        ticks.append(ChartTick(value, amount_label(value), y_of(value)))
        value += step
    bars = []
    for index, (month, values, total, height_of) in enumerate(
        zip(months, per_month, totals, stacked, strict=True)
    ):
        x = AXIS_WIDTH + index * SLOT + (SLOT - BAR) / 2
        segments, base = [], ZERO
        for (channel, label), channel_spend in zip(channels, values, strict=True):
            if channel_spend <= 0:
                continue
            top_y, bottom_y = y_of(base + channel_spend), y_of(base)
            segments.append(ChartSegment(channel, label, channel_spend, top_y, round(bottom_y - top_y, 1)))
            base += channel_spend
        year, month_number = month.split("-")
        bars.append(
            ChartBar(
                month=month,
                month_label=MONTH_NAMES[int(month_number) - 1],
                year_label=year if index == 0 or month_number == "01" else "",
                x=x,
                center=x + BAR / 2,
                total=total,
                total_label=amount_label(total),
                total_y=y_of(height_of) - 4,
                segments=tuple(segments),
                by_channel=tuple(values),
            )
        )
    overall = sum(totals, ZERO)
    busiest = max(zip(totals, months, strict=True), default=(ZERO, ""))
    summary = (
        f"Net spend from {months[0]} to {months[-1]}: {overall:.2f} {currency} in all"
        + (f"; the highest month {busiest[1]} with {busiest[0]:.2f} {currency}." if busiest[0] > 0 else
           "; no purchases in these months.")
    )  # fmt: skip
    return SpendChart(
        bars=tuple(bars),
        ticks=tuple(ticks),
        channels=channels,
        currency=currency,
        width=AXIS_WIDTH + count * SLOT,
        height=plot_bottom + BOTTOM_MARGIN,
        plot_top=plot_top,
        plot_bottom=plot_bottom,
        plot_left=AXIS_WIDTH,
        bar=BAR,
        total=overall,
        summary=summary,
    )
