"""Celery tasks of the events app: thin wrappers over the pipeline."""

from celery import shared_task
from django.conf import settings

from cdp.tasks import CoalescedEnqueue, enqueue
from events.pipeline import events_process_pending


@shared_task(name="events.process_pending", acks_late=True, ignore_result=True)
def process_pending() -> int:
    """Process waiting events; idempotent (a batch leaves the queue in the transaction that
    processes it)."""
    processed, more = events_process_pending()
    if more:
        process_pending_enqueue()
    return processed


def process_pending_enqueue() -> None:
    """Nudge the pipeline (also an ``on_commit`` callback). Never raises: a lost nudge only
    delays processing until the sweep."""
    enqueue(process_pending, fallback="the sweep of unprocessed events")


#: The nudge of ingestion (single events, batches, imports): one publish per EVENT_NUDGE_INTERVAL_SECONDS per web
#: process at most, however many events it stores (``CoalescedEnqueue``).
process_pending_nudge = CoalescedEnqueue(
    process_pending,
    fallback="the sweep of unprocessed events",
    interval=settings.EVENT_NUDGE_INTERVAL_SECONDS,
)
