"""Segments benchmark: the full recompute of 20 realistic segments over 1,000,000 members, and
how long an event takes to move segment membership at a steady 500 events/s.

- **full recompute** on the member 360 benchmark's database (``cdp_bench_members``:
  1,000,000 members, 10,000,000 events over 300 days; built by ``bench/members.py`` and kept,
  or built here): the 20 segments of ``SEGMENTS`` (figures, behaviour in time windows with
  property filters, did-not / first-time / stopped, tiers and points, traits, identifiers,
  segments of segments, the issue's Gold-in-Shanghai example) plus the platform's built-in
  RFM and lifecycle segments, computed by ``memberships_compute_all`` (what the nightly job
  and a rule edit run) at the data's last day: once from empty (every member enters) and
  once more (steady state: nothing changes, as most nights). Each segment's time and size,
  and the check that each recorded size is its member count.
- **incremental** on its own database (``cdp_bench_segments``, migrated and emptied here):
  the same segments, ``--people`` people whose history (``--history`` events) is first run
  through the pipeline, then ``--rate`` events/s (views, carts, orders in every channel,
  sign-ups; new people among them) are written for ``--seconds`` seconds as ingestion writes
  them, while ``--workers`` processes run the pipeline (``events_process_pending``:
  resolution, then the member refresh that evaluates tags and segments) as Celery workers
  would, polling every 50 ms when idle. Latency of an event = from its ``received_at`` to
  the commit of the refresh that evaluated its member after its resolution (the refresh
  deletes the dirty mark the resolution wrote; a bench-only trigger timestamps that delete
  with ``clock_timestamp()``, just before the commit). p50/p95/p99/max over every event of
  the steady part, and whether the workers kept up.

Results are printed as markdown and inserted, newest first, into the segments block of
``docs/benchmarks.md``.

    .venv/bin/python bench/segments.py                      # both, at full scale
    .venv/bin/python bench/segments.py --skip-full --seconds 30
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import contextlib
import logging
import multiprocessing as mp
import random
import signal
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import ingest
import orjson
import psycopg
from harness import DOCS, ROOT

bench_members = harness.bench_script("members")

START_MARKER = "<!-- bench/segments.py: segments benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/segments.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/segments.py: end of the segments benchmarks. -->"
INTRO = """# Segments benchmarks

`bench/segments.py` (see its docstring): the full recompute of 20 realistic segments over
1,000,000 members (target: under 60 s), and event-to-membership latency at a steady 500
events/s (target: p95 under 5 s)."""

INCREMENTAL_DATABASE = harness.database_name("cdp_bench_segments")
INCREMENTAL_URL = harness.database_url(INCREMENTAL_DATABASE)
INCREMENTAL_ENV = harness.service_env(database=INCREMENTAL_URL, broker=harness.broker_url(14))
#: The member 360 data's last day: the full recompute's "now".
DATA_END = datetime(2026, 10, 28, 12, tzinfo=UTC)

SEGMENTS: dict[str, dict] = {
    "big-spenders": {"aggregate": "spend", "op": "gte", "value": 800},
    "high-aov": {"aggregate": "average_order_value", "op": "gte", "value": 300},
    "pos-last-30-days": {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30},
    "app-not-store-90-days": {"all": [
        {"event": "Order Completed", "where": {"channel": "app"}, "in_last_days": 90},
        {"did_not": {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 90}}]},
    "browsed-not-bought-30-days": {"all": [
        {"event": "Product Viewed", "in_last_days": 30, "at_least": 2},
        {"did_not": {"event": "Order Completed", "in_last_days": 30}}]},
    "cart-abandoners-web": {"all": [
        {"event": "Product Added", "where": {"channel": "web"}, "in_last_days": 14},
        {"did_not": {"event": "Order Completed", "in_last_days": 14}}]},
    "first-app-order-7-days": {"first_time": {"event": "Order Completed", "where": {"channel": "app"},
                                              "in_last_days": 7}},
    "lapsed-app-buyers": {"stopped": {"event": "Order Completed", "where": {"channel": "app"},
                                      "in_last_days": 60, "before_days": 120}},
    "viewed-sku-42": {"event": "Product Viewed", "where": {"properties.sku": "SKU-42"}, "in_last_days": 120},
    "mini-program-browsers": {"event": "Product Viewed", "where": {"channel": "mini_program"},
                              "in_last_days": 60, "at_least": 2},
    "gold-and-black": {"tier": {"in": ["gold", "black"]}},
    "points-500-plus": {"points": {"op": "gte", "value": 500}},
    "store-s01-shoppers": {"aggregate": "stores_visited", "op": "contains", "value": "S01"},
    "active-14-days": {"aggregate": "last_event_at", "op": "within_days", "value": 14},
    "dormant-180-days": {"aggregate": "last_purchase_at", "op": "older_than_days", "value": 180},
    "no-wechat-with-email": {"all": [{"has_identifier": "email"}, {"not": {"has_identifier": "wechat_unionid"}}]},
    "named-members": {"trait": "name", "op": "exists"},
    "gold-in-shanghai-style": {"all": [
        {"tier": {"in": ["gold"]}}, {"aggregate": "stores_visited", "op": "contains", "value": "S02"},
        {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30},
        {"did_not": {"event": "Order Completed", "where": {"channel": "mini_program"}}}]},
    "big-spenders-gone-quiet": {"all": [{"segment": "big-spenders"}, {"not": {"segment": "active-14-days"}}]},
    "champions-in-store": {"all": [{"tag": "rfm-champions"}, {"aggregate": "orders_pos", "op": "gte", "value": 1}]},
}  # fmt: skip


def segments_define() -> None:
    from members.segments.models import Segment

    Segment.objects.filter(key__in=SEGMENTS).delete()
    for key, rule in SEGMENTS.items():
        Segment.objects.create(key=key, name=key.replace("-", " ").capitalize(), kind="dynamic", rule=rule)


# --- full recompute ------------------------------------------------------------------------------


#: Points and tiers as the loyalty refresh would leave them (bench/points.py computes them for
#: real, in 15 minutes): the balance is the spend, tiers at 300 / 800 / 2000 points.
POINTS_ACCOUNTS = """
INSERT INTO members_pointsaccount (member_id, balance, negative_allowed, tier, tier_since, recheck_at,
                                   next_expiry_at, next_expiry_points, updated_at)
SELECT a.member_id, a.spend::int, true,
       CASE WHEN a.spend >= 2000 THEN 'black' WHEN a.spend >= 800 THEN 'gold' WHEN a.spend >= 300 THEN 'silver'
            ELSE 'member' END, a.last_purchase_at, NULL, NULL, 0, now()
FROM members_memberaggregate AS a
ON CONFLICT (member_id) DO NOTHING
"""


def full_recompute(*, from_empty: bool = True) -> dict[str, Any]:
    from members.segments.services import memberships_compute_all

    with bench_members.database() as conn:
        if not conn.execute("SELECT EXISTS (SELECT 1 FROM members_pointsaccount)").fetchone()[0]:
            with ingest.announced("writing points accounts"):
                conn.execute(POINTS_ACCOUNTS)
                conn.execute("VACUUM ANALYZE members_pointsaccount")
        if from_empty:
            conn.execute(
                "TRUNCATE members_segmentmember, members_segmentchange, members_membertag, members_tagchange"
            )
            conn.execute("UPDATE members_segment SET size = 0")
    runs = []
    for label in ("from empty", "steady (again)") if from_empty else ("steady",):
        began = time.monotonic()
        with ingest.announced(f"full recompute, {label}"), _counts_timed() as counts:
            segments = memberships_compute_all(now=DATA_END)
        runs.append({"label": label, "seconds": time.monotonic() - began, "counts_s": sum(counts) / 1000,
                     "segments": {s.key: (s.compute_ms, s.size, s.error) for s in segments}})  # fmt: skip
    with bench_members.database() as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM members_segment s WHERE s.size <> "
            "(SELECT count(*) FROM members_segmentmember m WHERE m.segment_id = s.id)"
        ).fetchone()[0]
        members = conn.execute("SELECT count(*) FROM members_member WHERE status = 'active'").fetchone()[0]
    return {"runs": runs, "wrong_sizes": wrong, "members": members}


@contextlib.contextmanager
def _counts_timed() -> Iterator[list[int]]:
    """The milliseconds of the full run's shared pass gathering behaviour counts (it logs them)."""
    found: list[int] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.msg.startswith("behaviour counts"):
                found.append(int(record.args[1]))  # type: ignore[index]

    log = logging.getLogger("members.segments.services")
    handler, level = Handler(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield found
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


# --- incremental ------------------------------------------------------------------------------

SOURCES = {
    "pos": ("Store S01", "S01"),
    "app": ("App", ""),
    "mini_program": ("Mini-program", ""),
    "web": ("Web", ""),
}
LATENCY_LOG = """
CREATE TABLE IF NOT EXISTS bench_refreshed (member_id bigint, marked_at timestamptz, refreshed_at timestamptz);
TRUNCATE bench_refreshed;
CREATE OR REPLACE FUNCTION bench_refreshed_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_refreshed VALUES (OLD.member_id, OLD.marked_at, clock_timestamp()); RETURN OLD; END $$;
DROP TRIGGER IF EXISTS bench_refreshed_log ON members_dirtymark;
CREATE TRIGGER bench_refreshed_log AFTER DELETE ON members_dirtymark FOR EACH ROW EXECUTE FUNCTION bench_refreshed_log();
"""
COLUMNS = (
    "source_id, message_id, type, event, name, user_id, anonymous_id, previous_id, group_id, channel, "
    "store_code, timestamp, received_at, context, traits, properties, integrations"
)


def _event_row(rng: random.Random, n: int, people: int, sources: dict[str, int], at: datetime) -> tuple:
    """One event as ingestion stores it: a person (one in ten new) doing something somewhere."""
    person = rng.randint(1, people) if rng.random() > 0.1 else people + n
    channel = rng.choice(("pos", "app", "app", "mini_program", "web"))
    kind = rng.random()
    phone = f"139{person:08d}"
    traits, properties, event, type_ = "{}", "{}", "", "track"
    if kind < 0.1:
        type_, traits = "identify", orjson.dumps({"phone": phone, "name": f"Person {person}"}).decode()
    elif kind < 0.3:
        event = "Order Completed"
        properties = orjson.dumps(
            {"order_id": f"B{n}", "total": rng.randint(20, 900), "currency": "CNY"}
        ).decode()
    elif kind < 0.45:
        event, properties = "Product Added", orjson.dumps({"sku": f"SKU-{rng.randint(1, 99)}"}).decode()
    else:
        event, properties = "Product Viewed", orjson.dumps({"sku": f"SKU-{rng.randint(1, 99)}"}).decode()
    context = orjson.dumps({"traits": {"phone": phone}} if channel == "pos" else {}).decode()
    user_id = "" if channel == "pos" else f"p{person}"
    return (sources[channel], f"bs-{n}", type_, event, "", user_id, "", "", "", channel,
            "S01" if channel == "pos" else "", at - timedelta(seconds=rng.random()), at, context, traits,
            properties, "{}")  # fmt: skip


def _worker(stop: Any, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    harness.django_setup(INCREMENTAL_ENV)
    from events.pipeline import events_process_pending

    cpu, processed = time.process_time(), 0
    while not stop.is_set():
        done, more = events_process_pending()
        processed += done
        if not done and not more:
            time.sleep(0.05)
    out.put({"processed": processed, "cpu_s": time.process_time() - cpu})


def _connections_close() -> None:
    """Before forking workers: a child must not share this process's database connection."""
    from django.db import connections

    connections.close_all()


def _drain(workers: int) -> float:
    _connections_close()
    stop, out = mp.Event(), mp.Queue()
    began = time.monotonic()
    procs = [mp.Process(target=_worker, args=(stop, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    with psycopg.connect(INCREMENTAL_URL, autocommit=True) as conn:
        while conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events_pendingevent) OR EXISTS (SELECT 1 FROM identity_memberchange) "
            "OR EXISTS (SELECT 1 FROM members_dirtymark)"
        ).fetchone()[0]:
            time.sleep(0.5)
    stop.set()
    for p in procs:
        p.join()
    return time.monotonic() - began


def incremental(
    *, people: int, history: int, rate: int, seconds: int, workers: int, seed: int
) -> dict[str, Any]:
    from events.models import Channel, Source
    from events.services import source_create

    rng = random.Random(seed)
    with psycopg.connect(INCREMENTAL_URL, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE events_event, events_pendingevent, members_member, identity_identifier, identity_eventidentifier, "
            "identity_eventresolution, identity_memberchange, members_dirtymark, members_segmentchange, members_tagchange "
            "RESTART IDENTITY CASCADE"
        )
    sources = {
        channel: (
            Source.objects.filter(name=name).values_list("pk", flat=True).first()
            or source_create(name=name, kind=Channel(channel), store_code=code).source.pk
        )
        for channel, (name, code) in SOURCES.items()
    }
    segments_define()
    with psycopg.connect(INCREMENTAL_URL, autocommit=True) as conn:
        with ingest.announced(f"history: {history:,} events of {people:,} people through the pipeline"):
            start = datetime.now(UTC) - timedelta(days=200)
            with conn.cursor().copy(f"COPY events_event ({COLUMNS}) FROM STDIN") as copy:
                for n in range(history):
                    copy.write_row(_event_row(rng, n, people, sources, start + timedelta(seconds=n * 170)))
            conn.execute("ANALYZE")
            loaded = _drain(workers)
        conn.execute("ANALYZE")
        conn.execute(LATENCY_LOG)
        members = conn.execute("SELECT count(*) FROM members_member WHERE status = 'active'").fetchone()[0]
    _connections_close()
    stop, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_worker, args=(stop, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    time.sleep(2)  # the workers are up
    began = time.monotonic()
    sent, tick = 0, 0.1
    with ingest.announced(f"{rate} events/s for {seconds} s, {workers} workers"):
        with psycopg.connect(INCREMENTAL_URL, autocommit=True) as conn:
            while (elapsed := time.monotonic() - began) < seconds:
                due = int(elapsed * rate) + int(rate * tick)
                now = datetime.now(UTC)
                with conn.cursor().copy(f"COPY events_event ({COLUMNS}) FROM STDIN") as copy:
                    for n in range(sent, due):
                        copy.write_row(_event_row(rng, history + n, people, sources, now))
                sent = due
                time.sleep(max(0.0, began + (sent / rate) - tick - time.monotonic()))
        fed = time.monotonic() - began
        backlog_at_end = _backlog()
        while _backlog()[0] or _backlog()[1]:
            time.sleep(0.2)
        drained = time.monotonic() - began
    stop.set()
    cpu = [out.get() for _ in procs]
    for p in procs:
        p.join()
    with psycopg.connect(INCREMENTAL_URL, autocommit=True) as conn:
        latencies = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM min(b.refreshed_at) - e.received_at) FROM events_event e "
                "JOIN identity_eventresolution r ON r.event_id = e.id "
                "JOIN bench_refreshed b ON b.member_id = r.member_id AND b.refreshed_at > r.resolved_at "
                "WHERE e.message_id LIKE 'bs-%%' AND substr(e.message_id, 4)::int >= %s GROUP BY e.id, e.received_at",
                [history],
            )
        ]
        changes = conn.execute(
            "SELECT count(*) FROM members_segmentchange WHERE at > now() - %s * interval '1 second'",
            [drained + 5],
        ).fetchone()[0]
    latencies.sort()

    def pct(q: float) -> float:
        return (
            float(latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else float("nan")
        )

    return {"people": people, "members": members, "history": history, "history_s": loaded, "rate": rate,
            "seconds": seconds, "sent": sent, "fed_s": fed, "drained_s": drained, "backlog_at_end": backlog_at_end,
            "measured": len(latencies), "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
            "max": latencies[-1] if latencies else float("nan"),
            "mean": statistics.fmean(latencies) if latencies else float("nan"), "changes": changes,
            "workers": workers, "cpu_s": sum(c["cpu_s"] for c in cpu)}  # fmt: skip


def _backlog() -> tuple[int, int]:
    with psycopg.connect(INCREMENTAL_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM events_pendingevent), "
            "(SELECT count(*) FROM identity_memberchange) + (SELECT count(*) FROM members_dirtymark)"
        ).fetchone()
    return int(row[0]), int(row[1])


# --- report ----------------------------------------------------------------------------------


def full_lines(full: dict[str, Any]) -> list[str]:
    first, again = full["runs"][0], full["runs"][-1]
    lines = [
        f"Full recompute (`memberships_compute_all` at {DATA_END:%Y-%m-%d}, one process) over "
        f"{full['members']:,} active members and 10,000,000 events: the RFM cutoffs, computed tags, then the "
        f"{len(SEGMENTS)} segments below and the built-in RFM / lifecycle segments.",
        "",
        f"| run | all (s) | the {len(SEGMENTS)} segments, with the shared pass gathering behaviour counts (s) | check |",
        "|---|---:|---:|---|",
    ]
    for run in full["runs"]:
        ours = run["counts_s"] + sum((run["segments"].get(k) or (0, 0, ""))[0] or 0 for k in SEGMENTS) / 1000
        lines.append(f"| {run['label']} | {run['seconds']:,.1f} | **{ours:,.1f}** | "
                     f"{'✓' if not full['wrong_sizes'] else '✗'} sizes = member counts |")  # fmt: skip
    runs = full["runs"]
    lines += ["", "| segment | " + " | ".join(f"{run['label']}: ms" for run in runs) + " | size | error |",
              "|---|" + "---:|" * len(runs) + "---:|---|"]  # fmt: skip
    for key in sorted(first["segments"]):
        _, size, error = again["segments"][key]
        times = " | ".join(f"{(run['segments'].get(key) or (0,))[0] or 0:,}" for run in runs)
        lines.append(f"| {key} | {times} | {size:,} | {error[:60]} |")
    return lines


def incremental_lines(inc: dict[str, Any]) -> list[str]:
    kept_up = inc["drained_s"] - inc["fed_s"] < 10
    return [
        f"Incremental: {inc['history']:,} events of history ({inc['members']:,} members, through the pipeline in "
        f"{inc['history_s']:,.0f} s), then **{inc['rate']} events/s for {inc['seconds']} s** ({inc['sent']:,} events, "
        f"one in ten from a new person) with {inc['workers']} pipeline worker processes; "
        f"{inc['changes']:,} segment entries/exits written meanwhile.",
        "",
        "| events measured | p50 | p95 | p99 | max | backlog when feeding stopped (events, marks) | drained after | check |",
        "|---:|---:|---:|---:|---:|---|---:|---|",
        f"| {inc['measured']:,} | {inc['p50']:.2f} s | **{inc['p95']:.2f} s** | {inc['p99']:.2f} s | {inc['max']:.2f} s | "
        f"{inc['backlog_at_end'][0]:,}, {inc['backlog_at_end'][1]:,} | {inc['drained_s'] - inc['fed_s']:.1f} s | "
        f"{'✓' if inc['p95'] < 5 and kept_up and inc['measured'] >= inc['sent'] * 0.95 else '✗'} p95 < 5 s, kept up |",
    ]


def write_docs(section: str) -> None:
    harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000, help="full recompute: members of the data")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument(
        "--steady-only",
        action="store_true",
        help="full recompute: only the steady run, over the memberships kept",
    )
    parser.add_argument("--people", type=int, default=50_000)
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()
    started = datetime.now(UTC)
    background = ingest.wait_until_quiet(10, 60)
    lines: list[str] = []
    ok = True
    if not args.skip_full:
        with ingest.announced(f"preparing database {bench_members.DATABASE_NAME}"):
            ingest.SERVICE_ENV.update(bench_members.SERVICE_ENV)
            ingest.DATABASE_URL = bench_members.DATABASE_URL
            ingest.manage("ensure_services", "--create-database")
            ingest.manage("migrate", "--noinput", "-v0")
            harness.django_setup(bench_members.SERVICE_ENV)
        if not bench_members.scale_built(args.members):
            bench_members.populate(args.members)
        if not args.steady_only:
            segments_define()
        full = full_recompute(from_empty=not args.steady_only)
        lines += [*full_lines(full), ""]
        last = full["runs"][-1]
        ours = last["counts_s"] + sum((last["segments"].get(k) or (0,))[0] or 0 for k in SEGMENTS) / 1000
        ok &= not full["wrong_sizes"] and ours < 60
    if not args.skip_incremental:
        env = {**INCREMENTAL_ENV}
        ingest.SERVICE_ENV.update(env)
        ingest.DATABASE_URL = INCREMENTAL_URL
        with ingest.announced(f"preparing database {INCREMENTAL_DATABASE}"):
            ingest.manage("ensure_services", "--create-database")
            ingest.manage("migrate", "--noinput", "-v0")
        if args.skip_full:
            harness.django_setup(env)
        else:  # one Django per process: the incremental part runs in a child
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=_incremental_child, args=(vars(args), queue))
            child.start()
            inc = queue.get()
            child.join()
        if args.skip_full:
            inc = incremental(people=args.people, history=args.history, rate=args.rate, seconds=args.seconds,
                              workers=args.workers, seed=args.seed)  # fmt: skip
        lines += incremental_lines(inc)
        ok &= inc["p95"] < 5
    facts = ingest.machine()
    section = "\n".join([
        f"## Segments — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL {facts['postgresql']} "
        f"({facts['postgresql_settings']}), Python {facts['python']}, Django {facts['django']}; other processes "
        f"used {background:.0f}% of the CPU just before the run.",
        "",
        *lines,
    ])  # fmt: skip
    print(section)
    if args.docs if args.docs is not None else (args.members >= 1_000_000 and not args.skip_full):
        write_docs(section)
        print(f"\nWritten to {DOCS.relative_to(ROOT)}")
    return 0 if ok else 1


def _incremental_child(args: dict[str, Any], queue: Any) -> None:
    harness.django_setup(INCREMENTAL_ENV)
    queue.put(incremental(people=args["people"], history=args["history"], rate=args["rate"],
                          seconds=args["seconds"], workers=args["workers"], seed=args["seed"]))  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
