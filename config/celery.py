"""The Celery app, and the whole beat schedule in one place.

Every periodic task has an expiry no longer than its interval, so a backlog of missed
runs (say, after the broker was down) collapses instead of stampeding.
"""

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import (
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from cdp.metrics import process_exited, task_failed, task_retried
from cdp.tracing import current_request_id, request_id_reset, request_id_set
from cdp.workers import worker_gc_tune

# Production unless told otherwise, as config/wsgi.py (this module is imported first, with the
# config package, by every entry point): a worker delivers webhooks, and must never do so with
# the local settings' loopback allowance and public secret key. manage.py, the Procfile and
# the Makefile's worker and beat choose the local settings for development.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _beat_schedule() -> dict[str, dict]:
    from django.conf import settings

    sweep_every = settings.EVENT_SWEEP_INTERVAL_SECONDS
    nightly_hour, nightly_minute = settings.SEGMENTS_NIGHTLY_AT.split(":")
    retention_hour, retention_minute = settings.RETENTION_RUN_AT.split(":")
    insights_hour, insights_minute = settings.INSIGHTS_NIGHTLY_AT.split(":")
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
        # "In the last 30 days" stops being true with time alone: the members whose window
        # closes (or whose lifecycle stage runs out) are refreshed like any other.
        "segments-recheck": {
            "task": "members.memberships_recheck",
            "schedule": settings.SEGMENTS_RECHECK_INTERVAL_SECONDS,
            "options": {"expires": settings.SEGMENTS_RECHECK_INTERVAL_SECONDS},
        },
        # Everything from scratch once a day: RFM quintiles move, and whatever the incremental
        # path could have missed (a rule edited while a refresh ran) is put right.
        "segments-nightly": {
            "task": "members.memberships_recompute_all",
            "schedule": crontab(hour=nightly_hour, minute=nightly_minute),
            "options": {"expires": 3600},
        },
        # Erasure requests whose nudge was lost (a person's request is carried out within a minute).
        "privacy-erasures-sweep": {
            "task": "privacy.erasures_sweep",
            "schedule": 60,
            "options": {"expires": 60},
        },
        # Retention: what is past its period is deleted or stripped, every night.
        "privacy-retention": {
            "task": "privacy.retention_apply",
            "schedule": crontab(hour=retention_hour, minute=retention_minute),
            "options": {"expires": 3600},
        },
        # KPI rollups: the members the refresh recomputed and the days they touched (the board
        # lags by at most this interval).
        "insights-refresh": {
            "task": "members.insights.refresh",
            "schedule": settings.INSIGHTS_REFRESH_INTERVAL_SECONDS,
            "options": {"expires": settings.INSIGHTS_REFRESH_INTERVAL_SECONDS},
        },
        # ...and from scratch once a night: what changed outside the refresh (an erasure
        # stripping identifiers, a rebuild of the figures) is put right.
        "insights-nightly": {
            "task": "members.insights.recompute_all",
            "schedule": crontab(hour=insights_hour, minute=insights_minute),
            "options": {"expires": 3600},
        },
        # Alert rules (ops): open, resolve and escalate alerts, and send their notices.
        "alerts-evaluate": {
            "task": "ops.alerts_evaluate",
            "schedule": settings.ALERT_EVALUATE_INTERVAL_SECONDS,
            "options": {"expires": settings.ALERT_EVALUATE_INTERVAL_SECONDS},
        },
        # Import jobs whose nudge was lost or whose worker died: sent again, they resume at
        # their checkpoint.
        "imports-resume-stalled": {
            "task": "imports.resume_stalled",
            "schedule": 60,
            "options": {"expires": 60},
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


@worker_init.connect
@worker_process_init.connect
def _tune_worker_process(**kwargs: object) -> None:
    worker_gc_tune()


@worker_process_shutdown.connect
def _metrics_process_exited(**kwargs: object) -> None:
    process_exited(os.getpid())


@task_failure.connect
def _metrics_task_failed(
    sender: object = None, exception: BaseException | None = None, **kwargs: object
) -> None:
    # Imported here: cdp.errors loads DRF, which must not be imported before Django's settings are.
    from cdp.errors import is_database_outage

    task_failed(str(getattr(sender, "name", sender)), database_outage=is_database_outage(exception))


@task_retry.connect
def _metrics_task_retried(sender: object = None, **kwargs: object) -> None:
    task_retried(str(getattr(sender, "name", sender)))


# The request id travels with every task a request sends (a message header), so the worker's
# log lines of that task carry it (cdp.tracing).
@before_task_publish.connect
def _request_id_send(headers: dict | None = None, **kwargs: object) -> None:
    if headers is not None and (request_id := current_request_id()):
        headers["request_id"] = request_id


_request_id_tokens: dict[str, object] = {}


@task_prerun.connect
def _request_id_take(task_id: str = "", task: object = None, **kwargs: object) -> None:
    request = getattr(task, "request", None)
    given = getattr(request, "request_id", None) if request is not None else None
    if isinstance(given, str) and given:
        _request_id_tokens[task_id] = request_id_set(given)


@task_postrun.connect
def _request_id_drop(task_id: str = "", **kwargs: object) -> None:
    if (token := _request_id_tokens.pop(task_id, None)) is not None:
        request_id_reset(token)
