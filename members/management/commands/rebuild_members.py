"""``manage.py rebuild_members``: recompute every member's traits, orders, figures, points, tier,
tags and segments from the event log (``--points-only``: points and tiers, after an earning
rule changed, then every tag and segment, since rules may read points and tiers)."""

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from members.models import Member
from members.segments.services import memberships_compute_all
from members.services import members_rebuild


class Command(BaseCommand):
    help = "Recompute every active member's traits, orders, figures, points, tier, tags and segments from their events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument(
            "--points-only",
            action="store_true",
            help="Only points and tiers (after an earning rule changed).",
        )

    def handle(self, *args: object, batch_size: int, points_only: bool, **options: object) -> None:
        total = Member.objects.filter(status=Member.Status.ACTIVE).count()
        with tqdm(total=total, unit="member", desc="Recomputing", disable=None) as bar:
            done = members_rebuild(
                batch_size=batch_size, points_only=points_only, progress=lambda n: bar.update(n - bar.n)
            )
        self.stdout.write(self.style.SUCCESS(f"Recomputed {done:,} members from their events."))
        if points_only:
            segments = memberships_compute_all()
            self.stdout.write(self.style.SUCCESS(f"Recomputed every tag and {len(segments):,} segments."))
