"""The built-in alert conditions (``cdp.alerting``'s contract), and the registry that adds
the ones other apps provide (``ALERT_CONDITIONS``: name -> dotted path).

Each reads through the owning app's selectors, one cheap query or two; parameters default to
the values the README's Operations section gives.
"""

from datetime import time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from cdp.alerting import Check, Condition, ConditionInvalid, Finding
from cdp.models import AuditEntry
from cdp.selectors import audit_bursts
from events.metrics import pipeline_backlog
from events.parking import parked_events_count
from events.selectors import source_names, store_sources
from members.insights import kpis
from members.insights.selectors import kpi_series
from members.parking import parked_members_count
from members.privacy.selectors import retention_last_applied
from members.segments.selectors import segments_failing, webhooks_inactive
from ops.traffic import last_event_at, traffic_since

# -- red ------------------------------------------------------------------------------------------


def backlog_age(check: Check) -> list[Finding]:
    """The oldest event waiting for the pipeline waited longer than ``minutes`` (5)."""
    limit = check.number("minutes", 5) * 60
    depth, oldest = pipeline_backlog()
    if oldest is None:
        return []
    age = (check.now - oldest).total_seconds()
    if age <= limit:
        return []
    return [Finding("pipeline", age, f"Oldest waiting event is {age / 60:.1f} min old ({depth} waiting)")]


def _database_reachable() -> str:
    """A fresh connection (not the pool's), as a new request would make one; '' when it works."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params["connect_timeout"] = 3
    try:
        with psycopg.connect(**params) as probe:
            probe.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ""


def _broker_reachable() -> str:
    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        return str(exc) or type(exc).__name__
    return ""


def services_unreachable(check: Check) -> list[Finding]:
    """PostgreSQL or the broker (Redis) cannot be reached."""
    findings = []
    for subject, error in (("database", _database_reachable()), ("broker", _broker_reachable())):
        if error:
            findings.append(Finding(subject, 1, f"The {subject} cannot be reached: {error}"[:500]))
    return findings


def parked(check: Check) -> list[Finding]:
    """More than ``threshold`` (0) events or members are parked (a pipeline stage failed on them)."""
    threshold = check.number("threshold", 0)
    counts = {"events": parked_events_count(), "members": parked_members_count()}
    return [
        Finding(f"parked {kind}", n, f"{n} {kind[:-1] if n == 1 else kind} parked: replay after a fix")
        for kind, n in counts.items()
        if n > threshold
    ]


#: What a leak through the staff tools looks like in the audit log.
BURST_ACTIONS = (
    AuditEntry.Action.VIEW_CONTACT_DETAILS,
    AuditEntry.Action.EXPORT_SEGMENT,
    AuditEntry.Action.EXPORT_MEMBER,
    AuditEntry.Action.EXPORT_AUDIT,
)


def staff_burst(check: Check) -> list[Finding]:
    """One staff user viewed contact details or exported more than ``entries`` (100) times in
    the window, or named more than ``members`` (1000) members in those entries."""
    rows = audit_bursts(
        since=check.now - check.window,
        actions=BURST_ACTIONS,
        entries=int(check.number("entries", 100)),
        members=int(check.number("members", 1000)),
    )
    return [
        Finding(
            f"user {actor}",
            entries,
            f"{actor}: {entries} views/exports naming {members} members in the window",
        )
        for actor, entries, members in rows
    ]


# -- yellow ---------------------------------------------------------------------------------------


def _clock(check: Check, name: str, default: str) -> time:
    text = check.params.get(name, default)
    try:
        return time.fromisoformat(str(text))
    except ValueError as exc:
        raise ConditionInvalid(f"params.{name} must be a time of day like 10:00, not {text!r}") from exc


def silent_tills(check: Check) -> list[Finding] | None:
    """A store's till source sent nothing for the window while the store was open (``open``
    10:00 to ``close`` 22:00, in ``DJANGO_TIME_ZONE``). Only once the window lies wholly within
    opening hours: the first hour after opening is no silence, and outside opening hours
    nothing can be told (``None``: an alert open at closing time stays open until the till
    is heard from or someone resolves it)."""
    opens, closes = _clock(check, "open", "10:00"), _clock(check, "close", "22:00")
    zone = ZoneInfo(settings.TIME_ZONE)
    local_now = check.now.astimezone(zone)
    local_start = (check.now - check.window).astimezone(zone)
    if local_start.date() != local_now.date() or not (
        opens <= local_start.time() and local_now.time() <= closes
    ):
        return None
    sources = store_sources()
    seen = last_event_at([source_id for source_id, _, _ in sources])
    since = check.now - check.window
    findings = []
    for source_id, name, store in sources:
        last = seen.get(source_id)
        if last is None or last < since:
            quiet = "never" if last is None else f"since {last.astimezone(zone):%H:%M}"
            minutes = (
                check.window.total_seconds() / 60 if last is None else (check.now - last).total_seconds() / 60
            )
            findings.append(Finding(f"store {store}", minutes, f"{name} (store {store}): no event {quiet}"))
    return findings


def rejected_share(check: Check) -> list[Finding]:
    """A source's rejected events were more than ``share`` (0.05) of what it sent in the window
    (counted by the hour), once it sent at least ``min_events`` (100)."""
    share, minimum = check.number("share", 0.05), check.number("min_events", 100)
    findings = []
    traffic = traffic_since(since=check.now - check.window)
    names = source_names(traffic)
    for source_id, (accepted, rejected, _) in sorted(traffic.items()):
        total = accepted + rejected
        if total >= minimum and total and rejected / total > share:
            name = names.get(source_id, f"source {source_id}")
            findings.append(
                Finding(
                    f"source {source_id}",
                    rejected / total,
                    f"{name}: {rejected} of {total} events rejected ({rejected / total:.1%})",
                )
            )
    return findings


#: The KPIs whose value for a day goes on rising for this many days after it (a purchase within
#: the conversion window still counts): compared once the window has closed, as an open day
#: against closed ones would read as a drop every day.
KPI_SETTLING_DAYS = {
    "online_to_store": kpis.CONVERSION_WINDOW_DAYS,
    "store_to_online": kpis.CONVERSION_WINDOW_DAYS,
}
#: Trailing baseline by period: the previous 28 days, or the previous 4 weeks.
KPI_BASELINE_PERIODS = {kpis.Period.DAY: 28, kpis.Period.WEEK: 4}


def _kpi_periods(check: Check) -> tuple[kpis.Period, int]:
    text = check.params.get("period", "day")
    if text not in KPI_BASELINE_PERIODS:
        raise ConditionInvalid(
            f"params.period must be one of {', '.join(KPI_BASELINE_PERIODS)}, not {text!r}"
        )
    period = kpis.Period(text)
    baseline = int(check.number("baseline", KPI_BASELINE_PERIODS[period]))
    if baseline < 1:
        raise ConditionInvalid("params.baseline must be at least 1 period")
    return period, baseline


def _kpi_keys(check: Check) -> list[str]:
    keys = check.params.get("kpis", ["online_to_store", "repurchase_90", "sales"])
    if not isinstance(keys, list) or not keys or any(k not in kpis.KPI_BY_KEY for k in keys):
        raise ConditionInvalid(f"params.kpis must be a list of KPI keys ({', '.join(kpis.KPI_BY_KEY)})")
    return keys


def _kpi_shown(kpi: kpis.Kpi, value: Decimal) -> str:
    if kpi.percent:
        return f"{value:.1%}"
    return f"{value:,.2f}" if kpi.money else f"{value:,.0f}"


def kpi_drop(check: Check) -> list[Finding]:
    """A KPI fell more than ``drop`` (0.2) below its trailing baseline: the last complete
    ``period`` (``day``, in ``TIME_ZONE``, or ISO ``week``) against the mean of its value over the
    ``baseline`` periods before it (28 days, 4 weeks). ``kpis`` are the insights board's keys
    (online-to-store conversion, 90-day repurchase and net sales by default); a conversion is
    compared once its window has closed (``KPI_SETTLING_DAYS``). Read from the daily rollups
    (``members.insights``), one query per KPI. A KPI without a value for the period, or for
    fewer than half of the baseline's periods, or with a baseline of zero, is not judged."""
    drop = check.number("drop", 0.2)
    period, baseline = _kpi_periods(check)
    today = timezone.localdate(check.now)
    findings = []
    for key in _kpi_keys(check):
        kpi = kpis.KPI_BY_KEY[key]
        latest = today - timedelta(days=1 + KPI_SETTLING_DAYS.get(key, 0))  # the last day closed
        end = (
            latest
            if period == kpis.Period.DAY
            else kpis.period_start(latest + timedelta(days=1), period) - timedelta(days=1)
        )
        first = kpis.period_start(end, period) - (
            timedelta(days=baseline) if period == kpis.Period.DAY else timedelta(weeks=baseline)
        )
        *before, current = kpi_series(kpi=kpi, start=first, end=end, interval=period)
        values = [point.value for point in before if point.value is not None]
        if current.value is None or len(values) * 2 < len(before):
            continue
        mean = sum(values, Decimal(0)) / len(values)
        if mean <= 0:
            continue
        fall = 1 - current.value / mean
        if fall > drop:
            span = f"{current.start}" if period == kpis.Period.DAY else f"week of {current.start}"
            findings.append(
                Finding(
                    f"kpi {key}",
                    float(fall),
                    f"{kpi.label} {span}: {_kpi_shown(kpi, current.value)}, {fall:.0%} below the mean of the "
                    f"previous {len(before)} {period}s ({_kpi_shown(kpi, mean)})",
                )
            )
    return findings


# -- blue -----------------------------------------------------------------------------------------


def webhook_off(check: Check) -> list[Finding]:
    """A segment webhook is turned off (failures, 410 Gone, or staff)."""
    return [
        Finding(
            f"webhook {pk}",
            1,
            f"Webhook {pk} of segment {segment} to {url} is off: {why or 'turned off'}"[:500],
        )
        for pk, segment, url, why in webhooks_inactive()
    ]


def segment_failing(check: Check) -> list[Finding]:
    """A segment's last compute failed."""
    return [
        Finding(f"segment {key}", 1, f"Segment {key} failed to compute: {error}"[:500])
        for _, key, error in segments_failing()
    ]


def retention_behind(check: Check) -> list[Finding]:
    """No retention run finished within ``hours`` (26: the nightly job, with slack)."""
    hours = check.number("hours", 26)
    last = retention_last_applied()
    if last is not None and check.now - last <= timedelta(hours=hours):
        return []
    late = (check.now - last).total_seconds() / 3600 if last else hours
    said = f"last finished {last:%Y-%m-%d %H:%M} UTC" if last else "never ran"
    return [Finding("retention", late, f"Retention is behind: {said}")]


_SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() AND pg_total_relation_size(c.oid) > %s
ORDER BY 2 DESC
"""


def table_size(check: Check) -> list[Finding]:
    """A table (with its indexes) or the whole database passed ``share`` (0.8) of its limit:
    ``table_bytes`` for any one table, ``database_bytes`` for the database (0: not checked)."""
    share = check.number("share", 0.8)
    table_limit, database_limit = check.number("table_bytes", 0), check.number("database_bytes", 0)
    findings = []
    with connection.cursor() as cursor:
        if table_limit:
            cursor.execute(_SIZES, [int(table_limit * share)])
            findings += [
                Finding(
                    f"table {name}",
                    size,
                    f"Table {name} is {size / 2**30:.2f} GiB, {size / table_limit:.0%} of its limit",
                )
                for name, size in cursor.fetchall()
            ]
        if database_limit:
            cursor.execute("SELECT pg_database_size(current_database())")
            size = cursor.fetchone()[0]
            if size > database_limit * share:
                findings.append(
                    Finding(
                        "database",
                        size,
                        f"The database is {size / 2**30:.2f} GiB, {size / database_limit:.0%} of its limit",
                    )
                )
    return findings


BUILT_IN: dict[str, Condition] = {
    "backlog_age": backlog_age,
    "services_unreachable": services_unreachable,
    "parked": parked,
    "staff_burst": staff_burst,
    "kpi_drop": kpi_drop,
    "silent_tills": silent_tills,
    "rejected_share": rejected_share,
    "webhook_off": webhook_off,
    "segment_failing": segment_failing,
    "retention_behind": retention_behind,
    "table_size": table_size,
}


def conditions() -> dict[str, Condition]:
    """Every condition a rule may name: the built-in ones and ``ALERT_CONDITIONS``'s."""
    extra = {name: import_string(path) for name, path in settings.ALERT_CONDITIONS.items()}
    return {**BUILT_IN, **extra}
