"""``manage.py split_member 42 --identifier phone:13800138002 --reason "two people on one iPad"``."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.pipeline import pipeline_follow_ups_drain
from identity.services import SplitRefused, member_split


class Command(BaseCommand):
    help = "Split a wrong merge: the given identifiers belong to another person."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("member_id", type=int)
        parser.add_argument(
            "--identifier", action="append", required=True, help="type:value; repeat for several"
        )
        parser.add_argument("--reason", required=True)
        parser.add_argument("--staff", help="Username of the staff member making the split")

    def handle(
        self,
        *args: object,
        member_id: int,
        identifier: list[str],
        reason: str,
        staff: str | None,
        **options: object,
    ) -> None:
        user = get_user_model().objects.filter(username=staff).first() if staff else None
        if staff and user is None:
            raise CommandError(f"No staff user {staff!r}.")
        try:
            record = member_split(member_id=member_id, identifiers=identifier, reason=reason, staff=user)
        except SplitRefused as exc:
            raise CommandError(f"{exc.field}: {exc}") from exc
        pipeline_follow_ups_drain()  # the members refresh, through identity's outbox
        self.stdout.write(
            f"Split member {member_id}; the identifiers are now held by members {record.resulting_members}."
        )
