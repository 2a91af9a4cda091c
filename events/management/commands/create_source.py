"""``manage.py create_source NAME --kind pos --store S001``: the write key is the last line."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.models import Channel
from events.services import source_create


class Command(BaseCommand):
    help = "Create an event source and print its write key (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", required=True, choices=Channel.values)
        parser.add_argument("--store", default="", help="Store code; required for --kind pos.")

    def handle(self, *args: object, name: str, kind: str, store: str, **options: object) -> None:
        try:
            created = source_create(name=name, kind=Channel(kind), store_code=store)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Created source {created.source}. Its write key, shown only once:")
        self.stdout.write(created.write_key)
