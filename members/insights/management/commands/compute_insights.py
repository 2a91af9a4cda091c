"""``manage.py compute_insights [--since YYYY-MM-DD]``: the KPI rollups again from members' tables."""

import time
from datetime import date

from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.insights.funnel_events import summary_from_scratch
from members.insights.services import compute_from


class Command(BaseCommand):
    help = (
        "Compute the KPI rollups again: every member's facts (only changed ones are written), "
        "then every day from --since (default: every day held, from scratch); then the funnels' "
        "summary of events, whole."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="First day to roll up again (YYYY-MM-DD).")

    def handle(self, *args: object, **options: object) -> None:
        since = None
        if options["since"]:
            try:
                since = date.fromisoformat(str(options["since"]))
            except ValueError as error:
                raise CommandError(f"--since: not a date (YYYY-MM-DD): {options['since']!r}") from error
        started = time.monotonic()
        done = compute_from(since=since)
        self.stdout.write(
            f"insights: {done['members']} members, {done['days']} days, {done['points_days']} points days "
            f"in {time.monotonic() - started:.1f} s"
        )
        started = time.monotonic()
        rows = summary_from_scratch()
        self.stdout.write(f"funnels' summary of events: {rows} rows in {time.monotonic() - started:.1f} s")
