"""Celery tasks of segment webhooks: thin wrappers over the delivery engine. (Celery finds
them through ``members.segments.tasks``, which imports this module.)"""

from collections.abc import Iterable

from celery import shared_task

from cdp.tasks import enqueue
from members.segments.webhooks.delivery import (
    Outcome,
    webhook_deliver,
    webhook_deliveries_prune,
    webhooks_due,
)


@shared_task(name="members.segments.webhook_deliver", acks_late=True, ignore_result=True)
def webhook_deliver_task(webhook_id: int) -> int:
    """Deliver a webhook's pending changes. Safe to run twice or at once: a run that finds the
    webhook claimed, or nothing due, does nothing. A run that used its share of batches hands
    the rest to a fresh task, so one busy webhook does not hold a worker."""
    run = webhook_deliver(webhook_id=webhook_id)
    if run.outcome is Outcome.DELIVERED:
        webhooks_deliver_enqueue([webhook_id])
    return run.batches


@shared_task(name="members.segments.webhooks_sweep", ignore_result=True)
def webhooks_sweep() -> int:
    """Beat: deliver what is due (retries whose backoff ended, changes whose nudge was lost)
    and forget deliveries older than the log keeps."""
    due = webhooks_due()
    webhooks_deliver_enqueue(due)
    webhook_deliveries_prune()
    return len(due)


def webhooks_deliver_enqueue(webhook_ids: Iterable[int]) -> None:
    """One delivery task per webhook. Never raises (it runs on commit): a lost message only
    delays delivery until the sweep."""
    for webhook_id in webhook_ids:
        if not enqueue(webhook_deliver_task, webhook_id, fallback="the webhook sweep"):
            return  # the broker is down: the rest would not go either
