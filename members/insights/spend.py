"""Marketing spend and channel ROI: spend lines as entered (API, console, CSV), spend falling in
a date range, and ROI / ROAS beside each attribution model's credited revenue. Pure: no Django.

A spend line is an amount spent on a channel (``pos``, ``app``, ``mini_program``, ``web``) and
optionally a campaign (the name its touches carry, ``context.campaign.name``) over a period of
whole days ``[period_start, period_end]``, inclusive. Spend in a date range is each line's
amount prorated by the days of its period inside the range (a month's spend, asked for its
first half, counts half). ROAS = credited revenue / spend; ROI = (credited revenue - spend) /
spend; both are None without spend.
"""

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from members.insights.attribution import MODELS

CHANNELS = ("pos", "app", "mini_program", "web")
CSV_COLUMNS = ("channel", "campaign", "period_start", "period_end", "amount", "currency")
MAX_AMOUNT = Decimal("1000000000000")
MAX_ROWS = 10_000
CENT = Decimal("0.01")


class SpendInvalid(ValueError):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in errors))


@dataclass(frozen=True, slots=True)
class SpendLine:
    channel: str
    campaign: str
    period_start: date
    period_end: date
    amount: Decimal
    currency: str


def spend_line_check(data: Mapping[str, object], *, path: str = "", default_currency: str) -> SpendLine:
    """One spend line from its fields (text or typed), or ``SpendInvalid`` naming each bad field."""
    at = lambda name: f"{path}.{name}" if path else name  # noqa: E731
    errors = []
    channel = str(data.get("channel") or "")
    if channel not in CHANNELS:
        errors.append((at("channel"), f"one of {', '.join(CHANNELS)}"))
    campaign = str(data.get("campaign") or "").strip()
    if len(campaign) > 200 or "\x00" in campaign:
        errors.append((at("campaign"), "at most 200 characters"))
    days: dict[str, date | None] = {}
    for name in ("period_start", "period_end"):
        value = data.get(name)
        try:
            days[name] = value if isinstance(value, date) else date.fromisoformat(str(value or ""))
        except ValueError:
            errors.append((at(name), "expected a date such as 2026-11-01"))
            days[name] = None
    first, last = days["period_start"], days["period_end"]
    if first and last and last < first:
        errors.append((at("period_end"), "must not be before period_start"))
    try:
        amount = Decimal(str(data.get("amount", "")).strip())
        if not amount.is_finite() or amount < 0 or amount >= MAX_AMOUNT or amount != amount.quantize(CENT):
            raise InvalidOperation
    except InvalidOperation:
        errors.append((at("amount"), "expected an amount of 0 or more with at most 2 decimals"))
        amount = Decimal(0)
    currency = str(data.get("currency") or default_currency).strip().upper()
    if len(currency) != 3 or not currency.isalpha() or not currency.isascii():
        errors.append((at("currency"), "a three-letter ISO 4217 code, e.g. CNY"))
    if errors:
        raise SpendInvalid(errors)
    assert first is not None
    assert last is not None
    return SpendLine(channel, campaign, first, last, amount, currency)


def spend_csv_parse(text: str, *, default_currency: str) -> list[SpendLine]:
    """Spend lines from a CSV with a header naming ``CSV_COLUMNS`` (``campaign`` and ``currency``
    may be left out); every bad line reported by its number (the header is line 1)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or ()]
    missing = [name for name in ("channel", "period_start", "period_end", "amount") if name not in header]
    unknown = [name for name in header if name not in CSV_COLUMNS]
    if missing or unknown:
        reasons = [f"missing column {name}" for name in missing] + [
            f"unknown column {name}" for name in unknown
        ]
        raise SpendInvalid([("line 1", "; ".join(reasons) + f" (columns: {', '.join(CSV_COLUMNS)})")])
    reader.fieldnames = header
    lines, errors = [], []
    for number, row in enumerate(reader, start=2):
        if number - 1 > MAX_ROWS:
            raise SpendInvalid([("file", f"at most {MAX_ROWS} lines")])
        try:
            lines.append(spend_line_check(row, path=f"line {number}", default_currency=default_currency))
        except SpendInvalid as invalid:
            errors.extend(invalid.errors)
    if errors:
        raise SpendInvalid(errors)
    if not lines:
        raise SpendInvalid([("file", "no spend lines")])
    return lines


def spend_in_range(line: SpendLine, first: date, last: date) -> Decimal:
    """The part of ``line`` spent on the days ``[first, last]``, prorated by days."""
    overlap = (min(line.period_end, last) - max(line.period_start, first)).days + 1
    if overlap <= 0:
        return Decimal(0)
    days = (line.period_end - line.period_start).days + 1
    return line.amount * overlap / days


@dataclass(frozen=True, slots=True)
class RoiRow:
    """Spend and, per model, credited revenue, ROAS and ROI of one channel or campaign."""

    group: str
    spend: Decimal
    revenue: dict[str, Decimal]
    roas: dict[str, Decimal | None]
    roi: dict[str, Decimal | None]


def roi_table(
    revenue: Mapping[str, Mapping[str, Decimal]], spends: Iterable[tuple[str, Decimal]]
) -> list[RoiRow]:
    """Rows for every group with revenue or spend: ``revenue`` per group per model (from the
    attribution), ``spends`` (group, amount) pairs already in range and currency."""
    spent: dict[str, Decimal] = defaultdict(Decimal)
    for group, amount in spends:
        spent[group] += amount
    rows = []
    for group in sorted(set(revenue) | set(spent)):
        money = spent.get(group, Decimal(0)).quantize(CENT, ROUND_HALF_UP)
        credited = {m: Decimal(revenue.get(group, {}).get(m, 0)).quantize(CENT) for m in MODELS}
        roas = {m: (credited[m] / money).quantize(CENT, ROUND_HALF_UP) if money else None for m in MODELS}
        roi = {
            m: ((credited[m] - money) / money).quantize(CENT, ROUND_HALF_UP) if money else None
            for m in MODELS
        }
        rows.append(RoiRow(group, money, credited, roas, roi))
    return rows


def spend_by(
    lines: Sequence[SpendLine], *, dimension: str, first: date, last: date, currency: str
) -> list[tuple[str, Decimal]]:
    """(channel or campaign, spend in ``[first, last]``) for each line in ``currency``."""
    return [
        (line.channel if dimension == "channel" else line.campaign, spend_in_range(line, first, last))
        for line in lines
        if line.currency == currency
    ]
