"""When PostgreSQL itself is unreachable nothing can be evaluated or recorded: rules, alerts and
targets live there. ``manage.py alerts_evaluate`` (cron) then tells the outage targets named in
the settings — ``ALERT_OUTAGE_EMAILS``, ``ALERT_OUTAGE_WEBHOOK_URLS`` (Slack-compatible JSON) —
and again every ``ALERT_OUTAGE_REPEAT_MINUTES`` while it lasts, and once more when the database
answers again. What was said when is kept in a small file (``ALERT_OUTAGE_STATE_FILE``), not in
Redis: the outage may be the machine's, and Redis may be down with it.
"""

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings

from ops.models import NotifyTarget
from ops.notify import Message, notify

logger = logging.getLogger(__name__)


def _targets() -> list[NotifyTarget]:
    # Unsaved targets: built from the settings, since the table is out of reach.
    emails = [
        NotifyTarget(name=f"outage {e}", kind=NotifyTarget.Kind.EMAIL, email=e)
        for e in settings.ALERT_OUTAGE_EMAILS
    ]
    hooks = [
        NotifyTarget(
            name=f"outage {u}", kind=NotifyTarget.Kind.WEBHOOK, url=u, flavor=NotifyTarget.Flavor.SLACK
        )
        for u in settings.ALERT_OUTAGE_WEBHOOK_URLS
    ]
    return emails + hooks


def _state() -> dict:
    path = Path(settings.ALERT_OUTAGE_STATE_FILE)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _send(message: Message) -> list[str]:
    errors = [error for target in _targets() if (error := notify(target, message))]
    for error in errors:
        logger.warning("Outage notice not delivered: %s", error)
    return errors


def database_down(*, error: str, now: datetime) -> bool:
    """The database is unreachable: tell the outage targets unless told within the repeat
    interval; returns whether a notice went out."""
    state = _state()
    since = state.get("since", now.isoformat())
    told = state.get("told_at")
    if told and now - datetime.fromisoformat(told) < timedelta(minutes=settings.ALERT_OUTAGE_REPEAT_MINUTES):
        return False
    _send(Message(
        title="[RED] Database unreachable",
        text=f"PostgreSQL cannot be reached since {since[:19]} UTC: {error}\n"
             "Alerts cannot be evaluated or recorded until it answers again.",
    ))  # fmt: skip
    path = Path(settings.ALERT_OUTAGE_STATE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"since": since, "told_at": now.isoformat()}))
    return True


def database_back(*, now: datetime) -> bool:
    """The database answers: if an outage was told, say it is over; returns whether it did."""
    state = _state()
    if not state:
        return False
    _send(Message(
        title="[RED] RESOLVED: Database unreachable",
        text=f"PostgreSQL answers again ({now:%Y-%m-%d %H:%M:%S} UTC); unreachable since {state.get('since', '?')[:19]} UTC.",
    ))  # fmt: skip
    Path(settings.ALERT_OUTAGE_STATE_FILE).unlink(missing_ok=True)
    return True
