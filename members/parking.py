"""Parked members: those whose refresh failed, left out of the refresh until replayed.

``members.services.members_refresh_batch`` parks a member once bisection has narrowed a
failing batch down to it: its marks leave the queue, and the refresh's claim skips the marks
made for it while it is parked (so they do not fail every batch they land in). Staff list
the parked ones (admin, staff API, ``/health/``) and replay them after a fix
(``manage.py replay_failed``, the staff API).
"""

import logging
from collections.abc import Collection

from django.db import connection

from cdp.metrics import PARKED
from events.parking import error_text
from members.models import DirtyMark, ParkedMember

logger = logging.getLogger(__name__)

_PARKED, _MARKS = ParkedMember._meta.db_table, DirtyMark._meta.db_table
# Its marks out of the queue and the member parked in one statement, only if this worker can
# take a mark of it (marks another refresh holds are that refresh's).
_PARK = f"""
WITH taken AS (
    DELETE FROM {_MARKS} WHERE id = ANY(ARRAY(
        SELECT id FROM {_MARKS} WHERE member_id = %s FOR UPDATE SKIP LOCKED))
    RETURNING member_id
)
INSERT INTO {_PARKED} AS p (member_id, error, traceback, attempts, first_failed_at, last_failed_at)
SELECT DISTINCT member_id, %s, %s, 1, statement_timestamp(), statement_timestamp() FROM taken
ON CONFLICT (member_id) DO UPDATE SET
    error = EXCLUDED.error, traceback = EXCLUDED.traceback, attempts = p.attempts + 1,
    last_failed_at = EXCLUDED.last_failed_at, replayed_at = NULL
RETURNING p.attempts
"""  # noqa: S608 - model tables only
# Marked replayed and marked dirty again in one statement: a second replay finds nothing to do.
_REPLAY = f"""
WITH replayed AS (
    UPDATE {_PARKED} SET replayed_at = statement_timestamp()
    WHERE replayed_at IS NULL AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))
    RETURNING member_id
), marked AS (
    INSERT INTO {_MARKS} (member_id, marked_at, from_events) SELECT member_id, now(), false FROM replayed
)
SELECT member_id FROM replayed ORDER BY member_id
"""  # noqa: S608 - model tables only


def member_park(*, member_id: int, error: BaseException) -> int:
    """Take the member's marks out of the queue and park it with the error its refresh
    failed with, in one statement (the caller's transaction, if any); returns 1, or 0 when
    another refresh holds its marks."""
    described, trace = error_text(error)
    with connection.cursor() as cursor:
        cursor.execute(_PARK, [member_id, described, trace])
        row = cursor.fetchone()
    if row is None:
        return 0
    logger.warning("Parked member %s (attempt %s): %s", member_id, row[0], described)
    PARKED.labels("member").inc()
    return 1


def parked_members_replay(*, ids: Collection[int] | None = None) -> list[int]:
    """Mark parked members dirty again after a fix (those with these parked ids, or all);
    returns the member ids marked. Exactly once: each parked row is marked replayed in the
    statement that marks its member. The caller nudges the pipeline after the commit."""
    wanted = sorted(ids) if ids is not None else None
    with connection.cursor() as cursor:
        cursor.execute(_REPLAY, [wanted, wanted])
        return [row[0] for row in cursor.fetchall()]


def parked_members_count() -> int:
    """How many members are parked now (replayed ones are not)."""
    return ParkedMember.objects.filter(replayed_at__isnull=True).count()
