"""``manage.py apply_retention [--dry-run]``: apply the retention periods now (beat does it
nightly), or show what would be deleted or stripped."""

from django.core.management.base import BaseCommand, CommandParser

from members.privacy.retention import retention_apply


class Command(BaseCommand):
    help = "Delete or strip the data past its retention period (RETENTION_* settings); --dry-run only counts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what is due; change nothing.")
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args: object, dry_run: bool, batch_size: int | None, **options: object) -> None:
        run = retention_apply(dry_run=dry_run, batch_size=batch_size, log=self.stdout.write)
        verb = "would be deleted or stripped" if dry_run else "deleted or stripped"
        summary = ", ".join(f"{name} {count:,}" for name, count in run.counts.items()) or "nothing"
        self.stdout.write(
            self.style.SUCCESS(f"Retention{' (dry run)' if dry_run else ''}: {summary} {verb}.")
        )
