"""Celery tasks of the members app: thin wrappers over services."""

from celery import shared_task

from members.marks import members_refresh_enqueue
from members.services import members_refresh_pending


@shared_task(name="members.refresh_pending", acks_late=True, ignore_result=True)
def refresh_pending() -> int:
    """Take identity's changes into the refresh queue and refresh the members marked dirty;
    idempotent (a member's marks leave the queue in the transaction that refreshes it)."""
    refreshed, more = members_refresh_pending()
    if more:
        members_refresh_enqueue()
    return refreshed
