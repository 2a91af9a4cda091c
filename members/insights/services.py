"""Writes of the KPI rollups: what the members refresh touched, rolled up per day, incrementally.

How a change reaches the board:

1. The members refresh (``members.services.members_recompute``) calls its hooks
   (``MEMBERS_REFRESH_HOOKS``) with the members it recomputed — merged, split, refunded, late
   POS upload, consent changed: anything that changes a member's figures goes through it.
   ``members_changed`` (our hook) inserts their ids into ``DirtyMember``, one statement, in the
   refresh's transaction. Members never import insights: the hook is named in settings.
2. ``insights_refresh`` (beat, ``INSIGHTS_REFRESH_INTERVAL_SECONDS``) takes those rows in
   batches; for each batch, set-wise in SQL (``member_days_sql``), it stages the members' events
   per day, orders, identifiers and consent, computes their member-day rows (what
   ``kpis.member_days`` defines), compares them with the stored ones and replaces only the rows
   that differ; the days on which they differ become ``DirtyDay``.
3. The dirty days' rollups are computed again from the member-day rows: one
   ``INSERT … SELECT … GROUP BY`` for all of them.

Points come from the append-only ledger (the days of rows past a watermark); coupons are
counted again in full each run (one grouped scan of a table far smaller than the events).

One run at a time: a transaction-level advisory lock (a second run finds it taken and leaves).
"""

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction

from cdp.db import binary_parameters_cursor
from events.models import Event
from identity.models import EventResolution, Identifier
from members.consent.models import ConsentStatement
from members.insights import kpis, member_days_sql
from members.insights.models import (
    CouponRollup,
    DailyRollup,
    DirtyDay,
    DirtyMember,
    MemberDay,
    PointsRollup,
    RollupWatermark,
)
from members.loyalty.models import Coupon, CouponCampaign, CouponRedemption, PointsEntry
from members.models import Member, MemberOrder

logger = logging.getLogger(__name__)

#: Members per transaction of the rollup job.
BATCH_SIZE = 2000
_LOCK = 0x1A51_6475  # "insights" advisory lock key
#: How long a ledger row must have been committed before the watermark passes it.
WATERMARK_LAG = timedelta(minutes=5)


def members_changed(member_ids: Iterable[int]) -> None:
    """The members refresh's hook: these members were recomputed; their KPI rows follow at the
    next rollup. In the caller's transaction (a rolled-back refresh leaves nothing)."""
    ids = sorted(set(member_ids))
    if ids:
        with binary_parameters_cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {DirtyMember._meta.db_table} (member_id) SELECT unnest(%b::bigint[])", [ids]
            )


def insights_refresh(*, time_budget: float = 60.0) -> dict[str, int]:
    """Roll up what changed since the last run; returns what it did. Each batch of members is
    one transaction; the days are rolled up in the same transaction as the last batch."""
    done = {"members": 0, "days": 0, "points_days": 0}
    started = time.monotonic()
    while True:
        with transaction.atomic():
            if not _lock():
                logger.info("insights: another rollup is running")
                return done
            members = _claim_members(BATCH_SIZE)
            if members:
                member_days_refresh(members)
            # Rows of one member may be many (one per refresh): a batch can hold fewer members
            # than its size with more waiting, so only an empty claim says the queue is done.
            more = bool(members) and time.monotonic() - started < time_budget
            done["members"] += len(members)
            if not more:
                done["points_days"] = _points_roll()
                _coupons_roll()
                done["days"] = _days_roll()
                return done


def compute_from(*, since: date | None) -> dict[str, int]:
    """Everything again (``manage.py compute_insights``): every member's rows are recomputed
    and every day from ``since`` is rolled up again whether or not it changed. With ``since``,
    rows that did not change are not rewritten; without it, from scratch (``_from_scratch``)."""
    if since is None:
        return _from_scratch()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DirtyMember._meta.db_table} (member_id) SELECT id FROM {Member._meta.db_table} "  # noqa: S608
            "WHERE status IN ('active', 'erased') UNION SELECT DISTINCT member_id FROM "
            f"{MemberDay._meta.db_table}"
        )
        cursor.execute(
            f"INSERT INTO {DirtyDay._meta.db_table} (day) SELECT d::date FROM generate_series("  # noqa: S608
            f"%s::date, (SELECT max(day) FROM {MemberDay._meta.db_table}), interval '1 day') AS d "
            "ON CONFLICT DO NOTHING",
            [since],
        )
    return insights_refresh(time_budget=float("inf"))


def _from_scratch() -> dict[str, int]:
    """The rollups from scratch, in one transaction: the member-day rows emptied, every
    member's facts staged at once (``member_days_sql.facts_stage_all``: a scan per table, not
    an index walk per member as a batch of changed members reads them), their rows written
    straight (nothing to compare), every day holding one rolled up. Until it commits, the
    board reads the rollups as they were.

    The queue of changed members is emptied first: every change committed before that is
    read by the statements after it. A change committed later queues its member again, for
    the next ``insights_refresh``."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Wait for a running rollup rather than leave: this run replaces all it would write.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            cursor.execute(f"DELETE FROM {DirtyMember._meta.db_table}")  # noqa: S608
            cursor.execute(f"TRUNCATE {MemberDay._meta.db_table}")
            cursor.execute(f"UPDATE {RollupWatermark._meta.db_table} SET value = 0")  # noqa: S608
            cursor.execute(f"DELETE FROM {DailyRollup._meta.db_table}")  # noqa: S608
        member_days_sql.facts_stage_all()
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {member_days_sql.STAGE_MEMBER}")  # noqa: S608
            members = cursor.fetchone()[0]
        _rows_write_unindexed()
        done = {"members": members, "points_days": _points_roll()}
        _coupons_roll()
        done["days"] = _days_roll()
    return done


def _lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK])
        return bool(cursor.fetchone()[0])


def _claim_members(limit: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {DirtyMember._meta.db_table} WHERE member_id IN (SELECT member_id FROM "  # noqa: S608
            f"{DirtyMember._meta.db_table} ORDER BY member_id LIMIT %s) RETURNING member_id",
            [limit],
        )
        return sorted({row[0] for row in cursor.fetchall()})


def member_histories(member_ids: list[int]) -> list[kpis.MemberHistory]:
    """What the KPIs read of these members (active or erased; a member merged away has none):
    four queries for the batch. The plain-Python reading of what ``member_days_sql.facts_stage``
    stages: tests hold the SQL rows to ``kpis.member_days`` of these histories."""
    tz = settings.TIME_ZONE
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Member._meta.db_table} WHERE id = ANY(%b::bigint[]) "  # noqa: S608
            "AND status IN ('active', 'erased')",
            [member_ids],
        )
        counted = sorted(row[0] for row in cursor.fetchall())
        events: dict[int, list[kpis.EventCount]] = defaultdict(list)
        cursor.execute(
            f"SELECT m.id, (e.timestamp AT TIME ZONE %b)::date AS day, e.channel, e.store_code, count(*) "  # noqa: S608
            # Lateral, as the member refresh reads them: one index walk per member whatever the
            # planner believes about table sizes (a hash join would scan every resolution).
            f"FROM unnest(%b::bigint[]) AS m(id) CROSS JOIN LATERAL (SELECT ev.timestamp, ev.channel, ev.store_code "
            f"FROM {EventResolution._meta.db_table} AS r JOIN {Event._meta.db_table} AS ev ON ev.id = r.event_id "
            "WHERE r.member_id = m.id OFFSET 0) AS e GROUP BY 1, 2, 3, 4",
            [tz, counted],
        )
        for member_id, day, channel, store, count in cursor.fetchall():
            events[member_id].append(kpis.EventCount(day, channel, store, count))
        orders: dict[int, list[kpis.OrderFact]] = defaultdict(list)
        cursor.execute(
            f"SELECT member_id, (placed_at AT TIME ZONE %b)::date, channel, store_code, total - refunded "  # noqa: S608
            f"FROM {MemberOrder._meta.db_table} WHERE member_id = ANY(%b::bigint[]) "
            "AND placed_at IS NOT NULL AND currency = %b",
            [tz, counted, settings.CDP_CURRENCY],
        )
        for member_id, day, channel, store, net in cursor.fetchall():
            orders[member_id].append(kpis.OrderFact(day, channel, store, net))
        cursor.execute(
            f"SELECT DISTINCT member_id FROM {Identifier._meta.db_table} "  # noqa: S608
            "WHERE member_id = ANY(%b::bigint[]) AND NOT type = ANY(%b::text[])",
            [counted, list(member_days_sql.ANONYMOUS_TYPES)],
        )
        identified = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            f"SELECT m.id FROM unnest(%b::bigint[]) AS m(id) WHERE (SELECT cs.state FROM "  # noqa: S608
            f"{ConsentStatement._meta.db_table} AS cs WHERE cs.member_id = m.id AND cs.purpose = %b "
            "AND cs.at <= now() ORDER BY cs.at DESC, cs.id DESC LIMIT 1) = 'granted'",
            [counted, member_days_sql.CONSENT_PURPOSE],
        )
        granted = {row[0] for row in cursor.fetchall()}
    return [
        kpis.MemberHistory(m, m in identified, m in granted, tuple(events[m]), tuple(orders[m]))
        for m in counted
    ]


def member_days_refresh(member_ids: list[int]) -> None:
    """Recompute these members' rows in SQL (``member_days_sql``), compare them with the stored
    ones, replace the rows that differ and mark their days dirty. Set-wise: a few statements for
    the batch, whatever its size; a member whose rows did not change costs its reads, and
    nothing is written. A batch none of whose members has stored rows (the nightly from
    scratch, new members) is written straight: nothing to compare."""
    member_days_sql.facts_stage(member_ids)
    table, stage, diff = MemberDay._meta.db_table, member_days_sql.STAGE_ROW, member_days_sql.STAGE_DIFF
    dirty = DirtyDay._meta.db_table
    key = ("member_id", "day", "channel", "store_code")
    names = ", ".join([*key, *kpis.COLUMNS])
    # The batch's stored rows, walked by the member index one member at a time, whatever the
    # planner believes of the table (EXPLAIN ANALYZE: ``member_id = ANY(…)`` was a scan of every
    # member's rows, 160,000 of them for 67 members, its statistics lagging the nightly's writes).
    walk = "unnest(%b::bigint[]) AS ids(id) CROSS JOIN LATERAL (SELECT * FROM {} WHERE member_id = ids.id {}) AS o"
    with binary_parameters_cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT FROM {walk.format(table, 'LIMIT 1')})", [member_ids])  # noqa: S608
        if not cursor.fetchone()[0]:
            _rows_write_straight()
            return
    member_days_sql.rows_compute()
    differ = " OR ".join(f"n.{c} IS DISTINCT FROM o.{c}" for c in kpis.COLUMNS)
    matches = " AND ".join(f"s.{c} = d.{c}" for c in key)
    with binary_parameters_cursor() as cursor:
        # The rows that differ, by key: added, removed (the member merged away too) or changed.
        cursor.execute(
            f"INSERT INTO {diff} SELECT {', '.join(key)}, o.id FROM {stage} AS n "  # noqa: S608
            f"FULL JOIN (SELECT o.* FROM {walk.format(table, 'OFFSET 0')}) AS o USING ({', '.join(key)}) WHERE {differ}",
            [member_ids],
        )
        if cursor.rowcount:
            cursor.execute(
                f"DELETE FROM {table} WHERE id = ANY(ARRAY(SELECT stored_id FROM {diff} WHERE stored_id IS NOT NULL))"  # noqa: S608
            )
            cursor.execute(
                f"INSERT INTO {table} ({names}) SELECT {', '.join(f's.{c}' for c in key + kpis.COLUMNS)} "  # noqa: S608
                f"FROM {stage} AS s JOIN {diff} AS d ON {matches}"
            )
            cursor.execute(
                f"INSERT INTO {dirty} (day) SELECT DISTINCT day FROM {diff} ON CONFLICT DO NOTHING"  # noqa: S608
            )


def _rows_write_straight() -> None:
    """The staged members' rows written as they are (none of them has stored rows), their days
    marked dirty."""
    names = ", ".join(["member_id", "day", "channel", "store_code", *kpis.COLUMNS])
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH written AS (INSERT INTO {MemberDay._meta.db_table} ({names}) {member_days_sql.ROWS_SELECT} "  # noqa: S608
            f"RETURNING day) INSERT INTO {DirtyDay._meta.db_table} (day) SELECT DISTINCT day FROM written "
            "ON CONFLICT DO NOTHING"
        )


def _rows_write_unindexed() -> None:
    """``_rows_write_straight`` into the emptied member-day table with its secondary indexes
    dropped and built again after: building an index over the rows costs about half of keeping
    it up to date row by row (156,068 rows: 0.5 s of CPU against 1.0 s for the two indexes,
    the rows' writing included). The definitions are read from the catalog, so they stay the
    migrations'; the table is locked by the ``TRUNCATE`` of this transaction, so no one reads
    it without them, and a failure rolls the drops back too."""
    table = MemberDay._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.conname, pg_get_constraintdef(c.oid), i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index AS i LEFT JOIN pg_constraint AS c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary ORDER BY 3",
            [table],
        )
        indexes = cursor.fetchall()
        for constraint, _, index, _ in indexes:
            cursor.execute(
                f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"' if constraint else f"DROP INDEX {index}"
            )
    _rows_write_straight()
    with connection.cursor() as cursor:
        for constraint, definition, _, index_definition in indexes:
            cursor.execute(
                f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {definition}'
                if constraint
                else index_definition
            )


def _days_roll() -> int:
    """Roll up the dirty days: their rollup rows replaced by the member-day rows' sums."""
    sums = ", ".join(f"sum({c})" for c in kpis.COLUMNS)
    columns = ", ".join(kpis.COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {DirtyDay._meta.db_table} RETURNING day")  # noqa: S608
        days = [row[0] for row in cursor.fetchall()]
        if not days:
            return 0
        cursor.execute(f"DELETE FROM {DailyRollup._meta.db_table} WHERE day = ANY(%s::date[])", [days])  # noqa: S608
        cursor.execute(
            f"INSERT INTO {DailyRollup._meta.db_table} (day, channel, store_code, {columns}) "  # noqa: S608
            f"SELECT day, channel, store_code, {sums} FROM {MemberDay._meta.db_table} "
            "WHERE day = ANY(%s::date[]) GROUP BY day, channel, store_code",
            [days],
        )
    return len(days)


def _points_roll() -> int:
    """Points of the days holding ledger rows past the watermark, summed again in full."""
    ledger, rollup = PointsEntry._meta.db_table, PointsRollup._meta.db_table
    tz = settings.TIME_ZONE
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RollupWatermark._meta.db_table} (name, value) VALUES ('points', 0) "  # noqa: S608
            "ON CONFLICT (name) DO NOTHING"
        )
        cursor.execute(f"SELECT value FROM {RollupWatermark._meta.db_table} WHERE name = 'points' FOR UPDATE")  # noqa: S608
        mark = cursor.fetchone()[0]
        # The watermark lags by WATERMARK_LAG: a row whose id was taken before a long transaction
        # committed it would otherwise fall behind the mark unseen. Its day is summed again.
        cursor.execute(
            f"SELECT coalesce(max(id), %s) FROM {ledger} WHERE created_at < now() - make_interval(secs => %s)",  # noqa: S608
            [mark, WATERMARK_LAG.total_seconds()],
        )
        top = max(mark, cursor.fetchone()[0])
        cursor.execute(f"SELECT DISTINCT (at AT TIME ZONE %s)::date FROM {ledger} WHERE id > %s", [tz, mark])  # noqa: S608
        days = [row[0] for row in cursor.fetchall()]
        if not days:
            return 0
        cursor.execute(f"DELETE FROM {rollup} WHERE day = ANY(%s::date[])", [days])  # noqa: S608
        cursor.execute(
            f"INSERT INTO {rollup} (day, channel, issued, redeemed, expired, net) "  # noqa: S608
            "SELECT d, CASE WHEN grouping(ch) = 1 THEN '*' ELSE ch END, "
            "coalesce(sum(points) FILTER (WHERE kind = 'earn'), 0), "
            "coalesce(-sum(points) FILTER (WHERE kind = 'redeem'), 0), "
            "coalesce(-sum(points) FILTER (WHERE kind = 'expire'), 0), sum(points) "
            f"FROM (SELECT (at AT TIME ZONE %s)::date AS d, coalesce(nullif(channel, ''), 'none') AS ch, kind, points "
            f"FROM {ledger} WHERE (at AT TIME ZONE %s)::date = ANY(%s::date[])) AS s "
            "GROUP BY GROUPING SETS ((d), (d, ch))",
            [tz, tz, days],
        )
        cursor.execute(f"UPDATE {RollupWatermark._meta.db_table} SET value = %s WHERE name = 'points'", [top])  # noqa: S608
    return len(days)


def _coupons_roll() -> None:
    """Coupons issued and redeemed per day, issuing channel and redeeming channel, in full."""
    tz = settings.TIME_ZONE
    issuing = "CASE WHEN cardinality(k.channels) = 1 THEN k.channels[1] ELSE 'any' END"
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {CouponRollup._meta.db_table}")  # noqa: S608
        cursor.execute(
            f"INSERT INTO {CouponRollup._meta.db_table} (day, issuing_channel, redeeming_channel, issued, redeemed) "  # noqa: S608
            "SELECT day, issuing, redeeming, sum(issued), sum(redeemed) FROM ("
            f"SELECT (c.issued_at AT TIME ZONE %s)::date AS day, {issuing} AS issuing, '*' AS redeeming, "
            f"1 AS issued, 0 AS redeemed FROM {Coupon._meta.db_table} AS c "
            f"JOIN {CouponCampaign._meta.db_table} AS k ON k.id = c.campaign_id "
            f"UNION ALL SELECT (r.redeemed_at AT TIME ZONE %s)::date, {issuing}, r.channel, 0, 1 "
            f"FROM {CouponRedemption._meta.db_table} AS r JOIN {Coupon._meta.db_table} AS c ON c.id = r.coupon_id "
            f"JOIN {CouponCampaign._meta.db_table} AS k ON k.id = c.campaign_id WHERE r.released_at IS NULL"
            ") AS x GROUP BY day, issuing, redeeming",
            [tz, tz],
        )
