"""Where a ``GET /api/v1/members/{id}/`` (the 360 view) spends its CPU, in-process.

Runs the real WSGI application (production settings, the database ``bench/members.py`` built,
``cdp_bench_members``) with no HTTP server in between, as a CRM agent (masked) or a manager
(every view audited), on random members: this process's CPU time per request
(``time.process_time``: load-independent, unlike the latency on a shared machine), the queries
per request, and optionally a cProfile of CPU time. Run ``bench/members.py`` once first.

    .venv/bin/python bench/profile_member.py --requests 300
    .venv/bin/python bench/profile_member.py --role crm_manager --profile
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import cProfile
import io
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

members_bench = harness.bench_script("members")


def _environ(path: str, token: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _get(application: Callable[..., Any], path: str, token: str) -> bytes:
    status: list[str] = []
    chunks = application(_environ(path, token), lambda s, headers, exc_info=None: status.append(s))
    data = b"".join(chunks)
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"{path}: {status} {data[:300]!r}")
    return data


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests")
    parser.add_argument("--role", default="crm_agent", choices=("crm_agent", "crm_manager"))
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of CPU time")
    parser.add_argument("--top", type=int, default=40, help="functions to list")
    args = parser.parse_args(argv)

    with psycopg.connect(members_bench.DATABASE_URL) as conn:
        row = conn.execute("SELECT min(id), max(id) FROM members_member WHERE status = 'active'").fetchone()
    if row is None or row[0] is None:
        raise SystemExit("No members: run bench/members.py first.")
    low, high = row
    harness.django_setup(members_bench.SERVICE_ENV)
    from django.core.wsgi import get_wsgi_application
    from django.db import connection

    application = get_wsgi_application()
    token = members_bench.staff_tokens()[args.role]
    rng = random.Random(16)
    paths = [f"/api/v1/members/{rng.randint(low, high)}/" for _ in range(args.requests)]
    for path in paths[:20]:  # warm-up: URLconf, connections, per-process caches
        _get(application, path, token)

    queries: list[str] = []

    def counted(execute: Callable[..., Any], sql: str, *rest: Any) -> Any:
        queries.append(sql)
        return execute(sql, *rest)

    with connection.execute_wrapper(counted):
        began, cpu_began = time.perf_counter(), time.process_time()
        for path in paths:
            _get(application, path, token)
        wall = (time.perf_counter() - began) / len(paths)
        cpu = (time.process_time() - cpu_began) / len(paths)
    print(
        f"{len(paths)} 360 views as {args.role}: {1000 * cpu:.2f} ms of this process's CPU per request, "
        f"{1000 * wall:.2f} ms wall, {len(queries) / len(paths):.1f} queries per request"
    )
    for sql in queries[: round(len(queries) / len(paths))]:
        print("  ", sql[:140])
    if args.profile:
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for path in paths:
            _get(application, path, token)
        profiler.disable()
        for order in ("cumulative", "tottime"):
            print(f"\n--- by {order} ---")
            pstats.Stats(profiler).sort_stats(order).print_stats(args.top)


if __name__ == "__main__":
    main()
