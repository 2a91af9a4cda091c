"""``manage.py rebuild_members``: recompute every member's traits, orders and figures from the
event log."""

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from members.models import Member
from members.services import members_rebuild


class Command(BaseCommand):
    help = "Recompute every active member's traits, orders and figures from their events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args: object, batch_size: int, **options: object) -> None:
        total = Member.objects.filter(status=Member.Status.ACTIVE).count()
        with tqdm(total=total, unit="member", desc="Recomputing", disable=None) as bar:
            done = members_rebuild(batch_size=batch_size, progress=lambda n: bar.update(n - bar.n))
        self.stdout.write(self.style.SUCCESS(f"Recomputed {done:,} members from their events."))
