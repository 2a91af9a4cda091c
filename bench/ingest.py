"""Ingestion benchmark (`make bench`): how fast events are accepted *durably* over HTTP.

What it measures, against gunicorn running ``config.settings.production`` on this machine:

1. ``POST /v1/batch`` throughput with 100 and with 500 realistic retail events per request
   (``bench/payloads.py``), from several client processes on keep-alive connections for a
   fixed time after a warm-up. Events/s counts only what the 200 responses report as
   ``accepted``, and the run is checked by counting ``events_event`` afterwards: a 200 means
   the rows are committed, so the two numbers must be equal.
2. ``POST /v1/track`` single-event latency (p50/p95/p99), one client and then a few at once.
3. The physical limit: PostgreSQL ``COPY`` (psycopg 3) of the same rows, with the same
   columns the ingestion INSERT writes, into the same ``events_event`` table (same indexes and
   foreign key), and /v1/batch's rate as a fraction of it.

Why: the issue's target is at least 5,000 events/s accepted and durable on 2 cores through
/v1/batch (RudderStack publishes about 1,700/s for its gateway on a 2-core machine), and the
COPY figure says how much of the gap is ours (Python, Django, the protocol) and how much is
the database's.

During each throughput window it also splits the machine's CPU time by who spent it
(gunicorn, PostgreSQL, Redis, the clients, anything else) from /proc: on a shared 2-core
machine other work can take a third of the CPU, and the table shows it; events per CPU-second
of the server side is the figure that compares across runs. ``--sweep`` first tries several
gunicorn worker counts and classes and keeps the best.

Everything runs against its own database (``cdp_bench``) and Redis db 12, never ``cdp``;
each scenario starts from empty event tables. No Celery worker runs, so the nudge each
request publishes piles up in Redis db 12, which is flushed at the end. The results are
printed as a markdown table and inserted, newest first, into ``docs/benchmarks.md``.

Run ``.venv/bin/python bench/ingest.py --help`` for the options; ``--quick`` is a smoke check.
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import base64
import contextlib
import dataclasses
import http.client
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import payloads
import psycopg
import redis
from harness import DOCS, RESULTS, ROOT

BIN = Path(sys.executable).parent

DATABASE_NAME = harness.database_name("cdp_bench")
DATABASE_URL = harness.database_url(DATABASE_NAME)
BROKER_URL = harness.broker_url(12)
SERVICE_ENV = harness.service_env(database=DATABASE_URL, broker=BROKER_URL)

TARGET_EVENTS_PER_S = 5_000
RUDDERSTACK_EVENTS_PER_S = 1_700
TEMPLATES_PER_CLIENT = 4
COPY_CHUNK_ROWS = 10_000
MARKER = "<!-- bench/ingest.py inserts each run's section below this line, newest first. -->"

#: The columns ``events.services._events_insert`` writes, in its order.
EVENT_COLUMNS = (
    "source_id", "channel", "store_code", "received_at",
    "message_id", "type", "event", "name", "user_id", "anonymous_id", "previous_id", "group_id",
    "timestamp", "original_timestamp", "sent_at",
    "context", "traits", "properties", "integrations",
)  # fmt: skip


# --- services: database, Redis, gunicorn ------------------------------------------------------


def manage(*args: str) -> str:
    """Run ``manage.py`` with the benchmark's production environment (``SERVICE_ENV``, which
    the benchmarks built on this one point at their own database); its stdout."""
    return harness.manage(*args, env=SERVICE_ENV)


def database() -> psycopg.Connection:
    return psycopg.connect(DATABASE_URL, autocommit=True)


def events_reset() -> None:
    """Empty the event tables, and checkpoint so no scenario pays for the previous one's writes."""
    with database() as conn:
        conn.execute(
            "TRUNCATE events_event, events_pendingevent, events_rejectedevent RESTART IDENTITY CASCADE"
        )
        conn.execute("CHECKPOINT")


def events_counted() -> tuple[int, int]:
    """Rows in events_event and events_rejectedevent."""
    with database() as conn:
        events = conn.execute("SELECT count(*) FROM events_event").fetchone()
        rejected = conn.execute("SELECT count(*) FROM events_rejectedevent").fetchone()
    return (events[0] if events else 0), (rejected[0] if rejected else 0)


def broker_flush() -> None:
    """FLUSHDB on the benchmark's Redis database (db 12) only."""
    redis.Redis.from_url(BROKER_URL, socket_connect_timeout=3).flushdb()


@dataclass(frozen=True)
class BenchSource:
    name: str
    write_key: str
    pk: int
    kind: str
    store_code: str


def prepare(run_id: str) -> BenchSource:
    """Create and migrate ``cdp_bench``, empty its events, and give it one fresh source."""
    manage("ensure_services", "--create-database")
    manage("migrate", "--noinput", "-v0")
    events_reset()
    with database() as conn:  # earlier runs' sources; their events are gone with the TRUNCATE
        conn.execute("DELETE FROM events_source WHERE name LIKE 'bench-%'")
    name = f"bench-{run_id}"
    write_key = manage("create_source", name, "--kind", "app").strip().splitlines()[-1]
    with database() as conn:
        row = conn.execute(
            "SELECT id, kind, store_code FROM events_source WHERE name = %s", (name,)
        ).fetchone()
    if row is None:
        raise RuntimeError(f"create_source did not create {name!r}")
    broker_flush()
    return BenchSource(name=name, write_key=write_key, pk=row[0], kind=row[1], store_code=row[2])


#: ``ServerConfig.worker_class`` for granian in place of gunicorn.
GRANIAN = "granian"


@dataclass(frozen=True)
class ServerConfig:
    """A server model: gunicorn's worker class (sync, gthread), or ``granian`` (its WSGI
    interface: ``threads`` are its blocking threads per worker, which run the application)."""

    workers: int
    worker_class: str = "sync"
    threads: int = 1
    config_file: str = ""  # a gunicorn -c file, e.g. hooks that try a change in the workers

    @property
    def label(self) -> str:
        if self.worker_class == GRANIAN:
            return f"{self.workers} workers x {self.threads} blocking threads"
        threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"{self.worker_class}, {self.workers} workers{threads}"

    @property
    def server(self) -> str:
        """The HTTP server's name: granian, or gunicorn for its worker classes."""
        return GRANIAN if self.worker_class == GRANIAN else "gunicorn"

    @property
    def flags(self) -> list[str]:
        # --threads always: gunicorn runs gthread in place of sync when threads > 1, which a
        # configuration file (config/gunicorn.py) may set.
        flags = ["-w", str(self.workers), "--worker-class", self.worker_class, "--threads", str(self.threads)]
        return [*flags, "-c", self.config_file] if self.config_file else flags


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Gunicorn:
    """gunicorn serving ``config.wsgi`` with the production settings, in its own session so
    a Ctrl-C reaches only us; ``stop`` asks for a graceful shutdown, then kills its group."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="bench-gunicorn-", suffix=".log")[1])

    def __enter__(self) -> "Gunicorn":
        if self.process is None:
            self.start()
        return self

    def start(self) -> None:
        """Start gunicorn and wait until /health/ answers (stopping it again if it does not)."""
        if self.process is not None:
            raise RuntimeError("this gunicorn is already started")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def environment(self) -> dict[str, str]:
        return {**os.environ, **SERVICE_ENV}

    def command(self) -> list[str]:
        return [
            str(BIN / "gunicorn"), "config.wsgi", "-b", f"127.0.0.1:{self.port}", *self.config.flags,
            "--keep-alive", "30", "--timeout", "120", "--log-level", "warning",
        ]  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pgid(self) -> int | None:
        """gunicorn's process group (its own session): the master and all its workers."""
        return self.process.pid if self.process is not None else None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.config.server} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/health/")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    return
                last = f"{response.status} {body[:200]!r}"
            except OSError as exc:
                last = str(exc)
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError(f"{self.config.server} did not answer /health/ within {timeout:.0f} s ({last})")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: gunicorn and its workers
                process.wait()
        if process is not None and process.returncode in (0, -signal.SIGTERM):
            self.log.unlink(missing_ok=True)
        elif process is not None:
            print(
                f"{self.config.server} exited with {process.returncode}; its log: {self.log}", file=sys.stderr
            )


class Granian(Gunicorn):
    """granian as the Dockerfile runs it (``python -m config.granian``: its access log with
    nothing secret, its metrics hook on a worker's exit), calling the same WSGI application,
    ``config.wsgi``: each of its workers (processes) runs a Rust HTTP runtime and
    ``config.threads`` blocking threads that call Django."""

    def command(self) -> list[str]:
        return [str(BIN / "python"), "-m", "config.granian", "--host", "127.0.0.1", "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "WEB_WORKERS": str(self.config.workers),
            "WEB_THREADS": str(self.config.threads),
            "WEB_LOG_LEVEL": "warning",
        }


def http_server(config: ServerConfig) -> Gunicorn:
    """The server a configuration names (gunicorn, or granian), not started."""
    return Granian(config) if config.server == GRANIAN else Gunicorn(config)


# --- where the CPU goes ------------------------------------------------------------------------

CPU_CATEGORIES = (
    "gunicorn", "postgres backends", "postgres other", "redis", "clients", "other processes",
    "unattributed", "idle",
)  # fmt: skip

_Sample = tuple[dict[int, tuple[str, float]], list[float]]


@dataclass
class CpuMeter:
    """Splits the machine's CPU time over a window by who spent it, from /proc: the gunicorn
    process group, cdp_bench's PostgreSQL backends, PostgreSQL's other processes (WAL writer,
    checkpointer, other databases' backends), Redis, the benchmark's own processes, any other
    process, time no live process is charged for (interrupts, steal by the hypervisor,
    processes that ended within the window) and idle."""

    gunicorn_pgid: int | None = None
    client_pids: set[int] = field(default_factory=set)

    def _category(self, pid: int, comm: str, pgrp: int) -> str:
        if pid in self.client_pids or pid == os.getpid():
            return "clients"
        if self.gunicorn_pgid is not None and pgrp == self.gunicorn_pgid:
            return "gunicorn"
        if comm == "postgres":
            with contextlib.suppress(OSError):
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
                if f" {DATABASE_NAME} ".encode() in title:
                    return "postgres backends"
            return "postgres other"
        return "redis" if comm.startswith("redis-server") else "other processes"

    def sample(self) -> _Sample:
        """CPU seconds so far of every process, and the machine's /proc/stat counters."""
        tick = os.sysconf("SC_CLK_TCK")
        processes: dict[int, tuple[str, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            pid = int(entry.name)
            processes[pid] = (self._category(pid, comm, int(rest[2])), (int(rest[11]) + int(rest[12])) / tick)
        machine = [int(value) / tick for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        return processes, machine

    @staticmethod
    def shares(before: _Sample, after: _Sample) -> dict[str, float]:
        """Each category's share of the machine over the window, in percent (adds up to 100)."""
        spent = dict.fromkeys(CPU_CATEGORIES, 0.0)
        for pid, (category, seconds) in after[0].items():
            spent[category] += seconds - (before[0][pid][1] if pid in before[0] else 0.0)
        machine = [end - start for start, end in zip(before[1], after[1], strict=True)]
        spent["idle"] = machine[3] + machine[4]  # idle + iowait
        total = sum(machine)  # user nice system idle iowait irq softirq steal
        if total <= 0:
            return {}
        charged = sum(spent[key] for key in CPU_CATEGORIES if key not in ("unattributed", "idle"))
        spent["unattributed"] = max(total - spent["idle"] - charged, 0.0)
        return {key: 100 * spent[key] / total for key in CPU_CATEGORIES}


def background_cpu(seconds: float = 3) -> float:
    """How busy the machine is (percent of all cores) while the benchmark runs nothing."""
    meter = CpuMeter()
    before = meter.sample()
    time.sleep(seconds)
    shares = meter.shares(before, meter.sample())
    return 100 - shares.get("idle", 100)


def wait_until_quiet(limit: float, patience: float) -> float:
    """Wait up to ``patience`` seconds for other processes to use less than ``limit`` percent
    of the CPU (a test suite or a demo load next door halves the numbers); the last reading."""
    deadline = time.monotonic() + patience
    while (busy := background_cpu()) > limit and time.monotonic() < deadline:
        print(f"  the machine is {busy:.0f}% busy with other work; waiting for it to calm down", flush=True)
        time.sleep(5)
    if busy > limit:
        print(
            f"  warning: {busy:.0f}% of the CPU is used by other processes; results will be low", flush=True
        )
    return busy


# --- load clients (separate processes, so the measuring side is never the bottleneck) ---------


@dataclass
class ClientResult:
    requests: int = 0  # responses completed inside the measured window
    accepted: int = 0  # events accepted by those responses
    accepted_total: int = 0  # events accepted by every response, warm-up and tail included
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0
    error_sample: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    first: float = 0.0  # monotonic time the measured requests began / ended
    last: float = 0.0


def _authorization(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def _post(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    conn.request("POST", path, body, headers)
    response = conn.getresponse()
    return response.status, response.read()


def _as_child() -> None:
    """A client leaves Ctrl-C to the parent, which ends it by its pid."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _error(result: ClientResult, what: str) -> None:
    result.errors += 1
    result.error_sample = result.error_sample or what[:300]


def _batch_client(
    port: int, write_key: str, size: int, seed: int, ready: Any, go: Any, times: Any, out: Any
) -> None:
    """POST batches back to back until ``times[1]``; measure what completes after ``times[0]``."""
    _as_child()
    rng = random.Random(seed)
    templates = [payloads.batch_template(rng, size) for _ in range(TEMPLATES_PER_CLIENT)]
    headers = {"Content-Type": "application/json", "Authorization": _authorization(write_key)}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    result = ClientResult()
    ready.put(os.getpid())
    go.wait()
    warm_until, stop_at = times[0], times[1]
    sent = 0
    while (began := time.monotonic()) < stop_at:
        body = templates[sent % TEMPLATES_PER_CLIENT].render()
        sent += 1
        try:
            status, data = _post(conn, "/v1/batch", body, headers)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _error(result, f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)
            continue
        done = time.monotonic()
        if status != 200:
            _error(result, f"HTTP {status}: {data[:300]!r}")
            continue
        answer = orjson.loads(data)
        accepted = int(answer.get("accepted", 0))
        result.accepted_total += accepted
        result.duplicates += int(answer.get("duplicates", 0))
        result.rejected += len(answer.get("rejected", ()))
        if warm_until <= done <= stop_at:
            result.requests += 1
            result.accepted += accepted
            result.latencies_ms.append((done - began) * 1000)
    conn.close()
    out.put(asdict(result))


def _track_client(
    port: int, write_key: str, count: int, seed: int, ready: Any, go: Any, times: Any, out: Any
) -> None:
    """POST ``count`` single events one after the other (the first tenth warms up)."""
    _as_child()
    rng = random.Random(seed)
    warmup = max(count // 10, 5)
    bodies = [payloads.track_template(rng).render() for _ in range(warmup + count)]
    headers = {"Content-Type": "application/json", "Authorization": _authorization(write_key)}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    result = ClientResult()
    ready.put(os.getpid())
    go.wait()
    deadline = times[1]
    for index, body in enumerate(bodies):
        if index == warmup:
            result.first = time.monotonic()
        began = time.perf_counter()
        try:
            status, data = _post(conn, "/v1/track", body, headers)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            _error(result, f"{type(exc).__name__}: {exc}")
            continue
        elapsed_ms = (time.perf_counter() - began) * 1000
        answer = orjson.loads(data) if status == 200 else {}
        if not answer.get("success"):
            _error(result, f"HTTP {status}: {data[:300]!r}")
            continue
        duplicate = bool(answer.get("duplicate"))
        result.duplicates += duplicate
        result.accepted_total += not duplicate
        if index >= warmup:
            result.requests += 1
            result.accepted += not duplicate
            result.latencies_ms.append(elapsed_ms)
        if time.monotonic() > deadline:
            _error(result, "stopped at the time limit before sending every request")
            break
    result.last = time.monotonic()
    conn.close()
    out.put(asdict(result))


def run_clients(
    target: Callable[..., None],
    argument_sets: Sequence[tuple[Any, ...]],
    *,
    warmup: float,
    duration: float,
    meter: CpuMeter | None = None,
    result_type: type[ClientResult] = ClientResult,
) -> tuple[list[ClientResult], dict[str, float]]:
    """Start one process per argument set, let them prepare their bodies, then start them
    together: ``times[0]`` ends the warm-up, ``times[1]`` ends the run. With a ``meter``, also
    the CPU shares over the measured window."""
    context = mp.get_context("fork")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    times = context.Array("d", 2)
    processes = [
        context.Process(target=target, args=(*arguments, ready, go, times, out), daemon=True)
        for arguments in argument_sets
    ]
    try:
        for process in processes:
            process.start()
        pids = {ready.get(timeout=300) for _ in processes}
        now = time.monotonic()
        times[0], times[1] = now + warmup, now + warmup + duration
        go.set()
        shares: dict[str, float] = {}
        if meter is not None:
            meter.client_pids = pids
            time.sleep(max(times[0] - time.monotonic(), 0))
            before = meter.sample()
            time.sleep(max(times[1] - time.monotonic(), 0))
            shares = meter.shares(before, meter.sample())
        results = [result_type(**out.get(timeout=warmup + duration + 300)) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        return results, shares
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)


def percentiles(samples: Sequence[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        value = samples[0] if samples else float("nan")
        return value, value, value
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


# --- scenarios --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One line of the results table."""

    scenario: str
    events_per_s: float
    requests_per_s: float
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    accepted_total: int = 0
    rows: int = 0
    rejected_rows: int = 0
    errors: int = 0
    error_sample: str = ""
    note: str = ""
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def durable(self) -> bool:
        return self.rows == self.accepted_total and self.errors == 0 and self.rejected_rows == 0

    @property
    def check(self) -> str:
        if self.durable:
            return f"✓ {self.rows:,} rows = accepted"
        problems = [f"{self.rows:,} rows vs {self.accepted_total:,} accepted"]
        if self.rejected_rows:
            problems.append(f"{self.rejected_rows:,} rejected")
        if self.errors:
            problems.append(f"{self.errors:,} errors, e.g. {self.error_sample}")
        return "✗ " + "; ".join(problems)


def scenario_batch(
    server: Gunicorn, source: BenchSource, *, size: int, clients: int, warmup: float, duration: float
) -> Outcome:
    events_reset()
    results, cpu = run_clients(
        _batch_client,
        [(server.port, source.write_key, size, 1000 + i) for i in range(clients)],
        warmup=warmup,
        duration=duration,
        meter=CpuMeter(gunicorn_pgid=server.pgid),
    )
    rows, rejected = events_counted()
    p50, p95, p99 = percentiles([ms for r in results for ms in r.latencies_ms])
    return Outcome(
        scenario=f"POST /v1/batch, {size} events/request, {clients} clients",
        events_per_s=sum(r.accepted for r in results) / duration,
        requests_per_s=sum(r.requests for r in results) / duration,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        accepted_total=sum(r.accepted_total for r in results),
        rows=rows,
        rejected_rows=rejected,
        errors=sum(r.errors + r.duplicates + r.rejected for r in results),
        error_sample=next((r.error_sample for r in results if r.error_sample), ""),
        cpu=cpu,
    )


def scenario_track(server: Gunicorn, source: BenchSource, *, requests: int, clients: int) -> Outcome:
    events_reset()
    per_client = max(requests // clients, 10)
    results, _ = run_clients(
        _track_client,
        [(server.port, source.write_key, per_client, 2000 + i) for i in range(clients)],
        warmup=0,
        duration=max(120.0, per_client * 0.05),
    )
    rows, rejected = events_counted()
    p50, p95, p99 = percentiles([ms for r in results for ms in r.latencies_ms])
    elapsed = max(r.last for r in results) - min(r.first for r in results)
    measured = sum(r.requests for r in results)
    who = "sequential (1 client)" if clients == 1 else f"{clients} concurrent clients"
    return Outcome(
        scenario=f"POST /v1/track, 1 event/request, {who}",
        events_per_s=sum(r.accepted for r in results) / elapsed,
        requests_per_s=measured / elapsed,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        accepted_total=sum(r.accepted_total for r in results),
        rows=rows,
        rejected_rows=rejected,
        errors=sum(r.errors + r.duplicates for r in results),
        error_sample=next((r.error_sample for r in results if r.error_sample), ""),
        note=f"{measured:,} requests measured",
    )


def _copy_text(value: object) -> str:
    """One field in COPY's text format."""
    if value is None:
        return r"\N"
    if isinstance(value, datetime):
        return value.isoformat()
    text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_template(source: BenchSource, rows: int) -> payloads.Template:
    """``rows`` lines of COPY text holding exactly what the ingestion INSERT would store for
    the benchmark's messages (parsed by ``events.contract``, as /v1/batch parses them), split
    at the message ids so every COPY gets fresh ones."""
    harness.django_setup(SERVICE_ENV)
    from events.contract import BatchDefaults, Message, message_parse

    received_at = datetime.now(UTC)
    defaults = BatchDefaults(sent_at=received_at)
    rng = random.Random(3000)
    lines = []
    for index in range(rows):
        raw = {"messageId": payloads.MESSAGE_ID_SLOT, **payloads.message(rng, at=received_at)}
        message = message_parse(
            raw,
            received_at=received_at,
            defaults=defaults,
            index=index,
            default_currency=source.default_currency,
        )
        if not isinstance(message, Message):
            raise RuntimeError(f"the benchmark made an invalid event: {message}")
        fixed = (source.pk, source.kind, source.store_code, received_at)
        values = (*fixed, *(getattr(message, column) for column in EVENT_COLUMNS[4:]))
        lines.append("\t".join(map(_copy_text, values)) + "\n")
    fragments = "".join(lines).encode().split(payloads.MESSAGE_ID_SLOT.encode())
    return payloads.Template(fragments=tuple(fragments), events=rows)


def _copy_client(template: payloads.Template, ready: Any, go: Any, times: Any, out: Any) -> None:
    """COPY chunks of rows, each in its own transaction, until ``times[1]``; the chunks that
    ran wholly inside the measured window are counted, with the time each took."""
    _as_child()
    statement = f"COPY events_event ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
    result = ClientResult()
    with psycopg.connect(DATABASE_URL) as conn:
        ready.put(os.getpid())
        go.wait()
        warm_until, stop_at = times[0], times[1]
        while (began := time.monotonic()) < stop_at:
            data = template.render()
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
                copy.write(data)
            done = time.monotonic()
            result.accepted_total += template.events
            if began >= warm_until and done <= stop_at:
                result.requests += 1
                result.accepted += template.events
                result.latencies_ms.append((done - began) * 1000)
    out.put(asdict(result))


def scenario_copy(source: BenchSource, *, streams: int, warmup: float, duration: float) -> Outcome:
    template = copy_template(source, COPY_CHUNK_ROWS)
    events_reset()
    results, cpu = run_clients(
        _copy_client, [(template,)] * streams, warmup=warmup, duration=duration, meter=CpuMeter()
    )
    rows, rejected = events_counted()
    plural = "s" if streams > 1 else ""
    # Each stream's rate over the chunks it ran wholly inside the window (a chunk takes a good
    # fraction of a second, so counting chunks per window would be too coarse); streams add up.
    busy = [sum(r.latencies_ms) / 1000 for r in results]
    return Outcome(
        scenario=f"COPY into events_event, {COPY_CHUNK_ROWS:,} rows/transaction, {streams} stream{plural}",
        events_per_s=sum(r.accepted / s for r, s in zip(results, busy, strict=True) if s),
        requests_per_s=sum(r.requests / s for r, s in zip(results, busy, strict=True) if s),
        accepted_total=sum(r.accepted_total for r in results),
        rows=rows,
        rejected_rows=rejected,
        cpu=cpu,
    )


# --- report ------------------------------------------------------------------------------------


def _version_or_none(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "")
    meminfo = Path("/proc/meminfo").read_text().split()
    ram_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2
    with database() as conn:
        settings = {
            name: str((conn.execute(f"SHOW {name}").fetchone() or ("?",))[0])
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers", "autovacuum")
        }
    return {
        "cpu": model or platform.processor() or "unknown CPU",
        "cores": str(os.cpu_count()),
        "ram": f"{ram_gib:.0f} GiB",
        "postgresql": settings["server_version"],
        "postgresql_settings": (
            f"synchronous_commit={settings['synchronous_commit']}, fsync={settings['fsync']}, "
            f"shared_buffers={settings['shared_buffers']}, autovacuum={settings['autovacuum']}"
        ),
        "python": platform.python_version(),
        "django": metadata.version("django"),
        "gunicorn": metadata.version("gunicorn"),
        "granian": _version_or_none("granian"),
    }


def _ms(value: float) -> str:
    return "—" if value != value else f"{value:,.1f}"  # NaN: not a request/response scenario


def results_table(outcomes: Sequence[Outcome]) -> str:
    lines = [
        "| Scenario | events/s | requests/s | p50 ms | p95 ms | p99 ms | accepted = durable? |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        check = f"{o.check} ({o.note})" if o.note else o.check
        lines.append(
            f"| {o.scenario} | {o.events_per_s:,.0f} | {o.requests_per_s:,.1f} | "
            f"{_ms(o.p50_ms)} | {_ms(o.p95_ms)} | {_ms(o.p99_ms)} | {check} |"
        )
    return "\n".join(lines)


#: What serving the events costs, and what other work on the machine took from the run.
SERVER_CPU = ("gunicorn", "postgres backends", "postgres other", "redis")
OTHERS_CPU = ("other processes", "unattributed")


def per_server_cpu_second(outcome: Outcome) -> float:
    """Events per CPU-second spent by gunicorn, PostgreSQL and Redis: how efficient the path
    is, and much less sensitive than events/s to whatever else the machine was doing."""
    busy = (os.cpu_count() or 1) * sum(outcome.cpu.get(key, 0.0) for key in SERVER_CPU) / 100
    return outcome.events_per_s / busy if busy else float("nan")


def others_share(outcome: Outcome) -> float:
    return sum(outcome.cpu.get(key, 0.0) for key in OTHERS_CPU)


def cpu_table(outcomes: Sequence[Outcome]) -> str:
    measured = [o for o in outcomes if o.cpu]
    if not measured:
        return ""
    lines = [
        "Where the CPU went during the measured windows (% of all cores), and events per CPU-second "
        "of gunicorn + PostgreSQL + Redis (other work on the machine shows under *other processes* "
        "and *unattributed*; the last column hardly depends on it):",
        "",
        "| Scenario | " + " | ".join(CPU_CATEGORIES) + " | events per server CPU-s |",
        "|---|" + "---:|" * (len(CPU_CATEGORIES) + 1),
    ]
    for o in measured:
        shares = " | ".join(f"{o.cpu[key]:.0f}" for key in CPU_CATEGORIES)
        lines.append(f"| {o.scenario} | {shares} | {per_server_cpu_second(o):,.0f} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class SweepRow:
    config: ServerConfig
    batch100: Outcome
    batch500: Outcome


def sweep_table(rows: Sequence[SweepRow], duration: float) -> str:
    lines = [
        f"Server configurations tried ({duration:g} s per cell, same clients; the one with the most "
        "events/s over both batch sizes was used above):",
        "",
        "| gunicorn | batch 100: events/s | batch 500: events/s | batch 500: events per server CPU-s "
        "| CPU taken by other work |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.config.label} | {row.batch100.events_per_s:,.0f} | {row.batch500.events_per_s:,.0f} | "
        f"{per_server_cpu_second(row.batch500):,.0f} | "
        f"{max(others_share(row.batch100), others_share(row.batch500)):.0f}% |"
        for row in rows
    ]
    return "\n".join(lines)


INTRO = f"""# Ingestion benchmarks

`make bench` (that is, `.venv/bin/python bench/ingest.py`; `--help` for the options) measures
how fast the Segment-compatible ingestion API accepts events *durably*, on one machine with
gunicorn, PostgreSQL and Redis, using the production settings against its own database
(`cdp_bench`) and Redis db 12. It needs PostgreSQL on 127.0.0.1:5432 and Redis on
127.0.0.1:6379 (`make services`), and takes about three minutes (`--sweep` adds five more).

- **`POST /v1/batch`**: batches of 100 and of 500 realistic retail events (identify with
  phone, email and `context.externalIds`; `Product Viewed`, `Product Added`, and
  `Order Completed` with `order_id`, `total`, `currency` CNY and `products`; about 620 bytes
  each, each with a random `messageId`), posted back to back by several client processes over
  keep-alive connections (where the server keeps them). Events/s counts the `accepted` numbers of 200 responses completed
  in the measured window, after a warm-up; afterwards `events_event` is counted and must hold
  exactly every event any response accepted (a 200 means committed).
- **`POST /v1/track`**: one event per request, p50/p95/p99 latency as the client sees it,
  sequential and then with a few concurrent clients.
- **`COPY`**: psycopg 3 `cursor.copy` of the same rows (the same columns and values the
  ingestion INSERT writes, into the same table with its indexes and foreign key): what
  PostgreSQL on this machine can take at best, and /v1/batch's rate as a fraction of it.

Each scenario starts from empty event tables and a checkpoint. No Celery worker runs: this is
the gateway alone, as in RudderStack's published figure. Each run also says where the CPU went
(gunicorn, PostgreSQL, Redis, the clients, other work on the machine): compare runs by
*events per server CPU-second* when other work took a share.

**Target** (from the issue): at least **{TARGET_EVENTS_PER_S:,} events/s** accepted and durable
through `/v1/batch` on 2 cores. RudderStack publishes about {RUDDERSTACK_EVENTS_PER_S:,}
events/s for its gateway on a 2-core machine.
"""


def run_section(
    *,
    started: datetime,
    facts: dict[str, str],
    config: ServerConfig,
    args: argparse.Namespace,
    outcomes: Sequence[Outcome],
    sweep: Sequence[SweepRow],
    sweep_duration: float,
) -> str:
    batches = [o for o in outcomes if o.scenario.startswith("POST /v1/batch")]
    best = max(batches, key=lambda o: o.events_per_s) if batches else None
    copy = next((o for o in outcomes if o.scenario.startswith("COPY")), None)
    verdict = ""
    if best is not None:
        met = best.events_per_s >= TARGET_EVENTS_PER_S and all(o.durable for o in batches)
        verdict = (
            f"**Target: ≥ {TARGET_EVENTS_PER_S:,} events/s accepted and durable through /v1/batch on "
            f"2 cores** (RudderStack's gateway: about {RUDDERSTACK_EVENTS_PER_S:,}/s on 2 cores). "
            f"Best here: {best.events_per_s:,.0f} events/s ({best.scenario.split(', ')[1]}): "
            f"**{'met' if met else 'not met'}**."
        )
    ratios = ""
    if copy is not None and copy.events_per_s:
        parts = [f"{o.scenario.split(', ')[1]}: {o.events_per_s / copy.events_per_s:.2f}" for o in batches]
        ratios = f"/v1/batch as a fraction of COPY's {copy.events_per_s:,.0f} events/s: {'; '.join(parts)}."
    connections = (
        "http.client, keep-alive"
        if config.worker_class == "gthread"
        else "http.client; gunicorn's sync workers close the connection after each response"
    )
    quick = " (quick smoke run: too short to compare)" if args.quick else ""
    if config.config_file:
        quick += f" — with `gunicorn -c {config.config_file}` (trying a change, not the code as committed)"
    lines = [
        f"## {started:%Y-%m-%d %H:%M} UTC{quick}",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL "
        f"{facts['postgresql']} ({facts['postgresql_settings']}), Python {facts['python']}, "
        f"Django {facts['django']}; other processes used {facts['background']} of the CPU just before the run.",
        f"- Server: gunicorn {facts['gunicorn']}, {config.label} (`{' '.join(config.flags)}`), "
        "`config.settings.production`; PostgreSQL, Redis and the clients share the same cores.",
        f"- Load: {args.clients} client processes ({connections}), {args.warmup:g} s warm-up "
        f"then {args.duration:g} s measured per batch scenario; {args.latency_requests:,} track "
        f"requests per latency scenario; COPY for {args.duration:g} s in {args.copy_streams} "
        f"stream{'s' if args.copy_streams > 1 else ''}.",
        "",
        results_table(outcomes),
        "",
    ]
    lines += [line for line in (ratios, verdict) if line]
    if cpu := cpu_table(outcomes):
        lines += ["", cpu]
    if sweep:
        lines += ["", sweep_table(sweep, sweep_duration)]
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    """Regenerate the intro and insert this run's section above the earlier ones."""
    harness.docs_insert(section, intro=INTRO, marker=MARKER)


# --- main --------------------------------------------------------------------------------------

SWEEP = (
    ServerConfig(2),
    ServerConfig(3),
    ServerConfig(4),
    ServerConfig(6),
    ServerConfig(2, "gthread", 2),
    ServerConfig(3, "gthread", 2),
    ServerConfig(4, "gthread", 2),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds before measuring")
    parser.add_argument("--clients", type=int, default=4, help="client processes posting batches")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--worker-class", choices=("sync", "gthread"), default="sync")
    parser.add_argument("--threads", type=int, default=2, help="threads per gthread worker")
    parser.add_argument(
        "--gunicorn-config", default="", metavar="FILE", help="extra gunicorn config file (-c), e.g. hooks"
    )
    parser.add_argument("--latency-requests", type=int, default=3000, help="track requests per scenario")
    parser.add_argument("--latency-clients", type=int, default=4, help="clients of the concurrent track run")
    parser.add_argument(
        "--copy-streams", type=int, default=os.cpu_count() or 2, help="concurrent COPY connections (cores)"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="first try several gunicorn configurations, keep the best"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60,
        metavar="SECONDS",
        help="wait up to this long for other processes to leave the CPU idle (< 10%% busy)",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario: a smoke check")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the run into docs/benchmarks.md (default: yes, except with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.latency_requests = min(args.duration, 3), 1, 300
    if args.docs is None:
        args.docs = not args.quick
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def announced(what: str) -> Iterator[None]:
    print(f"… {what}", flush=True)
    began = time.monotonic()
    yield
    print(f"  done in {time.monotonic() - began:.1f} s", flush=True)


def sweep_configs(source: BenchSource, args: argparse.Namespace, duration: float) -> list[SweepRow]:
    rows = []
    for candidate in SWEEP:
        config = dataclasses.replace(candidate, config_file=args.gunicorn_config)
        with announced(f"sweep: {config.label}"), Gunicorn(config) as server:
            batch100, batch500 = (
                scenario_batch(server, source, size=size, clients=args.clients, warmup=2, duration=duration)
                for size in (100, 500)
            )
        print(
            f"  batch 100: {batch100.events_per_s:,.0f} events/s, batch 500: {batch500.events_per_s:,.0f} "
            f"events/s ({max(others_share(batch100), others_share(batch500)):.0f}% CPU taken by other work)"
        )
        rows.append(SweepRow(config, batch100, batch500))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%d%H%M%S}"
    config = ServerConfig(args.workers, args.worker_class, args.threads, args.gunicorn_config)
    outcomes: list[Outcome] = []
    sweep: list[SweepRow] = []
    sweep_duration = max(args.duration / 2, 2)
    try:
        with announced("checking that nothing else keeps the CPU busy"):
            background = wait_until_quiet(10, args.wait_quiet)
        with announced(f"preparing database {DATABASE_NAME} and a source"):
            source = prepare(run_id)
        if args.sweep:
            sweep = sweep_configs(source, args, sweep_duration)
            config = max(sweep, key=lambda row: row.batch100.events_per_s + row.batch500.events_per_s).config
        with announced(f"starting gunicorn ({config.label})"):
            server = Gunicorn(config)
            server.start()
        with server:
            for size in (100, 500):
                with announced(f"/v1/batch, {size} events per request, {args.clients} clients"):
                    outcomes.append(
                        scenario_batch(
                            server,
                            source,
                            size=size,
                            clients=args.clients,
                            warmup=args.warmup,
                            duration=args.duration,
                        )
                    )
            for clients in sorted({1, args.latency_clients}):
                with announced(f"/v1/track latency, {clients} client(s)"):
                    outcomes.append(
                        scenario_track(server, source, requests=args.latency_requests, clients=clients)
                    )
        with announced(f"COPY, {args.copy_streams} stream(s)"):
            outcomes.append(
                scenario_copy(
                    source, streams=args.copy_streams, warmup=min(args.warmup, 2), duration=args.duration
                )
            )
        facts = {**machine(), "background": f"{background:.0f}%"}
    except KeyboardInterrupt:
        print(
            f"interrupted: stopping gunicorn and the clients, emptying {DATABASE_NAME}'s events",
            file=sys.stderr,
        )
        return 130
    except SystemExit:
        print(
            f"terminated: stopping gunicorn and the clients, emptying {DATABASE_NAME}'s events",
            file=sys.stderr,
        )
        raise
    finally:
        with contextlib.suppress(Exception):
            events_reset()
            broker_flush()

    section = run_section(
        started=started,
        facts=facts,
        config=config,
        args=args,
        outcomes=outcomes,
        sweep=sweep,
        sweep_duration=sweep_duration,
    )
    print()
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ingest-{run_id}.json").write_bytes(
        orjson.dumps(
            {
                "started": started,
                "machine": facts,
                "server": asdict(config),
                "args": vars(args),
                "outcomes": [asdict(o) for o in outcomes],
                "sweep": [asdict(row) for row in sweep],
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    if args.docs:
        write_docs(section)
        print(f"written to {DOCS.relative_to(ROOT)}")
    return 0 if all(o.durable for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
