"""Single-event ingestion benchmark: a till posting each sale as it happens, many at once.

What it measures, in one run, on this machine:

1. **The limit**: what PostgreSQL takes of the same work without us, from the same number of
   clients: one single-row ``INSERT … ON CONFLICT (source_id, message_id) DO NOTHING`` into
   ``events_event`` (its indexes, foreign key and queue trigger) committed on its own, with
   the columns and values a ``/v1/track`` stores. Twice: from ``pgbench`` (C clients, prepared:
   the database's own limit) and from psycopg 3 client processes (prepared, autocommit: what a
   Python client of the database reaches).
2. **The web path**: ``POST /v1/{track,identify,page,screen,group,alias}`` (the mix of a
   retailer's SDKs: half track) from the same number of client processes, each on one
   keep-alive connection (raw sockets, prebuilt requests, so the clients spend little CPU),
   against granian run as the Dockerfile runs it (``python -m config.granian``: its redacted
   access log, production settings; ``--server granian:WORKERS:THREADS``) and against gunicorn
   with its configuration (``-c python:config.gunicorn``; ``--server gthread:2:4``, ``sync:8``),
   the same WSGI application under each server model tried. Requests/s,
   p50/p95/p99 as the client sees them, and **accepted = durable**: afterwards ``events_event``
   holds exactly as many rows as the 200 answers accepted, none refused, none an error.

The rate limit is on (one Redis round trip per request, as deployed) but set far above the
load (``RATE_LIMIT_INGESTION``); no Celery worker runs, so the nudges pile up in the Redis
database (flushed at the end). Each scenario starts from empty event tables and a checkpoint.
The machine's load (``/proc/loadavg``) and the CPU share of other work are recorded beside
each figure: on a machine shared with other work, the ratio to the limit measured in the same
run is the figure to compare. The section goes into its block of ``docs/benchmarks.md``.

    .venv/bin/python bench/ingest_single.py              # ~4 minutes
    .venv/bin/python bench/ingest_single.py --quick      # a smoke check, not written to the docs
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ingest  # the ingestion benchmark's database, gunicorn, clients and CPU meter
import orjson
import payloads
import psycopg
from harness import RESULTS, ROOT
from ingest import ClientResult, CpuMeter, Gunicorn, ServerConfig, percentiles

TARGET_REQUESTS_PER_S = 2_000
TARGET_P99_MS = 15.0
#: Far above what the benchmark sends: the limit is counted (a Redis round trip), never hit.
RATE_LIMIT = "100000000/min"
#: gunicorn's configuration (access log with nothing secret in it): the alternative to granian.
DEPLOYED_CONFIG = "python:config.gunicorn"
START_MARKER = "<!-- bench/ingest_single.py: single-event ingestion benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/ingest_single.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/ingest_single.py: end of the single-event ingestion benchmarks. -->"

#: Server models tried, each against the same clients: (worker class, workers, threads). First
#: what the Dockerfile runs (granian, config/granian.py's defaults on 2 cores), then gunicorn's.
SERVERS = (
    ServerConfig(2, ingest.GRANIAN, 4),
    ServerConfig(2, "gthread", 4, DEPLOYED_CONFIG),
)


# --- requests -----------------------------------------------------------------------------------


def _calls(rng: random.Random) -> list[tuple[str, payloads.Template]]:
    """A client's request bodies: (path, template), a retailer's mix of single calls."""
    at = datetime.now(UTC)
    calls: list[tuple[str, payloads.Template]] = []
    for _ in range(10):
        calls.append(("/v1/track", payloads.track_template(rng, at=at)))
    for _ in range(4):
        while (body := payloads.message(rng, at=at))["type"] != "identify":
            pass
        body.pop("type")
        calls.append(("/v1/identify", payloads._template({"messageId": payloads.MESSAGE_ID_SLOT, **body}, 1)))
    user = f"m{rng.randrange(10**7, 10**8)}"
    others = (
        (
            "/v1/page",
            {"userId": user, "name": "商品详情", "properties": {"path": "/p/123", "title": "精华液"}},
        ),
        (
            "/v1/page",
            {"anonymousId": f"a-{rng.getrandbits(64):x}", "name": "首页", "properties": {"path": "/"}},
        ),
        ("/v1/screen", {"userId": user, "name": "购物车", "properties": {"items": 2}}),
        ("/v1/screen", {"userId": user, "name": "会员中心"}),
        ("/v1/group", {"userId": user, "groupId": "store-021-07", "traits": {"name": "上海静安店"}}),
        ("/v1/alias", {"userId": user, "previousId": f"a-{rng.getrandbits(64):x}"}),
    )
    for path, body in others:
        calls.append((path, payloads._template({"messageId": payloads.MESSAGE_ID_SLOT, **body}, 1)))
    rng.shuffle(calls)
    return calls


def _request_head(path: str, authorization: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.I)


def _response(sock: socket.socket) -> tuple[int, bytes, bool]:
    """Read one HTTP/1.1 response: (status, body, whether the server closes the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if _CHUNKED.search(head):
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection mid-body")
            body += chunk
        return int(head[9:12]), body, bool(_CLOSE.search(head))
    length_match = _CONTENT_LENGTH.search(head)
    length = int(length_match.group(1)) if length_match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        body += chunk
    return int(head[9:12]), body, bool(_CLOSE.search(head))


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class SingleResult(ClientResult):
    connections: int = 0  # connections opened (1 when the server keeps them alive)


def _single_client(port: int, write_key: str, seed: int, ready: Any, go: Any, times: Any, out: Any) -> None:
    """Post single calls back to back on one keep-alive connection until ``times[1]``; measure
    those that complete after ``times[0]``."""
    ingest._as_child()
    rng = random.Random(seed)
    authorization = ingest._authorization(write_key)
    calls = [(_request_head(path, authorization), template) for path, template in _calls(rng)]
    result = SingleResult()
    ready.put(os.getpid())
    go.wait()
    warm_until, stop_at = times[0], times[1]
    sock: socket.socket | None = None
    sent = 0
    while time.monotonic() < stop_at:
        head, template = calls[sent % len(calls)]
        sent += 1
        body = template.render()
        began = time.perf_counter()
        try:
            if sock is None:
                sock = _connect(port)
                result.connections += 1
            sock.sendall(b"%s%d\r\n\r\n%s" % (head, len(body), body))
            status, answer, closing = _response(sock)
        except (OSError, ValueError) as exc:  # ValueError: not an HTTP response
            if sock is not None:
                sock.close()
            sock = None
            ingest._error(result, f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)
            continue
        elapsed_ms = (time.perf_counter() - began) * 1000
        done = time.monotonic()
        if closing:
            sock.close()
            sock = None
        if status != 200 or b'"success":true' not in answer:
            ingest._error(result, f"HTTP {status}: {answer[:300]!r}")
            continue
        duplicate = b'"duplicate":true' in answer
        result.duplicates += duplicate
        result.accepted_total += not duplicate
        if warm_until <= done <= stop_at:
            result.requests += 1
            result.accepted += not duplicate
            result.latencies_ms.append(elapsed_ms)
    if sock is not None:
        sock.close()
    out.put(asdict(result))


# --- the limit ----------------------------------------------------------------------------------


def _stored_row(source: ingest.BenchSource) -> tuple[Any, ...]:
    """The values a /v1/track of the benchmark's mix stores (parsed by ``events.contract``), in
    ``ingest.EVENT_COLUMNS`` order, its message id left to the caller (None)."""
    harness.django_setup(ingest.SERVICE_ENV)
    from events.contract import Message, message_parse

    received_at = datetime.now(UTC)
    body = orjson.loads(payloads.track_template(random.Random(5000), at=received_at).render())
    message = message_parse(body, received_at=received_at, call_type="track", default_currency="CNY")
    if not isinstance(message, Message):
        raise RuntimeError(f"the benchmark made an invalid event: {message}")
    values = [getattr(message, column) for column in ingest.EVENT_COLUMNS[4:]]
    values = [orjson.dumps(v).decode() if isinstance(v, dict) else v for v in values]
    values[0] = None  # message_id
    return (source.pk, source.kind, source.store_code, received_at, *values)


_JSON_COLUMNS = frozenset({"context", "traits", "properties", "integrations"})


def _insert_sql() -> str:
    placeholders = ", ".join(
        "%s::jsonb" if column in _JSON_COLUMNS else "%s" for column in ingest.EVENT_COLUMNS
    )
    return (
        f"INSERT INTO events_event ({', '.join(ingest.EVENT_COLUMNS)}) VALUES ({placeholders}) "
        "ON CONFLICT (source_id, message_id) DO NOTHING"
    )


def _psycopg_client(row: tuple[Any, ...], ready: Any, go: Any, times: Any, out: Any) -> None:
    """One prepared single-row INSERT … ON CONFLICT, committed on its own, back to back."""
    ingest._as_child()
    statement = _insert_sql()
    message_at = ingest.EVENT_COLUMNS.index("message_id")
    result = ClientResult()
    with psycopg.connect(ingest.DATABASE_URL, autocommit=True) as conn:
        ready.put(os.getpid())
        go.wait()
        warm_until, stop_at = times[0], times[1]
        while time.monotonic() < stop_at:
            values = list(row)
            values[message_at] = "mid-" + os.urandom(16).hex()
            began = time.perf_counter()
            inserted = conn.execute(statement, values, prepare=True).rowcount
            elapsed_ms = (time.perf_counter() - began) * 1000
            done = time.monotonic()
            result.accepted_total += inserted
            if warm_until <= done <= stop_at:
                result.requests += 1
                result.accepted += inserted
                result.latencies_ms.append(elapsed_ms)
    out.put(asdict(result))


def _pgbench_script(row: tuple[Any, ...]) -> tuple[str, list[str]]:
    """The same INSERT for pgbench, its values bound as parameters (``-D`` variables, as a
    client binds them), a fresh random message id each time; the script and the ``-D`` flags."""
    values, defines = [], []
    for column, value in zip(ingest.EVENT_COLUMNS, row, strict=True):
        if column == "message_id":
            values.append("'mid-' || md5(CAST(random() AS text))")
        elif value is None:
            values.append("NULL")
        elif value == "":  # pgbench takes no empty -D value
            values.append("''")
        else:
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            defines += ["-D", f"{column}={text}"]
            values.append(f"CAST(:{column} AS jsonb)" if column in _JSON_COLUMNS else f":{column}")
    script = (
        f"INSERT INTO events_event ({', '.join(ingest.EVENT_COLUMNS)}) VALUES ({', '.join(values)}) "
        "ON CONFLICT (source_id, message_id) DO NOTHING;\n"
    )
    return script, defines


# --- scenarios ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    accepted_total: int
    rows: int
    errors: int = 0
    error_sample: str = ""
    connections: int = 0
    load: str = ""
    cpu: dict[str, float] = field(default_factory=dict)
    is_limit: bool = False

    @property
    def durable(self) -> bool:
        return self.rows == self.accepted_total and self.errors == 0

    @property
    def check(self) -> str:
        if self.durable:
            return f"✓ {self.rows:,} rows = accepted"
        problem = f"✗ {self.rows:,} rows vs {self.accepted_total:,} accepted"
        return problem + (f"; {self.errors:,} errors, e.g. {self.error_sample}" if self.errors else "")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def scenario_web(
    server: Gunicorn, source: ingest.BenchSource, *, clients: int, warmup: float, duration: float
) -> Outcome:
    ingest.events_reset()
    load = _load()
    results, cpu = ingest.run_clients(
        _single_client,
        [(server.port, source.write_key, 7000 + i) for i in range(clients)],
        warmup=warmup,
        duration=duration,
        meter=CpuMeter(gunicorn_pgid=server.pgid),
        result_type=SingleResult,
    )
    rows, rejected = ingest.events_counted()
    p50, p95, p99 = percentiles([ms for r in results for ms in r.latencies_ms])
    return Outcome(
        scenario=f"{server.config.server} {server.config.label}",
        requests_per_s=sum(r.requests for r in results) / duration,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        accepted_total=sum(r.accepted_total for r in results),
        rows=rows,
        errors=sum(r.errors + r.duplicates for r in results) + rejected,
        error_sample=next((r.error_sample for r in results if r.error_sample), ""),
        connections=sum(getattr(r, "connections", 0) for r in results),
        load=load,
        cpu=cpu,
    )


def scenario_psycopg(row: tuple[Any, ...], *, clients: int, warmup: float, duration: float) -> Outcome:
    ingest.events_reset()
    load = _load()
    results, cpu = ingest.run_clients(
        _psycopg_client, [(row,)] * clients, warmup=warmup, duration=duration, meter=CpuMeter()
    )
    rows, _ = ingest.events_counted()
    p50, p95, p99 = percentiles([ms for r in results for ms in r.latencies_ms])
    return Outcome(
        scenario=f"limit: psycopg, {clients} client processes, prepared INSERT … ON CONFLICT, autocommit",
        requests_per_s=sum(r.requests for r in results) / duration,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        accepted_total=sum(r.accepted_total for r in results),
        rows=rows,
        connections=clients,
        load=load,
        cpu=cpu,
        is_limit=True,
    )


def scenario_pgbench(row: tuple[Any, ...], *, clients: int, duration: float) -> Outcome:
    """pgbench's clients run the INSERT for ``duration`` s; its per-transaction log gives the
    percentiles and the rows it committed."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise RuntimeError("pgbench is not installed (Debian: postgresql-client)")
    ingest.events_reset()
    load = _load()
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as folder:
        script = Path(folder, "insert.sql")
        text, defines = _pgbench_script(row)
        script.write_text(text)
        meter = CpuMeter()
        before = meter.sample()
        completed = subprocess.run(
            [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 2)),
             "-T", f"{duration:g}", "-f", str(script), *defines, "-l", "--log-prefix", str(Path(folder, "log")),
             ingest.DATABASE_URL],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        cpu = meter.shares(before, meter.sample())
        if completed.returncode != 0:
            raise RuntimeError(f"pgbench failed: {completed.stderr[-2000:]}")
        latencies = [
            int(line.split()[2]) / 1000
            for log in Path(folder).glob("log*")
            for line in log.read_text().splitlines()
            if line.strip()
        ]
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", completed.stdout)
    rows, _ = ingest.events_counted()
    p50, p95, p99 = percentiles(latencies)
    return Outcome(
        scenario=f"limit: pgbench, {clients} clients, prepared INSERT … ON CONFLICT, one per transaction",
        requests_per_s=float(tps.group(1)) if tps else len(latencies) / duration,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        accepted_total=len(latencies),
        rows=rows,
        connections=clients,
        load=load,
        cpu=cpu,
        is_limit=True,
    )


# --- report -------------------------------------------------------------------------------------


def _others(outcome: Outcome) -> float:
    return sum(outcome.cpu.get(key, 0.0) for key in ingest.OTHERS_CPU)


def cpu_ms(outcome: Outcome, *categories: str) -> float:
    """Milliseconds of CPU per request spent by these categories (of ``CpuMeter``)."""
    if not outcome.requests_per_s:
        return float("nan")
    share = sum(outcome.cpu.get(category, 0.0) for category in categories) / 100
    return 1000 * share * (os.cpu_count() or 1) / outcome.requests_per_s


def results_table(outcomes: Sequence[Outcome], limit: float) -> str:
    lines = [
        "| Scenario | requests/s | of the limit | p50 ms | p95 ms | p99 ms | accepted = durable? "
        "| connections | load (1/5/15 min) | CPU: server / PostgreSQL / other work "
        "| CPU ms per request: server / PostgreSQL / Redis |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---|---|",
    ]
    for o in outcomes:
        server = o.cpu.get("gunicorn", 0.0)
        database = o.cpu.get("postgres backends", 0.0) + o.cpu.get("postgres other", 0.0)
        share = f"{o.requests_per_s / limit:.2f}" if limit else "—"
        per_request = (
            "—"  # pgbench's backends end before the second sample: not attributable
            if o.is_limit
            else " / ".join(
                f"{cpu_ms(o, *keys):.2f}" for keys in (("gunicorn",), ("postgres backends",), ("redis",))
            )
        )
        lines.append(
            f"| {o.scenario} | {o.requests_per_s:,.0f} | {share} | {o.p50_ms:,.1f} | {o.p95_ms:,.1f} | "
            f"{o.p99_ms:,.1f} | {o.check} | {o.connections:,} | {o.load} | "
            f"{server:.0f}% / {database:.0f}% / {_others(o):.0f}% | {per_request} |"
        )
    return "\n".join(lines)


INTRO = f"""# Single-event ingestion benchmarks

`.venv/bin/python bench/ingest_single.py` (`--help` for the options) measures what a till
posting each sale as it happens gets: `POST /v1/track` (and identify, page, screen, group,
alias: half the requests are track) with one event per request, from several clients at once,
each on one keep-alive connection, against granian as the Dockerfile runs it (`python -m
config.granian`: production settings, its access log) and gunicorn with `config/gunicorn.py`
beside it, with the rate limit counted in Redis on every request. Beside it, in
the same run and from the same number of clients, **the limit**: a plain single-row
`INSERT … ON CONFLICT DO NOTHING` into `events_event` committed on its own, the same row a track
stores, from `pgbench` and from psycopg client processes. Every scenario checks that
`events_event` holds exactly the events the 200 answers accepted (accepted = durable). It uses
`cdp_bench` (`BENCH_DATABASE_SUFFIX`) and Redis db 12 (`BENCH_REDIS_URL`), like `bench/ingest.py`.

**Target** (issue 16): at least **{TARGET_REQUESTS_PER_S:,} requests/s with 8 concurrent clients,
p99 under {TARGET_P99_MS:g} ms**, accepted = durable. The machine is shared (other helpers' tests
and benchmarks): the load and the CPU other work took are in each row, and the fraction of the
limit measured in the same run is the figure that compares across runs; so is the CPU a request
costs (last column), which other work hardly changes.

**The path.** A single call that will be accepted is answered by
`events.api.single.SingleCallMiddleware`, before sessions, CSRF, auth and DRF: one statement
stores the event and commits while checking the source's cached card (a disabled source stops at
once), the rate limit is taken a thousandth of the limit per Redis round trip, the pipeline's
nudge is coalesced per process; everything else (errors, gzip, a key in the body) goes on to the
DRF view. **The server**: granian (`config/granian.py`: a Rust HTTP server calling the same WSGI
application, one worker process per core, 4 blocking threads each, keep-alive), what the
Dockerfile runs since gunicorn's own Python (parser, poller hand-offs, heartbeat, access log)
was found to cost more CPU per request than the application (docs/scaling.md, "The web
server"). gunicorn with threaded workers (`gthread`, `config/gunicorn.py`) runs beside it in
each run, for comparison; sync workers close the connection after every response (a new TCP
connection per event) and hold a whole process through each commit's flush.

**Where the time goes** (`bench/profile_batch.py --track --cpu`: the WSGI application in one
process, no HTTP server; measured on 2026-12-04 with the machine's load at 12-16). Before, through
DRF: 5.9 ms per request, in six PostgreSQL round trips (the source's query, Django's health check
`SELECT 1`, BEGIN, the INSERT, COMMIT) and two Redis round trips (the rate limit, a Celery publish
per request: a third of the request). Now: one statement and, most of the time, no Redis round
trip; 1.4 ms of CPU per request on the loaded machine, of which psycopg sending the statement and
reading its answer about a third, Django's WSGI handler and the four middleware before ours a
quarter, reading and checking the event (JSON with its depth and integer checks, the contract)
a fifth, the rate limit and the nudge 5%. Over HTTP, the server adds its own request parsing (and,
under gunicorn gthread, the hand-offs between the poller and the worker threads): the server
column is what a request costs in all.
"""


def run_section(
    *, started: datetime, facts: dict[str, str], args: argparse.Namespace, outcomes: Sequence[Outcome]
) -> str:
    limits = [o for o in outcomes if o.is_limit]
    pgbench = max((o.requests_per_s for o in limits if "pgbench" in o.scenario), default=0.0)
    webs = [o for o in outcomes if not o.is_limit]
    best = max(webs, key=lambda o: o.requests_per_s) if webs else None
    quick = " (quick smoke run: too short to compare)" if args.quick else ""
    lines = [
        f"## Single-event ingestion — {started:%Y-%m-%d %H:%M} UTC{quick}",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL "
        f"{facts['postgresql']} ({facts['postgresql_settings']}), Python {facts['python']}, "
        f"Django {facts['django']}, gunicorn {facts['gunicorn']}, granian {facts.get('granian', '?')}; load before the run {facts['load']}, "
        f"other processes used {facts['background']} of the CPU just before it.",
        f"- Load: {args.clients} client processes, {args.warmup:g} s warm-up then {args.duration:g} s "
        "measured per scenario; every gunicorn with `-c python:config.gunicorn`, granian "
        "as the Dockerfile runs it (`python -m config.granian`: `config/granian.py`); `config.settings.production`; PostgreSQL, Redis and the clients share the same cores.",
        "",
        results_table(outcomes, pgbench),
        "",
    ]
    if best is not None:
        met = best.requests_per_s >= TARGET_REQUESTS_PER_S and best.p99_ms < TARGET_P99_MS and best.durable
        lines.append(
            f"**Target: ≥ {TARGET_REQUESTS_PER_S:,} requests/s with {args.clients} clients, p99 < "
            f"{TARGET_P99_MS:g} ms, accepted = durable.** Best here: {best.scenario}, "
            f"{best.requests_per_s:,.0f} requests/s, p99 {best.p99_ms:.1f} ms "
            f"({best.requests_per_s / pgbench:.2f} of pgbench's {pgbench:,.0f}/s in the same run): "
            f"**{'met' if met else 'not met'}**."
            if pgbench
            else f"Best here: {best.scenario}, {best.requests_per_s:,.0f} requests/s."
        )
        spent = cpu_ms(best, "gunicorn", "postgres backends", "redis")
        if spent == spent and spent > 0:  # not NaN
            lines.append(
                f"\nCPU is what other work takes from a shared machine, not what a request costs: "
                f"{best.scenario} spent {spent:.2f} ms of CPU per request (the HTTP server and the app "
                f"{cpu_ms(best, 'gunicorn'):.2f}, PostgreSQL {cpu_ms(best, 'postgres backends'):.2f}, "
                f"Redis {cpu_ms(best, 'redis'):.2f}), so the {facts['cores']} cores of an otherwise idle "
                f"machine would serve about {1000 * int(facts['cores']) / spent:,.0f} requests/s at most "
                "(the clients' own CPU aside)."
            )
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (each one connection)")
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds before measuring")
    parser.add_argument(
        "--server",
        action="append",
        metavar="CLASS:WORKERS[:THREADS]",
        help="a server model to try (repeatable, in order): granian as the Dockerfile runs it "
        "granian:WORKERS:BLOCKING_THREADS (e.g. granian:2:4), or gunicorn's gthread:3:3 or sync:8; "
        "default: granian:2:4 then gthread:2:4",
    )
    parser.add_argument("--no-limit", action="store_true", help="skip the limit scenarios")
    parser.add_argument("--quick", action="store_true", help="a few seconds per scenario: a smoke check")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the run into docs/benchmarks.md (default: yes, except with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3), 1
    if args.docs is None:
        args.docs = not args.quick
    return args


def _servers(args: argparse.Namespace) -> list[ServerConfig]:
    if not args.server:
        return list(SERVERS)
    configs = []
    for text in args.server:
        kind, workers, *threads = text.split(":")
        configs.append(ServerConfig(int(workers), kind, int(threads[0]) if threads else 1, DEPLOYED_CONFIG))
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, ingest._terminate)
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%d%H%M%S}"
    os.environ["RATE_LIMIT_INGESTION"] = RATE_LIMIT  # gunicorn's environment (Gunicorn: os.environ first)
    outcomes: list[Outcome] = []
    try:
        load = _load()
        with ingest.announced("measuring what else keeps the CPU busy"):
            background = ingest.background_cpu()
        with ingest.announced(f"preparing database {ingest.DATABASE_NAME} and a source"):
            source = ingest.prepare(run_id)
        row = _stored_row(source)
        if not args.no_limit:
            with ingest.announced(f"limit: pgbench, {args.clients} clients"):
                outcomes.append(scenario_pgbench(row, clients=args.clients, duration=args.duration))
            with ingest.announced(f"limit: psycopg, {args.clients} clients"):
                outcomes.append(
                    scenario_psycopg(row, clients=args.clients, warmup=args.warmup, duration=args.duration)
                )
        for config in _servers(args):
            with ingest.announced(f"{config.server} {config.label}"), ingest.http_server(config) as server:
                outcome = scenario_web(
                    server, source, clients=args.clients, warmup=args.warmup, duration=args.duration
                )
            print(f"  {outcome.requests_per_s:,.0f} requests/s, p99 {outcome.p99_ms:.1f} ms, {outcome.check}")
            outcomes.append(outcome)
        if not args.no_limit:  # the limit again: the machine's other work may have changed meanwhile
            with ingest.announced(f"limit again: pgbench, {args.clients} clients"):
                outcomes.append(scenario_pgbench(row, clients=args.clients, duration=args.duration))
        facts = {**ingest.machine(), "background": f"{background:.0f}%", "load": load}
    except KeyboardInterrupt:
        print(f"interrupted: emptying {ingest.DATABASE_NAME}'s events", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(Exception):
            ingest.events_reset()
            ingest.broker_flush()

    section = run_section(started=started, facts=facts, args=args, outcomes=outcomes)
    print()
    print(section)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ingest-single-{run_id}.json").write_bytes(
        orjson.dumps(
            {
                "started": started,
                "machine": facts,
                "args": vars(args),
                "outcomes": [asdict(o) for o in outcomes],
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    if args.docs:
        harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)
        print(f"written to {harness.DOCS.relative_to(ROOT)}")
    return 0 if all(o.durable for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
