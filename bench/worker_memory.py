"""Does a Celery pool process's memory grow under sustained load, and where? In one process.

Drives what a pool process runs, round after round: a forked child posts ``--batches`` batches
of the retailer mix through ``/v1/batch`` (the WSGI application in-process, so the web side's
allocations stay out of this process), then this process runs ``events.process_pending`` until
the queue is empty and each beat task once, all through Celery's ``apply`` (its signals run,
``task_postrun`` included, as in a worker). Every ``--every`` rounds it prints the process's
RSS, the objects the garbage collector tracks, ``tracemalloc``'s net and peak allocation
(``--trace``), the peak of Python allocation in the identity stage and in the member refresh,
glibc's heap (``mallinfo2``: in use, free) and Python's arenas; at the end the growth of object
types and of every ``functools.lru_cache`` between the first sample after warm-up and the last,
the top growth by allocation site (``--trace``), and what ``malloc_trim(0)`` gives back.

``--templates`` is how many batch bodies are prebuilt (each message a new customer): the soak's
200 (``bench/soak.py``) are about 12,000 customers; 10 are about 600, whose histories then grow
by an event every ~600 (as the soak's 12,000 customers' did over its 10 minutes).

    .venv/bin/python bench/worker_memory.py --templates 10 --rounds 21
    .venv/bin/python bench/worker_memory.py --templates 10 --rounds 16 --trace

Its own database (``cdp_bench_worker_memory``, created afresh and migrated each run) and Redis db 14; findings
in docs/benchmarks.md (the soak section), by hand.
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import base64
import collections
import ctypes
import functools
import gc
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import payloads
import psycopg

DATABASE_NAME = harness.database_name("cdp_bench_worker_memory")
DATABASE_URL = harness.database_url(DATABASE_NAME)
ENV = {
    **harness.service_env(database=DATABASE_URL, broker=harness.broker_url(14)),
    "RATE_LIMIT_INGESTION": "100000000/min",
}
BEAT_TASKS = (
    "members.loyalty_recheck",
    "members.memberships_recheck",
    "members.insights.refresh",
    "ops.alerts_evaluate",
    "members.segments.webhooks_sweep",
    "privacy.erasures_sweep",
    "imports.resume_stalled",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


_LIBC = ctypes.CDLL(None)
_LIBC.mallinfo2.restype = _MallInfo2


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _heap() -> str:
    info = _LIBC.mallinfo2()
    return (
        f"glibc in use {(info.uordblks + info.hblkhd) / 2**20:.1f} MiB, free {info.fordblks / 2**20:.1f} MiB"
    )


def _arenas() -> str:
    """Python's arenas (``sys._debugmallocstats``, which writes to the C stderr)."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    text = os.read(read, 1 << 20).decode()
    os.close(read)
    numbers = {}
    for line in text.splitlines():
        for key in ("arenas allocated current", "bytes in allocated blocks"):
            if key in line:
                numbers[key] = int(line.split("=")[1].replace(",", ""))
    if "arenas allocated current" not in numbers:  # not reported while tracemalloc hooks the allocator
        return ""
    arenas = numbers["arenas allocated current"]
    return (
        f"Python arenas {arenas}, live blocks {numbers.get('bytes in allocated blocks', 0) / 2**20:.1f} MiB"
    )


def _lru_sizes() -> dict[str, int]:
    return {
        f"{o.__module__}.{o.__qualname__}": o.cache_info().currsize
        for o in gc.get_objects()
        if isinstance(o, functools._lru_cache_wrapper)
    }


def _peaks_recorded(module: Any, name: str, peaks: dict[str, float]) -> None:
    """Wrap ``module.name`` to record the peak of Python allocation during each call."""
    function = getattr(module, name)

    @functools.wraps(function)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        try:
            return function(*args, **kwargs)
        finally:
            peak = (tracemalloc.get_traced_memory()[1] - before) / 2**20
            peaks[name] = max(peaks.get(name, 0.0), peak)

    setattr(module, name, recorded)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batches", type=int, default=20, help="batches posted per round")
    parser.add_argument("--templates", type=int, default=10, help="batch bodies prebuilt (customers)")
    parser.add_argument("--every", type=int, default=5, help="rounds between samples")
    parser.add_argument("--trace", action="store_true", help="tracemalloc on (slow; inflates glibc's heap)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    os.environ.update(ENV)
    # A fresh database each run: what it measures grows with the members' histories.
    with psycopg.connect(harness.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)')
    harness.manage("ensure_services", "--create-database", env=ENV)
    harness.manage("migrate", "--noinput", "-v0", env=ENV)
    import django

    django.setup()
    from django.db import connections
    from django.test import Client

    import identity.services
    import members.services
    from config.celery import app
    from events.services import source_create

    app.loader.import_default_modules()
    source = source_create(name=f"bench-worker-memory-{os.getpid()}-{time.time_ns()}", kind="app")
    authorization = "Basic " + base64.b64encode(f"{source.write_key}:".encode()).decode()
    rng = random.Random(args.seed)
    templates = [payloads.batch_template(rng, rng.randint(20, 100)) for _ in range(args.templates)]
    peaks: dict[str, float] = {}
    _peaks_recorded(identity.services, "identity_resolve_events", peaks)
    _peaks_recorded(members.services, "members_refresh_batch", peaks)

    def post(first: int) -> int:
        """Post a round's batches from a forked child; how many events they held."""
        connections.close_all()
        if (child := os.fork()) == 0:
            status = 0
            try:
                if tracemalloc.is_tracing():
                    tracemalloc.stop()
                client = Client()
                for k in range(first, first + args.batches):
                    response = client.post(
                        "/v1/batch",
                        templates[k % len(templates)].render(),
                        content_type="application/json",
                        HTTP_AUTHORIZATION=authorization,
                        HTTP_HOST="127.0.0.1",
                    )
                    if response.status_code != 200:
                        print(f"POST /v1/batch: {response.status_code} {response.content[:300]!r}")
                        status = 1
                        break
                connections.close_all()
            finally:
                os._exit(status)
        if os.waitpid(child, 0)[1]:
            raise SystemExit("posting the batches failed")
        return sum(templates[k % len(templates)].events for k in range(first, first + args.batches))

    def run(name: str) -> Any:
        return app.tasks[name].apply().get()

    if args.trace:
        tracemalloc.start(1)
    events, first_sample = 0, None
    for round_ in range(args.rounds):
        events += post(round_ * args.batches)
        while run("events.process_pending"):
            pass
        for name in BEAT_TASKS:
            run(name)
        if round_ % args.every and round_ != args.rounds - 1:
            continue
        gc.collect()
        types = collections.Counter(type(o).__name__ for o in gc.get_objects())
        traced, peak = (x / 2**20 for x in tracemalloc.get_traced_memory())
        stage_peaks = ", ".join(f"{name} {value:.1f}" for name, value in peaks.items()) if args.trace else ""
        print(
            f"round {round_:3d}  events {events:7,d}  RSS {_rss_mib():6.1f} MiB  objects {sum(types.values()):,}"
            + (f"  tracemalloc net {traced:.2f} peak {peak:.2f} MiB" if args.trace else "")
            + f"  {_heap()}  {_arenas()}"
            + (f"\n           peak MiB per call: {stage_peaks}" if stage_peaks else ""),
            flush=True,
        )
        peaks.clear()
        snapshot = tracemalloc.take_snapshot() if args.trace else None
        if first_sample is None and round_ > 0:
            first_sample = (types, _lru_sizes(), snapshot)
        last_sample = (types, _lru_sizes(), snapshot)
    if first_sample is None:
        return
    (types_then, lru_then, snapshot_then), (types_now, lru_now, snapshot_now) = first_sample, last_sample
    grown = sorted(types_now, key=lambda t: types_then[t] - types_now[t])[:10]
    print("object types grown:", ", ".join(f"{t} +{types_now[t] - types_then[t]}" for t in grown))
    print(
        "lru_caches grown:",
        {n: (lru_then.get(n), size) for n, size in lru_now.items() if size != lru_then.get(n)},
    )
    if snapshot_then is not None and snapshot_now is not None:
        ignored: list[tracemalloc.BaseFilter] = [tracemalloc.Filter(False, tracemalloc.__file__)]
        for stat in snapshot_now.filter_traces(ignored).compare_to(
            snapshot_then.filter_traces(ignored), "lineno"
        )[:8]:
            print("   ", stat)
    before = _rss_mib()
    trim: Callable[[int], int] = _LIBC.malloc_trim
    trim(0)
    print(f"malloc_trim(0) at the end: RSS {before:.1f} -> {_rss_mib():.1f} MiB  {_heap()}")


if __name__ == "__main__":
    main()
