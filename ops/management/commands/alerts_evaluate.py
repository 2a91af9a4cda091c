"""``manage.py alerts_evaluate``: what the beat job does, from outside Celery.

Beat reaches the workers through the broker, so with Redis down the beat job never runs, and
the rule that says "the broker is unreachable" would never fire. Run this from cron or a
systemd timer too (every minute): it needs only PostgreSQL, and when PostgreSQL is the one
away it tells the outage targets of the settings (``ops.outage``) and exits with status 1.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from cdp.errors import is_database_outage
from ops.outage import database_back, database_down
from ops.services import alerts_evaluate


class Command(BaseCommand):
    help = "Evaluate every enabled alert rule now: open, resolve and escalate alerts, send their notices."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = alerts_evaluate()
        except DatabaseError as exc:
            if not is_database_outage(exc):
                raise
            told = database_down(error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                                 now=timezone.now())  # fmt: skip
            raise CommandError(
                f"The database is unreachable ({'outage targets told' if told else 'told already'}): {exc}"
            ) from exc
        database_back(now=timezone.now())
        self.stdout.write(
            f"opened {len(result.opened)}, resolved {len(result.resolved)}, escalated {len(result.escalated)}"
        )
        for key, error in result.errors.items():
            self.stderr.write(f"rule {key}: {error}")
