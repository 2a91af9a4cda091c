"""Cross-channel funnels: what a funnel is, its SQL, and a plain-Python reference of the same
answer. Pure: no Django, no database driver (the service runs the SQL, ``funnels_service``).

A funnel is an ordered list of steps, each an event name and equalities on ``channel``,
``store_code`` or ``properties.<name>`` (the rule language's ``where``, docs/rules.md), a
conversion window, and an optional breakdown. Events count per *resolved* member (an event's
member after identity resolution, an absorbed member read as its survivor), so a member who
viewed a product in the app and bought it in a store converts.

**Definition** (the SQL and ``funnel_reference`` both implement exactly this):

- A member's events are ordered by (time, event id). An *attempt* starts at an event passing
  step 1 stamped in ``[start, end)``. From it, step k+1 is the member's first event after the
  step-k event (strictly later in that order: one event never fills two steps) passing step
  k+1, and it counts only if stamped at most ``window`` after the attempt's step-1 event; the
  attempt's *depth* is how many steps it fills in a row. Taking the earliest event at each step
  is never worse: any later choice leaves fewer events after it.
- A member's funnel is their deepest attempt; of equally deep ones, the earliest.
- Per step k and breakdown group g: ``entered`` members whose attempt reached step k (with
  group g there), ``converted`` those of them who also reached step k+1, and the median time
  (seconds) from step k to step k+1 among those.
- Only the members an ``AnalysedMembers`` lets in count (the services: those whose consent to
  ``analytics`` is in force, docs/insights-funnels.md); the others' events are not read into
  any answer, and the reference is given only the analysed members' events.
- Breakdown groups: ``channel`` / ``store``: the channel / store code of the member's step-k
  event (a step done in the app counts under app at that step); ``tier``: the member's loyalty
  tier now ("" without one); ``segment``: each of the named segments the member is in now (a
  member in two is counted in both) or "" when in none of them.
"""

# SQL text built from constants only; every value from a request is a parameter:
# ruff: noqa: S608

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from members.insights.analysed import AnalysedMembers
from members.segments.compile import value_equals_sql
from members.segments.rules.interpret import EventFact, event_passes
from members.segments.rules.parse import RuleInvalid, rule_parse
from members.segments.rules.syntax import Did, EventFilter

MAX_STEPS = 8
MAX_WINDOW_HOURS = 90 * 24
MAX_SEGMENTS = 10
BREAKDOWNS = ("", "channel", "store", "tier", "segment")
#: Breakdowns whose group is that of each step's event (the others are the member's own).
STEP_BREAKDOWNS = ("channel", "store")


class FunnelInvalid(ValueError):
    """A funnel definition that is not valid: ``errors`` lists every problem as (path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '(funnel)'}: {reason}" for path, reason in errors))


@dataclass(frozen=True, slots=True)
class FunnelSpec:
    steps: tuple[EventFilter, ...]
    window: timedelta
    breakdown: str = ""
    segments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FunnelRow:
    """One step of the answer for one breakdown group ("" without a breakdown)."""

    step: int  # from 1
    group: str
    entered: int
    converted: int  # of them, reached the next step (0 at the last step)
    median_seconds: float | None  # to the next step, among those who reached it


def funnel_parse(
    *, steps: object, window_hours: object, breakdown: object = "", segments: object = ()
) -> FunnelSpec:
    """A funnel from its JSON parts, or ``FunnelInvalid`` naming every problem by its path
    (``steps[1].where.channel``). Each step is parsed by the rule language's own parser."""
    errors: list[tuple[str, str]] = []
    parsed: list[EventFilter] = []
    if not isinstance(steps, list) or not 2 <= len(steps) <= MAX_STEPS:
        errors.append(("steps", f"expected a list of 2 to {MAX_STEPS} steps"))
        steps = []
    for index, step in enumerate(steps):
        here = f"steps[{index}]"
        if not isinstance(step, dict):
            errors.append((here, 'expected an object such as {"event": "Product Viewed", "where": {...}}'))
            continue
        unknown = sorted(set(step) - {"event", "where"})
        if unknown:
            errors.append((f"{here}.{unknown[0]}", "unknown key; expected event, where"))
            continue
        try:
            condition = rule_parse(
                {"event": step.get("event"), **({"where": step["where"]} if "where" in step else {})}
            )
        except RuleInvalid as invalid:
            errors.extend((f"{here}.{path}" if path else here, reason) for path, reason in invalid.errors)
            continue
        assert isinstance(condition, Did)  # an {"event": ...} condition parses to Did
        parsed.append(condition.event)
    if (
        isinstance(window_hours, bool)
        or not isinstance(window_hours, int)
        or not 1 <= window_hours <= MAX_WINDOW_HOURS
    ):
        errors.append(("window_hours", f"expected a whole number of hours from 1 to {MAX_WINDOW_HOURS}"))
        window_hours = 1
    if breakdown not in BREAKDOWNS:
        errors.append(
            (
                "breakdown",
                f"unknown breakdown {breakdown!r}; one of {', '.join(b or '(none)' for b in BREAKDOWNS)}",
            )
        )
    keys: tuple[str, ...] = ()
    if breakdown == "segment":
        if (
            not isinstance(segments, list | tuple)
            or not 1 <= len(segments) <= MAX_SEGMENTS
            or not all(isinstance(k, str) and k for k in segments)
        ):
            errors.append(("segments", f"a segment breakdown names 1 to {MAX_SEGMENTS} segment keys"))
        else:
            keys = tuple(dict.fromkeys(segments))
    elif segments:
        errors.append(("segments", "only a segment breakdown names segments"))
    if errors:
        raise FunnelInvalid(errors)
    return FunnelSpec(tuple(parsed), timedelta(hours=window_hours), str(breakdown), keys)


# --- SQL ----------------------------------------------------------------------------------------


def _step_test(step: EventFilter, columns: Mapping[str, str], params: list[Any]) -> str:
    tests = ["e.event = %s"]
    params.append(step.name)
    for key, expected in step.where:
        if key == "channel":
            tests.append("e.channel = %s")
            params.append(expected)
        elif key == "store_code":
            tests.append("e.store_code = %s")
            params.append(expected)
        else:
            sql, more = value_equals_sql(columns[key], expected)
            tests.append(f"coalesce({sql}, false)")
            params.extend(more)
    return "(" + " AND ".join(tests) + ")"


def funnel_members_sql(
    spec: FunnelSpec, *, start: datetime, end: datetime, analysed: AnalysedMembers, step_groups: bool = True,
    only_pending: bool = False,
) -> tuple[str, list[Any]]:  # fmt: skip
    """A query of one row per analysed member with an attempt: ``member, depth, t1..tN`` (the
    times of the steps filled, NULL beyond the depth), ``c1..cN`` (their channels) and
    ``s1..sN`` (their store codes; with ``step_groups`` only, else NULL), per the module's
    definition. A member ``analysed`` leaves out is in no row.

    One pass over the events of ``[start, end + window)`` naming a step, sorted once per member
    by (time, id) descending, then only window functions over that one order: no join per step.
    The next event passing step k after an event is the nearest of the rows before it in this
    order: a running aggregate over the rows before it (a frame whose start never moves, so
    each row is added once, linear). That next event only moves later as the event does, so
    the continuation (steps k+1..N) of the next step-k event is the running ``min`` of the
    continuations' times of the step-k events before it. One level of windows per step, from
    the last step back to step 2, gives every step-1 event its whole chain; after level k only
    the events of steps 1..k-1 are read again, so each level reads fewer rows than the last.

    With ``step_groups`` the chain's events themselves are needed (their channels and stores):
    each event gets its rank ``rd`` in that order (1: the member's latest), the chain carries
    the running ``max`` of ranks beside the times, and the chain's events are found again by
    rank among every event's row (kept then through all levels).

    ``only_pending``: the members waiting in the rollup job's queue only (``PENDING``), their
    events found through their resolutions (an index walk per member), not by a scan: the part
    of a funnel read from the summary whose summaries may be behind."""
    n = len(spec.steps)
    params: list[Any] = []
    keys = sorted({key for step in spec.steps for key, _ in step.where if key.startswith("properties.")})
    columns = {key: f"e.p{i}" for i, key in enumerate(keys)}
    extract = "".join(f", e.properties -> %s AS p{i}" for i in range(len(keys)))
    params.extend(key[len("properties.") :] for key in keys)
    params.extend([start, end + spec.window, sorted({step.name for step in spec.steps})])
    flags = ", ".join(f"{_step_test(step, columns, params)} AS m{k}" for k, step in enumerate(spec.steps, 1))
    order = "PARTITION BY member ORDER BY at DESC, id DESC"
    before = f" WINDOW w AS ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    base = "member, id, at" + (", rd, channel, store_code" if step_groups else "")
    any_step = " OR ".join(f"m{k}" for k in range(1, n + 1))
    level = (
        f"SELECT *, row_number() OVER ({order}) AS rd FROM flagged WHERE {any_step}"
        if step_groups
        else f"SELECT * FROM flagged WHERE {any_step}"
    )
    # Level k, from N down to 2: t{k}_j (and r{k}_j with step_groups, j = k..N) are the time
    # (rank) of the step-j event of the chain that starts at the next step-k event after the row.
    for k in range(n, 1, -1):
        chain = [f"min(CASE WHEN m{k} THEN at END) OVER w AS t{k}_{k}"]
        chain.extend(
            f"min(CASE WHEN m{k} THEN t{k + 1}_{j} END) OVER w AS t{k}_{j}" for j in range(k + 1, n + 1)
        )
        if step_groups:
            chain.append(f"max(CASE WHEN m{k} THEN rd END) OVER w AS r{k}_{k}")
            chain.extend(
                f"max(CASE WHEN m{k} THEN r{k + 1}_{j} END) OVER w AS r{k}_{j}" for j in range(k + 1, n + 1)
            )
        kept = "".join(f", m{j}" for j in range(1, k))
        # Rows that pass none of steps 1..k are read by no lower level (a filter keeps the
        # order, so no level sorts again); with step_groups every row is kept, to be found by rank.
        below = "" if step_groups or k == n else f" WHERE {' OR '.join(f'm{j}' for j in range(1, k + 1))}"
        level = f"SELECT {base}{kept}, {', '.join(chain)} FROM ({level}) AS l{k}{below}{before}"
    # A step counts while its event is within the window of step 1; the chain's times only grow,
    # so the steps counted run on from step 2 without a gap.
    counted = [f"coalesce(t2_{k} <= at + %s * interval '1 second', false)" for k in range(2, n + 1)]
    depth = " + ".join(["1", *(f"{test}::int" for test in counted)])
    steps = "".join(
        f", CASE WHEN {test} THEN t2_{k} END AS t{k}"
        + (f", CASE WHEN {test} THEN r2_{k} END AS r{k}" if step_groups else "")
        for k, test in zip(range(2, n + 1), counted, strict=True)
    )
    params.extend([spec.window.total_seconds()] * ((3 if step_groups else 2) * (n - 1)))
    params.extend([start, end])
    if step_groups:
        joins = "".join(
            f" LEFT JOIN chains x{k} ON x{k}.member = b.member AND x{k}.rd = b.r{k}" for k in range(2, n + 1)
        )
        channels = ["b.c1", *(f"x{k}.channel" for k in range(2, n + 1))]
        stores = ["b.s1", *(f"x{k}.store_code" for k in range(2, n + 1))]
        first = ", channel AS c1, store_code AS s1"
    else:
        joins, channels, stores, first = "", ["NULL::text"] * n, ["NULL::text"] * n, ""
    picked = ", ".join(
        [*(f"b.t{k}" for k in range(1, n + 1)), *(f"{c} AS c{k}" for k, c in enumerate(channels, 1)),
         *(f"{s} AS s{k}" for k, s in enumerate(stores, 1))]
    )  # fmt: skip
    analysed_test, analysed_params = analysed.sql("b.member")
    params.extend(analysed_params)
    sql = (
        "WITH events AS ("
        f" SELECT COALESCE(m.merged_into_id, m.id) AS member, e.id, e.event, e.timestamp AS at, e.channel, e.store_code{extract}"
        + (
            f" FROM ({PENDING}) AS p JOIN members_member m"
            " ON m.id = p.id AND m.merged_into_id IS NULL OR m.merged_into_id = p.id"
            " CROSS JOIN LATERAL (SELECT ev.* FROM identity_eventresolution r CROSS JOIN LATERAL"
            " (SELECT * FROM events_event WHERE id = r.event_id OFFSET 0) AS ev WHERE r.member_id = m.id OFFSET 0) AS e"
            if only_pending
            else " FROM events_event e JOIN identity_eventresolution r ON r.event_id = e.id"
            " JOIN members_member m ON m.id = r.member_id"
        )
        + " WHERE e.timestamp >= %s AND e.timestamp < %s AND e.event = ANY(%s::text[])"
        "), flagged AS ("
        f" SELECT e.member, e.id, e.at{', e.channel, e.store_code' if step_groups else ''}, {flags} FROM events e"
        f"), chains AS {'MATERIALIZED ' if step_groups else ''}({level}"
        "), attempts AS ("
        f" SELECT member, id, at AS t1{first}, {depth} AS depth{steps}"
        " FROM chains WHERE m1 AND at >= %s AND at < %s"
        # Materialized: the consent test runs once per member, not pushed down to every attempt.
        # Of equally deep attempts the earliest: by (time, id), the events' order. The attempts
        # come sorted by member: sorted in a subquery, the rest is an incremental sort of each
        # member's few rows (PostgreSQL 15 sorts all of them again for a DISTINCT ON).
        "), best AS MATERIALIZED ("
        " SELECT DISTINCT ON (member) * FROM (SELECT * FROM attempts ORDER BY member, depth DESC, t1, id) AS a"
        " ORDER BY member, depth DESC, t1, id"
        f") SELECT b.member, b.depth, {picked} FROM best b{joins} WHERE {analysed_test}"
    )
    return sql, params


# --- from the per-member summary ------------------------------------------------------------------

#: The per-member summary of the events funnels can use (``models.MemberFunnelEvents``).
SUMMARY_TABLE = "insights_memberfunnelevents"
#: The ``where`` keys the summary keeps: a step filtering on ``properties.*`` reads the log.
SUMMARY_KEYS = frozenset({"channel", "store_code"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


#: The members whose summaries may be behind the log: waiting in the rollup job's queue
#: (``insights_dirtymember``), read as their survivors; a funnel reads these from the log.
PENDING = (
    "SELECT DISTINCT COALESCE(m.merged_into_id, m.id) AS id FROM insights_dirtymember d"
    " JOIN members_member m ON m.id = d.member_id"
)
#: The summary rows not read: of the queued members, their survivors, and every member merged
#: into one of those (rows a merge left behind until the job takes the survivor).
_STALE = (
    "SELECT member_id AS id FROM insights_dirtymember UNION SELECT id FROM pending"
    " UNION SELECT m.id FROM members_member m WHERE m.merged_into_id IN (SELECT id FROM pending)"
)


def summary_answers(spec: FunnelSpec) -> bool:
    """Whether the summary holds everything this funnel's steps test: their names, channels
    and stores, not event properties (those steps read the event log, ``funnel_members_sql``)."""
    return all(key in SUMMARY_KEYS for step in spec.steps for key, _ in step.where)


def _microseconds(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def _summary_step(step: EventFilter, params: list[Any], members: tuple[int, int] | None = None) -> str:
    """The summary rows of one step: its name's row per member, or, with a ``where`` on the
    channel or store, that row's events passing it (still in the member's order); with
    ``members``, of the members ``[first, stop)`` only (a range of the primary key's index)."""
    params.append(step.name)
    among = ""
    if members is not None:
        among = " AND x.member_id >= %s AND x.member_id < %s"
    if not step.where:
        params.extend(members or ())
        return f"SELECT x.member_id, x.ranks, x.times, x.channels, x.stores FROM {SUMMARY_TABLE} x WHERE x.event = %s{among}"
    tests = []
    for key, expected in step.where:
        tests.append("u.c = %s" if key == "channel" else "u.s = %s")
        params.append(expected)
    params.append(params.pop(-1 - len(tests)))  # the name goes after the tests, where it is read
    params.extend(members or ())
    kept = (
        "SELECT array_agg(u.r ORDER BY u.o) AS ranks, array_agg(u.t ORDER BY u.o) AS times,"
        " array_agg(u.c ORDER BY u.o) AS channels, array_agg(u.s ORDER BY u.o) AS stores"
        " FROM unnest(x.ranks, x.times, x.channels, x.stores) WITH ORDINALITY AS u(r, t, c, s, o)"
        f" WHERE {' AND '.join(tests)}"
    )
    return (
        f"SELECT x.member_id, k.* FROM {SUMMARY_TABLE} x CROSS JOIN LATERAL ({kept}) AS k"
        f" WHERE x.event = %s{among} AND k.ranks IS NOT NULL"
    )


def funnel_members_summary_sql(
    spec: FunnelSpec, *, start: datetime, end: datetime, analysed: AnalysedMembers, step_groups: bool = True,
    members: tuple[int, int] | None = None, pending: bool = True,
) -> tuple[str, list[Any]]:  # fmt: skip
    """``funnel_members_sql``'s rows (the same columns, the same answer: tests hold them to
    ``funnel_reference``) from the per-member summary instead of the event log, for a funnel
    the summary answers (``summary_answers``).

    A member's events of each step are sorted arrays in the summary, so nothing is sorted
    here: one row per member (its steps' rows joined), its step-1 events in ``[start, end)``
    a slice of its step-1 times (two binary searches, ``width_bucket``), and from each event
    of a chain the next event of the following step one binary search of that step's ranks
    (the member's order of events). Each member's deepest attempt (the earliest of equally
    deep: step-1 events in their order are in the order of their places in the array) is the
    least of ``(N - depth, place)`` over its step-1 events, one ``bigint`` each, in a
    subquery of the member's row; its chain is then followed once more to read its events.
    Consent: the analysed members of the range of step 1's members, read once as a set
    (``AnalysedMembers.members_sql``) and joined, not one probe per member.

    The members waiting in the rollup job's queue (``PENDING``: a merge, a split, a late event
    not yet in their summaries) are read from the log instead (``funnel_members_sql`` with
    ``only_pending``), and their summary rows, and those of members merged into them, not at
    all: a queue of a few thousand members costs their index walks, not a scan of the log.

    A part of the answer (``funnel_part_sql``): with ``members`` (first, stop), the summary
    rows of those members only; without ``pending``, not the queued members read from the log
    (one part reads them: every part leaves out the same stale rows)."""
    n = len(spec.steps)
    params: list[Any] = []
    sources = ", ".join(
        f"f{k} AS NOT MATERIALIZED ({_summary_step(step, params, members)})"
        for k, step in enumerate(spec.steps, 1)
    )
    joins = "".join(f" LEFT JOIN f{k} ON f{k}.member_id = f1.member_id" for k in range(2, n + 1))

    def chain(first: str) -> list[str]:
        """The places i1..iN of the chain from the step-1 event at place ``first``: the next
        step-k event after the step-(k-1) one is the first rank above its rank (past the
        array's end, or without the step's row: NULL, and so every later step)."""
        places = [first]
        for k in range(2, n + 1):
            places.append(f"(width_bucket(f{k - 1}.ranks[{places[-1]}], f{k}.ranks) + 1)")
        return places

    window = int(spec.window // _MICROSECOND)
    tried = chain("g.i1")
    # A step counts while its event is within the window of step 1; the chain's times only
    # grow, so the first step past it (or missing) ends the attempt.
    depth = (
        "CASE"
        + "".join(
            f" WHEN NOT coalesce(f{k}.times[{tried[k - 1]}] <= f1.times[g.i1] + {window}, false) THEN {k - 1}"
            for k in range(2, n + 1)
        )
        + f" ELSE {n} END"
    )
    # The step-1 events in the range: places lo + 1 .. hi, where lo counts those before start.
    params.extend([_microseconds(start) - 1, _microseconds(end) - 1])
    # A member without any (lo = hi) is passed over before its subquery runs.
    sliced = (
        " CROSS JOIN LATERAL (SELECT width_bucket(%s::bigint, f1.times) AS lo,"
        " width_bucket(%s::bigint, f1.times) AS hi) AS r"
    )
    # Only the step-1 events up to the last before the member's last step-2 event are tried (and
    # the first, lo + 1, always): those after it fill no step 2, depth 1, and the first attempt
    # is at least as deep and earlier. A member without a step 2 after its first attempt (most
    # members, who never go on), or without a step-2 row at all (NULL: 0), tries that one alone.
    tried_last = "greatest(r.lo + 1, least(r.hi, coalesce(width_bucket(f2.ranks[cardinality(f2.ranks)], f1.ranks), 0)))"
    attempts = f"SELECT min(({n} - {depth})::bigint << 32 | g.i1) AS key FROM generate_series(r.lo + 1, {tried_last}) AS g(i1)"
    best = chain("(a.key & 4294967295)::int")
    reached = f"({n} - (a.key >> 32))"
    times = [
        f"CASE WHEN {reached} >= {k} THEN timestamptz 'epoch' + f{k}.times[{i}] * interval '1 microsecond' END"
        for k, i in enumerate(best, 1)
    ]
    if step_groups:
        channels = [f"CASE WHEN {reached} >= {k} THEN f{k}.channels[{i}] END" for k, i in enumerate(best, 1)]
        stores = [f"CASE WHEN {reached} >= {k} THEN f{k}.stores[{i}] END" for k, i in enumerate(best, 1)]
    else:
        channels, stores = ["NULL::text"] * n, ["NULL::text"] * n
    picked = ", ".join(
        [*(f"{t} AS t{k}" for k, t in enumerate(times, 1)), *(f"{c} AS c{k}" for k, c in enumerate(channels, 1)),
         *(f"{s} AS s{k}" for k, s in enumerate(stores, 1))]
    )  # fmt: skip
    # Consent read once, for the range of step 1's members (its ends: two probes of the
    # summary's key), as a set joined to the attempts: a probe per member was a third of the CPU.
    # Materialized: read once, however the planner joins it.
    analysed_sql, analysed_params = analysed.members_sql(
        "(SELECT min(member_id) FROM f1)", "(SELECT max(member_id) FROM f1)"
    )
    params.extend(analysed_params)
    queued = ""
    if pending:
        queued_sql, queued_params = funnel_members_sql(
            spec, start=start, end=end, analysed=analysed, step_groups=step_groups, only_pending=True
        )
        params.extend(queued_params)
        queued = f" UNION ALL SELECT * FROM ({queued_sql}) AS queued"
    sql = (
        f"WITH {sources}, pending AS MATERIALIZED ({PENDING}), stale AS MATERIALIZED ({_STALE}),"
        " best AS MATERIALIZED ("
        f" SELECT f1.member_id AS member, {reached} AS depth, {picked}"
        f" FROM f1{joins}{sliced} CROSS JOIN LATERAL ({attempts}) AS a"
        " WHERE r.hi > r.lo AND f1.member_id NOT IN (SELECT id FROM stale)"
        f"), analysed AS MATERIALIZED ({analysed_sql})"
        f" SELECT b.* FROM best b WHERE b.member IN (SELECT member_id FROM analysed){queued}"
    )
    return sql, params


def funnel_sql(
    spec: FunnelSpec,
    *,
    start: datetime,
    end: datetime,
    analysed: AnalysedMembers,
    from_summary: bool = False,
) -> tuple[str, list[Any]]:
    """The funnel's answer as rows ``(step, group, entered, converted, median_seconds)``,
    grouped by step and breakdown group, over the members ``analysed`` lets in (see
    ``funnel_members_sql``; with ``from_summary``, ``funnel_members_summary_sql``)."""
    members_sql = funnel_members_summary_sql if from_summary else funnel_members_sql
    members, params = members_sql(
        spec, start=start, end=end, analysed=analysed, step_groups=spec.breakdown in STEP_BREAKDOWNS
    )
    return _funnel_grouped(spec, members, params, partial=False)


def funnel_part_sql(
    spec: FunnelSpec, *, start: datetime, end: datetime, analysed: AnalysedMembers, members: tuple[int, int],
    pending: bool,
) -> tuple[str, list[Any]]:  # fmt: skip
    """One part of ``funnel_sql``'s answer from the summary: the members ``[first, stop)`` of
    ``members`` (and, with ``pending``, the queued members read from the log), as rows
    ``(step, group, entered, converted, seconds)`` where ``seconds`` are the times from step k
    to step k+1 of the part's members who made it (unsorted; NULL when none did).

    The parts of disjoint member ranges that cover every member, one of them with ``pending``,
    are the whole answer (``funnel_parts_merge``): each member is in one part, so counts add,
    and the median of each cell is taken of all parts' times (not a mean of medians). Each part
    is one backend, one core: PostgreSQL runs none of this query in parallel workers itself."""
    rows, params = funnel_members_summary_sql(
        spec, start=start, end=end, analysed=analysed, step_groups=spec.breakdown in STEP_BREAKDOWNS,
        members=members, pending=pending,
    )  # fmt: skip
    return _funnel_grouped(spec, rows, params, partial=True)


def _funnel_grouped(
    spec: FunnelSpec, members: str, params: list[Any], *, partial: bool
) -> tuple[str, list[Any]]:
    """The rows of ``funnel_sql`` (``partial``: of ``funnel_part_sql``) over the per-member
    rows ``members``."""
    n = len(spec.steps)
    joins = ""
    if spec.breakdown == "tier":
        joins = " LEFT JOIN members_pointsaccount a ON a.member_id = f.member"
    elif spec.breakdown == "segment":
        # Each named segment the member is in, else one row with no segment.
        joins = (
            " LEFT JOIN LATERAL (SELECT array_agg(s.key ORDER BY s.key) AS keys FROM members_segmentmember sm"
            " JOIN members_segment s ON s.id = sm.segment_id WHERE sm.member_id = f.member"
            " AND s.key IN (SELECT key FROM wanted))"
            " AS seg ON true CROSS JOIN LATERAL unnest(coalesce(seg.keys, ARRAY[''])) AS g(key)"
        )
        params = [*params, list(spec.segments)]  # once, in ``wanted`` after the funnel
    parts = []
    for k in range(1, n + 1):
        group = {
            "": "''", "channel": f"f.c{k}", "store": f"f.s{k}", "tier": "coalesce(a.tier, '')", "segment": "g.key",
        }[spec.breakdown]  # fmt: skip
        if k < n:
            converted = f"count(*) FILTER (WHERE f.depth >= {k + 1})"
            # The same float8 either way: percentile_cont casts the numeric seconds to float8.
            seconds = f"extract(epoch FROM f.t{k + 1} - f.t{k})"
            median = (
                f"array_agg({seconds}::float8)"
                if partial
                else f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {seconds})"
            ) + f" FILTER (WHERE f.depth >= {k + 1})"
        else:
            converted, median = "0", "NULL::float8[]" if partial else "NULL::float8"
        parts.append(
            f"SELECT {k} AS step, {group} AS grp, count(*) AS entered, {converted} AS converted,"
            f" {median} AS median_seconds FROM funnel f{joins} WHERE f.depth >= {k} GROUP BY 2"
        )
    wanted = ", wanted AS (SELECT unnest(%s::text[]) AS key)" if spec.breakdown == "segment" else ""
    sql = (
        f"WITH funnel AS MATERIALIZED ({members}){wanted} "
        + " UNION ALL ".join(parts)
        + " ORDER BY step, grp"
    )
    return sql, params


def funnel_parts_merge(
    parts: Iterable[Iterable[Sequence[Any]]],
) -> dict[tuple[int, str], tuple[int, int, float | None]]:
    """The parts' rows of ``funnel_part_sql`` merged into ``funnel_sql``'s answer, by (step,
    group): ``(entered, converted, median_seconds)``. Counts add; each median is PostgreSQL's
    ``percentile_cont(0.5)`` (``median_cont``) of every part's times of its cell, so the
    answer is the unsplit query's to the last bit. The caller orders the groups as
    ``funnel_sql`` does (the database's collation, not Python's)."""
    counts: dict[tuple[int, str], list[int]] = {}
    times: dict[tuple[int, str], list[float]] = defaultdict(list)
    for rows in parts:
        for step, group, entered, converted, seconds in rows:
            added = counts.setdefault((step, group), [0, 0])
            added[0] += entered
            added[1] += converted
            times[(step, group)].extend(seconds or ())
    return {
        cell: (entered, converted, median_cont(times[cell]) if times[cell] else None)
        for cell, (entered, converted) in counts.items()
    }


def median_cont(values: Sequence[float]) -> float:
    """``percentile_cont(0.5)`` as PostgreSQL computes it (orderedsetaggs.c): the rows at
    floor and ceil of ``0.5 * (n - 1)`` of the sorted values, and ``lo + (hi - lo) * 0.5``
    (``float8_lerp``) between them when they differ, in the same float8 operations."""
    ordered = sorted(values)
    position = 0.5 * (len(ordered) - 1)
    first, second = math.floor(position), math.ceil(position)
    low = ordered[first]
    if second == first:
        return low
    high = ordered[second]
    return low + (high - low) * (position - first)


def member_ranges(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    """``[first, last]`` cut into ``parts`` ranges ``[start, stop)`` of nearly equal width (at
    most as many as there are ids), which cover it and do not overlap."""
    parts = max(1, min(parts, last - first + 1))
    width = last - first + 1
    bounds = [first + width * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def funnel_step_members_sql(
    spec: FunnelSpec, *, start: datetime, end: datetime, step: int, dropped: bool, analysed: AnalysedMembers,
    from_summary: bool = False,
) -> tuple[str, list[Any]]:  # fmt: skip
    """The members ``analysed`` lets in who reached ``step`` (``dropped``: and went no
    further), for a static segment: the only way a funnel names members."""
    members_sql = funnel_members_summary_sql if from_summary else funnel_members_sql
    members, params = members_sql(spec, start=start, end=end, analysed=analysed, step_groups=False)
    test = f"depth = {int(step)}" if dropped else f"depth >= {int(step)}"
    return f"SELECT f.member FROM ({members}) f WHERE f.{test} ORDER BY f.member", params


# --- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """An event of a resolved member, as the reference reads it."""

    member: int
    id: int
    at: datetime
    name: str
    channel: str = ""
    store_code: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemberFunnel:
    member: int
    steps: tuple[MemberEvent, ...]  # the events of the steps filled, in order


def funnel_attempts_reference(
    spec: FunnelSpec, events: Iterable[MemberEvent], *, start: datetime, end: datetime
) -> list[MemberFunnel]:
    """Each member's deepest attempt (the earliest of equally deep), per the module's
    definition, by plain loops: the reference the SQL is tested against."""
    by_member: dict[int, list[MemberEvent]] = defaultdict(list)
    for event in events:
        by_member[event.member].append(event)
    answer = []
    for member, mine in sorted(by_member.items()):
        mine.sort(key=lambda e: (e.at, e.id))
        facts = [EventFact(e.name, e.at, e.channel, e.store_code, e.properties) for e in mine]
        best: list[MemberEvent] = []
        for i, event in enumerate(mine):
            if not (start <= event.at < end and event_passes(facts[i], spec.steps[0])):
                continue
            chain, position = [event], i
            for step in spec.steps[1:]:
                found = next(
                    (j for j in range(position + 1, len(mine)) if event_passes(facts[j], step)), None
                )
                if found is None or mine[found].at > event.at + spec.window:
                    break
                chain.append(mine[found])
                position = found
            if len(chain) > len(best):
                best = chain
        if best:
            answer.append(MemberFunnel(member, tuple(best)))
    return answer


def funnel_reference(
    spec: FunnelSpec,
    events: Iterable[MemberEvent],
    *,
    start: datetime,
    end: datetime,
    tiers: Mapping[int, str] | None = None,
    segments_of: Mapping[int, Sequence[str]] | None = None,
) -> list[FunnelRow]:
    """``funnel_sql``'s rows, computed in plain Python (sorted by step, then group)."""
    tiers, segments_of = tiers or {}, segments_of or {}
    cells: dict[tuple[int, str], list[MemberFunnel]] = defaultdict(list)
    for funnel in funnel_attempts_reference(spec, events, start=start, end=end):
        for k, event in enumerate(funnel.steps, 1):
            if spec.breakdown == "channel":
                groups: Sequence[str] = [event.channel]
            elif spec.breakdown == "store":
                groups = [event.store_code]
            elif spec.breakdown == "tier":
                groups = [tiers.get(funnel.member, "")]
            elif spec.breakdown == "segment":
                groups = sorted(set(segments_of.get(funnel.member, ())) & set(spec.segments)) or [""]
            else:
                groups = [""]
            for group in groups:
                cells[(k, group)].append(funnel)
    rows = []
    for (k, group), funnels in sorted(cells.items()):
        onward = [f for f in funnels if len(f.steps) > k]
        times = [(f.steps[k].at - f.steps[k - 1].at).total_seconds() for f in onward]
        rows.append(
            FunnelRow(k, group, len(funnels), len(onward), statistics.median(times) if times else None)
        )
    return rows
