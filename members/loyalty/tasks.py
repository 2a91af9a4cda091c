"""Celery tasks of the loyalty app: thin wrappers over services. (Task names keep the
``members.`` prefix they had before loyalty became an app: queued messages carry them.)"""

from celery import shared_task

from members.loyalty.services import points_recheck_due
from members.marks import members_refresh_enqueue


@shared_task(name="members.loyalty_recheck", ignore_result=True)
def loyalty_recheck() -> int:
    """Points that expired and tier reviews that fell due since the last run: marks those
    members and nudges the members refresh, which writes the expiries and tier changes.
    Idempotent: a member already marked is not marked twice."""
    marked = points_recheck_due()
    if marked:
        members_refresh_enqueue()
    return marked
