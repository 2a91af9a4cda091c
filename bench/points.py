"""Loyalty benchmark: points for 1,000,000 members recomputed from their events, and the
incremental path's events per second.

On the member 360 benchmark's database (``cdp_bench_members``: 1,000,000 members, 10,000,000
events, two orders each; built by ``bench/members.py`` and kept, or built here if missing),
with a program that has four tiers (on points earned in 365 days, reviewed yearly with
one-step downgrades), double points in stores, a 7-day returns window and points expiring
after a year:

- **full rebuild**: the ledger, accounts and tier history emptied, then
  ``members_rebuild(points_only=True)`` (what ``manage.py rebuild_members --points-only``
  runs) over every active member: members per second and ledger rows written; every balance
  is then checked against the sum of its ledger;
- **incremental**: ``--events`` new order events for random existing members (three
  ``Order Completed`` to one partial ``Order Refunded``) are stored as resolution leaves them
  (attached to their member, the member marked dirty), then the member refresh that follows
  resolution in the pipeline (``members_refresh``: traits, figures, points and tier of each
  touched member, from all its events) drains them: events per second, and the check that
  every new order earned exactly once. Identity resolution is measured apart
  (``bench/identity.py``): this database's identity graph is written directly, not by it.

Results are printed as markdown and inserted, newest first, into the loyalty block of
``docs/benchmarks.md``.

    .venv/bin/python bench/points.py                    # 1M members
    .venv/bin/python bench/points.py --members 20000    # a quick look (rebuilds the data)
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import random
import time
from datetime import UTC, datetime

import ingest
from harness import DOCS, ROOT

bench_members = harness.bench_script("members")

START_MARKER = "<!-- bench/points.py: loyalty benchmarks, up to the end marker. -->"
MARKER = "<!-- bench/points.py inserts each run's section below this line, newest first. -->"
END_MARKER = "<!-- bench/points.py: end of the loyalty benchmarks. -->"
INTRO = """# Loyalty benchmarks

`bench/points.py` (see its docstring): the points of every member recomputed from their
events (full rebuild), and new orders through the whole pipeline (incremental)."""


def program_setup() -> None:
    from decimal import Decimal

    from members.loyalty.models import EarnRule, LoyaltyProgram, Tier

    for key, name, rank, threshold in (("member", "Member", 0, 0), ("silver", "Silver", 1, 300),
                                       ("gold", "Gold", 2, 800), ("black", "Black", 3, 2000)):  # fmt: skip
        Tier.objects.update_or_create(
            key=key, defaults={"name": name, "rank": rank, "threshold": Decimal(threshold)}
        )
    EarnRule.objects.all().delete()
    EarnRule.objects.create(name="bench", channel_multipliers={"pos": 2}, tier_multipliers={"gold": 1.5, "black": 2},
                            pending_days=7, expiry="days", expiry_days=365)  # fmt: skip
    LoyaltyProgram.objects.update(tier_downgrade="one_step", tier_review_months=12)


def full_rebuild() -> dict[str, float]:
    from members.services import members_rebuild

    with bench_members.database() as conn:
        conn.execute("TRUNCATE members_pointsentry, members_pointsaccount, members_tierchange")
    began = time.monotonic()
    with ingest.announced("recomputing every member's points"):
        done = members_rebuild(batch_size=2000, points_only=True)
    took = time.monotonic() - began
    with bench_members.database() as conn:
        rows, mismatched = conn.execute(
            "SELECT (SELECT count(*) FROM members_pointsentry), (SELECT count(*) FROM members_pointsaccount a "
            "WHERE a.balance <> (SELECT COALESCE(sum(points), 0) FROM members_pointsentry e WHERE e.member_id = a.member_id))"
        ).fetchone()
    return {"members": done, "seconds": took, "rows": rows, "mismatched": mismatched}


def incremental(*, members: int, events: int, seed: int) -> dict[str, float]:
    from members.services import members_refresh

    rng = random.Random(seed)
    chosen = [rng.randint(1, members) for _ in range(events)]
    with bench_members.database() as conn:
        app = conn.execute("SELECT id FROM events_source WHERE name = 'App'").fetchone()[0]
        conn.execute(
            "DELETE FROM identity_eventresolution WHERE event_id IN "
            "(SELECT id FROM events_event WHERE message_id LIKE 'bench-points-%')"
        )
        conn.execute(
            "DELETE FROM events_pendingevent WHERE event_id IN "
            "(SELECT id FROM events_event WHERE message_id LIKE 'bench-points-%')"
        )
        conn.execute("DELETE FROM events_event WHERE message_id LIKE 'bench-points-%'")
        with conn.cursor().copy(
            "COPY events_event (source_id, message_id, type, event, name, user_id, anonymous_id, previous_id, "
            "group_id, channel, store_code, timestamp, received_at, context, traits, properties, integrations) "
            "FROM STDIN"
        ) as copy:
            now = datetime.now(UTC)
            for n, member in enumerate(chosen):
                name = "Order Completed" if n % 4 != 3 else "Order Refunded"
                if name == "Order Refunded":
                    member = chosen[n - 3]  # the refund is for the member who ordered
                order = f"BP{(n // 4) * 4 if name == 'Order Refunded' else n}"
                total = 100 + n % 400 if name == "Order Completed" else 40
                copy.write_row((app, f"bench-points-{seed}-{n}", "track", name, "", f"u{member}", f"a{member}", "", "",
                                "app", "", now, now, "{}", "{}",
                                f'{{"order_id": "{order}", "total": {total}, "currency": "CNY"}}', "{}"))  # fmt: skip
        # Resolved here, as the pipeline would: out of its queue.
        conn.execute(
            "DELETE FROM events_pendingevent WHERE event_id IN "
            "(SELECT id FROM events_event WHERE message_id LIKE 'bench-points-%')"
        )
        conn.execute(
            "INSERT INTO identity_eventresolution (event_id, member_id, problems, resolved_at) "
            "SELECT id, substr(user_id, 2)::bigint, '[]'::jsonb, now() FROM events_event "
            "WHERE message_id LIKE 'bench-points-%'"
        )
        conn.execute(
            "INSERT INTO members_dirtymark (member_id, marked_at) SELECT substr(user_id, 2)::bigint, now() "
            "FROM events_event WHERE message_id LIKE 'bench-points-%' ORDER BY id"
        )
        conn.execute("ANALYZE events_event, identity_eventresolution, members_dirtymark")
    began = time.monotonic()
    with ingest.announced(f"refreshing the members of {events:,} new order events"):
        members_refresh()
    took = time.monotonic() - began
    processed = events
    with bench_members.database() as conn:
        earned = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE net <= 0), sum(corrections) FROM ("
            "  SELECT cause_key, sum(points) AS net, count(*) - 1 AS corrections FROM members_pointsentry"
            "  WHERE cause_key LIKE 'earn:BP%%' GROUP BY cause_key) AS orders"
        ).fetchone()
    return {"events": processed, "seconds": took, "earned_orders": earned[0], "not_earning": earned[1],
            "corrections": earned[2] or 0, "expected_orders": sum(1 for n in range(events) if n % 4 != 3)}  # fmt: skip


def write_docs(section: str) -> None:
    harness.docs_insert(section, intro=INTRO, marker=MARKER, start=START_MARKER, end=END_MARKER)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--events", type=int, default=20_000, help="new order events for the incremental path"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()
    started = datetime.now(UTC)
    with ingest.announced(f"preparing database {bench_members.DATABASE_NAME}"):
        ingest.SERVICE_ENV.update(bench_members.SERVICE_ENV)
        ingest.DATABASE_URL = bench_members.DATABASE_URL
        ingest.manage("ensure_services", "--create-database")
        ingest.manage("migrate", "--noinput", "-v0")
        bench_members.django_setup()
    took = bench_members.populate(args.members) if not bench_members.scale_built(args.members) else {}
    program_setup()
    background = ingest.wait_until_quiet(10, 60)
    rebuilt = full_rebuild()
    added = incremental(members=args.members, events=args.events, seed=args.seed)
    facts = ingest.machine()
    ok_rebuild = rebuilt["mismatched"] == 0
    ok_incremental = added["earned_orders"] == added["expected_orders"] and not added["not_earning"]
    lines = [
        f"## Loyalty — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['ram']} RAM; PostgreSQL {facts['postgresql']} "
        f"({facts['postgresql_settings']}), Python {facts['python']}, Django {facts['django']}; other processes "
        f"used {background:.0f}% of the CPU just before the run.",
        f"- Data: {rebuilt['members']:,} active members with 10 events each (2 orders), "
        + (f"written in {sum(took.values()) / 60:.1f} min" if took else "kept from an earlier run")
        + "; program: 4 tiers on points earned in 365 days (one-step yearly downgrade), double points in stores, "
        "tier multipliers, 7-day pending period, expiry after 365 days.",
        "",
        "| path | work | seconds | rate | check |",
        "|---|---:|---:|---:|---|",
        f"| full rebuild (`rebuild_members --points-only`, one process) | {rebuilt['members']:,} members, "
        f"{rebuilt['rows']:,} ledger rows | {rebuilt['seconds']:,.1f} | **{rebuilt['members'] / rebuilt['seconds']:,.0f} "
        f"members/s** | {'✓' if ok_rebuild else '✗'} every balance = sum of its ledger |",
        f"| incremental (member refresh after resolution: traits, figures, points, tier; one process, batches of 500) | {added['events']:,} "
        f"new order events | {added['seconds']:,.1f} | **{added['events'] / added['seconds']:,.0f} events/s** | "
        f"{'✓' if ok_incremental else '✗'} each new order earns, under one cause"
        + (
            f" ({added['corrections']:,} corrected: a member's other order at the same instant sorts first by "
            "messageId and lifted the tier)"
            if added["corrections"]
            else ""
        )
        + " |",
    ]
    section = "\n".join(lines)
    print(section)
    if args.docs if args.docs is not None else args.members >= 1_000_000:
        write_docs(section)
        print(f"\nWritten to {DOCS.relative_to(ROOT)}")
    return 0 if ok_rebuild and ok_incremental else 1


if __name__ == "__main__":
    raise SystemExit(main())
