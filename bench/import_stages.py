"""Where an import's resolution spends its CPU, stage by stage (issue 20), on the database
``bench/imports.py`` builds, without re-importing for every look.

``--setup``: a fresh database with ``--members`` members and five orders each imported (as
``imports.py`` does), kept as a template (``<database>_tpl``). Every run then copies the template
(a few seconds), resolves identities in one process (timed: this process and its backend), and
refreshes every member in one process with each step of the refresh timed: wall, this process's
CPU and its backend's CPU (``/proc``: what the step costs whatever the load; the tick is 10 ms,
so a step's figure is the sum over hundreds of batches), both with the process's objects frozen
as ``imported_resolve`` runs them (``--no-freeze``: as before). ``--profile FILE``: a cProfile of the
refresh too. Prints a table per stage: CPU µs per imported row.

    .venv/bin/python bench/import_stages.py --members 50000 --setup
    .venv/bin/python bench/import_stages.py --members 50000
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import contextlib
import cProfile
import functools
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

imports = harness.bench_script("imports")
TEMPLATE = harness.database_name("cdp_bench_import_stages") + "_tpl"
RESOLVED = harness.database_name("cdp_bench_import_stages") + "_resolved"


def _work_database(name: str) -> None:
    """A database of its own (imports.py may run meanwhile), which imports.py's functions use."""
    imports.DATABASE_NAME = harness.database_name(name)
    imports.DATABASE_URL = harness.database_url(imports.DATABASE_NAME)
    imports.SERVICE_ENV = harness.service_env(database=imports.DATABASE_URL, broker=imports.BROKER_URL)


_work_database("cdp_bench_import_stages")

# The refresh's steps, as ``members.services`` names them (each wrapped where it is looked up).
REFRESH_STEPS = {
    "members.services": [
        "member_changes_accept", "_marks_claim", "_marks_of", "member_refresh_locks", "_erased_of",
        "_active_of", "refresh_plan", "members_advance", "events_of", "order_owners_refresh",
        "_traits_write", "consent_refresh", "groups_refresh", "_aggregates_write", "loyalty_histories",
        "points_reconcile", "watermarks_write", "memberships_refresh", "rows_delete", "refresh_paths_count",
        "queue_vacuum_due",
    ],
}  # fmt: skip


class Steps:
    """Wall, process CPU and backend CPU per wrapped function (outermost call only)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.backend: dict[str, float] = defaultdict(float)
        self.depth = 0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            pid = _backend_pid()
            b0, c0, w0 = imports._process_cpu(pid), time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] += time.perf_counter() - w0
                self.cpu[name] += time.process_time() - c0
                self.backend[name] += imports._process_cpu(pid) - b0
                self.depth -= 1

        return timed


def _backend_pid() -> int:
    from django.db import connection

    connection.ensure_connection()
    return connection.connection.info.backend_pid


def _counts(metric: str, label: str) -> dict[str, float]:
    """A counter's values by label, in this process (the refresh's, when it runs here)."""
    from prometheus_client import REGISTRY

    found: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric:
                found[sample.labels.get(label, "")] = sample.value
    return found


def setup(members: int, by_phone: float = 0.0) -> None:
    imports.database_fresh()
    harness.django_setup(imports.SERVICE_ENV)
    with tempfile.TemporaryDirectory(prefix="bench-import-stages-") as tmp:
        members_path, orders_path = imports.files_write(Path(tmp), members, 5, 1, by_phone)
        for kind, path in (("members", members_path), ("orders", orders_path)):
            rows, took = imports.import_file(kind, path)
            print(f"import {kind}: {rows:,} rows, {took.cpu:.1f} CPU s ({took.cpu / rows * 1e6:.0f} µs/row)")
    from django.db import connections

    connections.close_all()
    with psycopg.connect(harness.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE "{imports.DATABASE_NAME}"')


def restore(template: str) -> None:
    with psycopg.connect(harness.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{imports.DATABASE_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{imports.DATABASE_NAME}" TEMPLATE "{template}"')
    harness.django_setup(imports.SERVICE_ENV)


def keep_resolved() -> None:
    """The working database, resolved and not yet refreshed, as the template ``--resolved`` reads."""
    from django.db import connections

    connections.close_all()
    with psycopg.connect(harness.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{RESOLVED}"')
        conn.execute(f'CREATE DATABASE "{RESOLVED}" TEMPLATE "{imports.DATABASE_NAME}"')


def main() -> int:
    with contextlib.ExitStack() as stack:
        return _main(stack)


def _main(stack: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--setup", action="store_true")
    parser.add_argument(
        "--by-phone", type=float, default=0.0, help="the share of orders naming their member by phone only"
    )
    parser.add_argument("--profile", type=Path, help="a cProfile of the refresh, to this file")
    parser.add_argument("--profile-identity", type=Path, help="a cProfile of the resolution, to this file")
    parser.add_argument("--skip-refresh", action="store_true")
    parser.add_argument(
        "--refresh-batches", type=int, default=0, help="refresh this many batches only (a sample)"
    )
    parser.add_argument(
        "--keep-resolved", action="store_true", help="keep the resolved database as a template"
    )
    parser.add_argument("--resolved", action="store_true", help="start from that template: the refresh only")
    parser.add_argument("--processes", type=int, default=1, help="refresh processes (steps only with 1)")
    parser.add_argument("--work", default="", help="a suffix for the working database (runs side by side)")
    parser.add_argument(
        "--backlog-batch", type=int, default=0, help="events per resolution batch (default the import's)"
    )
    parser.add_argument(
        "--event-time",
        action="store_true",
        help="the backlog in event time (as before it was a member at a time)",
    )
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="the stages without the process's objects frozen (as before cdp.workers.process_objects_frozen)",
    )
    args = parser.parse_args()
    if args.work:
        _work_database(f"cdp_bench_import_stages_{args.work}")
    if args.by_phone:  # a template of its own
        global TEMPLATE
        TEMPLATE += f"_phone{round(args.by_phone * 100)}"
    if args.setup:
        setup(args.members, args.by_phone)
    restore(RESOLVED if args.resolved else TEMPLATE)
    import importlib

    from django.db import connection

    from cdp.workers import process_objects_frozen
    from events.pipeline import events_process_backlog_in_event_time, pipeline_follow_ups_drain
    from members.imports.services import imported_identities_resolve

    rows = args.members * 6
    if not args.no_freeze:  # as imported_resolve runs them
        stack.enter_context(process_objects_frozen())
    if args.event_time:
        from members.imports import services as import_services

        import_services.events_process_backlog_by_person = events_process_backlog_in_event_time
    if not args.resolved:
        identity_profiler = cProfile.Profile() if args.profile_identity else None
        with imports.timed() as resolving:
            if identity_profiler:
                identity_profiler.enable()
            events = imported_identities_resolve(batch_size=args.backlog_batch or None)
            if identity_profiler:
                identity_profiler.disable()
        if identity_profiler:
            identity_profiler.dump_stats(args.profile_identity)
        print(
            f"identity: {events:,} events, wall {resolving.wall:.1f} s, CPU {resolving.cpu:.1f} s "
            f"({resolving.cpu / rows * 1e6:.0f} µs/row)"
        )
        print("identity paths:", _counts("cdp_identity_resolved_events_total", "path"))
        if args.keep_resolved:
            keep_resolved()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM members_member")
        print("members", cursor.fetchone()[0])
    if args.skip_refresh:
        return 0
    steps = Steps()
    if args.processes == 1:
        for module_name, names in REFRESH_STEPS.items():
            module = importlib.import_module(module_name)
            for name in names:
                setattr(module, name, steps.wrap(name, getattr(module, name)))
    profiler = cProfile.Profile() if args.profile else None
    with imports.timed() as refreshing:
        if profiler:
            profiler.enable()
        if args.refresh_batches:
            from members.services import members_refresh_batch

            refreshed = sum(members_refresh_batch() for _ in range(args.refresh_batches))
        else:
            refreshed = pipeline_follow_ups_drain(processes=args.processes)
        if profiler:
            profiler.disable()
    if profiler:
        profiler.dump_stats(args.profile)
    if args.refresh_batches:
        rows = refreshed * 6  # the rows of the members refreshed
    print(
        f"refresh: {refreshed:,} members, wall {refreshing.wall:.1f} s, CPU {refreshing.cpu:.1f} s "
        f"({refreshing.cpu / rows * 1e6:.0f} µs/row, {refreshing.cpu / (rows / 6) * 1e6:.0f} µs/member)"
    )
    if args.processes == 1:
        print("| step | wall s | process CPU s | backend CPU s | CPU µs per row |")
        print("|---|---:|---:|---:|---:|")
        for name in sorted(steps.wall, key=lambda n: -(steps.cpu[n] + steps.backend[n])):
            both = steps.cpu[name] + steps.backend[name]
            print(
                f"| {name} | {steps.wall[name]:.1f} | {steps.cpu[name]:.1f} | {steps.backend[name]:.1f} "
                f"| {both / rows * 1e6:.1f} |"
            )
    print("refresh paths:", _counts("cdp_member_refresh_paths_total", "path"))
    print("full reasons:", _counts("cdp_member_refresh_full_reasons_total", "reason"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
