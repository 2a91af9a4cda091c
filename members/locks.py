"""The per-member lock every writer of a member's computed state takes (refreshes, points
commands), so each member has one writer at a time; and the membership locks of tags and
segments.

One order for all of them, so no two transactions deadlock: these member locks first (sorted),
then the ownership rows of the orders a refresh's claims change (``members.orders``, in order
of source and order id), then the points accounts a transaction writes, all at once in member-id order
(``members.loyalty.services._accounts_lock``), then tag and segment memberships (sorted), and
the segments' size rows last. Each kind is taken once per transaction, all its keys in one
statement: a refresh that recomputes some members and advances others goes through both paths
kind by kind (``members.services._members_write``), never one path after the other."""

from django.conf import settings
from django.db import connection

#: Advisory-lock key space of member writers (the two-key form, apart from the identity
#: lock's one-key form). Two workers may claim marks of the same member; the second refresh
#: leaves that member's marks for a later batch (``member_refresh_locks_free``), or, holding no
#: other, waits for the first and then recomputes from what it committed.
MEMBER_REFRESH_LOCK_SPACE = 0x4D52
_LOCK_KEY_RANGE = 2**31 - 1


def _lock_key(member_id: int) -> int:
    return member_id % _LOCK_KEY_RANGE


def member_refresh_locks(member_ids: set[int]) -> None:
    """Lock these members against other refreshes and points commands until the transaction
    ends. Taken in one global order (sorted keys), so two lockers never deadlock."""
    keys = sorted({_lock_key(member_id) for member_id in member_ids})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k",
            [MEMBER_REFRESH_LOCK_SPACE, keys],
        )


def member_refresh_locks_free(member_ids: set[int]) -> set[int]:
    """Lock those of these members no other transaction holds (``member_refresh_locks``),
    without waiting; returns them. Never waiting, it needs no order."""
    keys: dict[int, set[int]] = {}
    for member_id in member_ids:
        keys.setdefault(_lock_key(member_id), set()).add(member_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT k FROM unnest(%s::int[]) AS k WHERE pg_try_advisory_xact_lock(%s, k)",
            [sorted(keys), MEMBER_REFRESH_LOCK_SPACE],
        )
        return {member_id for (key,) in cursor.fetchall() for member_id in keys[key]}


#: Advisory-lock key spaces (two-key form) of a tag's and a segment's membership.
TAG_LOCK_SPACE = 0x5447
SEGMENT_LOCK_SPACE = 0x5347


def memberships_lock(*, tag_ids: list[int], segment_ids: list[int], exclusive: bool) -> None:
    """Hold these tags' and segments' membership until the transaction ends: exclusively for a
    full recompute (one statement over all members), shared for the incremental path (a batch
    of refreshed members), so the two never interleave on one tag or segment. Taken in one
    global order."""
    keys = sorted({(TAG_LOCK_SPACE, pk) for pk in tag_ids} | {(SEGMENT_LOCK_SPACE, pk) for pk in segment_ids})
    if not keys:
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count({function}(k.space, k.id)) FROM unnest(%s::int[], %s::int[]) AS k(space, id)",  # noqa: S608
            [[space for space, _ in keys], [pk for _, pk in keys]],
        )


def full_compute_memory() -> None:
    """Give this transaction's full recompute the memory to hash a grouped pass over all
    members: a rule's "did not" over millions of members is a ``NOT IN`` that PostgreSQL only
    hashes when it fits in ``work_mem`` (otherwise it probes the list once per member:
    minutes instead of seconds at 1M members). ``SEGMENTS_COMPUTE_WORK_MEM``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('work_mem', %s, true)", [settings.SEGMENTS_COMPUTE_WORK_MEM])
