"""``manage.py create_token USERNAME --role crm_agent [--stores SH01,SH02] [--regions east]
[--channels pos]``: the API token is the last line."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.roles import Role
from cdp.services import staff_scope_set, staff_user_ensure, token_issue


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


class Command(BaseCommand):
    help = "Create (or update) a staff user with a role (and a scope) and print a new API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--name", default="cli", help="A label to tell this token apart.")
        parser.add_argument("--stores", default="", help="Scope to these store codes (comma-separated).")
        parser.add_argument("--regions", default="", help="Scope to these regions' stores (region keys).")
        parser.add_argument("--channels", default="", help="Scope to these channels (pos, app, ...).")

    def handle(
        self, *args: object, username: str, role: str, name: str, stores: str, regions: str, channels: str,
        **options: object,
    ) -> None:  # fmt: skip
        user = staff_user_ensure(username=username, role=Role(role))
        try:
            scope = staff_scope_set(
                user=user, stores=_names(stores), regions=_names(regions), channels=_names(channels),
                by=None, channel="cli",
            )  # fmt: skip
        except ValueError as error:
            raise CommandError(str(error)) from error
        issued = token_issue(user=user, name=name)
        where = "unscoped" if scope is None else f"scoped: stores {scope.stores}, channels {scope.channels}"
        self.stdout.write(f"Token for {user.username} (role {role}, {where}); it is shown only once:")
        self.stdout.write(issued.secret)
