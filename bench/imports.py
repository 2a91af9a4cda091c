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
   messageId with one statement per source and batch of 2,000, the job's checkpoint in the same
   transaction);
4. **resolve**: the pipeline's stages over the backlog (``members.imports.services.imported_resolve``,
   what ``import --resolve`` runs): identity resolution of every batch, then the member refresh
   (traits, consent, orders, figures, points, tags and segments) once per member;
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
import csv
import gzip
import os
import random
import tempfile
import time
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


def files_write(folder: Path, members: int, per_member: int, seed: int) -> tuple[Path, Path]:
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
        writer.writerow(ORDER_COLUMNS)
        for n in range(members * per_member):
            i = rng.randrange(members)
            channel = rng.choice(("pos", "pos", "app", "web", "mini_program"))
            store = f"S{rng.randrange(20):02d}" if channel == "pos" else ""
            price = rng.choice((19.9, 59, 88, 120.5, 399))
            quantity = rng.randint(1, 3)
            items = f'[{{"sku":"SKU{rng.randrange(500)}","price":{price},"quantity":{quantity}}}]'
            at = t0 + timedelta(minutes=rng.randrange(3_000_000))
            writer.writerow(
                [f"O{n}", f"M{i}", channel, store, f"{price * quantity:.2f}", "CNY", at.isoformat(), items]
            )
    return members_path, orders_path


def copy_limit(path: Path, columns: list[str], table: str) -> tuple[int, float]:
    """The same rows COPY-ed as text into a table of the file's columns: (rows, seconds)."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        names = ", ".join(f'"{c}" text' for c in columns)
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({names})")
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            gzip.open(path, "rb") as handle,
        ):
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        took = time.perf_counter() - started
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
        conn.execute(f"DROP TABLE {table}")
    return rows, took


def import_file(kind: str, path: Path) -> tuple[int, float]:
    from members.imports.models import ImportJob
    from members.imports.services import import_job_create, import_run

    started = time.perf_counter()
    job, _ = import_job_create(kind=kind, name="legacy", path=path)
    import_run(job=job)
    took = time.perf_counter() - started
    job = ImportJob.objects.get(pk=job.pk)
    assert job.status == "succeeded", (job.status, job.error)
    assert job.rows_skipped == 0, job.rows_skipped
    return job.rows_imported, took


def resolve() -> tuple[int, float, float]:
    """(events, seconds resolving, seconds refreshing)."""
    from events.pipeline import pipeline_follow_ups_drain
    from members.imports.services import imported_identities_resolve

    started = time.perf_counter()
    total = imported_identities_resolve(batch_size=500)
    resolved_at = time.perf_counter()
    pipeline_follow_ups_drain()
    return total, resolved_at - started, time.perf_counter() - resolved_at


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--orders-per-member", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
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
        resolved = resolve()
        print("resolved", resolved, flush=True)
        load_after = load()
        from members.imports.models import ImportJob

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
    events = resolved[0]
    import_seconds = imported_members[1] + imported_orders[1]
    pipeline_seconds = resolved[1] + resolved[2]
    total_seconds = import_seconds + pipeline_seconds
    copy_rate = (copied_members[0] + copied_orders[0]) / (copied_members[1] + copied_orders[1])
    rows = imported_members[0] + imported_orders[0]
    scale_full = 6_000_000 / rows  # 1M members + 5M orders
    section = f"""## {started_at:%Y-%m-%d %H:%M} UTC: {args.members:,} members, {imported_orders[0]:,} orders

Load average (1 / 5 / 15 min) before: {load_before}; after the pipeline: {load_after} (2 cores,
shared with other work). Files: {sizes["members.csv.gz"] / 1e6:.1f} MB and {sizes["orders.csv.gz"] / 1e6:.1f} MB of gzipped CSV.

| step | rows | seconds | rows/s |
|---|---:|---:|---:|
| limit: plain `COPY` of the members file | {copied_members[0]:,} | {copied_members[1]:.1f} | {copied_members[0] / copied_members[1]:,.0f} |
| limit: plain `COPY` of the orders file | {copied_orders[0]:,} | {copied_orders[1]:.1f} | {copied_orders[0] / copied_orders[1]:,.0f} |
| import members (`manage.py import members`: contract, events, checkpoints) | {imported_members[0]:,} | {imported_members[1]:.1f} | {imported_members[0] / imported_members[1]:,.0f} |
| import orders | {imported_orders[0]:,} | {imported_orders[1]:.1f} | {imported_orders[0] / imported_orders[1]:,.0f} |
| identity resolution (pipeline stage, one process, batches of 500) | {events:,} events | {resolved[1]:.1f} | {events / resolved[1]:,.0f} |
| member refresh, once per member (traits, consent, figures, points, tags, segments) | {active:,} members | {resolved[2]:.1f} | {active / resolved[2]:,.0f} |
| **end to end** | {rows:,} rows | **{total_seconds:.1f}** | {rows / total_seconds:,.0f} |

Import alone runs at {rows / import_seconds / copy_rate:.2f} times the speed of the plain `COPY` of the same rows
({rows / import_seconds:,.0f} against {copy_rate:,.0f} rows/s). Checks: one active member per legacy
member {"✓" if members_ok else "✗"} ({active:,}); every order in the figures {"✓" if orders_ok else "✗"}
({counted:,}); the same files again imported {again} rows {"✓" if again == 0 else "✗"}.

**Extrapolated to 1M members and 5M orders** (times {scale_full:.0f}, linearly: the import costs the same per
batch and scales with rows; the pipeline's batches cost the same per event while
each member's history stays as long, which holds when members and orders grow together):
import {import_seconds * scale_full / 60:.0f} min, resolve + refresh {pipeline_seconds * scale_full / 60:.0f} min,
**{total_seconds * scale_full / 60:.0f} min end to end** against the target of 15 min
({"met" if total_seconds * scale_full <= 900 else "not met"} on this run's machine load).
"""
    print(section)
    if args.docs:
        harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)
    return 0 if members_ok and orders_ok and again == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
