"""``manage.py alerts_evaluate``: what the beat job does, from outside Celery.

Beat reaches the workers through the broker, so with Redis down the beat job never runs, and
the rule that says "the broker is unreachable" would never fire. Run this from cron or a
systemd timer too (every minute): it needs only PostgreSQL.
"""

from typing import Any

from django.core.management.base import BaseCommand

from ops.services import alerts_evaluate


class Command(BaseCommand):
    help = "Evaluate every enabled alert rule now: open, resolve and escalate alerts, send their notices."

    def handle(self, *args: Any, **options: Any) -> None:
        result = alerts_evaluate()
        self.stdout.write(
            f"opened {len(result.opened)}, resolved {len(result.resolved)}, escalated {len(result.escalated)}"
        )
        for key, error in result.errors.items():
            self.stderr.write(f"rule {key}: {error}")
