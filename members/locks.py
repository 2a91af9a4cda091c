"""The per-member lock every writer of a member's computed state takes (refreshes, points
commands), so each member has one writer at a time."""

from django.db import connection

#: Advisory-lock key space of member writers (the two-key form, apart from the identity
#: lock's one-key form). Two workers may claim marks of the same member; the lock makes the
#: second refresh wait for the first and then recompute from what it committed.
MEMBER_REFRESH_LOCK_SPACE = 0x4D52
_LOCK_KEY_RANGE = 2**31 - 1


def member_refresh_locks(member_ids: set[int]) -> None:
    """Lock these members against other refreshes and points commands until the transaction
    ends. Taken in one global order (sorted keys), so two lockers never deadlock."""
    keys = sorted({member_id % _LOCK_KEY_RANGE for member_id in member_ids})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k",
            [MEMBER_REFRESH_LOCK_SPACE, keys],
        )
