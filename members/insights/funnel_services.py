"""Funnels, attribution with channel ROI, spend and cohorts against the database: the selectors
that run the pure modules' SQL (``funnels``, ``attribution``, ``cohorts``, ``spend``) and the
services that write saved funnels, spend lines and a funnel step's static segment.

Answers are counts and sums only. The one way a funnel names members is a static segment of a
step's members (``funnel_step_segment``), which then lives under the segment rules: its pages,
exports and feeds check consent when data leaves, as for any segment.

**Consent.** Every answer here is an analysis of members' behaviour, so it reads only the
members whose consent to the purpose ``analytics`` is in force when the query runs
(``analysed_members``, by ``members.consent``'s one definition: granted by their latest
statement; never stated is not granted). The others are in no count, sum, median, group or
step segment, as if they had no events or orders.
"""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from cdp.replica import read_connection
from members.consent.selectors import consent_granted_members_sql, consent_granted_sql
from members.insights import funnel_events
from members.insights.analysed import AnalysedMembers
from members.insights.attribution import AttributionSpec, Credit, attribution_sql, credits_from_rows
from members.insights.cohorts import CohortCell, CohortSpec, cohorts_sql
from members.insights.funnels import (
    FunnelRow,
    FunnelSpec,
    funnel_parse,
    funnel_part_sql,
    funnel_parts_merge,
    funnel_sql,
    funnel_step_members_sql,
    member_ranges,
    summary_answers,
)
from members.insights.models import CampaignSpend, Funnel
from members.insights.spend import RoiRow, SpendLine, roi_table, spend_by, spend_csv_parse
from members.segments.definitions.segments import segment_create
from members.segments.definitions.static_lists import segment_members_set
from members.segments.models import Segment

#: The longest date range one request may cover.
MAX_RANGE_DAYS = 366
#: How long one insight query may run before PostgreSQL stops it (a request, not a batch job).
STATEMENT_TIMEOUT_MS = 60_000
#: Sort and hash memory of one insight query: a funnel sorts every event of its range twice.
#: Measured by bench/funnels.py at 1M events: 68 s with PostgreSQL's default 4 MB (sorts spilled
#: to disk), 28 s with 64 MB, on a two-core machine at load 19.
WORK_MEM = "64MB"


#: The consent purpose that funnels, attribution and cohorts are for (``CONSENT_PURPOSES``).
ANALYTICS = "analytics"


def analysed_members(*, at: datetime | None = None) -> AnalysedMembers:
    """The members an insight may analyse: ``analytics`` granted in force at ``at`` (now)."""
    purposes, at = [ANALYTICS], at or datetime.now(UTC)
    return AnalysedMembers(
        consent_granted_sql, (purposes, at), consent_granted_members_sql(), (purposes, at, purposes)
    )


class InsightRefused(ValueError):
    """Bad input for an insight: ``errors`` lists (field, reason)."""

    def __init__(self, message: str, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class DateRange:
    """Whole days ``[first, last]`` in the platform's time zone, and the instants they span."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), ZoneInfo(settings.TIME_ZONE))

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), ZoneInfo(settings.TIME_ZONE))


def date_range_parse(
    first: object, last: object, *, default_days: int = 30, today: date | None = None
) -> DateRange:
    """``start`` and ``end`` (ISO dates, both included); missing: the last ``default_days`` days."""
    today = today or datetime.now(ZoneInfo(settings.TIME_ZONE)).date()
    errors = []
    days: list[date | None] = []
    for name, value, default in (("end", last, today), ("start", first, None)):
        if value in (None, ""):
            days.append(default)
            continue
        try:
            days.append(date.fromisoformat(str(value)))
        except ValueError:
            errors.append((name, "expected a date such as 2026-11-01"))
            days.append(None)
    if errors:
        raise InsightRefused("Bad date range.", errors)
    end_day = days[0]
    assert end_day is not None
    start_day = days[1] or end_day - timedelta(days=default_days - 1)
    if start_day > end_day:
        raise InsightRefused("Bad date range.", [("start", "must not be after end")])
    if (end_day - start_day).days + 1 > MAX_RANGE_DAYS:
        raise InsightRefused("Bad date range.", [("start", f"a range covers at most {MAX_RANGE_DAYS} days")])
    return DateRange(start_day, end_day)


def _rows(sql: str, params: Sequence[Any]) -> list[tuple]:
    return _rows_of(lambda _reading: (sql, params))


def _rows_of(query: Callable[[BaseDatabaseWrapper], tuple[str, Sequence[Any]]]) -> list[tuple]:
    """The rows of the query ``query`` builds on the connection that runs it, in the
    transaction that runs it (what it checks first is what it then reads)."""
    # On the replica inside ``replica_reads`` (the results views): SET LOCAL is allowed there.
    reading = read_connection()
    with transaction.atomic(using=reading.alias), reading.cursor() as cursor:
        _limits_set(cursor)
        sql, params = query(reading)
        cursor.execute(sql, params)
        return cursor.fetchall()


# --- funnels ------------------------------------------------------------------------------------


def funnel_spec(funnel: Funnel) -> FunnelSpec:
    return funnel_parse(
        steps=funnel.steps,
        window_hours=funnel.window_hours,
        breakdown=funnel.breakdown,
        segments=funnel.segments,
    )


def _segments_check(spec: FunnelSpec) -> None:
    known = set(Segment.objects.filter(key__in=spec.segments).values_list("key", flat=True))
    missing = [key for key in spec.segments if key not in known]
    if missing:
        raise InsightRefused("Unknown segment.", [("segments", f"no segment {missing[0]!r}")])


def funnel_results(*, spec: FunnelSpec, dates: DateRange) -> list[FunnelRow]:
    """The funnel over members whose step 1 falls in ``dates`` (``funnels.funnel_sql``), from
    the per-member summary when it answers the funnel and is up to date, else from the log.

    From the summary, on ``INSIGHTS_FUNNEL_CONNECTIONS`` connections at once, a range of step
    1's member ids each (``funnels.funnel_part_sql``), all reading one snapshot (this
    transaction's, exported to them), their rows merged exactly (``funnels.funnel_parts_merge``).
    Measured by bench/funnels.py: PostgreSQL runs none of this query in parallel workers, and
    its work is per member, so two connections take about half the time on two idle cores.
    Not on a replica (a standby may not export a snapshot), and, inside the caller's
    transaction (tests), the parts run in turn on this connection: another would not see what
    the caller has not committed."""
    reading = read_connection()
    parts = max(1, settings.INSIGHTS_FUNNEL_CONNECTIONS)
    inline = reading.in_atomic_block
    split = parts > 1 and reading.alias == DEFAULT_DB_ALIAS and summary_answers(spec)
    with transaction.atomic(using=reading.alias), reading.cursor() as cursor:
        if split and not inline:
            # Before any query: the snapshot exported below is then the one this reads with.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        _limits_set(cursor)
        from_summary = _from_summary(spec, reading)
        ranges = _step_one_ranges(cursor, spec, parts) if split and from_summary else []
        if len(ranges) < 2:
            cursor.execute(*funnel_sql(
                spec, start=dates.start, end=dates.end, analysed=analysed_members(), from_summary=from_summary
            ))  # fmt: skip
            rows = cursor.fetchall()
        else:
            analysed = analysed_members()  # one instant for every part
            queries = [
                funnel_part_sql(
                    spec,
                    start=dates.start,
                    end=dates.end,
                    analysed=analysed,
                    members=members,
                    pending=part == 0,
                )
                for part, members in enumerate(ranges)
            ]
            rows = _parts_rows(cursor, queries, inline=inline)
    return [
        FunnelRow(step, group, entered, converted, None if median is None else float(median))
        for step, group, entered, converted, median in rows
    ]


def _limits_set(cursor: Any) -> None:
    cursor.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
    cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")


def _step_one_ranges(cursor: Any, spec: FunnelSpec, parts: int) -> list[tuple[int, int]]:
    """Step 1's member ids in the summary (two probes of its primary key's index) cut into
    ``parts`` ranges, or none when they span fewer than ``INSIGHTS_FUNNEL_SPLIT_FROM`` ids."""
    cursor.execute(
        f"SELECT min(member_id), max(member_id) FROM {funnel_events.TABLE} WHERE event = %s",  # noqa: S608
        [spec.steps[0].name],
    )
    first, last = cursor.fetchone()
    if first is None or last - first + 1 < max(1, settings.INSIGHTS_FUNNEL_SPLIT_FROM):
        return []
    return member_ranges(first, last, parts)


def _parts_rows(cursor: Any, queries: list[tuple[str, list[Any]]], *, inline: bool) -> list[tuple]:
    """``funnel_sql``'s rows from the rows of the parts' ``queries``: the first run on
    ``cursor``, the others each on a connection of its own in a thread of its own (in turn on
    ``cursor`` when ``inline``), as of ``cursor``'s transaction's snapshot."""
    if inline:
        found = []
        for sql, params in queries:
            cursor.execute(sql, params)
            found.append(cursor.fetchall())
    else:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        others = [_Part(cursor.db.alias, snapshot, sql, params) for sql, params in queries[1:]]
        for other in others:
            other.start()
        try:
            cursor.execute(*queries[0])
            found = [cursor.fetchall()]
        finally:
            for other in others:
                other.join()
        found.extend(other.rows() for other in others)
    merged = funnel_parts_merge(found)
    # Groups in the order funnel_sql's ORDER BY gives them: the database's collation.
    cursor.execute("SELECT g FROM unnest(%s::text[]) AS u(g) ORDER BY g", [sorted({g for _, g in merged})])
    order = {group: place for place, (group,) in enumerate(cursor.fetchall())}
    return [
        (step, group, *merged[(step, group)])
        for step, group in sorted(merged, key=lambda c: (c[0], order[c[1]]))
    ]


class _Part(threading.Thread):
    """One part of a funnel (``funnel_results``) on a connection of its own to ``alias``, in a
    transaction that reads the exported ``snapshot``."""

    def __init__(self, alias: str, snapshot: str, sql: str, params: list[Any]) -> None:
        super().__init__(name="insights-funnel-part")
        self.alias, self.snapshot, self.sql, self.params = alias, snapshot, sql, params
        self._rows: list[tuple] = []
        self._error: BaseException | None = None

    def run(self) -> None:
        database = connections[self.alias]  # this thread's own connection
        try:
            with transaction.atomic(using=self.alias), database.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute("SET TRANSACTION SNAPSHOT %s", [self.snapshot])
                _limits_set(cursor)
                cursor.execute(self.sql, self.params)
                self._rows = cursor.fetchall()
        except BaseException as error:  # raised again by the caller, in its thread
            self._error = error
        finally:
            database.close()

    def rows(self) -> list[tuple]:
        if self._error is not None:
            raise self._error
        return self._rows


def _from_summary(spec: FunnelSpec, reading: BaseDatabaseWrapper) -> bool:
    """Whether this funnel reads the summary (``funnel_events``): allowed by settings, a funnel
    whose steps test only names, channels and stores, and the summary up to date, as seen by
    the transaction that will read it."""
    if not settings.INSIGHTS_FUNNEL_SUMMARY or not summary_answers(spec):
        return False
    with reading.cursor() as cursor:
        cursor.execute(funnel_events.READY_SQL)
        return bool(cursor.fetchone()[0])


@transaction.atomic
def funnel_save(
    *, funnel: Funnel | None, name: str, description: str, steps: object, window_hours: object,
    breakdown: object, segments: object, by: User | None,
) -> Funnel:  # fmt: skip
    """Create (``funnel`` None) or replace a saved funnel, its definition checked first
    (``funnels.FunnelInvalid``, ``InsightRefused`` for an unknown segment)."""
    spec = funnel_parse(steps=steps, window_hours=window_hours, breakdown=breakdown, segments=segments or [])
    _segments_check(spec)
    name = name.strip()
    if not name or len(name) > 200:
        raise InsightRefused("Bad name.", [("name", "1 to 200 characters")])
    namesakes = Funnel.objects.filter(name=name)
    if funnel is not None:
        namesakes = namesakes.exclude(pk=funnel.pk)
    if namesakes.exists():
        raise InsightRefused("Name taken.", [("name", "another funnel has this name")])
    funnel = funnel or Funnel(created_by=by)
    funnel.name, funnel.description = name, description[:500]
    funnel.steps, funnel.window_hours = steps, int(spec.window.total_seconds() // 3600)
    funnel.breakdown, funnel.segments = spec.breakdown, list(spec.segments)
    funnel.save()
    return funnel


@transaction.atomic
def funnel_step_segment(
    *, spec: FunnelSpec, dates: DateRange, step: int, dropped: bool, key: str, name: str, by: User | None,
    channel: str,
) -> Segment:  # fmt: skip
    """A new static segment of the members who reached ``step`` (``dropped``: and no further):
    the only list of members a funnel gives, under the segment rules and consent from then on."""
    if not 1 <= step <= len(spec.steps):
        raise InsightRefused("Bad step.", [("step", f"a step from 1 to {len(spec.steps)}")])

    def query(reading: BaseDatabaseWrapper) -> tuple[str, list[Any]]:
        return funnel_step_members_sql(
            spec, start=dates.start, end=dates.end, step=step, dropped=dropped, analysed=analysed_members(),
            from_summary=_from_summary(spec, reading),
        )  # fmt: skip

    members = [row[0] for row in _rows_of(query)]
    segment = segment_create(key=key, name=name, kind=Segment.Kind.STATIC, by=by, channel=channel, description=(
        f"Members at funnel step {step}{' who went no further' if dropped else ''}, {dates.first}..{dates.last}"
    )[:500])  # fmt: skip
    return segment_members_set(segment=segment, member_ids=members).segment


# --- attribution and ROI ------------------------------------------------------------------------


def attribution_results(
    *, spec: AttributionSpec, dates: DateRange, currency: str | None = None
) -> list[Credit]:
    sql, params = attribution_sql(
        spec,
        start=dates.start,
        end=dates.end,
        currency=currency or settings.CDP_CURRENCY,
        analysed=analysed_members(),
    )
    return credits_from_rows(_rows(sql, params))


def spend_lines(*, dates: DateRange | None = None) -> list[SpendLine]:
    rows = CampaignSpend.objects.all()
    if dates is not None:
        rows = rows.filter(period_start__lte=dates.last, period_end__gte=dates.first)
    return [
        SpendLine(r.channel, r.campaign, r.period_start, r.period_end, r.amount, r.currency) for r in rows
    ]


def roi_results(*, spec: AttributionSpec, dates: DateRange, dimension: str) -> list[RoiRow]:
    """Spend beside each model's credited revenue per channel or campaign, in the platform's
    currency (spend in other currencies is left out)."""
    if dimension not in ("channel", "campaign"):
        raise InsightRefused("Bad dimension.", [("by", "one of channel, campaign")])
    credits = attribution_results(spec=AttributionSpec(spec.lookback, spec.half_life, dimension), dates=dates)
    revenue = {credit.group: credit.value for credit in credits}
    spends = spend_by(
        spend_lines(dates=dates), dimension=dimension, first=dates.first, last=dates.last,
        currency=settings.CDP_CURRENCY,
    )  # fmt: skip
    return roi_table(revenue, spends)


@transaction.atomic
def spend_add(*, lines: Sequence[SpendLine], by: User | None) -> list[CampaignSpend]:
    """Record spend lines (all or none)."""
    return CampaignSpend.objects.bulk_create(
        CampaignSpend(
            channel=line.channel,
            campaign=line.campaign,
            period_start=line.period_start,
            period_end=line.period_end,
            amount=line.amount,
            currency=line.currency,
            created_by=by,
        )
        for line in lines
    )


def spend_upload(*, text: str, by: User | None) -> list[CampaignSpend]:
    """Spend lines from a CSV (``spend.spend_csv_parse``); a bad line refuses the whole file."""
    return spend_add(lines=spend_csv_parse(text, default_currency=settings.CDP_CURRENCY), by=by)


# --- cohorts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cohort:
    cohort: date
    channel: str
    members: int
    cells: dict[int, CohortCell]


def cohorts_results(*, spec: CohortSpec, dates: DateRange) -> list[Cohort]:
    sql, params = cohorts_sql(
        spec, start=dates.start, end=dates.end, time_zone=settings.TIME_ZONE, analysed=analysed_members()
    )
    cohorts: dict[tuple[date, str], Cohort] = {}
    for cohort, channel, offset, members, active, repurchased in _rows(sql, params):
        if offset < 0:
            cohorts[(cohort, channel)] = Cohort(cohort, channel, members, {})
        else:
            cohorts[(cohort, channel)].cells[offset] = CohortCell(
                cohort, channel, offset, active, repurchased
            )
    return sorted(cohorts.values(), key=lambda c: (c.cohort, c.channel))


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"
