"""The per-member summary of the events funnels read (``MemberFunnelEvents``): kept by the
insights rollup job beside the members' KPI facts, never by the members refresh itself.

What it holds: for each resolved member (an event's member after identity resolution, an
absorbed member read as its survivor, exactly as ``funnels.funnel_members_sql`` reads the log)
and each event name, the member's events of that name as parallel arrays in the member's order
of events (time, then event id): their places in that order, times, channels and stores. Every
named event is kept (any name can be a step of an ad-hoc funnel); event properties are not, so
a funnel with a step filtering on ``properties.*`` reads the log (``funnels.summary_answers``).

How it stays exact:

- **Per changed member**: ``insights_refresh`` rebuilds the summary of each batch of members it
  takes from the queue (``DirtyMember``: merges, splits, late events, refunds, anything the
  members refresh recomputed), in the batch's transaction: every row of the members and of
  their survivors deleted, and rebuilt from their events as they are now (``summary_rebuild``).
- **Whole**: ``summary_from_scratch`` (``compute_insights`` and the nightly task, after the
  rollups, which it follows apart: ``services.compute_from`` is the rollups only).
- **Erasure**: ``summary_rebuild`` is one of ``PRIVACY_ERASURE_HOOKS``, so the events a
  source's rule deletes leave the summary in the erasure's transaction.
- **Read only where up to date** (``READY_SQL``): built whole at least once since the last
  time the queue was emptied without it (``_from_scratch`` of the rollups clears the mark);
  the members waiting in the queue are read from the log beside it (``funnels.PENDING``), up
  to ``MAX_PENDING`` of them. Otherwise funnels read the event log, as before.
"""

from collections.abc import Sequence

from django.db import connection, transaction

from cdp.db import binary_parameters_cursor, rows_delete
from members.insights.models import DirtyMember, MemberFunnelEvents, RollupWatermark

TABLE = MemberFunnelEvents._meta.db_table
#: The watermark row saying the summary was built whole (1) and kept since, or not (0).
MARK = "funnel_events"
#: Sort memory of the summary builds: one sort of every named event by member and time.
WORK_MEM = "256MB"

# The summary rows of the events ``events`` (member, id, event, at, channel, store_code): a
# rank per member in (time, id) order, then the arrays per name and member in rank order,
# written in (name, member) order so that a funnel's read of one name is one stretch of the
# table. The arrays take their rows in the order of the sorted subquery (one sort for them
# all: an aggregate's own ORDER BY sorts every group apart, four small sorts per row made).
# Names compared byte by byte (``COLLATE "C"``): the order only gathers each name's rows.
_PACKED = (
    "SELECT member, name, array_agg(rank), array_agg(us), array_agg(channel), array_agg(store_code)"
    ' FROM (SELECT member, event COLLATE "C" AS name, channel, store_code,'
    " (extract(epoch FROM at) * 1000000)::bigint AS us,"
    " row_number() OVER (PARTITION BY member ORDER BY at, id)::int AS rank FROM events"
    " ORDER BY name, member, rank) AS ranked"
    " GROUP BY name, member ORDER BY name, member"
)
_COLUMNS = "(member_id, event, ranks, times, channels, stores)"


# The members of a batch are found by key, one index walk each (``unnest`` joined laterally,
# ``OFFSET 0`` keeping each walk apart), never by ``id = ANY(...)`` or a join the planner
# weighs: without statistics (autovacuum late or off) it took ``= ANY`` of a batch's 2,000 keys
# for a tenth of the table and the join on ``merged_into_id`` for all of it, and scanned
# ``members_member`` whole, three times a batch (the soak, 2026-12-05: 31,000 shared blocks a
# rebuild, growing with the members). Exact as the plain query: the two branches of the
# rebuild's members are disjoint (absorbed or not), and the keys are distinct.
_SURVIVORS = (
    # The survivors of these members; every member merged into one of them.
    "WITH survivors AS (SELECT DISTINCT COALESCE(m.merged_into_id, m.id) AS id"
    " FROM unnest(%b::bigint[]) AS k(id)"
    " CROSS JOIN LATERAL (SELECT id, merged_into_id FROM members_member WHERE id = k.id OFFSET 0) AS m)"
    " SELECT id FROM survivors UNION SELECT m.id FROM survivors s"
    " CROSS JOIN LATERAL (SELECT id FROM members_member WHERE merged_into_id = s.id OFFSET 0) AS m"
)
_REBUILD = (
    f"INSERT INTO {TABLE} {_COLUMNS} WITH events AS ("  # noqa: S608
    " SELECT COALESCE(m.merged_into_id, m.id) AS member, e.id, e.event, e.timestamp AS at,"
    " e.channel, e.store_code FROM ("
    # The members not absorbed among these, and every member absorbed into one of them.
    " SELECT m.id, m.merged_into_id FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL"
    " (SELECT id, merged_into_id FROM members_member WHERE id = k.id AND merged_into_id IS NULL OFFSET 0) AS m"
    " UNION ALL SELECT m.id, m.merged_into_id FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL"
    " (SELECT id, merged_into_id FROM members_member WHERE merged_into_id = k.id OFFSET 0) AS m) AS m"
    # One index walk per member (the resolutions by member), as the members refresh reads.
    " CROSS JOIN LATERAL (SELECT ev.* FROM identity_eventresolution r"
    " CROSS JOIN LATERAL (SELECT * FROM events_event WHERE id = r.event_id OFFSET 0) AS ev"
    " WHERE r.member_id = m.id AND ev.event <> '' OFFSET 0) AS e"
    f") {_PACKED}"
)


def summary_rebuild(member_ids: Sequence[int]) -> int:
    """The summary of these members again, from their events as they are now: each member's
    survivor (itself unless absorbed) rebuilt, and the rows of an absorbed member, or of a
    member absorbed into a survivor, deleted (its events are its survivor's). In the caller's
    transaction; set-wise, a few statements whatever the batch's size, each member found by
    key. Returns the rows written.

    Also erasure's hook (``PRIVACY_ERASURE_HOOKS``): the events a source's rule deletes leave
    the summary in the erasure's transaction, not at the next nightly."""
    ids = sorted(set(member_ids))
    if not ids:
        return 0
    with binary_parameters_cursor() as cursor:
        cursor.execute(_SURVIVORS, [ids])
        touched = sorted({*ids, *(row[0] for row in cursor.fetchall())})
        rows_delete(MemberFunnelEvents, column="member_id", keys=touched)
        cursor.execute(_REBUILD, [touched, touched])
        return cursor.rowcount


def summary_from_scratch() -> int:
    """The whole summary again from the event log (one scan and two sorts), in one transaction
    that replaces it; marks it up to date. Returns the rows written.

    Marked not up to date first, committed: funnels then read the log and never wait on the
    table's lock while it is emptied and written."""
    with transaction.atomic():
        summary_mark(built=False)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        cursor.execute(f"TRUNCATE {TABLE}")
        cursor.execute(
            f"INSERT INTO {TABLE} {_COLUMNS} WITH events AS ("  # noqa: S608
            " SELECT COALESCE(m.merged_into_id, m.id) AS member, e.id, e.event, e.timestamp AS at,"
            " e.channel, e.store_code FROM events_event e"
            " JOIN identity_eventresolution r ON r.event_id = e.id JOIN members_member m ON m.id = r.member_id"
            f" WHERE e.event <> '') {_PACKED}"
        )
        written = cursor.rowcount
        summary_mark(built=True)
    return written


def summary_mark(*, built: bool) -> None:
    """Say the summary was built whole and is kept by the queue (or no longer is: the queue was
    emptied without it). In the caller's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RollupWatermark._meta.db_table} (name, value) VALUES (%s, %s)"  # noqa: S608
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [MARK, int(built)],
        )


#: The most queued members a funnel reads from the log beside the summary (an index walk each);
#: with more waiting (a backlog: a big merge run, an import) the whole funnel reads the log.
MAX_PENDING = 20_000
#: True when funnels may read the summary: built whole and kept since, and at most
#: ``MAX_PENDING`` members queued (those the funnel reads from the log).
READY_SQL = (
    f"SELECT EXISTS (SELECT 1 FROM {RollupWatermark._meta.db_table} WHERE name = '{MARK}' AND value = 1)"  # noqa: S608
    f" AND (SELECT count(*) FROM (SELECT 1 FROM {DirtyMember._meta.db_table} LIMIT {MAX_PENDING + 1}) AS q)"
    f" <= {MAX_PENDING}"
)
