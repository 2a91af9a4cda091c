"""Parked events: those a pipeline stage failed on, out of the queue until replayed.

``events.pipeline`` parks an event once bisection has narrowed a failing batch down to it;
staff list the parked ones (admin, staff API, ``/health/``) and replay them after a fix
(``manage.py replay_failed``, the staff API).
"""

import logging
import traceback
from collections.abc import Collection

from django.db import connection

from cdp.metrics import PARKED
from events.models import ParkedEvent, PendingEvent

logger = logging.getLogger(__name__)

#: What is kept of an error's message and traceback.
ERROR_CHARS, TRACEBACK_CHARS = 2_000, 20_000

_PARKED, _PENDING = ParkedEvent._meta.db_table, PendingEvent._meta.db_table
# Taken out of the queue and parked in one statement, only if this worker can take its queue
# row (one another worker holds is that worker's to process, or to park).
_PARK = f"""
WITH taken AS (
    DELETE FROM {_PENDING} WHERE event_id = ANY(ARRAY(
        SELECT event_id FROM {_PENDING} WHERE event_id = %s FOR UPDATE SKIP LOCKED))
    RETURNING event_id
)
INSERT INTO {_PARKED} AS p (event_id, stage, error, traceback, attempts, first_failed_at, last_failed_at)
SELECT event_id, %s, %s, %s, 1, statement_timestamp(), statement_timestamp() FROM taken
ON CONFLICT (event_id) DO UPDATE SET
    stage = EXCLUDED.stage, error = EXCLUDED.error, traceback = EXCLUDED.traceback,
    attempts = p.attempts + 1, last_failed_at = EXCLUDED.last_failed_at, replayed_at = NULL
RETURNING p.attempts
"""  # noqa: S608 - model tables only
# Marked replayed and queued again in one statement: a second replay finds nothing to do.
_REPLAY = f"""
WITH replayed AS (
    UPDATE {_PARKED} SET replayed_at = statement_timestamp()
    WHERE replayed_at IS NULL AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))
      AND (%s::text IS NULL OR stage = %s::text)
    RETURNING event_id
), queued AS (
    INSERT INTO {_PENDING} (event_id) SELECT event_id FROM replayed ON CONFLICT DO NOTHING
)
SELECT event_id FROM replayed ORDER BY event_id
"""  # noqa: S608 - model tables only


def error_text(error: BaseException) -> tuple[str, str]:
    """The error's one-line description and its traceback, as PostgreSQL can store them (no
    NUL, no lone surrogate: the error of a bad value often quotes it)."""

    def storable(text: str, limit: int) -> str:
        return text[-limit:].encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")

    described = f"{type(error).__name__}: {error}"
    return storable(described, ERROR_CHARS), storable(
        "".join(traceback.format_exception(error)), TRACEBACK_CHARS
    )


def event_park(*, event_id: int, stage: str, error: BaseException) -> int:
    """Take the event out of the queue and park it with the stage and error it failed with,
    in its own statement (the caller's transaction, if any); returns 1, or 0 when another
    worker holds its queue row."""
    described, trace = error_text(error)
    with connection.cursor() as cursor:
        cursor.execute(_PARK, [event_id, stage, described, trace])
        row = cursor.fetchone()
    if row is None:
        return 0
    logger.warning("Parked event %s (attempt %s) at %s: %s", event_id, row[0], stage, described)
    PARKED.labels("event").inc()
    return 1


def parked_events_replay(*, ids: Collection[int] | None = None, stage: str | None = None) -> list[int]:
    """Queue parked events again after a fix: those with these parked ids, or failed at this
    stage, or all; returns the event ids queued. Exactly once: each parked row is marked
    replayed in the statement that queues its event. The caller nudges the pipeline after
    the commit (``events.tasks.process_pending_enqueue``)."""
    wanted = sorted(ids) if ids is not None else None
    with connection.cursor() as cursor:
        cursor.execute(_REPLAY, [wanted, wanted, stage, stage])
        return [row[0] for row in cursor.fetchall()]


def parked_events_count() -> int:
    """How many events are parked now (replayed ones are not)."""
    return ParkedEvent.objects.filter(replayed_at__isnull=True).count()
