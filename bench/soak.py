"""Sustained load with the pipeline running (issue 19): does the platform keep up for half an hour?

An **open** load model: batches are scheduled at a constant event rate (``--rate``, default
3,000 events/s) whatever the server does, each sent when its time comes by whichever of the
client's connections is free. A slow server therefore shows up as *lateness* (a send starting
after its scheduled time, the client-side backlog) and as a growing pipeline backlog, not as a
client that politely slows down with it, which is what a back-to-back (closed) benchmark
measures. The stream is the ingestion benchmark's retailer mix (``payloads.py``), in batches of
20 to 100 events as an SDK flushes them, each batch built when it is due: stamped with the
time it is sent, fresh order numbers, by customers drawn from a population of ``--customers``
who come back (half a million by default: about 11 events each in half an hour at 3,000/s).
Runs before 2026-12-05 09:50 re-sent 200 prebuilt batches with fresh message ids only, so
after the first seconds every event repeated an earlier one's customer, time and order
number: late, and completing an order again, it sent its member the full way, and the same
12,000 histories grew all run (what those runs measured is not a retailer's stream), into ``POST /v1/batch`` on granian as the Dockerfile
runs it (``python -m config.granian``: a worker per core, 4 blocking threads each), with the pipeline running as deployed: a Celery worker (the
Procfile's prefork pool, ``--concurrency`` 2) and beat (the sweep, the refreshes, the alerts).

Every ``--sample`` seconds it records the accepted rate, the processed rate (the pipeline's own
count of the events it took out of its queue, ``cdp_pipeline_events_total``, which every process
writes to the run's ``PROMETHEUS_MULTIPROC_DIR`` as deployed), the pipeline backlog (events
waiting, counted up to ``events.metrics.BACKLOG_COUNT_CAP``, and the age of the oldest:
``events.metrics.pipeline_backlog``, what ``/metrics`` and the backlog alert read), the
client's lateness, and the resident memory of every process: each
granian and Celery worker process, beat, and the PostgreSQL backends of the benchmark's
database (their private memory, ``RssAnon``: a backend's RSS also counts the shared buffers it
touched, which grows with the data read and is no leak). After the load it waits for the
pipeline to drain and checks that every accepted message id is stored and processed (out of the
queue and not parked).

Targets: backlog age p95 < 5 s; the pipeline's rate over the last 5 minutes within 10% of the
first 5 (shorter runs compare their first and last third); memory flat (each process within
10% of where it stood after the first window); lost = 0. To tell a process that warms up from
one that leaks, each process's RSS slope (MiB a minute, least squares) is reported over the
first and the last half of the load, and the last half's per 1,000 events accepted.

It runs for ``--duration`` (30 min by default), so it is not part of ``make bench``:
``make soak`` runs it (``SOAK_ARGS="--duration 180 --rate 500"`` for a short one).
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import contextlib
import http.client
import multiprocessing
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ingest  # the web server, the source, the machine facts
import orjson
import payloads
import psycopg
from autovacuum import Autovacuum
from harness import RESULTS, ROOT
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

DATABASE_NAME = harness.database_name("cdp_bench_soak")
DATABASE_URL = harness.database_url(DATABASE_NAME)
BROKER_URL = harness.broker_url(10)
SERVICE_ENV = {
    **harness.service_env(database=DATABASE_URL, broker=BROKER_URL),
    # Counted on every request (a Redis round trip, as deployed), never hit: one source sends it all.
    "RATE_LIMIT_INGESTION": "100000000/min",
}
#: The Dockerfile's server: granian (``config/granian.py``: a worker per core, 4 blocking threads, access log).
DEPLOYED_SERVER = "python -m config.granian"
BATCH_SIZES = (20, 100)
TARGET_BACKLOG_AGE_P95_S = 5.0
TARGET_RATE_DRIFT = 0.10
TARGET_MEMORY_GROWTH = 0.10
#: The rate windows compared: 5 minutes, or a third of a shorter run.
RATE_WINDOW_S = 300.0

START_MARKER = "<!-- bench/soak.py: sustained-load benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/soak.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/soak.py: end of the sustained-load benchmarks. -->"


def database() -> psycopg.Connection:
    return psycopg.connect(DATABASE_URL, autocommit=True)


def database_recreate() -> None:
    """A fresh database each run: a soak measures drift, so it must not start on the last one's data."""
    with psycopg.connect(harness.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)')


# --- the pipeline: a Celery worker and beat, as the Procfile starts them ------------------------


class Celery:
    """``celery -A config <worker|beat>`` with the production settings, in its own session."""

    def __init__(self, role: str, *arguments: str) -> None:
        self.role = role
        self.log = Path(tempfile.mkstemp(prefix=f"bench-celery-{role}-", suffix=".log")[1])
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(ingest.BIN / "celery"), "-A", "config", role, "-l", "warning", *arguments],
                cwd=ROOT,
                env={**os.environ, **SERVICE_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pgid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.returncode in (0, -signal.SIGTERM):
            self.log.unlink(missing_ok=True)
        else:
            print(
                f"celery {self.role} exited with {self.process.returncode}; its log: {self.log}",
                file=sys.stderr,
            )


# --- memory ------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """/proc/<pid>/status's memory lines, in KiB (empty when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {
        name: int(value.split()[0])
        for line in text.splitlines()
        if (name := line.partition(":")[0]) in ("VmRSS", "RssAnon") and (value := line.partition(":")[2])
    }


def _group(pgid: int) -> list[int]:
    """The pids of a process group, leader first."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids, key=lambda pid: (pid != pgid, pid))


def memory_mib(groups: dict[str, int], backend_pids: Sequence[int]) -> dict[str, float]:
    """RSS per process (``granian main``, ``granian 1``, …) and the PostgreSQL
    backends' private memory in total, in MiB."""
    out: dict[str, float] = {}
    for role, pgid in groups.items():
        pids = _group(pgid)
        for n, pid in enumerate(pids):
            name = role if len(pids) == 1 else (f"{role} main" if n == 0 else f"{role} {n}")
            if rss := _status(pid).get("VmRSS"):
                out[name] = rss / 1024
    out["postgres backends (private)"] = sum(_status(pid).get("RssAnon", 0) for pid in backend_pids) / 1024
    return out


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


#: Each PostgreSQL backend's CPU as last seen: Django reconnects every DATABASE_CONN_MAX_AGE
#: (60 s), and a backend that closed keeps counting with what it had used at the last sample.
_backends_seen: dict[int, float] = {}


def cpu_seconds(groups: dict[str, int], backend_pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds so far per role: each process group's, and the PostgreSQL backends' of the
    benchmark's database (every one seen, up to its last sample: a slight undercount)."""
    out = {role: sum(_cpu_seconds(pid) for pid in _group(pgid)) for role, pgid in groups.items()}
    for pid in backend_pids:
        _backends_seen[pid] = max(_backends_seen.get(pid, 0.0), _cpu_seconds(pid))
    out["postgres backends"] = sum(_backends_seen.values())
    return out


# --- the open-model client ---------------------------------------------------------------------


@dataclass
class ClientReport:
    scheduled: int = 0  # batches scheduled
    sent: int = 0  # ... whose send began
    requests_ok: int = 0
    events_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: int = 0
    error_sample: str = ""
    lateness_s: list[float] = field(default_factory=list)  # per batch: send start - scheduled time
    latency_ms: list[float] = field(default_factory=list)
    accepted_per_s: list[int] = field(default_factory=list)  # by second of the scheduled time

    def failed(self, what: str) -> None:
        self.errors += 1
        self.error_sample = self.error_sample or what[:300]


def _client(
    port: int,
    write_key: str,
    rate: float,
    duration: float,
    connections: int,
    seed: int,
    customers: int,
    ids_path: str,
    accepted_total: Any,
    late_now: Any,
    ready: Any,
    out: Any,
) -> None:
    """Schedule batches at ``rate`` events/s for ``duration`` s and send each when its time comes
    on whichever connection is free; accepted message ids go to ``ids_path``, one a line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    rng = random.Random(seed)
    population = payloads.Customers(customers, seed=seed)
    headers = {"Content-Type": "application/json", "Authorization": ingest._authorization(write_key)}
    report = ClientReport(accepted_per_s=[0] * (int(duration) + 1))
    due: queue.Queue[tuple[float, payloads.Template] | None] = queue.Queue()
    lock = threading.Lock()
    ids_file = open(ids_path, "wb")  # noqa: SIM115 - closed after the senders are joined

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while (item := due.get()) is not None:
            scheduled, template = item
            began = time.monotonic()
            body, ids = template.render_with_ids()
            try:
                status, data = ingest._post(conn, "/v1/batch", body, headers)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with lock:
                    report.sent += 1
                    report.failed(f"{type(exc).__name__}: {exc}")
                continue
            done = time.monotonic()
            answer = orjson.loads(data) if data[:1] == b"{" else {}
            refused = {int(r["index"]) for r in answer.get("rejected", ()) if r.get("index") is not None}
            kept = [mid for i, mid in enumerate(ids) if i not in refused] if status == 200 else []
            with lock:
                report.sent += 1
                report.events_sent += template.events
                report.lateness_s.append(began - scheduled)
                late_now.value = began - scheduled
                if status != 200:
                    report.failed(f"HTTP {status}: {data[:300]!r}")
                    continue
                report.requests_ok += 1
                report.latency_ms.append((done - began) * 1000)
                report.accepted += int(answer.get("accepted", 0))
                report.duplicates += int(answer.get("duplicates", 0))
                report.rejected += len(refused)
                report.accepted_per_s[min(int(scheduled - start), int(duration))] += len(kept)
                accepted_total.value += len(kept)
                ids_file.write(b"\n".join(kept) + b"\n")
        conn.close()

    senders = [threading.Thread(target=sender, daemon=True) for _ in range(connections)]
    for thread in senders:
        thread.start()
    ready.set()
    start = time.monotonic()
    next_at = start
    while next_at < start + duration:
        # Built before it is due (about 20 µs an event: 6% of a core at 3,000 events/s, in
        # the client's CPU share), stamped with the moment it is due.
        at = datetime.now(UTC) + timedelta(seconds=max(0.0, next_at - time.monotonic()))
        template = payloads.batch_template(rng, rng.randint(*BATCH_SIZES), at=at, customers=population)
        if (wait := next_at - time.monotonic()) > 0:
            time.sleep(wait)
        due.put((next_at, template))
        report.scheduled += 1
        next_at += template.events / rate
    for _ in senders:
        due.put(None)
    for thread in senders:
        thread.join()
    ids_file.close()
    out.put(asdict(report))


# --- sampling ----------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the load began
    accepted: int  # accepted so far (client)
    depth: int  # events waiting for the pipeline, counted up to events.metrics.BACKLOG_COUNT_CAP
    oldest_age_s: float  # how long the oldest of them has waited (0: none)
    lateness_s: float  # the latest send's lateness
    load: float  # 1-minute load average
    memory_mib: dict[str, float]
    cpu_s: dict[str, float]

    processed: int  # taken out of the queue so far (the pipeline's counter): processed or parked


def _backend_pids(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    ).fetchall()
    return [row[0] for row in rows]


#: The pipeline's counter of the events it took out of its queue (``cdp.metrics.BATCH_EVENTS``).
PROCESSED_METRIC = "cdp_pipeline_events_total"


def pipeline_processed(metrics_dir: str) -> int:
    """Events the pipeline took out of its queue so far (processed, or parked after a failure),
    summed over every process that counted into ``metrics_dir`` (multiprocess mode), live or not.

    The counter the pipeline keeps for ``/metrics`` anyway, counted when a batch commits: not
    accepted minus waiting, whose "waiting" is a count capped at ``BACKLOG_COUNT_CAP`` (so past
    the cap, that difference follows the accepted rate, not the pipeline's)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    return int(registry.get_sample_value(PROCESSED_METRIC) or 0)


def sample(began: float, groups: dict[str, int], accepted_total: Any, late_now: Any) -> Sample:
    from django.db import connection
    from django.utils import timezone

    from events.metrics import pipeline_backlog

    depth, oldest = pipeline_backlog()
    age = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
    with database() as conn:
        backends = [pid for pid in _backend_pids(conn) if pid != connection.connection.info.backend_pid]
    return Sample(
        t=time.monotonic() - began,
        accepted=int(accepted_total.value),
        processed=pipeline_processed(SERVICE_ENV["PROMETHEUS_MULTIPROC_DIR"]),
        depth=depth,
        oldest_age_s=age,
        lateness_s=float(late_now.value),
        load=os.getloadavg()[0],
        memory_mib=memory_mib(groups, backends),
        cpu_s=cpu_seconds(groups, backends),
    )


def _print(s: Sample) -> None:
    memory = sum(v for k, v in s.memory_mib.items() if not k.startswith("postgres"))
    print(
        f"  {s.t:7.0f} s  accepted {s.accepted:>10,}  processed {s.processed:>10,}  waiting {s.depth:>8,}  oldest {s.oldest_age_s:6.1f} s  "
        f"late {s.lateness_s:6.2f} s  load {s.load:4.1f}  python RSS {memory:,.0f} MiB  "
        f"pg private {s.memory_mib['postgres backends (private)']:,.0f} MiB",
        flush=True,
    )


# --- the check: every accepted message id stored and processed ---------------------------------


@dataclass
class Lost:
    accepted: int
    missing: int  # accepted, not stored
    waiting: int  # stored, still in the pipeline's queue after the drain
    parked: int  # stored, parked after a failure

    @property
    def lost(self) -> int:
        return self.missing + self.waiting + self.parked


def lost_check(ids_path: Path, source_pk: int) -> Lost:
    with database() as conn:
        conn.execute("CREATE TEMP TABLE accepted_ids (message_id text PRIMARY KEY)")
        with conn.cursor().copy("COPY accepted_ids FROM STDIN") as copy, ids_path.open("rb") as ids:
            while chunk := ids.read(1 << 20):
                copy.write(chunk)
        row = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE e.id IS NULL),
                   count(*) FILTER (WHERE p.event_id IS NOT NULL),
                   count(*) FILTER (WHERE k.event_id IS NOT NULL)
            FROM accepted_ids a
            LEFT JOIN events_event e ON e.source_id = %s AND e.message_id = a.message_id
            LEFT JOIN events_pendingevent p ON p.event_id = e.id
            LEFT JOIN events_parkedevent k ON k.event_id = e.id AND k.replayed_at IS NULL
            """,
            (source_pk,),
        ).fetchone()
    assert row is not None
    return Lost(accepted=row[0], missing=row[1], waiting=row[2], parked=row[3])


# --- the report --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _at(samples: Sequence[Sample], t: float) -> Sample:
    """The sample nearest ``t``."""
    return min(samples, key=lambda s: abs(s.t - t))


def window_rates(
    samples: Sequence[Sample], duration: float
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """The window compared, and (accepted, processed) events/s over the first and the last."""
    window = min(RATE_WINDOW_S, duration / 3)
    first = (_at(samples, 0), _at(samples, window))
    last = (_at(samples, duration - window), _at(samples, duration))

    def rates(pair: tuple[Sample, Sample]) -> tuple[float, float]:
        a, b = pair
        span = max(b.t - a.t, 1e-9)
        return (b.accepted - a.accepted) / span, (b.processed - a.processed) / span

    return window, rates(first), rates(last)


def section(
    *,
    started: datetime,
    facts: dict[str, str],
    args: argparse.Namespace,
    report: ClientReport,
    samples: Sequence[Sample],
    under_load: int,
    drained_s: float | None,
    lost: Lost,
    trial: str,
) -> tuple[str, bool]:
    from events.metrics import BACKLOG_COUNT_CAP  # after django_setup

    during = samples[:under_load]  # those taken while the load ran (then the drain's)
    ages = [s.oldest_age_s for s in during]
    age_p95 = percentile(ages, 0.95)
    window, (first_accepted, first_processed), (last_accepted, last_processed) = window_rates(
        during, args.duration
    )
    drift = last_processed / first_processed - 1 if first_processed else float("nan")
    base, end = _at(during, window), during[-1]
    rows, flat = [], True
    for name in sorted(end.memory_mib):
        before, after = base.memory_mib.get(name), end.memory_mib[name]
        if before is None:
            rows.append(f"| {name} | — | {after:,.1f} | (started after the first window) | | | |")
            continue
        growth = after / before - 1 if before else 0.0
        flat &= growth <= TARGET_MEMORY_GROWTH
        trend = memory_trend(during, name)
        rows.append(
            f"| {name} | {before:,.1f} | {after:,.1f} | {growth:+.1%} | {trend.first_half:+.2f} | "
            f"{trend.last_half:+.2f} | {trend.last_half_per_1000_events:+,.0f} |"
        )
    checks = {
        "backlog": age_p95 < TARGET_BACKLOG_AGE_P95_S,
        "rate": abs(drift) <= TARGET_RATE_DRIFT,
        "memory": flat,
        "lost": lost.lost == 0 and report.errors == 0,
    }
    offered = report.events_sent / args.duration
    late = report.lateness_s
    lines = [
        f"## Soak — {started:%Y-%m-%d %H:%M} UTC{trial}",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL {facts['postgresql']} "
        f"({facts['postgresql_settings']}), Python {facts['python']}, Django {facts['django']}, granian "
        f"{facts['granian']} (`{DEPLOYED_SERVER}`); other processes used {facts['background']} of the CPU just "
        f"before the run, load average {facts['load']} at its end.",
        f"- Load: {args.rate:,.0f} events/s scheduled for {args.duration / 60:.1f} min (open model, "
        f"{args.connections} connections), batches of {BATCH_SIZES[0]} to {BATCH_SIZES[1]} events of the retailer mix "
        f"(each built when due: stamped then, new order numbers, by {args.customers:,} customers who come back) "
        f"into `/v1/batch`; pipeline: one Celery worker, prefork `--concurrency {args.concurrency}`, and beat; "
        f"autovacuum: {facts['autovacuum']}.",
        f"- Sent {report.events_sent:,} events in {report.sent:,} requests ({offered:,.0f}/s); accepted "
        f"{report.accepted:,}, rejected {report.rejected:,}, failed requests {report.errors:,}"
        + (f" ({report.error_sample})" if report.error_sample else "")
        + f"; request p50 {percentile(report.latency_ms, 0.5):,.0f} ms, p99 {percentile(report.latency_ms, 0.99):,.0f} ms;"
        f" send lateness p50 {percentile(late, 0.5):.2f} s, p99 {percentile(late, 0.99):.2f} s, "
        f"max {max(late, default=float('nan')):.2f} s.",
        "",
        "| measure | result | target | met? |",
        "|---|---:|---|---|",
        f"| backlog age p95 (every {args.sample:.0f} s; max {max(ages):.1f} s, waiting max "
        f"{max(s.depth for s in during):,}, counted up to {BACKLOG_COUNT_CAP:,}) | {age_p95:.1f} s | < {TARGET_BACKLOG_AGE_P95_S:.0f} s | "
        f"{'yes' if checks['backlog'] else 'no'} |",
        f"| processed events/s, first {window / 60:.1f} min → last {window / 60:.1f} min (accepted "
        f"{first_accepted:,.0f} → {last_accepted:,.0f}) | {first_processed:,.0f} → {last_processed:,.0f} "
        f"({drift:+.1%}) | within {TARGET_RATE_DRIFT:.0%} | {'yes' if checks['rate'] else 'no'} |",
        f"| memory, after the first window → the end | {'flat' if flat else 'grew'} (below) | each within "
        f"{TARGET_MEMORY_GROWTH:.0%} | {'yes' if checks['memory'] else 'no'} |",
        f"| lost: accepted {lost.accepted:,}, not stored {lost.missing:,}, still waiting {lost.waiting:,}, "
        f"parked {lost.parked:,} (drained "
        + (f"{drained_s:.0f} s after the load)" if drained_s is not None else "— not within the wait)")
        + f" | {lost.lost:,} | 0 | {'yes' if checks['lost'] else 'no'} |",
        "",
        *cpu_lines(during, drained=samples[-1], processed=lost.accepted - lost.lost),
        "",
        "| process | RSS MiB after the first window | at the end | growth | MiB/min, first half | MiB/min, "
        "last half | KiB per 1,000 events, last half |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "The slopes are least-squares fits of each process's RSS over the first and the last half of "
        "the load: a process warming up (caches filling, the allocator's high-water mark) grows in "
        "the first and levels off in the last; one that leaks grows in both.",
    ]
    return "\n".join(lines), all(checks.values())


@dataclass(frozen=True)
class MemoryTrend:
    """How fast a process's RSS grew (MiB a minute) over each half of the load, and over the
    last half per 1,000 events accepted."""

    first_half: float
    last_half: float
    last_half_per_1000_events: float  # KiB


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of y over x (0 for fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def memory_trend(during: Sequence[Sample], name: str) -> MemoryTrend:
    """``name``'s RSS slopes over the two halves of the samples taken under load; a sample
    taken while the process was not there (restarted, not yet started) is left out."""
    middle = during[-1].t / 2
    halves = (
        [s for s in during if name in s.memory_mib and s.t <= middle],
        [s for s in during if name in s.memory_mib and s.t >= middle],
    )
    first, last = (_slope([(s.t / 60, s.memory_mib[name]) for s in half]) for half in halves)
    per_event = _slope([(s.accepted, s.memory_mib[name]) for s in halves[1]])
    return MemoryTrend(first_half=first, last_half=last, last_half_per_1000_events=per_event * 1024 * 1000)


def cpu_lines(during: Sequence[Sample], *, drained: Sample, processed: int) -> list[str]:
    """Where the CPU went from the start of the load until the backlog drained, per event: a
    figure the machine's other work hardly changes (unlike the rates)."""
    first = during[0]
    span = max(drained.t - first.t, 1e-9)
    used = {role: drained.cpu_s.get(role, 0.0) - first.cpu_s.get(role, 0.0) for role in drained.cpu_s}
    total = sum(used.values())
    per_event = total / processed * 1000 if processed else float("nan")
    return [
        f"| CPU from the load's start to the drain ({span:,.0f} s) | CPU s | share of one core | ms per event |",
        "|---|---:|---:|---:|",
        *(
            f"| {role} | {seconds:,.1f} | {seconds / span:.0%} | {seconds / processed * 1000 if processed else float('nan'):.3f} |"
            for role, seconds in used.items()
        ),
        f"| all of them | {total:,.1f} | {total / span:.0%} | {per_event:.3f} |",
        "",
        f"At {per_event:.2f} ms of CPU per event (accepted, resolved, refreshed, with PostgreSQL's share), the "
        f"2 cores of an otherwise idle machine would carry about {2000 / per_event:,.0f} events/s end to end, the "
        "clients' own CPU aside (an estimate from CPU time, not a measured rate).",
    ]


INTRO = """# Sustained-load (soak) benchmarks

`.venv/bin/python bench/soak.py` (`make soak`; `--duration`, `--rate`, `--help`) holds a constant
arrival rate — an open model: batches are sent at their scheduled times whatever the server does,
so a server that falls behind shows as send lateness and a growing pipeline backlog rather than a
slower client — of the retailer mix in batches of 20 to 100 events into `/v1/batch` on granian as
deployed, with a Celery worker and beat running the pipeline. It samples the backlog (events
waiting, age of the oldest), the accepted and processed rates and the memory of every process,
then checks every accepted message id stored and processed. Targets: backlog age p95 < 5 s,
processed rate of the last 5 minutes within 10% of the first 5, memory flat, nothing lost."""


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=1800, help="seconds of load (default: 1800)")
    parser.add_argument(
        "--rate", type=float, default=3000, help="events per second scheduled (default: 3000)"
    )
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples (default: 10)")
    parser.add_argument("--connections", type=int, default=32, help="client connections (default: 32)")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes (default: 2)")
    parser.add_argument("--drain", type=float, default=600, help="seconds to wait for the backlog to drain")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--customers", type=int, default=500_000, help="customers the stream draws from (default: 500,000)"
    )
    parser.add_argument(
        "--trial",
        default="",
        help="a note for the section's title when the run is not the benchmark as specified (say, a short run)",
    )
    parser.add_argument(
        "--autovacuum",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="emulate autovacuum during the load and the drain, as a production server runs it (the "
        "benchmark server runs without: bench/autovacuum.py); its backend's CPU counts with the others",
    )
    parser.add_argument(
        "--no-docs", dest="docs", action="store_false", help="do not write docs/benchmarks.md"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, ingest._terminate)
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%d%H%M%S}"
    # Multiprocess metrics as deployed (docker-compose): the pipeline's processed count is read there.
    metrics_dir = tempfile.mkdtemp(prefix="bench-soak-metrics-")
    SERVICE_ENV["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ingest.SERVICE_ENV.update(SERVICE_ENV)  # the web server and manage.py of bench/ingest.py
    ingest.DATABASE_URL, ingest.BROKER_URL = DATABASE_URL, BROKER_URL
    ids_path = RESULTS / f"soak-{run_id}-accepted-ids.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    processes: list[Any] = []
    samples: list[Sample] = []
    # The benchmark server runs without autovacuum; the queue's and the identity graph's dead
    # rows and the planner's statistics of a production server come from this emulation.
    emulation = Autovacuum(DATABASE_URL) if args.autovacuum else None
    vacuuming = contextlib.ExitStack()  # closed once the drain ends (closing twice does nothing)
    try:
        with ingest.announced("checking that nothing else keeps the CPU busy"):
            background = ingest.wait_until_quiet(10, 30)
        with ingest.announced(f"creating database {DATABASE_NAME} afresh and a source"):
            database_recreate()
            source = ingest.prepare(run_id)
        # config/granian.py's own defaults: a worker per core, 4 blocking threads each.
        server = ingest.Granian(ingest.ServerConfig(os.cpu_count() or 2, ingest.GRANIAN, 4))
        with ingest.announced("starting granian, a Celery worker and beat"):
            server.start()
            processes.append(server)
            worker = Celery("worker", "--concurrency", str(args.concurrency))
            beat = Celery(
                "beat", "--schedule", str(Path(tempfile.mkdtemp(prefix="bench-beat-")) / "schedule")
            )
            processes += [worker, beat]
        assert server.pgid is not None
        groups = {"granian": server.pgid, "celery worker": worker.pgid, "celery beat": beat.pgid}
        harness.django_setup(SERVICE_ENV)
        accepted_total = multiprocessing.Value("q", 0, lock=False)
        late_now = multiprocessing.Value("d", 0.0, lock=False)
        ready, out = multiprocessing.Event(), multiprocessing.Queue()
        client = multiprocessing.Process(
            target=_client,
            args=(
                server.port, source.write_key, args.rate, args.duration, args.connections, args.seed,
                args.customers, str(ids_path), accepted_total, late_now, ready, out,
            ),
        )  # fmt: skip
        print(
            f"… {args.rate:,.0f} events/s for {args.duration:,.0f} s, sampled every {args.sample:.0f} s",
            flush=True,
        )
        if emulation is not None:
            vacuuming.enter_context(emulation)
        client.start()
        ready.wait()
        began = time.monotonic()
        # Sampled for as long as the client sends: on a machine too busy for the rate it runs
        # late, and its last batches are still load (its HTTP timeout bounds a stuck request).
        # The client's report is read as it comes, not after the client exits: a process
        # exits only once what it put on a queue is in the pipe, and a 30-minute report's
        # latencies do not fit in it (the load ended, the client never did: 2026-12-05).
        reported: dict | None = None
        while reported is None and client.is_alive():
            samples.append(sample(began, groups, accepted_total, late_now))
            _print(samples[-1])
            with contextlib.suppress(queue.Empty):
                reported = out.get(timeout=max(0.01, began + len(samples) * args.sample - time.monotonic()))
        report = ClientReport(**(reported if reported is not None else out.get(timeout=120)))
        client.join()
        samples.append(sample(began, groups, accepted_total, late_now))  # as the load ends
        _print(samples[-1])
        under_load = len(samples)
        drained_s: float | None = None
        with ingest.announced("waiting for the pipeline to drain"):
            load_end = time.monotonic()
            while time.monotonic() - load_end < args.drain:
                samples.append(sample(began, groups, accepted_total, late_now))
                if samples[-1].depth == 0:
                    drained_s = time.monotonic() - load_end
                    break
                _print(samples[-1])
                time.sleep(args.sample / 2)
        vacuuming.close()
        with ingest.announced("checking every accepted message id"):
            lost = lost_check(ids_path, source.pk)
        facts = {
            **ingest.machine(),
            "background": f"{background:.0f}%",
            "load": f"{os.getloadavg()[0]:.1f}",
            "autovacuum": (
                f"emulated (`bench/autovacuum.py`: {emulation.summary()})"
                if emulation is not None
                else "off, not emulated (`--no-autovacuum`)"
            ),
        }
    except KeyboardInterrupt:
        print("interrupted: stopping the client, granian, the worker and beat", file=sys.stderr)
        return 130
    finally:
        vacuuming.close()
        for process in reversed(processes):
            with contextlib.suppress(Exception):
                process.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    text, met = section(
        started=started,
        facts=facts,
        args=args,
        report=report,
        samples=samples,
        under_load=under_load,
        drained_s=drained_s,
        lost=lost,
        trial=f" ({args.trial})" if args.trial else "",
    )
    print()
    print(text)
    (RESULTS / f"soak-{run_id}.json").write_bytes(
        orjson.dumps(
            {
                "started": started,
                "machine": facts,
                "args": vars(args),
                "client": {k: v for k, v in asdict(report).items() if k not in ("lateness_s", "latency_ms")},
                "samples": [asdict(s) for s in samples],
                "lost": asdict(lost),
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    ids_path.unlink(missing_ok=True)
    if args.docs:
        harness.docs_insert(text, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)
        print(f"written to {harness.DOCS.relative_to(ROOT)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
