"""Celery tasks of the events app: thin wrappers over the pipeline."""

import logging
import time

from celery import shared_task
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from events.pipeline import events_process_pending

logger = logging.getLogger(__name__)

#: After a failed publish, skip nudges for this long: the sweep covers the gap, and requests
#: do not each pay for a connection attempt to a broker we know is down.
BROKER_BACKOFF_SECONDS = 5.0
_broker_retry_at = 0.0


@shared_task(name="events.process_pending", acks_late=True, ignore_result=True)
def process_pending() -> int:
    """Process waiting events; idempotent (claimed rows are marked in the same transaction)."""
    processed, more = events_process_pending()
    if more:
        process_pending_enqueue()
    return processed


def process_pending_enqueue() -> None:
    """Nudge the pipeline. Never raises: a lost nudge only delays processing until the sweep."""
    global _broker_retry_at
    if time.monotonic() < _broker_retry_at:
        return
    try:
        process_pending.apply_async(retry=False)
    except (OperationalError, RedisError, OSError) as exc:
        _broker_retry_at = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.warning("Broker unreachable, events will be picked up by the sweep: %s", exc)
