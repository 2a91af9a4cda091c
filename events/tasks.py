"""Celery tasks of the events app: thin wrappers over the pipeline."""

from celery import shared_task

from cdp.tasks import enqueue
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
