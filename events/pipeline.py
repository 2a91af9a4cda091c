"""The processing pipeline's consumer side: claim accepted events, run the stages, mark them.

The event table is the outbox. A worker claims a batch of unprocessed rows with
``FOR UPDATE SKIP LOCKED`` (so workers never wait on, or double-process, each other's rows),
runs every configured stage on the batch and sets ``processed_at`` in the same transaction.
A worker that dies mid-batch rolls back, releasing the rows for the next claim; a batch
that commits never runs again. Stages therefore see each event exactly once per commit.

Follow-ups (``EVENT_PIPELINE_FOLLOW_UPS``: refreshing the members resolution marked dirty)
run after each committed batch in their own transactions, draining their own queues. Two
workers thus overlap: one resolves while the other computes.
"""

import time
from collections.abc import Callable, Sequence

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from events.models import Event

Stage = Callable[[Sequence[Event]], None]
FollowUp = Callable[[], int]


def pipeline_stages() -> list[Stage]:
    return [import_string(path) for path in settings.EVENT_PIPELINE_STAGES]


def pipeline_follow_ups() -> list[FollowUp]:
    return [import_string(path) for path in settings.EVENT_PIPELINE_FOLLOW_UPS]


def events_process_batch(*, batch_size: int) -> int:
    """Claim and process one batch; returns how many events it processed (0: none waiting)."""
    with transaction.atomic():
        batch = list(
            Event.objects.filter(processed_at__isnull=True)
            .order_by("id")
            .select_for_update(skip_locked=True)[:batch_size]
        )
        if not batch:
            return 0
        for stage in pipeline_stages():
            stage(batch)
        Event.objects.filter(id__in=[event.id for event in batch]).update(processed_at=timezone.now())
    return len(batch)


def events_process_pending(*, batch_size: int | None = None, time_budget: float = 30.0) -> tuple[int, bool]:
    """Process batches, and the follow-ups after each, until nothing is waiting or the time
    budget is spent.

    Returns (events processed, whether work may remain).
    """
    size = batch_size or settings.EVENT_PIPELINE_BATCH_SIZE
    follow_ups = pipeline_follow_ups()
    deadline = time.monotonic() + time_budget
    total = 0
    while True:
        processed = events_process_batch(batch_size=size)
        total += processed
        followed = sum(follow_up() for follow_up in follow_ups)
        if processed < size and not followed:
            return total, False
        if time.monotonic() >= deadline:
            return total, True
