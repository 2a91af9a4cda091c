"""CPU per event of ``POST /v1/batch``, web process and PostgreSQL backend apart, A/B interleaved.

Each variant is a checkout of the project (``--variant NAME=ROOT``: the working tree, or an
older commit exported with ``git archive``) served as deployed (``python -m config.granian``,
the production settings) on a database of its own, migrated by its own code. Bursts of the
soak's stream (``bench/soak.py``: batches of 20 to 100 events of the retailer mix by a
returning population, stamped when built) are sent at ``--rate`` events/s for ``--seconds``,
to each variant in turn, the order reversed every round (A B, B A, ...), the same batches to
each within a round. Per burst: the CPU the server's process group used (its workers and
master, from /proc) and the CPU of its database's backends, per event accepted. On a shared
machine the wall-clock rate says little, the CPU per event compares; interleaving cancels
the drift of other people's load. At the end, each database's statements by time
(``pg_stat_statements``, when the cluster preloads it: ``BENCH_DATABASE_PORT`` names a
private one).

    git archive main | tar -x -C /tmp/base
    .venv/bin/python bench/ingest_cpu.py --variant before=/tmp/base --variant after=.

No pipeline worker runs (the pipeline's nudges pile up in the benchmark's Redis database,
flushed at the end); the events tables are emptied before the warm-up. Nothing is written to
docs/benchmarks.md: the figures are printed.
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import http.client
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import ingest  # the free port, the Basic header, the POST
import orjson
import payloads
import psycopg
import redis
from soak import BATCH_SIZES, _cpu_seconds, _group

BROKER_URL = harness.broker_url(12)
#: Client connections: enough that a slow request never holds up the schedule.
CONNECTIONS = 6


@dataclass
class Variant:
    name: str
    root: Path
    database: str
    port: int = 0
    write_key: str = ""
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="bench-ingest-cpu-", suffix=".log")[1])
    )

    @property
    def url(self) -> str:
        return harness.database_url(self.database)

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **harness.service_env(database=self.url, broker=BROKER_URL),
            "RATE_LIMIT_INGESTION": "100000000/min",  # counted (a Redis round trip), never reached
            # No reconnection within a run: a backend that exits mid-burst takes its CPU with it.
            "DATABASE_CONN_MAX_AGE": "86400",
            "WEB_LOG_LEVEL": "warning",
        }

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def prepare(self) -> None:
        """Its database created, migrated by its own code and emptied; a source; granian started."""
        self.manage("ensure_services", "--create-database")
        self.manage("migrate", "--noinput", "-v0")
        with psycopg.connect(self.url, autocommit=True) as conn:
            with_statements = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
            ).fetchone()
            if with_statements:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(
                "TRUNCATE events_event, events_pendingevent, events_rejectedevent RESTART IDENTITY CASCADE"
            )
            conn.execute("DELETE FROM events_source WHERE name LIKE 'bench-cpu-%'")
        self.write_key = self.manage("create_source", f"bench-cpu-{self.name}", "--kind", "app").split()[-1]
        self.port = ingest.free_port()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.granian", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.root,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/health/")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: granian did not answer /health/ (log: {self.log})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def backend_pids(self) -> list[int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchall()
        return [row[0] for row in rows]


@dataclass(frozen=True)
class Burst:
    accepted: int
    errors: int
    web_s: float
    backend_s: float
    elapsed_s: float


Schedule = list[tuple[float, bytes]]


def schedule(seed: int, *, seconds: float, rate: float) -> Schedule:
    """The soak's stream for ``seconds`` at ``rate`` events/s: (offset in seconds, body)."""
    rng = random.Random(seed)
    population = payloads.Customers(500_000, seed=1)
    batches: Schedule = []
    at = 0.0
    while at < seconds:
        template = payloads.batch_template(
            rng, rng.randint(*BATCH_SIZES), at=datetime.now(UTC), customers=population
        )
        batches.append((at, template.render()))
        at += template.events / rate
    return batches


def burst(variant: Variant, batches: Schedule) -> Burst:
    """Send ``batches`` on time to ``variant``; the CPU its server and backends used meanwhile
    (a backend that connected during the burst counts from zero)."""
    assert variant.process is not None
    headers = {"Content-Type": "application/json", "Authorization": ingest._authorization(variant.write_key)}
    backends_before = {pid: _cpu_seconds(pid) for pid in variant.backend_pids()}
    web_before = sum(_cpu_seconds(pid) for pid in _group(variant.process.pid))
    waiting = list(reversed(batches))
    lock = threading.Lock()
    accepted = errors = 0
    start = time.monotonic()

    def sender() -> None:
        nonlocal accepted, errors
        conn = http.client.HTTPConnection("127.0.0.1", variant.port, timeout=120)
        while True:
            with lock:
                if not waiting:
                    break
                due, body = waiting.pop()
            if (wait := start + due - time.monotonic()) > 0:
                time.sleep(wait)
            status, data = ingest._post(conn, "/v1/batch", body, headers)
            with lock:
                if status == 200:
                    accepted += int(orjson.loads(data)["accepted"])
                else:
                    errors += 1
        conn.close()

    threads = [threading.Thread(target=sender) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    web = sum(_cpu_seconds(pid) for pid in _group(variant.process.pid)) - web_before
    backends = sum(_cpu_seconds(pid) - backends_before.get(pid, 0.0) for pid in variant.backend_pids())
    return Burst(accepted, errors, web, backends, elapsed)


def statements(variant: Variant, top: int = 5) -> list[str]:
    """The database's statements by execution time: calls, rows, ms, blocks hit/read/dirtied per row."""
    with psycopg.connect(variant.url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone():
            return []
        rows = conn.execute(
            "SELECT calls, rows, total_exec_time, shared_blks_hit, shared_blks_read, shared_blks_dirtied, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 80) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT %s",
            (top,),
        ).fetchall()
    return [
        f"{calls:>7} calls {rows_:>8} rows {ms:>9.0f} ms  per row: hit {hit / max(rows_, 1):.1f} "
        f"read {read / max(rows_, 1):.2f} dirtied {dirtied / max(rows_, 1):.2f}  {query}"
        for calls, rows_, ms, hit, read, dirtied, query in rows
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        metavar="NAME=ROOT",
        help="a checkout to serve (two or more)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=20, help="length of a burst")
    parser.add_argument("--rate", type=float, default=1000, help="events/s sent during a burst")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [
        Variant(name, Path(root).resolve(), harness.database_name(f"cdp_bench_cpu_{name}"))
        for name, _, root in (spec.partition("=") for spec in args.variant)
    ]
    results: dict[str, list[Burst]] = {variant.name: [] for variant in variants}
    try:
        for variant in variants:
            variant.prepare()
        for variant in variants:  # warm-up: connections, caches, the first index pages
            burst(variant, schedule(0, seconds=3, rate=args.rate))
        for round_ in range(args.rounds):
            batches = schedule(1000 + round_, seconds=args.seconds, rate=args.rate)
            for variant in variants if round_ % 2 == 0 else list(reversed(variants)):
                done = burst(variant, batches)
                results[variant.name].append(done)
                print(
                    f"round {round_} {variant.name:>8}: {done.accepted} accepted, {done.errors} errors, "
                    f"{done.elapsed_s:.1f} s; web {1e6 * done.web_s / max(done.accepted, 1):.0f} µs/event, "
                    f"backends {1e6 * done.backend_s / max(done.accepted, 1):.0f} µs/event "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        print(
            f"\nCPU per event accepted, {args.rounds} bursts of {args.seconds:.0f} s at {args.rate:.0f} events/s each:"
        )
        for variant in variants:
            bursts = results[variant.name]
            web = [1e6 * b.web_s / max(b.accepted, 1) for b in bursts]
            backend = [1e6 * b.backend_s / max(b.accepted, 1) for b in bursts]
            print(
                f"  {variant.name:>8}: web median {statistics.median(web):.0f} µs (least {min(web):.0f}), "
                f"backends median {statistics.median(backend):.0f} µs (least {min(backend):.0f})"
            )
        for variant in variants:
            if lines := statements(variant):
                print(f"\n{variant.name}: statements by execution time")
                print("\n".join(f"  {line}" for line in lines))
    finally:
        for variant in variants:
            variant.stop()
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=3).flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
