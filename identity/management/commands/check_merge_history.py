"""``manage.py check_merge_history``: does every merged member's history tell the truth?"""

from django.core.management.base import BaseCommand, CommandError

from identity.selectors import merge_history_audit

#: Record ids listed per kind of fault; the counts are always complete.
SHOWN = 20


class Command(BaseCommand):
    help = (
        "Check that every merged member has a merge record whose event and identifiers are its "
        "survivor's (no event or identifier of another customer); exits non-zero otherwise."
    )

    def handle(self, *args: object, **options: object) -> None:
        audit = merge_history_audit()
        self.stdout.write(
            f"{audit.records:,} merge records; {audit.merged_members:,} merged members, "
            f"{len(audit.unrecorded):,} without a record; latest records citing another member's "
            f"event: {len(audit.foreign_event):,}, another member's identifiers: "
            f"{len(audit.foreign_identifiers):,}."
        )
        if audit.truthful:
            self.stdout.write(self.style.SUCCESS("The merge history tells the truth."))
            return
        for label, ids in (
            ("merged members without a record", audit.unrecorded),
            ("records citing another member's event", audit.foreign_event),
            ("records naming another member's identifiers", audit.foreign_identifiers),
        ):
            if ids:
                self.stderr.write(
                    f"{label}: {', '.join(map(str, ids[:SHOWN]))}" + (" …" if len(ids) > SHOWN else "")
                )
        raise CommandError("The merge history names what is not the member's.")
