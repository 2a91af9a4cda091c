"""``manage.py rebuild_identity``: rebuild members and the identity graph from the event log."""

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from events.models import Event
from events.pipeline import pipeline_follow_ups_drain
from identity.services import identity_rebuild


class Command(BaseCommand):
    help = "Rebuild the identity graph from all events, in event-time order (member ids are kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args: object, batch_size: int, **options: object) -> None:
        total = Event.objects.count()
        with tqdm(total=total, unit="event", desc="Resolving", disable=None) as bar:
            done = identity_rebuild(batch_size=batch_size, progress=lambda n: bar.update(n - bar.n))
        refreshed = pipeline_follow_ups_drain()  # the members refresh, through identity's outbox
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt the identity graph from {done:,} events; refreshed {refreshed:,} members."
            )
        )
