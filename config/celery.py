"""The Celery app, and the whole beat schedule in one place.

Every periodic task has an expiry no longer than its interval, so a backlog of missed
runs (say, after the broker was down) collapses instead of stampeding.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _beat_schedule() -> dict[str, dict]:
    from django.conf import settings

    sweep_every = settings.EVENT_SWEEP_INTERVAL_SECONDS
    return {
        # The reconciler for the event outbox: picks up accepted events whose on_commit
        # nudge was lost (broker down, worker killed).
        "sweep-unprocessed-events": {
            "task": "events.process_pending",
            "schedule": sweep_every,
            "options": {"expires": sweep_every},
        },
        # Points expiring (FIFO per earn lot) and tier reviews happen with time alone: the
        # members whose moment has come are refreshed like any other.
        "loyalty-recheck": {
            "task": "members.loyalty_recheck",
            "schedule": settings.LOYALTY_RECHECK_INTERVAL_SECONDS,
            "options": {"expires": settings.LOYALTY_RECHECK_INTERVAL_SECONDS},
        },
        # Segment webhooks: retries whose backoff ended and deliveries whose nudge was lost.
        "webhooks-sweep": {
            "task": "members.segments.webhooks_sweep",
            "schedule": settings.WEBHOOK_SWEEP_INTERVAL_SECONDS,
            "options": {"expires": settings.WEBHOOK_SWEEP_INTERVAL_SECONDS},
        },
    }


@app.on_after_configure.connect
def _install_beat_schedule(sender: Celery, **kwargs: object) -> None:
    sender.conf.beat_schedule = _beat_schedule()
