"""Retention cohorts: members grouped by when they first bought (or first appeared) and by the
channel that acquired them, and how many came back in each period after. SQL and a plain-Python
reference of the same answer. Pure: no Django, no database driver.

**Definition.** A member's *start* is, by ``basis``:

- ``purchase``: their first order (``members.orders``, any channel and currency, by time then
  id); the acquisition channel is that order's channel;
- ``signup``: their first event (the member row's ``first_event_at``; active members); the
  acquisition channel is the kind of the source that sent it.

Members whose start is in ``[start, end)``, of those an ``AnalysedMembers`` lets in (the
services: consent to ``analytics``), form cohorts by the ``week`` (Monday) or ``month`` of
their start in the platform's time zone, and channel. Period k of a cohort is the k-th week or
month after its own (k = 0: the cohort's). Per cohort and k: ``active`` members with any event
in period k, and ``repurchased`` members with an order in period k placed after their start
(for ``purchase``: another order than the first).
"""

# SQL text built from constants only; every value from a request is a parameter:
# ruff: noqa: S608

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from members.insights.analysed import AnalysedMembers

BASES = ("purchase", "signup")
PERIODS = ("week", "month")
MAX_OFFSETS = 26


class CohortsInvalid(ValueError):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in errors))


@dataclass(frozen=True, slots=True)
class CohortSpec:
    basis: str = "purchase"
    period: str = "month"


@dataclass(frozen=True, slots=True)
class CohortCell:
    cohort: date  # the first day of the cohort's week or month
    channel: str
    offset: int
    active: int
    repurchased: int


def cohorts_parse(*, basis: object, period: object) -> CohortSpec:
    errors = []
    if basis not in BASES:
        errors.append(("basis", f"one of {', '.join(BASES)}"))
    if period not in PERIODS:
        errors.append(("period", f"one of {', '.join(PERIODS)}"))
    if errors:
        raise CohortsInvalid(errors)
    return CohortSpec(str(basis), str(period))


def _offset(period: str, later: str, earlier: str) -> str:
    if period == "week":
        return f"(({later})::date - ({earlier})::date) / 7"
    return (
        f"((extract(year FROM {later}) - extract(year FROM {earlier})) * 12"
        f" + extract(month FROM {later}) - extract(month FROM {earlier}))::int"
    )


def cohorts_sql(
    spec: CohortSpec, *, start: datetime, end: datetime, time_zone: str, analysed: AnalysedMembers
) -> tuple[str, list[Any]]:
    """Rows ``(cohort, channel, offset, members, active, repurchased)``: ``offset`` -1 carries
    the cohort's size in ``members``; the others its cells (only periods with someone back).
    Only members ``analysed`` lets in form cohorts."""
    period = "week" if spec.period == "week" else "month"
    if spec.basis == "purchase":
        starts = (
            "SELECT DISTINCT ON (COALESCE(m.merged_into_id, m.id)) COALESCE(m.merged_into_id, m.id) AS member,"
            " o.placed_at AS at, o.channel FROM members_memberorder o JOIN members_member m ON m.id = o.member_id"
            " WHERE o.placed_at IS NOT NULL ORDER BY COALESCE(m.merged_into_id, m.id), o.placed_at, o.id"
        )
    else:
        starts = (
            "SELECT m.id AS member, m.first_event_at AS at, s.kind AS channel FROM members_member m"
            " JOIN events_source s ON s.id = m.first_event_source_id WHERE m.status = 'active'"
        )

    def local(moment: str) -> str:
        return f"date_trunc('{period}', {moment} AT TIME ZONE %s)"

    k = _offset(period, "p", "cohort")
    analysed_test, analysed_params = analysed.sql("member")
    sql = (
        f"WITH starts AS MATERIALIZED ({starts}), cohorts AS MATERIALIZED ("
        f" SELECT member, at, channel, {local('at')} AS cohort"
        f" FROM starts WHERE at >= %s AND at < %s AND {analysed_test}"
        "), orders AS ("
        f" SELECT DISTINCT member, cohort, channel, {k} AS k FROM (SELECT c.member, c.cohort, c.channel,"
        f" {local('o.placed_at')} AS p"
        " FROM cohorts c JOIN members_member m ON COALESCE(m.merged_into_id, m.id) = c.member"
        " JOIN members_memberorder o ON o.member_id = m.id WHERE o.placed_at > c.at) x"
        "), active AS ("
        f" SELECT DISTINCT member, cohort, channel, {k} AS k FROM (SELECT c.member, c.cohort, c.channel,"
        f" {local('e.timestamp')} AS p"
        " FROM cohorts c JOIN members_member m ON COALESCE(m.merged_into_id, m.id) = c.member"
        " JOIN identity_eventresolution r ON r.member_id = m.id JOIN events_event e ON e.id = r.event_id"
        " WHERE e.timestamp >= c.cohort AT TIME ZONE %s) x"
        ") SELECT cohort::date, channel, -1, count(*), 0, 0 FROM cohorts GROUP BY 1, 2"
        " UNION ALL SELECT cohort::date, channel, k, 0, count(*) FILTER (WHERE a), count(*) FILTER (WHERE NOT a)"
        " FROM (SELECT cohort, channel, k, true AS a FROM active UNION ALL"
        " SELECT cohort, channel, k, false FROM orders) x WHERE k >= 0 AND k <= %s GROUP BY 1, 2, 3"
        " ORDER BY 1, 2, 3"
    )
    params = [time_zone, start, end, *analysed_params, time_zone, time_zone, time_zone, MAX_OFFSETS]
    return sql, params


# --- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    member: int
    at: datetime
    channel: str


def period_start(moment: datetime, period: str, zone: tzinfo) -> date:
    day = moment.astimezone(zone).date()
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_offset(later: date, earlier: date, period: str) -> int:
    if period == "week":
        return (later - earlier).days // 7
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def cohorts_reference(
    spec: CohortSpec,
    *,
    starts: Iterable[Start],
    orders: Iterable[tuple[int, datetime]],
    events: Iterable[tuple[int, datetime]],
    start: datetime,
    end: datetime,
    zone: tzinfo,
) -> tuple[dict[tuple[date, str], int], list[CohortCell]]:
    """Cohort sizes and cells (``cohorts_sql``'s answer) in plain loops, from each member's start
    and their (member, time) orders and events."""
    cohort_of: dict[int, tuple[date, str, datetime]] = {}
    sizes: dict[tuple[date, str], int] = defaultdict(int)
    for s in starts:
        if start <= s.at < end:
            cohort = period_start(s.at, spec.period, zone)
            cohort_of[s.member] = (cohort, s.channel, s.at)
            sizes[(cohort, s.channel)] += 1
    seen: dict[str, set[tuple[date, str, int, int]]] = {"active": set(), "orders": set()}
    for kind, rows in (("orders", orders), ("active", events)):
        for member, at in rows:
            if member not in cohort_of:
                continue
            cohort, channel, first = cohort_of[member]
            if kind == "orders" and at <= first:
                continue
            k = period_offset(period_start(at, spec.period, zone), cohort, spec.period)
            if 0 <= k <= MAX_OFFSETS:
                seen[kind].add((cohort, channel, k, member))
    cells: dict[tuple[date, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for cohort, channel, k, _ in seen["active"]:
        cells[(cohort, channel, k)][0] += 1
    for cohort, channel, k, _ in seen["orders"]:
        cells[(cohort, channel, k)][1] += 1
    return dict(sizes), [CohortCell(c, ch, k, a, o) for (c, ch, k), (a, o) in sorted(cells.items())]
