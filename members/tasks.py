"""Celery tasks of the members app: thin wrappers over services."""

from celery import shared_task

from events.tasks import process_pending_enqueue
from members.loyalty.services import points_recheck_due


@shared_task(name="members.loyalty_recheck", ignore_result=True)
def loyalty_recheck() -> int:
    """Points that expired and tier reviews that fell due since the last run: marks those
    members and nudges the pipeline, whose refresh writes the expiries and tier changes.
    Idempotent: a member already marked is not marked twice."""
    marked = points_recheck_due()
    if marked:
        process_pending_enqueue()
    return marked
