"""Funnels and attribution benchmark, at reduced scale: a 4-step funnel over 90 days and
attribution for a month, each beside hand-written SQL of the same answer.

Data (``cdp_bench_funnels``, built here with set-based SQL, kept for the next run unless
``--rebuild``): ``--members`` members (default 100,000) and ``--events`` events (default
1,000,000) over 120 days in four channels, resolved to their members: product views, adds,
checkouts, orders (each an order row, some partly refunded), pushes opened, coupons claimed and
page views with a campaign. Part of the members are merged into others (their events still
resolved to the absorbed member, as insights must follow). Consent to ``analytics`` (what
insights read): 18 in 20 surviving members granted it, 1 in 20 denied it, 1 in 20 never said.

Setup, timed apart: the funnels' per-member summary of events built whole
(``members.insights.funnel_events.summary_from_scratch``, as the nightly does), its rows and size.

Timed (best of ``--repeat`` runs, wall and the PostgreSQL backend's CPU, with the machine's
load beside them; ``--serial``: no parallel workers, so the backend's CPU is all a query's):

- **funnel**: ``members.insights.funnels.funnel_sql`` for Product Viewed → Product Added →
  Checkout Started → Order Completed, 7-day window, 90 days, without and with a channel
  breakdown, and over 14 days (a short range of a longer log), first from the summary (what
  funnels read while it is up to date), then from the log (checked equal); beside (a) the
  floor: one grouped pass over the log counting the members of each step's events (no funnel
  over the log can read less), and (b) a hand-written funnel of the same answer (the events
  copied into an indexed temporary table, each step found by a LATERAL probe), checked equal;
  each funnel from the summary also split by member id range over ``--connections``
  connections as ``funnel_services.funnel_results`` runs it (checked equal; CPU of all its
  backends);
- **attribution**: ``members.insights.attribution.attribution_sql`` (five models) for the last
  30 days by channel, beside a hand-written linear-only query, checked equal on linear.

Prints markdown and inserts it, newest first, into its block of ``docs/benchmarks.md``.

    BENCH_DATABASE_SUFFIX=_me .venv/bin/python bench/funnels.py --members 100000 --events 1000000
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

START_MARKER = "<!-- bench/funnels.py: funnels and attribution benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/funnels.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/funnels.py: end of the funnels and attribution benchmarks. -->"
INTRO = """# Funnels and attribution benchmarks

`bench/funnels.py` (see its docstring), at reduced scale: a 4-step funnel over 90 days (issue
target at 1M members / 10M events: under 5 s) and attribution for a month (under 10 s), each
beside hand-written SQL of the same answer as the limit."""

DATABASE = harness.database_name("cdp_bench_funnels")
URL = harness.database_url(DATABASE)
ENV = harness.service_env(database=URL, broker=harness.broker_url(15))
END = datetime(2026, 11, 30, tzinfo=UTC)
DAYS = 120
STEPS = ("Product Viewed", "Product Added", "Checkout Started", "Order Completed")

# Set-based generation: every row from generate_series and hashes of its number, so a run is
# the same data each time. Event kinds by share: views 50%, adds 18%, checkouts 10%, orders 8%,
# pushes 5%, coupons 4%, campaign page views 5%.
_GENERATE = [
    "INSERT INTO events_source (name, kind, store_code, wechat_appid, default_currency, erasure, write_key_hash,"
    " write_key_prefix, enabled, created_at, updated_at) SELECT 'bench ' || k, k, CASE k WHEN 'pos' THEN 'S001'"
    " ELSE '' END, '', 'CNY', 'strip', md5(k) || md5(k), 'wk_bench', true, now(), now()"
    " FROM unnest(ARRAY['pos', 'app', 'mini_program', 'web']) AS k",
    "INSERT INTO members_member (id, status, merged_into_id, first_event_at, first_event_message_id,"
    " first_event_source_id, last_event_at, last_event_message_id, last_event_source_id, created_at, updated_at)"
    " SELECT g, 'active', NULL, %(start)s, 'm', (SELECT min(id) FROM events_source), %(end)s, 'm',"
    " (SELECT min(id) FROM events_source), now(), now() FROM generate_series(1, %(members)s) g",
    # One member in twenty was absorbed by the member before it.
    "UPDATE members_member SET status = 'merged', merged_into_id = id - 1 WHERE id %% 20 = 0",
    "SELECT setval(pg_get_serial_sequence('members_member', 'id'), %(members)s)",
    "CREATE TEMP TABLE gen AS SELECT g AS n, (abs(hashtext('m' || g)) %% %(members)s) + 1 AS member,"
    " abs(hashtext('k' || g)) %% 100 AS kind, abs(hashtext('c' || g)) %% 4 AS ch,"
    " %(start)s::timestamptz + (abs(hashtext('t' || g)) %% (%(days)s * 86400)) * interval '1 second' AS at"
    " FROM generate_series(1, %(events)s) g",
    # Ids continue the sequence (nextval), so that a later insert finds its next id free.
    "INSERT INTO events_event (id, source_id, message_id, type, event, name, user_id, anonymous_id, previous_id,"
    " group_id, channel, store_code, timestamp, received_at, context, traits, properties, integrations)"
    " SELECT nextval(pg_get_serial_sequence('events_event', 'id')), s.id, 'b' || g.n,"
    " CASE WHEN g.kind >= 95 THEN 'page' ELSE 'track' END,"
    " CASE WHEN g.kind < 50 THEN 'Product Viewed' WHEN g.kind < 68 THEN 'Product Added'"
    " WHEN g.kind < 78 THEN 'Checkout Started' WHEN g.kind < 86 THEN 'Order Completed'"
    " WHEN g.kind < 91 THEN 'Push Opened' WHEN g.kind < 95 THEN 'Coupon Claimed' ELSE '' END,"
    " CASE WHEN g.kind >= 95 THEN 'Sale' ELSE '' END, 'u' || g.member, '', '', '', s.kind,"
    " s.store_code, g.at, g.at,"
    " CASE WHEN g.kind >= 86 AND g.n %% 3 > 0 THEN jsonb_build_object('campaign', jsonb_build_object("
    "'name', (ARRAY['spring-sale', 'vip-week', 'autumn'])[g.n %% 3 + 1], 'source', 'bench')) ELSE '{}' END,"
    " '{}', CASE WHEN g.kind BETWEEN 78 AND 85 THEN jsonb_build_object('order_id', 'o' || g.n) ELSE '{}' END, '{}'"
    " FROM gen g JOIN events_source s ON s.kind = (ARRAY['pos', 'app', 'mini_program', 'web'])[g.ch + 1]",
    "DELETE FROM events_pendingevent",
    # Consent to analytics, held by the surviving members as statements are.
    "INSERT INTO consent_consentstatement (member_id, subject_id, purpose, state, at, version, origin, channel,"
    " store_code, app, device_id, note, recorded_at) SELECT id, id, 'analytics',"
    " CASE WHEN abs(hashtext('a' || id)) %% 20 = 0 THEN 'denied' ELSE 'granted' END, %(start)s, 'bench', 'staff',"
    " 'staff', '', '', '', '', now() FROM members_member WHERE merged_into_id IS NULL"
    " AND abs(hashtext('a' || id)) %% 20 <> 1",
    "INSERT INTO identity_eventresolution (event_id, member_id, problems, resolved_at)"
    " SELECT e.id, substr(e.user_id, 2)::bigint, '[]', now() FROM events_event e",
    "INSERT INTO members_memberorder (member_id, source_id, order_id, currency, total, refunded, placed_at,"
    " channel, store_code, event_id) SELECT COALESCE(m.merged_into_id, m.id), e.source_id, e.properties ->> 'order_id',"
    " 'CNY', 50 + abs(hashtext(e.message_id)) %% 950, CASE WHEN e.id %% 15 = 0 THEN 20 ELSE 0 END, e.timestamp,"
    " e.channel, e.store_code, e.id FROM events_event e JOIN members_member m ON m.id = substr(e.user_id, 2)::bigint"
    " WHERE e.event = 'Order Completed'",
    "ANALYZE",
]

# The members insights may read: the bench states analytics consent once per member.
ANALYSED = (
    " AND COALESCE(m.merged_into_id, m.id) IN (SELECT member_id FROM consent_consentstatement"
    " WHERE purpose = 'analytics' AND state = 'granted')"
)
# The floor: the funnel's events read once, members counted per step.
FLOOR = (
    "SELECT e.event, count(DISTINCT COALESCE(m.merged_into_id, m.id)) FROM events_event e"
    " JOIN identity_eventresolution r ON r.event_id = e.id JOIN members_member m ON m.id = r.member_id"
    " WHERE e.timestamp >= %(start)s AND e.timestamp < %(horizon)s AND e.event = ANY(%(steps)s)"
    + ANALYSED
    + " GROUP BY 1"
)
# The same funnel by hand: the events into an indexed table, then each step the first matching
# event after the previous one (LATERAL ... LIMIT 1), the deepest attempt per member.
HAND_FUNNEL = [
    "CREATE TEMP TABLE f_ev AS SELECT COALESCE(m.merged_into_id, m.id) AS member, e.id, e.timestamp AS at,"
    " e.event FROM events_event e JOIN identity_eventresolution r ON r.event_id = e.id"
    " JOIN members_member m ON m.id = r.member_id"
    " WHERE e.timestamp >= %(start)s AND e.timestamp < %(horizon)s AND e.event = ANY(%(steps)s)" + ANALYSED,
    "CREATE INDEX ON f_ev (member, event, at, id)",
    "ANALYZE f_ev",
    "SELECT d, count(*) FROM (SELECT DISTINCT ON (s1.member) s1.member,"
    " 1 + (x2.id IS NOT NULL)::int + (x3.id IS NOT NULL)::int + (x4.id IS NOT NULL)::int AS d"
    " FROM f_ev s1"
    " LEFT JOIN LATERAL (SELECT id, at FROM f_ev x WHERE x.member = s1.member AND x.event = %(s2)s"
    "  AND (x.at, x.id) > (s1.at, s1.id) ORDER BY x.at, x.id LIMIT 1) x2 ON x2.at <= s1.at + %(window)s"
    " LEFT JOIN LATERAL (SELECT id, at FROM f_ev x WHERE x2.id IS NOT NULL AND x.member = s1.member"
    "  AND x.event = %(s3)s AND (x.at, x.id) > (x2.at, x2.id) ORDER BY x.at, x.id LIMIT 1) x3"
    "  ON x3.at <= s1.at + %(window)s"
    " LEFT JOIN LATERAL (SELECT id, at FROM f_ev x WHERE x3.id IS NOT NULL AND x.member = s1.member"
    "  AND x.event = %(s4)s AND (x.at, x.id) > (x3.at, x3.id) ORDER BY x.at, x.id LIMIT 1) x4"
    "  ON x4.at <= s1.at + %(window)s"
    " WHERE s1.event = %(s1)s AND s1.at >= %(start)s AND s1.at < %(end)s"
    " ORDER BY s1.member, d DESC, s1.at, s1.id) best GROUP BY d",
    "DROP TABLE f_ev",
]
HAND_LINEAR = (
    "WITH c AS (SELECT o.id, COALESCE(m.merged_into_id, m.id) AS member, o.placed_at AS at,"
    " GREATEST(o.total - o.refunded, 0) AS value FROM members_memberorder o JOIN members_member m ON m.id = o.member_id"
    " WHERE o.placed_at >= %(start)s AND o.placed_at < %(end)s AND o.currency = 'CNY'" + ANALYSED + "),"
    " t AS (SELECT COALESCE(m.merged_into_id, m.id) AS member, e.timestamp AS at, e.channel FROM events_event e"
    " JOIN identity_eventresolution r ON r.event_id = e.id JOIN members_member m ON m.id = r.member_id"
    " WHERE e.timestamp >= %(since)s AND e.timestamp < %(end)s"
    " AND (e.context ? 'campaign' OR e.event IN ('Coupon Claimed', 'Push Opened', 'Store Visited'))),"
    " p AS (SELECT c.id, c.value, t.channel, count(*) OVER (PARTITION BY c.id) AS n FROM c JOIN t"
    " ON t.member = c.member AND t.at < c.at AND t.at >= c.at - %(lookback)s)"
    " SELECT channel, sum(value / n)::numeric(20, 2) FROM p GROUP BY 1 ORDER BY 1"
)


def backend_cpu(cursor: psycopg.Cursor) -> float:
    """CPU seconds so far of this cursor's PostgreSQL backend (user + system, /proc/<pid>/stat;
    parallel workers not counted: ``--serial`` runs without them)."""
    pid = cursor.connection.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The PostgreSQL backend's CPU seconds of each result's best run, by result name.
CPU: dict[str, float] = {}


def timed(
    cursor: psycopg.Cursor, statements: list[tuple[str, Any]], repeat: int, *, after: str = ""
) -> tuple[float, list[Any]]:
    """The best wall time of running ``statements`` in order, and the last one's rows;
    ``after`` (untimed) cleans up after each run. The backend's CPU seconds of the least
    costly run are left in ``timed.cpu``."""
    best, rows, cpu = float("inf"), [], float("inf")
    for _ in range(repeat):
        began, used = time.perf_counter(), backend_cpu(cursor)
        for sql, params in statements:
            cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        best = min(best, time.perf_counter() - began)
        cpu = min(cpu, backend_cpu(cursor) - used)
        if after:
            cursor.execute(after)
    timed.cpu = cpu  # type: ignore[attr-defined]
    return best, rows


def split_timed(
    connections: list[psycopg.Connection],
    spec: Any,
    *,
    start: datetime,
    end: datetime,
    analysed: Any,
    repeat: int,
) -> tuple[float, list[Any]]:
    """``funnel_sql``'s rows from the summary split by member id range over ``connections``,
    as ``funnel_services.funnel_results`` runs it (``funnels.funnel_part_sql`` on each, one
    exported snapshot, ``funnels.funnel_parts_merge``): the best wall time and its rows in
    ``funnel_sql``'s order; the CPU of all the backends of the least costly run in ``timed.cpu``."""
    from members.insights.funnels import funnel_part_sql, funnel_parts_merge, member_ranges

    best, rows, cpu = float("inf"), [], float("inf")
    cursors = [c.cursor() for c in connections]
    for _ in range(repeat):
        connections[0].commit()  # the bench's transaction so far (its SETs kept): this one reads a snapshot
        began, used = time.perf_counter(), sum(backend_cpu(c) for c in cursors)
        main = cursors[0]
        main.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        main.execute(
            "SELECT min(member_id), max(member_id) FROM insights_memberfunnelevents WHERE event = %s",
            [spec.steps[0].name],
        )
        first, last = main.fetchone()
        ranges = member_ranges(first, last, len(cursors))
        main.execute("SELECT pg_export_snapshot()")
        snapshot = main.fetchone()[0]
        found: list[Any] = [None] * len(ranges)

        def part(
            index: int, cursor: psycopg.Cursor, members: tuple[int, int], snapshot: str, found: list
        ) -> None:
            if index:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute(psycopg.sql.SQL("SET TRANSACTION SNAPSHOT {}").format(snapshot))
            sql, params = funnel_part_sql(
                spec, start=start, end=end, analysed=analysed, members=members, pending=index == 0
            )
            cursor.execute(sql, params)
            found[index] = cursor.fetchall()

        threads = [
            threading.Thread(target=part, args=(i, cursors[i], r, snapshot, found))
            for i, r in enumerate(ranges)
            if i
        ]
        for thread in threads:
            thread.start()
        part(0, main, ranges[0], snapshot, found)
        for thread in threads:
            thread.join()
        merged = funnel_parts_merge(found)
        main.execute("SELECT g FROM unnest(%s::text[]) AS u(g) ORDER BY g", [sorted({g for _, g in merged})])
        order = {group: place for place, (group,) in enumerate(main.fetchall())}
        rows = [(k, g, *merged[(k, g)]) for k, g in sorted(merged, key=lambda c: (c[0], order[c[1]]))]
        for connection in connections:
            connection.rollback()
        best = min(best, time.perf_counter() - began)
        cpu = min(cpu, sum(backend_cpu(c) for c in cursors) - used)
    timed.cpu = cpu  # type: ignore[attr-defined]
    return best, rows


def build(args: argparse.Namespace) -> None:
    harness.manage("ensure_services", "--create-database", env=ENV)
    with psycopg.connect(URL, autocommit=True) as connection:
        present = connection.execute("SELECT to_regclass('events_event') IS NOT NULL").fetchone()
        if present and present[0] and not args.rebuild:
            count = connection.execute("SELECT count(*) FROM events_event").fetchone()
            consented = connection.execute("SELECT count(*) FROM consent_consentstatement").fetchone()
            if count and count[0] == args.events and consented and consented[0]:
                print(f"Reusing {DATABASE}: {count[0]:,} events.")
                harness.manage("migrate", "--noinput", "-v0", env=ENV)  # indexes added since
                return
    # A different size or a rebuild: from an empty schema.
    with psycopg.connect(URL, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
    harness.manage("migrate", "--noinput", "-v0", env=ENV)
    params = {"members": args.members, "events": args.events, "days": DAYS,
              "start": END - timedelta(days=DAYS), "end": END}  # fmt: skip
    began = time.perf_counter()
    with psycopg.connect(URL) as connection, connection.cursor() as cursor:
        for sql in _GENERATE:
            cursor.execute(sql, params)
    print(
        f"Built {args.members:,} members and {args.events:,} events in {time.perf_counter() - began:.0f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--connections", type=int, default=2,
        help="Connections the funnels from the summary are also split over (as funnel_results runs them).",
    )  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    parser.add_argument(
        "--serial", action="store_true",
        help="No parallel workers (max_parallel_workers_per_gather = 0): the backend's CPU is all the query's.",
    )  # fmt: skip
    args = parser.parse_args()
    build(args)
    harness.django_setup(ENV)
    from django.db import connection as django_connection

    from members.insights.attribution import MODELS, AttributionSpec, attribution_sql
    from members.insights.funnel_events import summary_from_scratch
    from members.insights.funnel_services import WORK_MEM, analysed_members
    from members.insights.funnels import funnel_parse, funnel_sql

    # Setup, timed apart: the funnels' per-member summary built whole, as the nightly does.
    with django_connection.cursor() as cursor:
        cursor.execute("SET jit = off")
        if args.serial:
            cursor.execute("SET max_parallel_workers_per_gather = 0")
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    began, used = time.perf_counter(), int(fields[11]) + int(fields[12])
    summary_rows = summary_from_scratch()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    summary_wall = time.perf_counter() - began
    summary_cpu = (int(fields[11]) + int(fields[12]) - used) / os.sysconf("SC_CLK_TCK")
    with django_connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE insights_memberfunnelevents")
        cursor.execute("SELECT pg_total_relation_size('insights_memberfunnelevents')")
        summary_bytes = cursor.fetchone()[0]
    django_connection.close()

    start, end = END - timedelta(days=90), END
    window = timedelta(days=7)
    plain = funnel_parse(steps=[{"event": s} for s in STEPS], window_hours=168)
    by_channel = funnel_parse(steps=[{"event": s} for s in STEPS], window_hours=168, breakdown="channel")
    results: list[tuple[str, float, str]] = []
    load_before = os.getloadavg()
    results.append((
        "setup: the funnels' summary built whole (`summary_from_scratch`)", summary_wall,
        f"{summary_rows:,} rows, {summary_bytes / 2**20:,.0f} MB",
    ))  # fmt: skip
    CPU[results[-1][0]] = summary_cpu
    with psycopg.connect(URL) as connection, connection.cursor() as cursor:
        cursor.execute("SET jit = off")  # as the platform's settings do (config/settings/base.py)
        cursor.execute(f"SET work_mem = '{WORK_MEM}'")  # as funnel_services sets for each insight query
        if args.serial:
            cursor.execute("SET max_parallel_workers_per_gather = 0")
        analysed = analysed_members()
        entered: dict[int, int] = {}
        more = [psycopg.connect(URL) for _ in range(args.connections - 1)]
        for other in more:
            other.execute("SET jit = off")
            other.execute(f"SET work_mem = '{WORK_MEM}'")
            other.commit()
        connection.commit()

        def timed_split(spec: Any, since: datetime) -> tuple[float, list[Any]]:
            return split_timed(
                [connection, *more], spec, start=since, end=end, analysed=analysed, repeat=args.repeat
            )

        # Each funnel from the summary (what funnels read when it is up to date), then from the
        # log (what they read otherwise, and before it): the same rows, checked equal.
        for label, from_summary in (("from the summary", True), ("from the log", False)):
            sql, params = funnel_sql(
                plain, start=start, end=end, analysed=analysed, from_summary=from_summary
            )
            ours, rows = timed(cursor, [(sql, params)], args.repeat)
            name = f"funnel, 4 steps, 90 days (`funnel_sql`), {label}"
            results.append((name, ours, f"{rows[0][2] if rows else 0:,} members at step 1"))
            CPU[name] = timed.cpu  # type: ignore[attr-defined]
            if from_summary:
                entered = {step: n for step, _, n, _, _ in rows}
                first = rows
                split, rows = timed_split(plain, start)
                assert rows == first, (rows, first)
                results.append((f"… split by member over {args.connections} connections", split, "equal"))
                CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
            else:
                assert rows == first, (rows, first)
            sql, params = funnel_sql(
                by_channel, start=start, end=end, analysed=analysed, from_summary=from_summary
            )
            broken, rows = timed(cursor, [(sql, params)], args.repeat)
            results.append((f"… by channel of each step, {label}", broken, ""))
            CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
            if from_summary:
                first_by_channel = rows
                split, rows = timed_split(by_channel, start)
                assert rows == first_by_channel, (rows, first_by_channel)
                results.append((f"… by channel, split over {args.connections} connections", split, "equal"))
                CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
            else:
                assert rows == first_by_channel
            sql, params = funnel_sql(
                plain, start=end - timedelta(days=14), end=end, analysed=analysed, from_summary=from_summary
            )
            fortnight, rows = timed(cursor, [(sql, params)], args.repeat)
            results.append(
                (f"… over 14 days, {label}", fortnight, f"{rows[0][2] if rows else 0:,} members at step 1")
            )
            CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
            if from_summary:
                fortnight_rows = rows
                split, rows = timed_split(plain, end - timedelta(days=14))
                assert rows == fortnight_rows, (rows, fortnight_rows)
                results.append((f"… over 14 days, split over {args.connections} connections", split, "equal"))
                CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
        named = {"start": start, "end": end, "horizon": end + window, "steps": list(STEPS), "window": window,
                 **{f"s{k}": s for k, s in enumerate(STEPS, 1)}}  # fmt: skip
        floor, _ = timed(cursor, [(FLOOR, named)], args.repeat)
        results.append(("limit: one grouped pass over the same events (floor)", floor, ""))
        CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
        hand, depth = timed(
            cursor, [(s, named) for s in HAND_FUNNEL[:-1]], args.repeat, after=HAND_FUNNEL[-1]
        )
        reached = {k: sum(n for d, n in depth if d >= k) for k in range(1, 5)}
        assert reached == {k: entered.get(k, 0) for k in range(1, 5)}, (reached, entered)
        results.append(("limit: hand-written LATERAL funnel, same answer", hand, "equal per step"))
        CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]

        month = AttributionSpec(timedelta(days=30), timedelta(days=7), "channel")
        a_start = END - timedelta(days=30)
        sql, params = attribution_sql(month, start=a_start, end=END, currency="CNY", analysed=analysed)
        ours_a, credits = timed(cursor, [(sql, params)], args.repeat)
        linear = {row[0]: row[1 + MODELS.index("linear")] for row in credits}
        results.append(("attribution, 30 days, 5 models by channel (`attribution_sql`)", ours_a,
                        f"{sum(linear.values()):,.2f} CNY credited"))  # fmt: skip
        CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
        named = {"start": a_start, "end": END, "since": a_start - month.lookback, "lookback": month.lookback}
        hand_a, by_hand = timed(cursor, [(HAND_LINEAR, named)], args.repeat)
        assert all(abs(linear[channel] - value) <= 0.05 for channel, value in by_hand), (linear, by_hand)
        results.append(("limit: hand-written linear only", hand_a, "equal on linear"))
        CPU[results[-1][0]] = timed.cpu  # type: ignore[attr-defined]
    load_after = os.getloadavg()
    cpus = os.cpu_count()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.members:,} members, {args.events:,} events over {DAYS} days",
        "",
        f"{cpus} CPUs; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (`{uptime}`);"
        f" best of {args.repeat}; JIT off, work_mem {WORK_MEM} (as the service sets it)"
        + ("; no parallel workers (`--serial`)." if args.serial else "."),
        "",
        "| query | time | backend CPU | note |",
        "|---|---:|---:|---|",
        *(
            f"| {name} | {seconds * 1000:,.0f} ms | {CPU.get(name, float('nan')) * 1000:,.0f} ms | {note} |"
            for name, seconds, note in results
        ),
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_docs:
        harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)


if __name__ == "__main__":
    main()
