"""Celery tasks of tags and segments: thin wrappers over the services. (Celery finds them
through ``members.tasks``, which imports this module.)"""

import logging
import time
from collections.abc import Iterable

from celery import shared_task
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from members.segments.webhooks import Outcome, webhook_deliver, webhook_deliveries_prune, webhooks_due

logger = logging.getLogger(__name__)

#: After a failed publish, skip nudges for this long: the sweep covers the gap.
BROKER_BACKOFF_SECONDS = 5.0
_broker_retry_at = 0.0


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
    global _broker_retry_at
    for webhook_id in webhook_ids:
        if time.monotonic() < _broker_retry_at:
            return
        try:
            webhook_deliver_task.apply_async(args=[webhook_id], retry=False)
        except (OperationalError, RedisError, OSError) as exc:
            _broker_retry_at = time.monotonic() + BROKER_BACKOFF_SECONDS
            logger.warning("Broker unreachable, webhooks will be delivered by the sweep: %s", exc)
