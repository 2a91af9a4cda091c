"""The members refresh queue's way in: every write that wants members refreshed marks them here.

Members keep one queue of their own (``DirtyMark``), which the refresh claims
(``members.services.members_refresh_batch``). It is filled from two sides:

- identity hands over "these members changed" through its own outbox
  (``identity.models.MemberChange``): ``member_changes_accept`` takes its rows and marks the
  members, in one transaction, so a change is never lost nor kept twice in both queues;
- members' own writes that change what a refresh computes (points adjusted, a manual tag,
  a window of a rule closing, a full recompute racing a refresh) call ``members_mark_dirty``.

Why hand identity's rows over instead of refreshing from identity's outbox directly: the
refresh claims by mark id, takes a member's later marks by index and skips parked members'
marks; reading two queues would double each of those statements on the hot path, while the
handover is two set-based statements per batch of changes (a delete returning the members
and one insert), the cost of one resolution batch's former insert of marks.
"""

from collections.abc import Iterable

from celery import current_app
from django.conf import settings
from django.db import transaction

from cdp.db import binary_parameters_cursor
from cdp.tasks import enqueue
from identity.services import member_changes_take, member_changes_vacuum_due
from members.models import DirtyMark

#: The refresh's task (``members.tasks.refresh_pending``), found by name: every app that marks
#: members nudges it, and none of them should import the refresh it nudges (the refresh imports
#: them). The members app loads ``members.tasks`` when it is ready, so the name is registered.
REFRESH_TASK = "members.refresh_pending"

#: How many of identity's change rows one transaction hands over.
MEMBER_CHANGES_BATCH_SIZE = 5000

_MARKS = DirtyMark._meta.db_table
_MARK = f"INSERT INTO {_MARKS} (member_id, marked_at, from_events) SELECT unnest(%b::bigint[]), now(), %b"
# Members already waiting are not marked again: for writes that look for due members each
# time they run (a recheck), so a member due for an hour is not marked every minute.
_MARK_UNLESS_MARKED = f"""
INSERT INTO {_MARKS} (member_id, marked_at, from_events) SELECT k.id, now(), false FROM unnest(%b::bigint[]) AS k(id)
WHERE NOT EXISTS (SELECT 1 FROM {_MARKS} AS d WHERE d.member_id = k.id)
"""  # noqa: S608 - model table only


def members_mark_dirty(
    *, member_ids: Iterable[int], unless_marked: bool = False, from_events: bool = False
) -> int:
    """Mark these members for a refresh, in the caller's transaction; returns how many marks
    were made. ``unless_marked``: skip members that have a mark already (a recheck; never for
    a change a refresh in progress may have missed, which needs a mark of its own). The
    caller nudges the refresh after its commit when it should not wait for the next one
    (``members_refresh_enqueue``). ``from_events``: the marks stand for changed events only
    (identity's outbox), which the refresh may find already covered (``DirtyMark.from_events``)."""
    ids = sorted(set(member_ids))
    if not ids:
        return 0
    with binary_parameters_cursor() as cursor:
        if unless_marked:
            cursor.execute(_MARK_UNLESS_MARKED, [ids])
        else:
            cursor.execute(_MARK, [ids, from_events])
        return cursor.rowcount


def member_changes_accept(*, batch_size: int = MEMBER_CHANGES_BATCH_SIZE) -> int:
    """Hand identity's "members changed" rows over to the refresh queue until its outbox is
    empty (but for rows another worker is handing over); returns how many rows were taken.
    Each batch is taken and marked in one transaction of its own; the outbox is vacuumed after
    every ``MEMBER_REFRESH_QUEUE_VACUUM_EVERY`` rows this process took."""
    taken = 0
    while True:
        with transaction.atomic():
            member_ids = member_changes_take(limit=batch_size)
            members_mark_dirty(member_ids=member_ids, from_events=True)
        taken += len(member_ids)
        if len(member_ids) < batch_size:
            member_changes_vacuum_due(taken=taken, every=settings.MEMBER_REFRESH_QUEUE_VACUUM_EVERY)
            return taken


def members_refresh_enqueue() -> None:
    """Nudge the members refresh (also an ``on_commit`` callback). Never raises: a lost nudge
    only delays the refresh until the sweep, whose pipeline run refreshes members too."""
    enqueue(current_app.tasks[REFRESH_TASK], fallback="the sweep of unprocessed events")
