"""Import benchmark: a legacy brand's members and orders imported from files and resolved, beside
a plain ``COPY`` of the same rows as the limit.

On a database of its own (``cdp_bench_imports``, made afresh each run, production settings):

1. the files are written: ``--members`` members (legacy key, phone, member card, name, birthday,
   registration time, SMS consent with its time and source) and five orders each by default
   (``--orders-per-member``; channel, store, total, items, time), gzipped CSV in UTF-8;
2. **limit**: the same rows ``COPY``-ed as text into tables of the files' columns (read, inflate,
   parse, write, the least any import of these files does);
3. **import**: ``members.imports`` runs the members file, then the orders file (the command's
   path: each row checked by the ingestion contract, written as its event under its deterministic
   messageId with one statement per source and batch of 5,000, the job's checkpoint in the same
   transaction);
4. **resolve**: the pipeline's stages over the backlog (``members.imports.services.imported_resolve``,
   what ``import --resolve`` runs): identity resolution of every batch, the backlog taken in event
   time (``--arrival-order``: in the order it was stored, as before, for comparison), and the
   member refresh (traits, consent, orders, figures, points, tags and segments) once per member:
   taken a member at a time, the refresh runs beside the resolution (``pipeline_drain_beside``),
   both timed as one step (``--apart``: the resolution, then the refresh, each timed).
   Each step's CPU seconds (this process, its children and its database's backends, from /proc) are given
   beside its wall time: on a shared machine they are the measure the load does not distort;
5. **check**: one active member per legacy member, every order counted in their figures, and a
   second run of both files writes nothing.

Results are printed as markdown and inserted, newest first, into the imports block of
``docs/benchmarks.md``, with the machine's load average and an extrapolation to 1M / 5M.

    .venv/bin/python bench/imports.py                      # 100,000 members, 500,000 orders
    .venv/bin/python bench/imports.py --members 20000      # a quicker look
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import contextlib
import csv
import gzip
import os
import random
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

DATABASE_NAME = harness.database_name("cdp_bench_imports")
DATABASE_URL = harness.database_url(DATABASE_NAME)
BROKER_URL = harness.broker_url(14)
SERVICE_ENV = harness.service_env(database=DATABASE_URL, broker=BROKER_URL)

START_MARKER = "<!-- bench/imports.py: import benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/imports.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/imports.py: end of the import benchmarks. -->"
INTRO = """# Import benchmarks

`bench/imports.py` (see its docstring): a legacy brand's members and orders imported from
gzipped CSV files and resolved through the pipeline, beside a plain `COPY` of the same rows.
**Target** (issue 20): 1M members and 5M orders imported and resolved on this 2-core machine in
under 15 minutes end to end."""

MEMBER_COLUMNS = ["member_id", "phone", "member_card", "name", "birthday", "registered_at",
                  "consent.marketing_sms", "consent_at", "consent_source"]  # fmt: skip
ORDER_COLUMNS = ["order_id", "member_id", "channel", "store", "total", "currency", "completed_at", "items"]


def database_fresh() -> None:
    with psycopg.connect(harness.database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    harness.manage("migrate", "--noinput", "-v0", env=SERVICE_ENV)


def files_write(
    folder: Path, members: int, per_member: int, seed: int, by_phone: float = 0.0
) -> tuple[Path, Path]:
    """The members and orders files. ``by_phone``: the share of orders naming their member by
    phone only, not by its key (a till that took the phone), in a ``phone`` column."""
    rng = random.Random(seed)
    t0 = datetime(2019, 1, 1, tzinfo=UTC)
    members_path, orders_path = folder / "members.csv.gz", folder / "orders.csv.gz"
    with gzip.open(members_path, "wt", encoding="utf-8", newline="", compresslevel=1) as handle:
        writer = csv.writer(handle)
        writer.writerow(MEMBER_COLUMNS)
        for i in range(members):
            registered = t0 + timedelta(minutes=rng.randrange(2_000_000))
            consent = rng.choice(["true", "false", ""])
            writer.writerow([f"M{i}", f"139{i:08d}", f"VIP{i:08d}", f"顾客{i}", f"19{rng.randint(50, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
                             registered.isoformat(), consent, registered.isoformat() if consent else "",
                             "store form" if consent else ""])  # fmt: skip
    with gzip.open(orders_path, "wt", encoding="utf-8", newline="", compresslevel=1) as handle:
        writer = csv.writer(handle)
        writer.writerow([*ORDER_COLUMNS, "phone"] if by_phone else ORDER_COLUMNS)
        for n in range(members * per_member):
            i = rng.randrange(members)
            channel = rng.choice(("pos", "pos", "app", "web", "mini_program"))
            store = f"S{rng.randrange(20):02d}" if channel == "pos" else ""
            price = rng.choice((19.9, 59, 88, 120.5, 399))
            quantity = rng.randint(1, 3)
            items = f'[{{"sku":"SKU{rng.randrange(500)}","price":{price},"quantity":{quantity}}}]'
            at = t0 + timedelta(minutes=rng.randrange(3_000_000))
            row = [f"O{n}", f"M{i}", channel, store, f"{price * quantity:.2f}", "CNY", at.isoformat(), items]
            if by_phone:
                phone_only = rng.random() < by_phone
                row[1] = "" if phone_only else row[1]
                row.append(f"139{i:08d}" if phone_only else "")
            writer.writerow(row)
    return members_path, orders_path


def copy_limit(path: Path, columns: list[str], table: str) -> tuple[int, "Took"]:
    """The same rows COPY-ed as text into a table of the file's columns: (rows, its cost)."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        names = ", ".join(f'"{c}" text' for c in columns)
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({names})")
        with (
            timed() as took,
            conn.cursor() as cursor,
            cursor.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            gzip.open(path, "rb") as handle,
        ):
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        conn.execute(f"DROP TABLE {table}")
    return rows, took


@dataclass
class Took:
    """A step's cost: wall seconds, and CPU seconds of this process, its children and the
    PostgreSQL backends of this benchmark's database (read from /proc: all run on this machine),
    which the machine's load does not inflate the way it inflates wall time."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Took]:
    """Time the block: wall, and CPU of this process, of the children it reaped (the refresh's
    forked workers) and of every client backend of the benchmark's database (``_BackendsCpu``)."""
    took = Took()
    with _BackendsCpu() as backends:
        started, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        yield took
        took.wall = time.perf_counter() - started
        took.cpu = time.process_time() - cpu + _children_cpu() - children
    took.cpu += backends.cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _BackendsCpu:
    """The CPU seconds the client backends of the benchmark's database spend inside the block,
    however many a step opens: each seen at the start counts from there, each opened meanwhile
    from its start. A thread looks for them every 0.1 s (on its own connection, not counted);
    a backend that exits counts as last seen, at most 0.1 s of its work short."""

    INTERVAL = 0.1

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.cpu = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "_BackendsCpu":
        self._conn = psycopg.connect(DATABASE_URL, autocommit=True)
        self.start = self._sample()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._conn.close()
        self.cpu = sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.last.items())

    def _watch(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def _sample(self) -> dict[int, float]:
        pids = [
            row[0]
            for row in self._conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        ]
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):  # exited since: its last sample stands
                self.last[pid] = _process_cpu(pid)
        return dict(self.last)


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def import_file(kind: str, path: Path) -> tuple[int, Took]:
    from members.imports.models import ImportJob
    from members.imports.services import import_job_create, import_run

    with timed() as took:
        job, _ = import_job_create(kind=kind, name="legacy", path=path)
        import_run(job=job)
    job = ImportJob.objects.get(pk=job.pk)
    assert job.status == "succeeded", (job.status, job.error)
    assert job.rows_skipped == 0, job.rows_skipped
    return job.rows_imported, took


def resolve(*, arrival_order: bool, processes: int, apart: bool) -> tuple[int, Took, Took | None]:
    """(events, resolving, refreshing). ``arrival_order``: the backlog claimed in the order it
    was stored, as before the import took it in event time or a member at a time (for comparison); ``processes``: the
    refresh's (``imported_resolve``), which run, as there, with the process's objects frozen;
    ``apart``: the resolution, then the refresh, each timed (else, as ``imported_resolve`` runs
    them, side by side when the backlog goes a member at a time: one step, refreshing None)."""
    from cdp.workers import process_objects_frozen

    with process_objects_frozen():
        return _resolve(arrival_order=arrival_order, processes=processes, apart=apart)


def _resolve(*, arrival_order: bool, processes: int, apart: bool) -> tuple[int, Took, Took | None]:
    from events.pipeline import events_process_batch, pipeline_follow_ups_drain
    from members.imports.services import imported_identities_resolve, imported_resolve

    if not arrival_order and not apart:
        with timed() as both:
            total, _ = imported_resolve(processes=processes)
        return total, both, None

    with timed() as resolving:
        if arrival_order:
            total = 0
            while done := events_process_batch(batch_size=500):
                total += done
        else:
            total = imported_identities_resolve()
    with timed() as refreshing:
        pipeline_follow_ups_drain(processes=processes)
    return total, resolving, refreshing


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--orders-per-member", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--arrival-order",
        action="store_true",
        help="resolve the backlog in the order it was stored (before issue 20), for comparison",
    )
    parser.add_argument(
        "--apart",
        action="store_true",
        help="time the resolution, then the refresh (not side by side, as the import runs them)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes the member refresh runs in (IMPORT_REFRESH_PROCESSES; 1: as before)",
    )
    args = parser.parse_args()
    started_at = datetime.now(UTC)
    load_before = load()
    print(f"preparing {DATABASE_NAME} (load {load_before})", flush=True)
    database_fresh()
    harness.django_setup(SERVICE_ENV)
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp:
        folder = Path(tmp)
        members_path, orders_path = files_write(folder, args.members, args.orders_per_member, args.seed)
        sizes = {p.name: p.stat().st_size for p in (members_path, orders_path)}
        print("files written", sizes, flush=True)
        copied_members = copy_limit(members_path, MEMBER_COLUMNS, "bench_copy_members")
        copied_orders = copy_limit(orders_path, ORDER_COLUMNS, "bench_copy_orders")
        print("COPY", copied_members, copied_orders, flush=True)
        imported_members = import_file("members", members_path)
        print("imported members", imported_members, flush=True)
        imported_orders = import_file("orders", orders_path)
        print("imported orders", imported_orders, flush=True)
        resolved = resolve(arrival_order=args.arrival_order, processes=args.processes, apart=args.apart)
        print("resolved", resolved, flush=True)
        load_after = load()
        from members.imports.models import ImportJob
        from members.imports.services import BACKLOG_BATCH_SIZE

        ImportJob.objects.all().delete()  # the same files again, as new jobs: every row's key is there
        again = sum(
            import_file(kind, path)[0] for kind, path in (("members", members_path), ("orders", orders_path))
        )
    with psycopg.connect(DATABASE_URL) as conn:
        active, counted = conn.execute(
            "SELECT (SELECT count(*) FROM members_member WHERE status = 'active'), "
            "(SELECT coalesce(sum(orders), 0) FROM members_memberaggregate)"
        ).fetchone()  # type: ignore[misc]
    members_ok = active == args.members
    orders_ok = counted == imported_orders[0]
    events, resolving, refreshed = resolved
    refreshing = refreshed or Took()  # side by side: in ``resolving``
    importing = [imported_members[1], imported_orders[1]]
    import_wall, import_cpu = sum(t.wall for t in importing), sum(t.cpu for t in importing)
    total_wall = import_wall + resolving.wall + refreshing.wall
    total_cpu = import_cpu + resolving.cpu + refreshing.cpu
    # On idle cores: a one-process step takes its CPU seconds (process and backend alternate),
    # the refresh its CPU seconds over its processes (at most two cores).
    cores = min(max(args.processes, 1), 2)
    if refreshed is None:  # side by side: the resolution and the refresh share the cores
        idle_wall = import_cpu + resolving.cpu / cores
    else:
        idle_wall = import_cpu + resolving.cpu + refreshing.cpu / cores
    copies = [copied_members[1], copied_orders[1]]
    copy_rows = copied_members[0] + copied_orders[0]
    copy_rate = copy_rows / sum(t.wall for t in copies)
    copy_cpu_rate = copy_rows / max(sum(t.cpu for t in copies), 0.01)
    rows = imported_members[0] + imported_orders[0]
    scale_full = 6_000_000 / rows  # 1M members + 5M orders

    def line(step: str, count: str, took: Took, n: int) -> str:
        return f"| {step} | {count} | {took.wall:.1f} | {n / took.wall:,.0f} | {took.cpu:.1f} | {n / max(took.cpu, 0.01):,.0f} |"

    order = (
        "in arrival order (as before issue 20's fix, for comparison)"
        if args.arrival_order
        else "as the import takes it (a member at a time, or in event time when many events are alone)"
    )
    if refreshed is None:
        stages = line(
            f"identity resolution (one process, batches of {BACKLOG_BATCH_SIZE:,}, the backlog {order}) and, "
            f"side by side, the member refresh in {args.processes} process(es), once per member",
            f"{events:,} events, {active:,} members", resolving, events,
        )  # fmt: skip
    else:
        stages = "\n".join((
            line(f"identity resolution (one process, batches of {500 if args.arrival_order else BACKLOG_BATCH_SIZE:,}, the backlog {order})", f"{events:,} events", resolving, events),
            line(f"member refresh, once per member, in {args.processes} process(es) (traits, consent, figures, points, tags, segments)", f"{active:,} members", refreshing, active),
        ))  # fmt: skip
    section = f"""## {started_at:%Y-%m-%d %H:%M} UTC: {args.members:,} members, {imported_orders[0]:,} orders, backlog {"in arrival order" if args.arrival_order else "as the import takes it"}

Load average (1 / 5 / 15 min) before: {load_before}; after the pipeline: {load_after} (2 cores,
shared with other work). Files: {sizes["members.csv.gz"] / 1e6:.1f} MB and {sizes["orders.csv.gz"] / 1e6:.1f} MB of gzipped CSV.
CPU seconds: this process, its children and the PostgreSQL backends of the database (what the step costs whatever the load).

| step | rows | seconds | rows/s | CPU s | rows per CPU s |
|---|---:|---:|---:|---:|---:|
{line("limit: plain `COPY` of the members file", f"{copied_members[0]:,}", copied_members[1], copied_members[0])}
{line("limit: plain `COPY` of the orders file", f"{copied_orders[0]:,}", copied_orders[1], copied_orders[0])}
{line("import members (`manage.py import members`: contract, events, checkpoints)", f"{imported_members[0]:,}", imported_members[1], imported_members[0])}
{line("import orders", f"{imported_orders[0]:,}", imported_orders[1], imported_orders[0])}
{stages}
{line("**end to end**", f"{rows:,} rows", Took(total_wall, total_cpu), rows)}

Import alone runs at {rows / import_wall / copy_rate:.3f} times the speed of the plain `COPY` of the same rows
({rows / import_wall:,.0f} against {copy_rate:,.0f} rows/s; per CPU second {rows / import_cpu:,.0f} against
{copy_cpu_rate:,.0f}). Checks: one active member per legacy member {"✓" if members_ok else "✗"} ({active:,});
every order in the figures {"✓" if orders_ok else "✗"} ({counted:,}); the same files again imported {again} rows
{"✓" if again == 0 else "✗"}.

**Extrapolated to 1M members and 5M orders** (times {scale_full:.0f}, linearly: each member's history
stays as long when members and orders grow together): import {import_wall * scale_full / 60:.0f} min,
resolve + refresh {(resolving.wall + refreshing.wall) * scale_full / 60:.0f} min, **{total_wall * scale_full / 60:.0f} min end to end**
at this run's load; by CPU, {total_cpu * scale_full / 60:.0f} CPU minutes, so at best
{total_cpu * scale_full / 120:.0f} min on two otherwise idle cores if every step kept both busy; against the
target of 15 min ({"met" if total_cpu * scale_full / 2 <= 900 else "not met"} even then). As the steps run
now (each import and the resolution in one process, in lockstep with its backend; the refresh in
{args.processes} processes{", beside the resolution" if refreshed is None else ""}), two idle cores would take about {idle_wall * scale_full / 60:.0f} min.
"""
    print(section)
    if args.docs:
        harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)
    return 0 if members_ok and orders_ok and again == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
