"""Heavy-history benchmark: members with long histories through the whole pipeline, and what a
refresh costs for a member with ~1,000 events against one with ~10.

On its own database (``cdp_bench_heavy``, migrated and emptied here), with the demo's loyalty
program (tiers, double points in stores, a coupon campaign) and the demo's tags and segments
(``members.loyalty.demo``, ``members.segments.demo``):

- **history**: ``--members`` people with 100 to ``--max-events`` events each (default 1,000),
  plus ``--light`` people with about 10, spread over 300 days and interleaved in time order
  (each person's events are spread through the whole stream, so each member is refreshed many
  times as their history grows): identifies with traits, product views and adds, orders (about
  a quarter of the events, some with a coupon code) in every channel, refunds of earlier
  orders, sign-ups; about 1% of them arrive late (an hour to three days). They are stored as
  ingestion stores them (``COPY`` into ``events_event``: the pending queue fills by trigger),
  then ``--workers`` processes run the pipeline (``events_process_pending``: resolution, then
  the member refresh: traits, figures, orders, points and tier, tags and segments) until
  nothing is waiting. Rate = events / time from the first worker start to an empty queue.
- **heavy vs light**: then ``--tail`` more events, once all for heavy members (each holding
  hundreds of events) and once all for light members (about 10), each run drained the same
  way: events per second of each.

Load-independent figures from the workers: CPU seconds per event (their ``process_time``),
members refreshed by each path (``cdp_member_refresh_paths_total``) and events the refresh
read from the log per refreshed member (``cdp_member_refresh_events_read_total``).
``--profile DIR``: each worker of the two tail runs writes a cProfile of its CPU time there.
``--full-only`` turns the incremental path off (``MEMBER_REFRESH_INCREMENTAL=false``): every
refresh recomputes from all the member's events, as before it existed.

Results are printed as markdown and inserted, newest first, into the heavy-history block of
``docs/benchmarks.md`` with ``--docs``.

    .venv/bin/python bench/heavy.py                                   # 50,000 members
    .venv/bin/python bench/heavy.py --members 200 --light 200         # a quick look
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import cProfile
import multiprocessing as mp
import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import ingest
import orjson
import psycopg
from autovacuum import process_cpu_s
from harness import DOCS, ROOT

START_MARKER = "<!-- bench/heavy.py: heavy-history benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/heavy.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/heavy.py: end of the heavy-history benchmarks. -->"
INTRO = """# Heavy-history benchmarks

`bench/heavy.py` (see its docstring): members with 100 to 1,000 events through the whole
pipeline (target: at least 3,000 events/s with 2 workers), and the refresh of a member with
~1,000 events against one with ~10 (target: within 20%)."""

DATABASE = harness.database_name("cdp_bench_heavy")
URL = harness.database_url(DATABASE)
ENV = harness.service_env(database=URL, broker=harness.broker_url(13))
START = datetime(2026, 1, 5, tzinfo=UTC)
WINDOW = timedelta(days=300)
COLUMNS = (
    "source_id, message_id, type, event, name, user_id, anonymous_id, previous_id, group_id, channel, "
    "store_code, timestamp, received_at, context, traits, properties, integrations"
)
CHANNELS = ("pos", "pos", "app", "mini_program", "web")
SOURCES = {
    "pos": ("Heavy bench stores", "S01"),
    "app": ("Heavy bench app", ""),
    "mini_program": ("Heavy bench mini-program", ""),
    "web": ("Heavy bench web", ""),
}
PRODUCTS = (("P1", "Apparel/Tops", 129), ("P2", "Shoes/Sneakers", 459), ("P3", "Beauty/Skincare", 368),
            ("P4", "Accessories/Scarves", 499), ("P5", "Home/Fragrance", 228))  # fmt: skip


def _person_events(
    rng: random.Random, person: int, count: int, sources: dict[str, int], seq: list[int]
) -> list:
    """One person's events (time, row) over the window: an identify first, then a mix."""
    times = sorted(START + WINDOW * rng.random() for _ in range(count))
    orders: list[str] = []
    rows = []
    for n, at in enumerate(times):
        channel = rng.choice(CHANNELS)
        kind = rng.random()
        traits, properties, event, type_ = "{}", "{}", "", "track"
        if n == 0 or kind < 0.05:
            type_ = "identify"
            traits = orjson.dumps({"phone": f"139{person:08d}", "name": f"Person {person}",
                                   "city": rng.choice(("Shanghai", "Beijing", "Shenzhen"))}).decode()  # fmt: skip
        elif kind < 0.30:
            event = "Order Completed"
            sku, category, price = rng.choice(PRODUCTS)
            quantity = rng.randint(1, 3)
            number = f"H{person}-{seq[0]}"  # unique across a person's history and the tails
            orders.append(number)
            body: dict[str, Any] = {"order_id": number, "total": price * quantity, "currency": "CNY",
                                    "products": [{"sku": sku, "category": category, "price": price,
                                                  "quantity": quantity}]}  # fmt: skip
            if rng.random() < 0.05:
                body["coupon"] = "WELCOME20"
            properties = orjson.dumps(body).decode()
        elif kind < 0.33 and orders:
            event = "Order Refunded"
            properties = orjson.dumps({"order_id": rng.choice(orders), "total": rng.randint(10, 120),
                                       "currency": "CNY"}).decode()  # fmt: skip
        elif kind < 0.34:
            event, properties = "Signed Up", "{}"
        elif kind < 0.45:
            event = "Product Added"
            properties = orjson.dumps({"sku": rng.choice(PRODUCTS)[0]}).decode()
        else:
            event = "Product Viewed"
            sku, category, _ = rng.choice(PRODUCTS)
            properties = orjson.dumps({"sku": sku, "category": category}).decode()
        late = timedelta(hours=rng.randint(1, 72)) if rng.random() < 0.01 else timedelta(0)
        seq[0] += 1
        row = (sources[channel], f"hv-{seq[0]}", type_, event, "", f"p{person}", "", "", "", channel,
               "S01" if channel == "pos" else "", at - late, at, "{}", traits, properties, "{}")  # fmt: skip
        rows.append((at, row))
    return rows


def _worker(stop: Any, out: Any, env: dict[str, str], profile: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    harness.django_setup(env)
    from cdp.metrics import REFRESH_EVENTS_READ, REFRESH_FULL_REASONS, REFRESH_MEMBERS, REFRESH_PATHS
    from events.pipeline import events_process_pending
    from members.incremental import FULL_REASONS

    profiler = cProfile.Profile(time.process_time) if profile else None
    if profiler is not None:
        profiler.enable()
    cpu, processed = time.process_time(), 0
    while not stop.is_set():
        done, more = events_process_pending()
        processed += done
        if not done and not more:
            time.sleep(0.05)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"{profile}-{os.getpid()}.prof")
    out.put({
        "cpu_s": time.process_time() - cpu,
        "refreshed": REFRESH_MEMBERS._value.get(),
        "read": REFRESH_EVENTS_READ._value.get(),
        "incremental": REFRESH_PATHS.labels("incremental")._value.get(),
        "full": REFRESH_PATHS.labels("full")._value.get(),
        "settled": REFRESH_PATHS.labels("settled")._value.get(),
        **{f"full_{reason}": REFRESH_FULL_REASONS.labels(reason)._value.get() for reason in FULL_REASONS},
    })  # fmt: skip


def _waiting(conn: psycopg.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM events_pendingevent) OR EXISTS (SELECT 1 FROM identity_memberchange) "
            "OR EXISTS (SELECT 1 FROM members_dirtymark)"
        ).fetchone()[0]
    )


def _drain(
    rows: list[tuple], workers: int, env: dict[str, str], label: str, profile: str = ""
) -> dict[str, Any]:
    """Store these events, then run the pipeline in ``workers`` processes until nothing waits.
    ``profile``: a path prefix; each worker writes a cProfile of its CPU time to ``<prefix>-<pid>.prof``.
    Besides the workers' own figures: the CPU of this database's backends while they ran (from
    /proc, sampled), the WAL the cluster wrote meanwhile (all of it: another database's writes
    count too on a shared cluster) and the rows each table had inserted and updated, with its
    TOAST table's (``pg_stat_user_tables``, flushed when the workers' sessions end)."""
    from django.db import connections

    with psycopg.connect(URL, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY events_event ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("ANALYZE")
    connections.close_all()  # a child must not share this process's connection
    stop, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=_worker, args=(stop, out, env, profile)) for _ in range(workers)]
    backends: dict[int, float] = {}  # pid -> its CPU seconds when last seen
    with psycopg.connect(URL, autocommit=True) as conn:
        tables, wal = _tables_written(conn), _wal(conn)
        with ingest.announced(f"{label}: {len(rows):,} events, {workers} workers"):
            began = time.monotonic()
            for p in procs:
                p.start()
            while _waiting(conn):
                _backends_sample(conn, backends)
                time.sleep(0.2)
            _backends_sample(conn, backends)
            took = time.monotonic() - began
            wal = _wal(conn) - wal
            stop.set()
            reports = [out.get() for _ in procs]
            for p in procs:
                p.join()
        time.sleep(0.5)  # the ended sessions' statistics reach the shared counters
        conn.execute("SELECT pg_stat_clear_snapshot()")
        after = _tables_written(conn)
    written = {
        table: tuple(a - b for a, b in zip(counts, tables.get(table, (0, 0, 0, 0)), strict=True))
        for table, counts in after.items()
    }
    total = {key: sum(r[key] for r in reports) for key in reports[0]}
    return {"label": label, "events": len(rows), "seconds": took, **total,
            "backend_cpu_s": sum(backends.values()), "wal_bytes": wal,
            "written": {t: w for t, w in written.items() if any(w)}}  # fmt: skip


def _backends_sample(conn: psycopg.Connection, backends: dict[int, float]) -> None:
    """The CPU seconds of every backend of this database but this one (new ones since started)."""
    for (pid,) in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall():
        if cpu := process_cpu_s(pid):
            backends[pid] = cpu


def _wal(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])


def _tables_written(conn: psycopg.Connection) -> dict[str, tuple[int, int, int, int]]:
    """Per table: rows inserted, rows updated (HOT included), of which HOT, and the rows (chunks)
    inserted into its TOAST table (a large value written again is all of its chunks again)."""
    return {
        name: (ins, upd, hot, toast)
        for name, ins, upd, hot, toast in conn.execute(
            "SELECT t.relname, t.n_tup_ins, t.n_tup_upd, t.n_tup_hot_upd, coalesce(x.n_tup_ins, 0) "
            "FROM pg_stat_user_tables AS t JOIN pg_class AS c ON c.oid = t.relid "
            "LEFT JOIN pg_stat_all_tables AS x ON x.relid = c.reltoastrelid"
        ).fetchall()
    }


def run(
    *,
    members: int,
    light: int,
    max_events: int,
    tail: int,
    workers: int,
    full_only: bool,
    seed: int,
    profile: str = "",
) -> dict:
    from events.models import Channel, Source
    from events.services import source_create
    from members.loyalty.demo import loyalty_demo_setup
    from members.segments.demo import segments_demo_setup

    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE events_event, events_pendingevent, members_member, identity_identifier, identity_eventidentifier, "
            "identity_eventresolution, identity_memberchange, members_dirtymark, members_segmentchange, "
            "members_tagchange, members_pointsentry, members_pointsaccount, members_refreshwatermark, "
            # Keyed by member or event id with no foreign key to cascade from: left over, a
            # previous run's order owners (ids restart) made new orders look held by others.
            "members_orderowner, members_consentseen, members_parkedmember, insights_dirtymember, "
            # The rollups with the facts they count: the incremental path adds changes to both.
            "insights_memberfacts, insights_dailyrollup RESTART IDENTITY CASCADE"
        )
    sources = {
        channel: (
            Source.objects.filter(name=name).values_list("pk", flat=True).first()
            or source_create(name=name, kind=Channel(channel), store_code=code).source.pk
        )
        for channel, (name, code) in SOURCES.items()
    }
    loyalty_demo_setup(now=START + WINDOW / 2)
    segments_demo_setup()
    from django.conf import settings

    assert settings.MEMBER_REFRESH_INCREMENTAL is not full_only  # set in main(), before Django started
    env = {**ENV, "MEMBER_REFRESH_INCREMENTAL": "false" if full_only else "true"}
    rng, seq = random.Random(seed), [0]
    heavy_people = range(1, members + 1)
    light_people = range(members + 1, members + light + 1)
    stream = [
        *(
            e
            for p in heavy_people
            for e in _person_events(rng, p, rng.randint(100, max_events), sources, seq)
        ),
        *(e for p in light_people for e in _person_events(rng, p, rng.randint(8, 12), sources, seq)),
    ]
    stream.sort(key=lambda e: e[0])
    history = _drain([row for _, row in stream], workers, env, "history")
    # The tails: a few more events per member, after everything already stored.
    later = START + WINDOW + timedelta(days=1)

    def tail_of(people: range) -> list[tuple]:
        rows = []
        per = max(1, tail // len(people))
        for p in people:
            for _, row in _person_events(rng, p, per + 1, sources, seq)[1:]:  # no second first identify
                rows.append((*row[:11], later + (row[11] - START) / 1000, later, *row[13:]))
        rows.sort(key=lambda r: r[11])
        return rows

    runs = [history]
    if members:
        runs.append(_drain(tail_of(heavy_people), workers, env, "tail, heavy members",
                           f"{profile}/heavy" if profile else ""))  # fmt: skip
    if light:
        runs.append(_drain(tail_of(light_people), workers, env, "tail, light members",
                           f"{profile}/light" if profile else ""))  # fmt: skip
    with psycopg.connect(URL, autocommit=True) as conn:
        held = conn.execute(
            "SELECT count(*), avg(events), max(events) FROM members_memberaggregate"
        ).fetchone()  # fmt: skip
    return {"runs": runs, "members": held[0], "mean_events": float(held[1] or 0), "max_events": held[2],
            "full_only": full_only, "workers": workers}  # fmt: skip


def lines_of(result: dict) -> list[str]:
    mode = "incremental off (every refresh from all events)" if result["full_only"] else "incremental on"
    lines = [
        f"{mode}: {result['members']:,} members holding {result['mean_events']:,.0f} events on average "
        f"(at most {result['max_events']:,}), {result['workers']} pipeline worker processes.",
        "",
        "| run | events | wall (s) | events/s | worker CPU s per 1,000 events | members refreshed | "
        "incremental / full / settled | why full | events read per refreshed member | "
        "backend CPU s per 1,000 events | WAL bytes per event |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['label']} | {r['events']:,} | {r['seconds']:,.1f} | **{r['events'] / r['seconds']:,.0f}** | "
            f"{1000 * r['cpu_s'] / r['events']:,.2f} | {r['refreshed']:,.0f} | "
            f"{r['incremental']:,.0f} / {r['full']:,.0f} / {r['settled']:,.0f} | "
            f"{_reasons(r)} | {r['read'] / max(1, r['refreshed']):,.1f} | "
            f"{1000 * r['backend_cpu_s'] / r['events']:,.2f} | {r['wal_bytes'] / r['events']:,.0f} |"
        )
    lines += [
        "",
        "Rows written per refreshed member (inserted / updated / of them HOT / TOAST chunks inserted), "
        "the tables with the most:",
        "",
        "| run | " + " | ".join(_TABLE_COLUMNS) + " |",
        "|---|" + "---:|" * len(_TABLE_COLUMNS),
    ]
    for r in result["runs"]:
        per = max(1, r["refreshed"])
        cells = []
        for table in _TABLE_COLUMNS:
            ins, upd, hot, toast = r["written"].get(table, (0, 0, 0, 0))
            cells.append(f"{ins / per:.2f} / {upd / per:.2f} / {hot / per:.2f} / {toast / per:.2f}")
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


#: The tables the refresh writes, as the rows-written table shows them.
_TABLE_COLUMNS = ("members_memberaggregate", "members_pointscheckpoint", "members_refreshwatermark",
                  "members_pointsaccount", "members_pointsentry", "members_membertrait", "members_memberorder")  # fmt: skip


def _reasons(run: dict[str, Any]) -> str:
    """The full refreshes' reasons (``members.incremental.FULL_REASONS``), most common first."""
    counts = sorted(
        ((v, k.removeprefix("full_")) for k, v in run.items() if k.startswith("full_") and v), reverse=True
    )
    return ", ".join(f"{reason} {count:,.0f}" for count, reason in counts) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=50_000, help="people with 100 to --max-events events")
    parser.add_argument("--light", type=int, default=5_000, help="people with about 10 events")
    parser.add_argument("--max-events", type=int, default=1_000)
    parser.add_argument("--tail", type=int, default=20_000, help="events of each tail run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-only", action="store_true", help="the incremental path off: the before")
    parser.add_argument("--docs", action="store_true")
    parser.add_argument(
        "--profile", default="", metavar="DIR",
        help="each worker of the tail runs writes a cProfile of its CPU time to DIR/{heavy,light}-<pid>.prof",
    )  # fmt: skip
    args = parser.parse_args()
    started = datetime.now(UTC)
    background = ingest.wait_until_quiet(10, 60)
    ingest.SERVICE_ENV.update(ENV)
    ingest.DATABASE_URL = URL
    with ingest.announced(f"preparing database {DATABASE}"):
        ingest.manage("ensure_services", "--create-database")
        ingest.manage("migrate", "--noinput", "-v0")
    # Before Django starts: the workers are forked from this process and share its settings.
    harness.django_setup({**ENV, "MEMBER_REFRESH_INCREMENTAL": "false" if args.full_only else "true"})
    result = run(members=args.members, light=args.light, max_events=args.max_events, tail=args.tail,
                 workers=args.workers, full_only=args.full_only, seed=args.seed, profile=args.profile)  # fmt: skip
    facts = ingest.machine()
    section = "\n".join([
        f"## Heavy histories — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL {facts['postgresql']} "
        f"({facts['postgresql_settings']}), Python {facts['python']}, Django {facts['django']}; other processes "
        f"used {background:.0f}% of the CPU just before the run.",
        f"- `bench/heavy.py --members {args.members} --light {args.light} --max-events {args.max_events} "
        f"--tail {args.tail}{' --full-only' if args.full_only else ''}`",
        "",
        *lines_of(result),
    ])  # fmt: skip
    print(section)
    harness.RESULTS.mkdir(exist_ok=True)
    (harness.RESULTS / f"heavy-{started:%Y%m%dT%H%M%S}.json").write_bytes(orjson.dumps(result, default=str))
    if args.docs:
        harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)
        print(f"\nWritten to {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
