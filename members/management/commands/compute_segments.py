"""``manage.py compute_segments``: recompute every tag and segment now (what the nightly job
runs): the RFM quintiles and computed tags, then every rule tag and dynamic segment."""

from django.core.management.base import BaseCommand

from members.segments.services import memberships_compute_all


class Command(BaseCommand):
    help = "Recompute every tag and segment from scratch, and print each segment's size, time and error."

    def handle(self, *args: object, **options: object) -> None:
        segments = memberships_compute_all()
        for segment in sorted(segments, key=lambda s: s.key):
            took = f"{segment.compute_ms:,} ms" if segment.compute_ms is not None else "-"
            line = f"{segment.key:<40} {segment.size:>10,} members {took:>12}"
            self.stdout.write(self.style.ERROR(f"{line}  {segment.error}") if segment.error else line)
        self.stdout.write(self.style.SUCCESS(f"Recomputed every tag and {len(segments):,} segments."))
