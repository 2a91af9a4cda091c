"""Celery tasks of the members app: thin wrappers over services."""

from celery import shared_task

from cdp.tasks import enqueue
from members.loyalty.services import points_recheck_due
from members.segments.services import (
    definition_recompute,
    memberships_compute_all,
    memberships_recheck_due,
    rfm_first_compute,
)
from members.services import members_refresh_pending


@shared_task(name="members.refresh_pending", acks_late=True, ignore_result=True)
def refresh_pending() -> int:
    """Take identity's changes into the refresh queue and refresh the members marked dirty;
    idempotent (a member's marks leave the queue in the transaction that refreshes it)."""
    refreshed, more = members_refresh_pending()
    if more:
        members_refresh_enqueue()
    return refreshed


def members_refresh_enqueue() -> None:
    """Nudge the members refresh (also an ``on_commit`` callback). Never raises: a lost nudge
    only delays the refresh until the sweep, whose pipeline run refreshes members too."""
    enqueue(refresh_pending, fallback="the sweep of unprocessed events")


@shared_task(name="members.loyalty_recheck", ignore_result=True)
def loyalty_recheck() -> int:
    """Points that expired and tier reviews that fell due since the last run: marks those
    members and nudges the members refresh, which writes the expiries and tier changes.
    Idempotent: a member already marked is not marked twice."""
    marked = points_recheck_due()
    if marked:
        members_refresh_enqueue()
    return marked


@shared_task(name="members.segment_recompute", ignore_result=True)
def segment_recompute(segment_id: int) -> None:
    """A segment's full recompute after its rule was created or edited (and of whatever reads
    it). Idempotent: it recomputes from the rule as it is when it runs."""
    definition_recompute(kind="segment", pk=segment_id)


@shared_task(name="members.tag_recompute", ignore_result=True)
def tag_recompute(tag_id: int) -> None:
    """A rule tag's full recompute after its rule was created or edited (and of whatever
    reads it)."""
    definition_recompute(kind="tag", pk=tag_id)


@shared_task(name="members.memberships_recompute_all", ignore_result=True)
def memberships_recompute_all() -> None:
    """The nightly full recompute of every tag and segment."""
    memberships_compute_all()


@shared_task(name="members.memberships_recheck", ignore_result=True)
def memberships_recheck() -> int:
    """Members whose time windows ("in the last 30 days") or lifecycle stage expire by now:
    marks them and nudges the members refresh, which evaluates them again. On a platform
    whose first buyers came after the last nightly run, computes the RFM quintiles now."""
    rfm_first_compute()
    marked = memberships_recheck_due()
    if marked:
        members_refresh_enqueue()
    return marked


# Celery's autodiscovery reads this module; the tasks of the segments sub-package live there.
from members.segments import tasks as segments_tasks  # noqa: E402, F401
