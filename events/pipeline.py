"""The processing pipeline's consumer side: claim accepted events, run the stages, mark them.

Accepted events wait in the outbox queue (``PendingEvent``, filled by a trigger on every
insert). A worker claims a batch by deleting its queue rows, picked ``FOR UPDATE SKIP
LOCKED`` (so workers never wait on, or double-process, each other's rows), and runs every
configured stage on the batch in the same transaction. A worker that dies mid-batch rolls
back, putting the rows back in the queue for the next claim; a batch that commits never runs
again. Stages therefore see each event exactly once per commit.

The claim is one statement: it takes the batch out of the queue and returns what the stages
read of each event as a ``ClaimedEvent``, not a model instance: building ``Event`` objects
and decoding their properties and integrations cost more than resolving them.

Follow-ups (``EVENT_PIPELINE_FOLLOW_UPS``: refreshing the members resolution marked dirty)
run after each committed batch in their own transactions, draining their own queues. Two
workers thus overlap: one resolves while the other computes.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from cdp.db import binary_parameters_cursor
from events.models import Event, PendingEvent


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """What the pipeline stages read of an event (the same names as on ``Event``)."""

    id: int
    source_id: int
    message_id: str
    timestamp: datetime
    type: str
    user_id: str
    anonymous_id: str
    previous_id: str
    traits: dict
    context: dict


Stage = Callable[[Sequence[ClaimedEvent]], None]
FollowUp = Callable[[], int]

_EVENTS, _PENDING = Event._meta.db_table, PendingEvent._meta.db_table
# The queue rows are picked in id order and deleted by key (``= ANY(ARRAY(...))``: an index
# scan however stale the planner's statistics are); each event is then read by its key.
_CLAIM = f"""
WITH claimed AS (
    DELETE FROM {_PENDING} WHERE event_id = ANY(ARRAY(
        SELECT event_id FROM {_PENDING} ORDER BY event_id LIMIT %b FOR UPDATE SKIP LOCKED))
    RETURNING event_id
)
SELECT e.id, e.source_id, e.message_id, e.timestamp, e.type, e.user_id, e.anonymous_id, e.previous_id,
       e.traits, e.context
FROM claimed AS c
CROSS JOIN LATERAL (SELECT * FROM {_EVENTS} WHERE id = c.event_id OFFSET 0) AS e
"""  # noqa: S608 - model tables only


def pipeline_stages() -> list[Stage]:
    return [import_string(path) for path in settings.EVENT_PIPELINE_STAGES]


def pipeline_follow_ups() -> list[FollowUp]:
    return [import_string(path) for path in settings.EVENT_PIPELINE_FOLLOW_UPS]


def events_process_batch(*, batch_size: int) -> int:
    """Claim and process one batch; returns how many events it processed (0: none waiting)."""
    with transaction.atomic():
        batch = events_claim(batch_size=batch_size)
        if not batch:
            return 0
        for stage in pipeline_stages():
            stage(batch)
    return len(batch)


def events_claim(*, batch_size: int) -> list[ClaimedEvent]:
    """Take up to ``batch_size`` events no other worker holds out of the queue, in the
    caller's transaction; oldest first."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_CLAIM, [batch_size])
        rows = cursor.fetchall()
    # jsonb arrives as text (Django's adapters); orjson decodes it several times faster.
    return sorted(
        (ClaimedEvent(*row[:8], orjson.loads(row[8]), orjson.loads(row[9])) for row in rows),
        key=lambda event: event.id,
    )


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
