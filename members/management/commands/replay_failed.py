"""``manage.py replay_failed [events|members] [--id N ...] [--stage PATH]``: after a fix, put
the parked events back in the pipeline's queue and mark the parked members dirty again, each
exactly once (``events.parking``, ``members.parking``). What fails again is parked again,
its attempts counted.

Lives in the members app because it replays both: members depends on events, never the other
way round."""

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from events.parking import parked_events_replay
from events.tasks import process_pending_enqueue
from members.marks import members_refresh_enqueue
from members.parking import parked_members_replay


class Command(BaseCommand):
    help = "Replay parked events and members (after the cause of their failure was fixed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("what", nargs="?", choices=("all", "events", "members"), default="all")
        parser.add_argument(
            "--id", dest="ids", type=int, action="append",
            help="A parked event's or member's id (as listed by the API or admin); repeatable. "
            "Needs 'events' or 'members'.",
        )  # fmt: skip
        parser.add_argument("--stage", help="Only the events parked at this stage (its dotted path).")

    def handle(
        self, *args: object, what: str, ids: list[int] | None, stage: str | None, **options: object
    ) -> None:
        if ids and what == "all":
            raise CommandError(
                "Say whose ids these are: replay_failed events --id … or replay_failed members --id …"
            )
        if stage and what != "events":
            raise CommandError("--stage selects parked events: replay_failed events --stage …")
        with transaction.atomic():
            events = parked_events_replay(ids=ids, stage=stage) if what in ("all", "events") else []
            members = parked_members_replay(ids=ids) if what in ("all", "members") else []
            if events:
                transaction.on_commit(process_pending_enqueue)
            if members:
                transaction.on_commit(members_refresh_enqueue)
        self.stdout.write(
            self.style.SUCCESS(
                f"Replayed {len(events):,} events and {len(members):,} members; "
                "the pipeline processes them within seconds (what fails again is parked again)."
            )
        )
