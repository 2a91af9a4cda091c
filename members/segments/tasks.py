"""Celery tasks of tags and segments: thin wrappers over the services. (Task names keep the
``members.`` prefix they had before segments became an app: queued messages carry them.)"""

from celery import shared_task

from members.marks import members_refresh_enqueue
from members.segments.services import (
    definition_recompute,
    memberships_compute_all,
    memberships_recheck_due,
    rfm_first_compute,
)


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


# Celery's autodiscovery reads this module; the webhook tasks live beside their delivery engine.
from members.segments.webhooks import tasks as webhook_tasks  # noqa: E402, F401
