"""Insights benchmark: the KPI rollups at scale, each figure beside a hand-written SQL query of
(part of) the same answer, as the limit.

On the member 360 benchmark's database (``cdp_bench_members``: ``--members`` members with ten
events each over 300 days, two orders each — a store and the app — built by
``bench/members.py`` and kept, or built here when the scale differs; consent to ``analytics``
stated once for 18 in 20 surviving members, ``consent_state``, as the member-level KPIs count
analysed members only):

- **nightly from scratch**: the insights tables emptied, then ``compute_from(since=None)``
  (what ``manage.py compute_insights`` runs): every member's facts read and stored (one row
  per member), every day rolled up from them. The limit: one ``GROUP BY`` over the orders and
  one over the events per day, channel and store (the sales, orders, buyers and events columns
  only: the floor any rollup of these tables pays);
- **incremental day**: the members active on one day (a 300th of them) marked as the member
  refresh marks them, then ``insights_refresh`` (the beat job): their facts read again and
  compared, the changes of those that differ added to the days they touch. Run twice: once
  with a real change (their orders on that day refunded by 10, as a late refund would), once
  with none. The limit: the same
  day's sales by channel and store recomputed from the orders by hand;
- **dashboard**: ``GET /console/insights/`` (tiles for the week, the 13-week sales chart, four
  target trends, the coupon matrix) and ``GET /api/v1/insights/kpis/summary/`` as an analyst,
  in process through Django's test client (template and serializer included, no network),
  p50/p95/p99 of ``--requests``; the limit: the hand-written query of the tiles' sums.

Results are printed as markdown and inserted, newest first, into the insights block of
``docs/benchmarks.md``. At a reduced scale the seconds are also extrapolated linearly to
1,000,000 members (the work is per member and per day: linear in members at fixed days).

    .venv/bin/python bench/insights.py --members 20000
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import os
import time
from datetime import UTC, date, datetime, timedelta

import ingest
import psycopg
from harness import DOCS, ROOT

bench_members = harness.bench_script("members")

START_MARKER = "<!-- bench/insights.py: insights benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/insights.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/insights.py: end of the insights benchmarks. -->"
INTRO = """# Insights benchmarks

`bench/insights.py` (see its docstring): the KPI rollups from scratch, one day's change
rolled up incrementally, and the board's requests, each beside a hand-written SQL limit."""
T0 = date(2026, 1, 1)
TABLES = (
    "insights_memberfacts, insights_dailyrollup, insights_pointsrollup, insights_couponrollup, "
    "insights_dirtymember, insights_rollupwatermark"
)
LIMIT_NIGHTLY = [
    """SELECT (placed_at AT TIME ZONE 'UTC')::date AS d, channel, store_code, sum(total - refunded), count(*),
              count(DISTINCT member_id)
       FROM members_memberorder WHERE placed_at IS NOT NULL AND currency = 'CNY'
       GROUP BY GROUPING SETS ((d), (d, channel), (d, channel, store_code))""",
    """SELECT (e.timestamp AT TIME ZONE 'UTC')::date AS d, e.channel, e.store_code, count(*)
       FROM events_event AS e JOIN identity_eventresolution AS r ON r.event_id = e.id
       GROUP BY GROUPING SETS ((d), (d, e.channel), (d, e.channel, e.store_code))""",
]
LIMIT_DAY = """SELECT channel, store_code, sum(total - refunded), count(*) FROM members_memberorder
    WHERE member_id = ANY(%s) AND placed_at >= %s AND placed_at < %s GROUP BY GROUPING SETS ((), (channel), (channel, store_code))"""
LIMIT_TILES = """SELECT sum(sales) FILTER (WHERE day BETWEEN %s AND %s), sum(sales) FILTER (WHERE day BETWEEN %s AND %s),
    sum(active_delta), sum(unified_delta), sum(identified_delta)
    FROM insights_dailyrollup WHERE channel = '*' AND store_code = '*' AND day <= %s"""


def consent_state() -> None:
    """Consent to ``analytics`` as bench/funnels.py states it (18 in 20 surviving members granted,
    1 in 20 denied, 1 in 20 never said), once: the member database has none, and without it no
    member is analysed, so the member-level KPIs (first purchase, repurchase, lifecycle,
    unification, conversion) — a third of the rows and most of the computation — are empty."""
    with bench_members.database() as conn:
        if conn.execute(
            "SELECT EXISTS (SELECT FROM consent_consentstatement WHERE purpose = 'analytics')"
        ).fetchone()[0]:
            return
        conn.execute(
            "INSERT INTO consent_consentstatement (member_id, subject_id, purpose, state, at, version, origin, channel,"
            " store_code, app, device_id, note, recorded_at) SELECT id, id, 'analytics',"
            " CASE WHEN abs(hashtext('a' || id)) %% 20 = 0 THEN 'denied' ELSE 'granted' END, %s, 'bench', 'staff',"
            " 'staff', '', '', '', '', now() FROM members_member WHERE merged_into_id IS NULL"
            " AND abs(hashtext('a' || id)) %% 20 <> 1",
            [datetime.combine(T0 - timedelta(days=30), datetime.min.time(), UTC)],
        )
        conn.execute("ANALYZE consent_consentstatement")


def timed(conn: psycopg.Connection, statement: str, params: list | None = None) -> float:
    began = time.monotonic()
    conn.execute(statement, params or []).fetchall()
    return time.monotonic() - began


def nightly() -> dict[str, float]:
    from members.insights.services import compute_from

    with bench_members.database() as conn:
        conn.execute(f"TRUNCATE {TABLES}")
    with ingest.announced("rolling every member's KPIs up from scratch"):
        began = time.monotonic()
        done = compute_from(since=None)
        took = time.monotonic() - began
    with bench_members.database() as conn:
        limit = sum(timed(conn, s) for s in LIMIT_NIGHTLY)
        rows = conn.execute(
            "SELECT (SELECT count(*) FROM insights_memberfacts), (SELECT count(*) FROM insights_dailyrollup)"
        ).fetchone()
        # The check: the rollup's sales per day equal the orders' (every member counts; an order
        # refunded in full is no order).
        mismatched = conn.execute(
            """SELECT count(*) FROM (SELECT (placed_at AT TIME ZONE 'UTC')::date AS day, sum(total - refunded) AS s
               FROM members_memberorder WHERE total - refunded > 0 GROUP BY 1) AS o FULL JOIN (SELECT day, sales FROM insights_dailyrollup
               WHERE channel = '*' AND store_code = '*' AND sales <> 0) AS r USING (day) WHERE o.s IS DISTINCT FROM r.sales"""
        ).fetchone()[0]
    return {"seconds": took, "limit": limit, "members": done["members"], "days": done["days"],
            "member_facts": rows[0], "rollup_rows": rows[1], "mismatched": mismatched}  # fmt: skip


def incremental(*, change: bool) -> dict[str, float]:
    from members.insights.services import insights_refresh, members_changed

    day = T0 + timedelta(days=150)
    with bench_members.database() as conn:
        members = [r[0] for r in conn.execute(
            "SELECT DISTINCT member_id FROM members_memberorder WHERE placed_at >= %s AND placed_at < %s",
            [day, day + timedelta(days=1)],
        ).fetchall()]  # fmt: skip
        if change:
            conn.execute(
                "UPDATE members_memberorder SET refunded = refunded + 10 WHERE member_id = ANY(%s) "
                "AND placed_at >= %s AND placed_at < %s",
                [members, day, day + timedelta(days=1)],
            )
        limit = timed(conn, LIMIT_DAY, [members, day, day + timedelta(days=1)])
    from django.db import transaction

    with transaction.atomic():
        members_changed(members)  # as the member refresh's hook does
    began = time.monotonic()
    done = insights_refresh()
    took = time.monotonic() - began
    return {"seconds": took, "limit": limit, "members": len(members), "days": done["days"]}


def dashboard(requests: int) -> dict[str, object]:
    from django.test import Client

    from cdp.roles import Role
    from cdp.services import staff_user_ensure, token_issue

    user = staff_user_ensure(username="bench-analyst", role=Role.ANALYST)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)  # the console's session; the API takes a token
    token = token_issue(user=user, name="bench").secret
    end = (T0 + timedelta(days=299)).isoformat()
    out: dict[str, object] = {}
    for name, path in (("console board", f"/console/insights/?end={end}"),
                       ("API summary", f"/api/v1/insights/kpis/summary/?end={end}")):  # fmt: skip
        samples = []
        for i in range(requests + 10):
            began = time.monotonic()
            response = client.get(path, HTTP_AUTHORIZATION=f"Token {token}")
            if i >= 10:  # warm-up
                samples.append(time.monotonic() - began)
            assert response.status_code == 200, (path, response.status_code)
        out[name] = ingest.percentiles(samples)
    week_end = T0 + timedelta(days=299)
    with bench_members.database() as conn:
        limits = []
        for _ in range(requests):
            limits.append(timed(conn, LIMIT_TILES, [week_end - timedelta(days=6), week_end, week_end - timedelta(days=13),
                                                     week_end - timedelta(days=7), week_end]))  # fmt: skip
        out["limit"] = ingest.percentiles(limits)
    return out


def write_docs(section: str) -> None:
    harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per dashboard path")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    started = datetime.now(UTC)
    with ingest.announced(f"preparing database {bench_members.DATABASE_NAME}"):
        ingest.SERVICE_ENV.update(bench_members.SERVICE_ENV)
        ingest.DATABASE_URL = bench_members.DATABASE_URL
        ingest.manage("ensure_services", "--create-database")
        ingest.manage("migrate", "--noinput", "-v0")
        # Production settings serve hashed static file names: the board's page needs the manifest.
        ingest.manage("collectstatic", "--noinput", "-v0")
        bench_members.django_setup()
    took = bench_members.populate(args.members) if not bench_members.scale_built(args.members) else {}
    consent_state()
    background = ingest.wait_until_quiet(10, 60)
    load_before = os.getloadavg()
    full = nightly()
    changed = incremental(change=True)
    unchanged = incremental(change=False)
    board = dashboard(args.requests)
    load_after = os.getloadavg()
    facts = ingest.machine()
    scale = 1_000_000 / args.members

    def ms(p: tuple[float, float, float]) -> str:
        return " / ".join(f"{v * 1000:,.1f}" for v in p)

    lines = [
        f"## Insights — {started:%Y-%m-%d %H:%M} UTC, {args.members:,} members",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL {facts['postgresql']}, "
        f"Python {facts['python']}, Django {facts['django']}; other processes used {background:.0f}% of the CPU just "
        f"before the run; load average {' '.join(f'{v:.1f}' for v in load_before)} before, {' '.join(f'{v:.1f}' for v in load_after)} after (a shared machine).",
        f"- Data: {args.members:,} members, {args.members * 10:,} events over 300 days, two orders each "
        + (f"(written in {sum(took.values()) / 60:.1f} min)" if took else "(kept from an earlier run)")
        + f"; {full['member_facts']:,} members' facts rows, {full['rollup_rows']:,} rollup rows.",
        "",
        "| path | work | seconds | limit (hand-written SQL) | at 1M members (linear) | check |",
        "|---|---:|---:|---:|---:|---|",
        f"| nightly from scratch (`compute_insights`) | {full['members']:,} members, {full['days']:,} days "
        f"| {full['seconds']:,.1f} | {full['limit']:,.2f} (orders + events grouped per day, channel, store) "
        f"| {full['seconds'] * scale:,.0f} s (target < 60 s) | {'✓' if not full['mismatched'] else '✗'} sales per day = the orders' |",
        f"| incremental day, changed (refunds on one day's orders) | {changed['members']:,} members, {changed['days']:,} days rolled up "
        f"| {changed['seconds']:,.2f} | {changed['limit']:,.3f} (the day's sales by channel and store) "
        f"| {changed['seconds'] * scale:,.1f} s (target < 5 s) | |",
        f"| incremental day, nothing changed | {unchanged['members']:,} members, {unchanged['days']:,} days "
        f"| {unchanged['seconds']:,.2f} | {unchanged['limit']:,.3f} | {unchanged['seconds'] * scale:,.1f} s | |",
        "",
        "| dashboard request (in process, analyst) | p50 / p95 / p99 ms | limit p50 / p95 / p99 ms (the tiles' sums by hand) |",
        "|---|---:|---:|",
        f"| `GET /console/insights/` | {ms(board['console board'])} | {ms(board['limit'])} |",  # type: ignore[arg-type]
        f"| `GET /api/v1/insights/kpis/summary/` | {ms(board['API summary'])} | {ms(board['limit'])} |",  # type: ignore[arg-type]
        "",
        "Dashboard requests read the rollups only (one row per day, channel and store), so their time depends on "
        "the days held, not on the members: it does not grow with the scale.",
    ]
    section = "\n".join(lines)
    print(section)
    if args.docs:
        write_docs(section)
        print(f"\nWritten to {DOCS.relative_to(ROOT)}")
    return 0 if not full["mismatched"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
