"""Celery tasks of insights: thin wrappers over the services."""

from celery import shared_task

from members.insights.funnel_events import summary_from_scratch
from members.insights.services import compute_from, insights_refresh


@shared_task(name="members.insights.refresh", acks_late=True, ignore_result=True)
def refresh() -> dict[str, int]:
    """Roll up the members and days changed since the last run (beat). Idempotent: what it
    takes from the queues it writes in the same transaction; a second run at once finds the
    advisory lock taken and leaves."""
    return insights_refresh()


@shared_task(name="members.insights.recompute_all", ignore_result=True)
def recompute_all() -> dict[str, int]:
    """Every night: the rollups from scratch (``compute_insights``), then the funnels' summary
    of events whole, which also puts right what changed outside the member refresh (an
    erasure, a rebuild of the figures)."""
    done = compute_from(since=None)
    done["funnel_rows"] = summary_from_scratch()
    return done
