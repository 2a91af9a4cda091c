"""Writes of the KPI rollups: what the members refresh touched, rolled up per day, incrementally.

How a change reaches the board:

1. The members refresh (``members.services.members_recompute``) calls its hooks
   (``MEMBERS_REFRESH_HOOKS``) with the members it recomputed — merged, split, refunded, late
   POS upload, consent changed: anything that changes a member's figures goes through it.
   ``members_changed`` (our hook) inserts their ids into ``DirtyMember``, one statement, in the
   refresh's transaction. Members never import insights: the hook is named in settings.
2. ``insights_refresh`` (beat, ``INSIGHTS_REFRESH_INTERVAL_SECONDS``) takes those rows in
   batches; for each batch, set-wise in SQL (``member_days_sql``), it stages the members' events
   per day, orders, identifiers and consent and compares them, packed, with the facts stored
   when the rollups last counted the members (``MemberFacts``). For the members whose facts
   differ, the rollup rows of their new facts less those of their stored facts are the change
   (``kpis.member_days`` summed per day, channel and store, in SQL); the days it touches are
   rolled up again as their rows plus the change, and the members' stored facts replaced.

Points come from the append-only ledger (the days of rows past a watermark); coupons are
counted again in full each run (one grouped scan of a table far smaller than the events).

One run at a time: a transaction-level advisory lock (a second run finds it taken and leaves).
"""

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction

from cdp.db import binary_parameters_cursor, rows_delete
from events.models import Event
from identity.models import EventResolution, Identifier
from members.consent.models import ConsentStatement
from members.insights import funnel_events, kpis, member_days_sql
from members.insights.models import (
    CouponRollup,
    DailyRollup,
    DirtyMember,
    MemberFacts,
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
    one transaction, its members' changes rolled up in it."""
    done = {"members": 0, "days": 0, "points_days": 0}
    days: set[date] = set()
    started = time.monotonic()
    while True:
        with transaction.atomic():
            if not _lock():
                logger.info("insights: another rollup is running")
                return done
            members = _claim_members(BATCH_SIZE)
            if members:
                days |= member_facts_refresh(members)
                funnel_events.summary_rebuild(members)
            # Rows of one member may be many (one per refresh): a batch can hold fewer members
            # than its size with more waiting, so only an empty claim says the queue is done.
            more = bool(members) and time.monotonic() - started < time_budget
            done["members"] += len(members)
            done["days"] = len(days)
            if not more:
                done["points_days"] = _points_roll()
                _coupons_roll()
                return done


def compute_from(*, since: date | None) -> dict[str, int]:
    """Everything again (``manage.py compute_insights``): every member's facts are read again
    (the changed ones rolled up as ``insights_refresh`` does), then every day from ``since`` is
    rolled up again from the stored facts of every member, whether or not it changed. Without
    ``since``, from scratch (``_from_scratch``). The funnels' summary is not built here
    (``funnel_events.summary_from_scratch``: the nightly and ``compute_insights`` run it next)."""
    if since is None:
        return _from_scratch()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {DirtyMember._meta.db_table} (member_id) SELECT id FROM {Member._meta.db_table} "  # noqa: S608
            f"WHERE status IN ('active', 'erased') UNION SELECT member_id FROM {MemberFacts._meta.db_table}"
        )
    done = insights_refresh(time_budget=float("inf"))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        member_days_sql.stages_empty()  # the work_mem of a batch: the sums sort every order
        stored = member_days_sql.facts_unpacked(f"SELECT * FROM {MemberFacts._meta.db_table}", "s")  # noqa: S608
        sums = member_days_sql.day_sums_select("s_member", "s_event", "s_order")
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {DailyRollup._meta.db_table} WHERE day >= %s", [since])  # noqa: S608
            cursor.execute(
                f"INSERT INTO {DailyRollup._meta.db_table} (day, channel, store_code, {', '.join(kpis.COLUMNS)}) "  # noqa: S608
                f"WITH {stored} SELECT * FROM ({sums}) AS d WHERE day >= %s",
                [since],
            )
            count = f"SELECT count(DISTINCT day) FROM {DailyRollup._meta.db_table} WHERE day >= %s"  # noqa: S608
            cursor.execute(count, [since])
            done["days"] = cursor.fetchone()[0]
    return done


def _from_scratch() -> dict[str, int]:
    """The rollups from scratch, every member's facts read at once (``member_days_sql.facts_stage_all``:
    a scan per table, not an index walk per member as a batch of changed members reads them),
    stored packed (one row per member) and summed per day, channel and store.

    On ``INSIGHTS_NIGHTLY_CONNECTIONS`` connections at once, one part of the members each
    (``_Part``: each staging, packing and summing is one backend, one core; ``INSERT … SELECT``
    never runs in parallel in PostgreSQL). The rollup rows are sums over members, so the parts'
    rows add up to the whole (``buyers`` counts distinct members, and no member is in two parts).
    The parts commit into tables of their own; this connection's one transaction replaces the
    stored facts with theirs and the rollups with their sums, so until it commits the board
    reads the rollups as they were, and a failure anywhere leaves them so. Called inside a
    transaction (tests), the parts run in turn on this connection: another would not see what
    the caller has not committed.

    The queue of changed members is emptied first, and the parts read the database as it was
    just after (one snapshot, exported to them): every change committed before is read, a
    change committed later queues its member again, for the next ``insights_refresh``."""
    parts = max(1, settings.INSIGHTS_NIGHTLY_CONNECTIONS)
    inline = connection.in_atomic_block
    columns = ", ".join(kpis.COLUMNS)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Wait for a running rollup rather than leave: this run replaces all it would write.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            cursor.execute(f"DELETE FROM {DirtyMember._meta.db_table}")  # noqa: S608
            # The queue's members are rolled up here but their funnel summaries are not: funnels
            # read the log until the summary is built whole again (the nightly does it next).
            funnel_events.summary_mark(built=False)
            snapshot = None
            if not inline:
                cursor.execute("SELECT pg_export_snapshot()")
                snapshot = cursor.fetchone()[0]
        workers = [_Part(part, parts, snapshot) for part in range(parts)]
        try:
            if inline:
                for worker in workers:
                    worker.run()
            else:
                for worker in workers:
                    worker.start()
            with connection.cursor() as cursor:
                cursor.execute(f"TRUNCATE {MemberFacts._meta.db_table}")
                # Each part's facts stored as soon as it has packed them, while the parts sum.
                for worker in workers:
                    facts = worker.facts_wait()
                    cursor.execute(f"INSERT INTO {MemberFacts._meta.db_table} SELECT * FROM {facts}")  # noqa: S608
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.join()
        sums = " UNION ALL ".join(f"SELECT * FROM {worker.sums_wait()}" for worker in workers)  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {RollupWatermark._meta.db_table} SET value = 0")  # noqa: S608
            cursor.execute(f"DELETE FROM {DailyRollup._meta.db_table}")  # noqa: S608
            cursor.execute(
                f"INSERT INTO {DailyRollup._meta.db_table} (day, channel, store_code, {columns}) "
                + member_days_sql.sums_select(sums)
            )
            cursor.execute(f"DROP TABLE {', '.join(t for worker in workers for t in worker.tables)}")
            cursor.execute(f"SELECT count(DISTINCT day) FROM {DailyRollup._meta.db_table}")  # noqa: S608
            days = cursor.fetchone()[0]
        done = {
            "members": sum(worker.members for worker in workers),
            "days": days,
            "points_days": _points_roll(),
        }
        _coupons_roll()
    return done


class _Part(threading.Thread):
    """One part of the members of ``_from_scratch`` (ids ``part`` modulo ``parts``), on a
    connection of its own when started as a thread (``run`` called directly: on the caller's).
    Two transactions: its facts staged as of ``snapshot`` and packed, committed (the caller
    stores them while this part sums); then their rollup rows, committed."""

    def __init__(self, part: int, parts: int, snapshot: str | None) -> None:
        super().__init__(name=f"insights-nightly-{part}")
        self.part, self.parts, self.snapshot = part, parts, snapshot
        self.tables: tuple[str, str] = ("", "")
        self.members = 0
        self._packed, self._summed = threading.Event(), threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                if self.snapshot is not None:
                    with connection.cursor() as cursor:
                        # Before any query of the transaction: it reads what the caller read.
                        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        cursor.execute("SET TRANSACTION SNAPSHOT %s", [self.snapshot])
                self.tables = member_days_sql.part_tables_empty(self.part)
                member_days_sql.facts_stage_all(part=self.part, parts=self.parts)
                self.members = member_days_sql.facts_pack(into=self.tables[0])
            self._packed.set()
            with transaction.atomic(), connection.cursor() as cursor:
                # As ``stages_empty`` sets it for the staging: the sums sort every order.
                cursor.execute(f"SET LOCAL work_mem = '{member_days_sql.WORK_MEM}'")
                cursor.execute(f"INSERT INTO {self.tables[1]} " + member_days_sql.STAGED_DAY_SUMS)
        except BaseException as error:  # raised again by the caller, in its thread
            self._error = error
        finally:
            self._packed.set()
            self._summed.set()
            if self.snapshot is not None:
                connection.close()  # this thread's own connection

    def facts_wait(self) -> str:
        """The table of this part's packed facts, once committed."""
        self._packed.wait()
        self._raise()
        return self.tables[0]

    def sums_wait(self) -> str:
        """The table of this part's rollup rows, once committed."""
        self._summed.wait()
        self._raise()
        return self.tables[1]

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


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


#: A batch's stored facts, walked by the primary key one member at a time, whatever the planner
#: believes of the table (``member_id = ANY(…)`` can be planned as a scan of it). ``OFFSET 0``
#: keeps each walk apart: without it the planner flattened the lateral subquery into a join and,
#: the table unanalyzed (autovacuum off), hashed a scan of all of it, twice a batch (the soak,
#: 2026-12-05: 4,300 blocks a statement at 130,000 members).
STORED_FACTS = (
    f"SELECT f.* FROM unnest(%b::bigint[]) AS ids(id) CROSS JOIN LATERAL "  # noqa: S608
    f"(SELECT * FROM {MemberFacts._meta.db_table} WHERE member_id = ids.id OFFSET 0) AS f"
)


def member_facts_refresh(member_ids: list[int]) -> set[date]:
    """Read these members' facts again (``member_days_sql``), compare them with the stored ones
    and, for the members whose facts differ (new, changed, or merged away: no facts left), add
    the rollup rows of their new facts less those of their stored facts to the rollups, then
    store the new facts. Set-wise: a few statements for the batch, whatever its size; a member
    whose facts did not change costs its reads and one comparison. Returns the days rolled up."""
    member_days_sql.facts_stage(member_ids)
    member_days_sql.facts_pack()
    stored_table, staged, stored = MemberFacts._meta.db_table, member_days_sql.STAGE_PACKED, STORED_FACTS
    differ = " OR ".join(f"n.{c} IS DISTINCT FROM o.{c}" for c in member_days_sql.PACKED[1:])
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce(n.member_id, o.member_id) FROM {staged} AS n "  # noqa: S608
            f"FULL JOIN ({stored}) AS o USING (member_id) WHERE {differ}",
            [member_ids],
        )
        changed = sorted(row[0] for row in cursor.fetchall())
    if not changed:
        return set()
    staged_changed = f"SELECT * FROM {staged} WHERE member_id = ANY(%(changed)b::bigint[])"  # noqa: S608
    new = member_days_sql.facts_unpacked(staged_changed, "n")
    old = member_days_sql.facts_unpacked(stored.replace("%b", "%(changed)b"), "o")
    gained = member_days_sql.day_sums_select("n_member", "n_event", "n_order")
    lost = member_days_sql.day_sums_select("o_member", "o_event", "o_order")
    negated = ", ".join(f"-{c}" for c in kpis.COLUMNS)
    difference = f"SELECT * FROM ({gained}) AS g UNION ALL SELECT day, channel, store_code, {negated} FROM ({lost}) AS l"  # noqa: S608
    columns = ", ".join(kpis.COLUMNS)
    change, rollup = member_days_sql.STAGE_DAY, DailyRollup._meta.db_table
    with binary_parameters_cursor() as cursor:
        into = f"INSERT INTO {change} WITH {new}, {old} "
        cursor.execute(into + member_days_sql.sums_select(difference), {"changed": changed})
        if cursor.rowcount:
            # The days changed: their rows, added to the change, are written again as one sum.
            cursor.execute(
                f"WITH replaced AS (DELETE FROM {rollup} WHERE day IN (SELECT day FROM {change}) "  # noqa: S608
                f"RETURNING day, channel, store_code, {columns}) INSERT INTO {change} SELECT * FROM replaced"
            )
            cursor.execute(
                f"INSERT INTO {rollup} (day, channel, store_code, {columns}) "  # noqa: S608
                + member_days_sql.sums_select(f"SELECT * FROM {change}")  # noqa: S608
            )
            cursor.execute(f"SELECT DISTINCT day FROM {change}")  # noqa: S608
            days = {row[0] for row in cursor.fetchall()}
        else:
            days = set()
        rows_delete(MemberFacts, column="member_id", keys=changed)  # by key, whatever the planner believes
        cursor.execute(
            f"INSERT INTO {stored_table} ({', '.join(member_days_sql.PACKED)}) "  # noqa: S608
            f"SELECT * FROM {staged} WHERE member_id = ANY(%b::bigint[])",
            [changed],
        )
    return days


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
