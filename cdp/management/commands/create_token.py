"""``manage.py create_token USERNAME --role crm_agent``: the API token is the last line."""

from django.core.management.base import BaseCommand, CommandParser

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue


class Command(BaseCommand):
    help = "Create (or update) a staff user with a role and print a new API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--name", default="cli", help="A label to tell this token apart.")

    def handle(self, *args: object, username: str, role: str, name: str, **options: object) -> None:
        user = staff_user_ensure(username=username, role=Role(role))
        issued = token_issue(user=user, name=name)
        self.stdout.write(f"Token for {user.username} (role {role}); it is shown only once:")
        self.stdout.write(issued.secret)
