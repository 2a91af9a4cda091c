"""What resuming a member's points derivation from their checkpoint costs, by the length of
their history: pure (``points_derive`` alone, no database, no worker), so the figure holds on
a busy machine (this process's CPU time).

A member with ~1,000 events (a quarter of them orders, 3% refunds of earlier orders, under a
program like the demo's: tiers on points, double points in stores, points that never expire)
is resumed refresh after refresh with 10 new events each, from the checkpoint the refresh
before made (``points.Checkpoint``: its hot and cold parts); against members with ~10 events
resumed once each. Reports CPU per refresh of each and their ratio: the checkpoint's part of
issue 16's heavy-vs-light target (``bench/heavy.py`` measures the whole refresh).

    .venv/bin/python bench/points_resume.py
    .venv/bin/python bench/points_resume.py --events 3000 --refreshes 50
"""

import harness  # first: the project before bench/ on sys.path (see its docstring)

# isort: split
import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

START = datetime(2026, 1, 5, tzinfo=UTC)


def _refreshes(*, events: int, refreshes: int, seed: int) -> float:
    """CPU seconds per resumed refresh of 10 events, for a member with ``events`` before."""
    from members.aggregates import OrderEvent
    from members.loyalty.points import points_derive
    from members.loyalty.program import EarnRule, Program, TierRule

    program = Program(
        rules=(EarnRule(channel_multipliers={"pos": Decimal(2)}),),
        tiers=tuple(TierRule(key, key.title(), rank, Decimal(threshold))
                    for rank, (key, threshold) in enumerate((("member", 0), ("silver", 1000), ("gold", 5000))))
    )  # fmt: skip
    rng = random.Random(seed)
    numbers: list[str] = []
    ids = iter(range(1, 10**9))

    def batch(count: int, at: datetime) -> list[OrderEvent]:
        made = []
        for minute in range(count):
            n, kind, when = next(ids), rng.random(), at + timedelta(minutes=minute)
            if kind < 0.25:
                numbers.append(f"O{n}")
                made.append(OrderEvent(n, "Order Completed", f"O{n}", Decimal(rng.randint(100, 1400)), "CNY", when,
                                       rng.choice(("pos", "app")), "", f"m{n}", 1))  # fmt: skip
            elif kind < 0.28 and numbers:
                made.append(OrderEvent(n, "Order Refunded", rng.choice(numbers), Decimal(rng.randint(10, 120)), "CNY",
                                       when, "app", "", f"m{n}", 1))  # fmt: skip
        return made

    now, at = START + timedelta(days=330), START
    first = points_derive(
        program=program, orders=batch(events, at), lines={}, events=[], recorded=(), now=now
    )
    resume, spent = first.checkpoint, 0.0
    for _ in range(refreshes):
        at += timedelta(hours=12)
        new = batch(10, at)
        began = time.process_time()
        derived = points_derive(
            program=program, orders=new, lines={}, events=[], recorded=(), now=now, resume=resume
        )
        spent += time.process_time() - began
        resume = derived.checkpoint
    return spent / refreshes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000, help="events of the heavy member's history")
    parser.add_argument("--refreshes", type=int, default=20, help="refreshes of each heavy member measured")
    parser.add_argument("--members", type=int, default=10, help="heavy members (light: 20 times as many)")
    args = parser.parse_args()
    harness.django_setup({"DJANGO_SETTINGS_MODULE": "config.settings.test"})
    # The least of three rounds: what the code costs, not what else the machine did meanwhile.
    heavy = min(
        sum(
            _refreshes(events=args.events, refreshes=args.refreshes, seed=r * 1000 + s)
            for s in range(args.members)
        )
        / args.members
        for r in range(3)
    )
    light = min(
        sum(_refreshes(events=10, refreshes=1, seed=r * 1000 + s) for s in range(20 * args.members))
        / (20 * args.members)
        for r in range(3)
    )
    print(f"heavy ({args.events:,} events and on): {1e6 * heavy:,.0f} µs CPU per refresh of 10 events")
    print(
        f"light (10 events): {1e6 * light:,.0f} µs CPU per refresh of 10 events; heavy / light {heavy / light:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
