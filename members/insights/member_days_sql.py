"""The member-day rows computed set-wise in PostgreSQL: ``kpis.member_days`` for a whole batch
of members in one ``INSERT … SELECT … GROUP BY``, instead of a Python loop per member.

``kpis.member_days`` stays the definition (and the reference the tests hold this SQL to); the
contributions below follow its parts in its order. The work is split in three steps, each a
few set-wise statements on temporary tables of the session (``insights_stage_*``):

1. ``facts_stage``: the batch's facts — per member whether it is identified and analysed, its
   events per day, channel and store, its orders with a net above zero — read from members'
   tables (the same reads as ``services.member_histories``). Tests may fill these tables
   directly (``facts_stage_rows``) to hold the SQL to ``kpis.member_days`` on any history.
2. ``rows_compute``: the member-day rows of the staged members into ``insights_stage_row``.
3. The caller compares them with the stored rows (``services.member_days_refresh``).

Why temporary tables rather than one statement: the new rows are read twice (compared, then
written), and the facts four times; a temporary table is written once per batch. They are
created once per connection and emptied at the start of each use, so a rolled-back or failed
run leaves nothing that the next run would read.
"""

from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.conf import settings
from django.db import connection

from cdp.db import binary_parameters_cursor
from events.models import Event
from identity.models import EventResolution, Identifier
from members.consent.models import ConsentStatement
from members.insights import kpis
from members.models import Member, MemberOrder

#: Identifier types that do not identify a person (a browser, a device).
ANONYMOUS_TYPES = ("anonymous_id", "device_id")
CONSENT_PURPOSE = "analytics"

STAGE_MEMBER = "insights_stage_member"
STAGE_EVENT = "insights_stage_event"
STAGE_ORDER = "insights_stage_order"
STAGE_ROW = "insights_stage_row"
STAGE_DIFF = "insights_stage_diff"
_KEY = "member_id bigint NOT NULL, day date NOT NULL, channel text NOT NULL, store_code text NOT NULL"
_STAGES = {
    STAGE_MEMBER: "member_id bigint PRIMARY KEY, identified boolean NOT NULL, analysed boolean NOT NULL",
    STAGE_EVENT: f"{_KEY}, events bigint NOT NULL",
    STAGE_ORDER: f"{_KEY}, net numeric(20, 2) NOT NULL",
    STAGE_ROW: ", ".join(
        [
            _KEY,
            *(
                f"{c} {'numeric(20, 2)' if c in kpis.MONEY_COLUMNS else 'bigint'} NOT NULL"
                for c in kpis.COLUMNS
            ),
        ]
    ),
    # The keys whose rows differ from the stored ones, and the stored row's id if there is one
    # (services.member_days_refresh).
    STAGE_DIFF: f"{_KEY}, stored_id bigint",
}
#: Columns that say "yes, on this day" (1 at most per member and key), so several contributions
#: to one row take the largest; every other column is a count or a sum, added up.
FLAG_COLUMNS = frozenset(kpis.MEMBER_LEVEL - {"active_delta", "at_risk_delta", "churned_delta"}) | {
    "buyers",
    "analysed_buyers",
}
#: work_mem of a batch's transaction (``stages_empty`` sets it): the statement computing its rows
#: sorted ~45,000 wide rows per 2,000 members on disk at PostgreSQL's default 4 MB (EXPLAIN ANALYZE).
WORK_MEM = "64MB"
_ONLINE = "ARRAY[" + ", ".join(f"'{c}'" for c in sorted(kpis.ONLINE_CHANNELS)) + "]::text[]"
_STORE = f"'{kpis.STORE_CHANNEL}'"
_ALL = f"'{kpis.ALL}'"


def stages_empty() -> None:
    """Create the session's staging tables if needed and empty them."""
    creates = "; ".join(f"CREATE TEMPORARY TABLE IF NOT EXISTS {t} ({c})" for t, c in _STAGES.items())
    with connection.cursor() as cursor:
        # One round trip: without parameters, several statements go as one simple query. NOTICEs
        # that a table exists are not sent; work_mem is the batch's (both for this transaction).
        cursor.execute(
            f"SET LOCAL client_min_messages = warning; SET LOCAL work_mem = '{WORK_MEM}'; {creates}; "
            f"TRUNCATE {', '.join(_STAGES)}"
        )


def facts_stage(member_ids: Sequence[int]) -> None:
    """Stage the facts of these members (active or erased; a member merged away has none)."""
    stages_empty()
    tz = settings.TIME_ZONE
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {STAGE_MEMBER} (member_id, identified, analysed) "  # noqa: S608 - our own names
            # Per member, by index: an EXISTS here was planned as a hashed subplan reading every
            # identifier of every member (EXPLAIN ANALYZE: 80,000 rows for 2,000 members at 20,000),
            # and ANY(array) as a scan of every member; a LIMIT 1 probe and a lateral lookup per id
            # (as the member refresh reads) walk the indexes whatever the planner believes.
            f"SELECT m.id, (SELECT true FROM {Identifier._meta.db_table} AS i WHERE i.member_id = m.id "
            "AND NOT i.type = ANY(%b::text[]) LIMIT 1) IS NOT NULL, "
            f"coalesce((SELECT cs.state FROM {ConsentStatement._meta.db_table} AS cs WHERE cs.member_id = m.id "
            "AND cs.purpose = %b AND cs.at <= now() ORDER BY cs.at DESC, cs.id DESC LIMIT 1) "
            # No statement means no consent (docs/consent.md), as the funnels read it.
            "= 'granted', false) "
            f"FROM unnest(%b::bigint[]) AS ids(id) CROSS JOIN LATERAL (SELECT id FROM {Member._meta.db_table} "
            "WHERE id = ids.id AND status IN ('active', 'erased') OFFSET 0) AS m",
            [list(ANONYMOUS_TYPES), CONSENT_PURPOSE, list(member_ids)],
        )
        cursor.execute(
            f"INSERT INTO {STAGE_EVENT} (member_id, day, channel, store_code, events) "  # noqa: S608
            "SELECT m.member_id, (e.timestamp AT TIME ZONE %b)::date, e.channel, e.store_code, count(*) "
            # Lateral, as the member refresh reads them: one index walk per member whatever the
            # planner believes about table sizes (a hash join would scan every resolution).
            f"FROM {STAGE_MEMBER} AS m CROSS JOIN LATERAL (SELECT ev.timestamp, ev.channel, ev.store_code "
            f"FROM {EventResolution._meta.db_table} AS r JOIN {Event._meta.db_table} AS ev ON ev.id = r.event_id "
            "WHERE r.member_id = m.member_id OFFSET 0) AS e GROUP BY 1, 2, 3, 4",
            [tz],
        )
        cursor.execute(
            f"INSERT INTO {STAGE_ORDER} (member_id, day, channel, store_code, net) "  # noqa: S608
            "SELECT m.member_id, (o.placed_at AT TIME ZONE %b)::date, o.channel, o.store_code, o.net "
            f"FROM {STAGE_MEMBER} AS m CROSS JOIN LATERAL (SELECT placed_at, channel, store_code, total - refunded "
            f"AS net FROM {MemberOrder._meta.db_table} WHERE member_id = m.member_id AND placed_at IS NOT NULL "
            "AND currency = %b AND total - refunded > 0 OFFSET 0) AS o",
            [tz, settings.CDP_CURRENCY],
        )
        cursor.execute(f"ANALYZE {STAGE_MEMBER}, {STAGE_EVENT}, {STAGE_ORDER}")


def facts_stage_all() -> None:
    """Stage the facts of every member (active or erased) as ``facts_stage`` reads a batch's,
    for the rollups from scratch: a scan and a hash join per table. Every member's events are
    read, and walking them member by member costs two index probes per event (EXPLAIN ANALYZE
    at 200,000 events: 1.4 to 2.0 s for every member's walks against 0.6 to 0.7 s for one
    grouped hash join, under the same load)."""
    stages_empty()
    tz = settings.TIME_ZONE
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {STAGE_MEMBER} (member_id, identified, analysed) "  # noqa: S608 - our own names
            f"SELECT m.id, m.id IN (SELECT i.member_id FROM {Identifier._meta.db_table} AS i "
            "WHERE NOT i.type = ANY(%b::text[])), coalesce(c.state = 'granted', false) "
            f"FROM {Member._meta.db_table} AS m LEFT JOIN (SELECT DISTINCT ON (cs.member_id) cs.member_id, cs.state "
            f"FROM {ConsentStatement._meta.db_table} AS cs WHERE cs.purpose = %b AND cs.at <= now() "
            # The statement in force, as facts_stage and the funnels read it; none is no consent.
            "ORDER BY cs.member_id, cs.at DESC, cs.id DESC) AS c ON c.member_id = m.id "
            "WHERE m.status IN ('active', 'erased')",
            [list(ANONYMOUS_TYPES), CONSENT_PURPOSE],
        )
        cursor.execute(f"ANALYZE {STAGE_MEMBER}")
        cursor.execute(
            f"INSERT INTO {STAGE_EVENT} (member_id, day, channel, store_code, events) "  # noqa: S608
            "SELECT r.member_id, (e.timestamp AT TIME ZONE %b)::date, e.channel, e.store_code, count(*) "
            f"FROM {EventResolution._meta.db_table} AS r JOIN {Event._meta.db_table} AS e ON e.id = r.event_id "
            f"WHERE r.member_id IN (SELECT member_id FROM {STAGE_MEMBER}) GROUP BY 1, 2, 3, 4",
            [tz],
        )
        cursor.execute(
            f"INSERT INTO {STAGE_ORDER} (member_id, day, channel, store_code, net) "  # noqa: S608
            "SELECT o.member_id, (o.placed_at AT TIME ZONE %b)::date, o.channel, o.store_code, o.total - o.refunded "
            f"FROM {MemberOrder._meta.db_table} AS o WHERE o.member_id IN (SELECT member_id FROM {STAGE_MEMBER}) "
            "AND o.placed_at IS NOT NULL AND o.currency = %b AND o.total - o.refunded > 0",
            [tz, settings.CDP_CURRENCY],
        )
        cursor.execute(f"ANALYZE {STAGE_EVENT}, {STAGE_ORDER}")


def facts_stage_rows(histories: Iterable[kpis.MemberHistory]) -> None:
    """Stage the given histories as they are (tests: the SQL against ``kpis.member_days``)."""
    stages_empty()
    histories = list(histories)
    with binary_parameters_cursor() as cursor:
        with cursor.copy(f"COPY {STAGE_MEMBER} FROM STDIN") as copy:
            for h in histories:
                copy.write_row((h.member_id, h.identified, h.analytics))
        with cursor.copy(f"COPY {STAGE_EVENT} FROM STDIN") as copy:
            for h in histories:
                for e in h.events:
                    copy.write_row((h.member_id, e.day, e.channel, e.store_code, e.count))
        with cursor.copy(f"COPY {STAGE_ORDER} FROM STDIN") as copy:
            for h in histories:
                for o in h.orders:
                    if o.net > 0:  # as facts_stage reads them: an order refunded in full is none
                        copy.write_row((h.member_id, o.day, o.channel, o.store_code, o.net))


#: The columns of every key (all channels, a channel, a store), from events and orders; the
#: others are the member's own (``kpis.MEMBER_LEVEL``), on its all-channels row only.
KEYED_COLUMNS = tuple(c for c in kpis.COLUMNS if c not in kpis.MEMBER_LEVEL)
MEMBER_COLUMNS = tuple(c for c in kpis.COLUMNS if c in kpis.MEMBER_LEVEL)


def _contribution(source: str, key: str, values: dict[str, str]) -> str:
    """One ``SELECT`` of contributions to member-day rows: ``key`` (member, day and, for keyed
    columns, channel and store), then its columns (keyed or the member's: ``values`` names
    one of the two), 0 where ``values`` names none. Counts are integers (``int4``): PostgreSQL
    sums them in a machine integer, where a ``bigint`` sum goes through ``numeric``."""
    columns = KEYED_COLUMNS if set(values) <= set(KEYED_COLUMNS) else MEMBER_COLUMNS
    return f"SELECT {key}, {', '.join(_typed(c, values.get(c, '0')) for c in columns)} {source}"


def _typed(column: str, value: str) -> str:
    return f"({value})::numeric(20, 2)" if column in kpis.MONEY_COLUMNS else f"({value})::int"


def _aggregate(column: str) -> str:
    return f"{'max' if column in FLAG_COLUMNS else 'sum'}({column})"


def _rows_select() -> str:
    """The member-day rows of the staged members (``kpis.member_days``), one per key, rows all
    zero left out."""
    analysed = "CASE WHEN m.analysed THEN {} ELSE 0 END"
    omni = "(c.since IS NOT NULL AND o.day >= c.since)"
    # The keys of a fact: all channels, its channel and, for a store, its store (``kpis._keys``).
    keys = (
        f"CROSS JOIN LATERAL (VALUES ({_ALL}, {_ALL}), ({{0}}.channel, {_ALL}), ({{0}}.channel, {{0}}.store_code)) "
        "AS k(channel, store_code) WHERE k.store_code <> ''"
    )
    total = "x.member_id, x.day"  # the member's all-channels row
    keyed = [
        # Events: every member's count; analysed and identified members' counts.
        _contribution(
            f"FROM {STAGE_EVENT} AS e JOIN {STAGE_MEMBER} AS m USING (member_id) {keys.format('e')}",
            "e.member_id, e.day, k.channel, k.store_code",
            {
                "events": "e.events",
                "analysed_events": analysed.format("e.events"),
                "identified_events": analysed.format("CASE WHEN m.identified THEN e.events ELSE 0 END"),
            },
        ),
        # Orders: counts and sums; of analysed members, split omnichannel / single by the day
        # the member's orders first span two channels (``kpis._omni_since``).
        _contribution(
            f"FROM {STAGE_ORDER} AS o JOIN {STAGE_MEMBER} AS m USING (member_id) "
            "LEFT JOIN omni_since AS c USING (member_id) " + keys.format("o"),
            "o.member_id, o.day, k.channel, k.store_code",
            {
                "orders": "1",
                "sales": "o.net",
                "buyers": "1",
                "analysed_buyers": analysed.format("1"),
                "omni_orders": analysed.format(f"CASE WHEN {omni} THEN 1 ELSE 0 END"),
                "omni_sales": analysed.format(f"CASE WHEN {omni} THEN o.net ELSE 0 END"),
                "single_orders": analysed.format(f"CASE WHEN {omni} THEN 0 ELSE 1 END"),
                "single_sales": analysed.format(f"CASE WHEN {omni} THEN 0 ELSE o.net END"),
            },
        ),
    ]
    member = [
        # Member level, analysed members only (``kpis._member_level``): first purchase, repurchase.
        _contribution(
            "FROM purchases AS x",
            total,
            {
                "new_buyers": "CASE WHEN x.previous IS NULL THEN 1 ELSE 0 END",
                **{
                    f"repeat_{n}": f"CASE WHEN x.day - x.previous <= {n} THEN 1 ELSE 0 END"
                    for n in kpis.REPURCHASE_WINDOWS
                },
            },
        ),
        _contribution(
            "FROM omni_since AS x JOIN analysed USING (member_id)",
            "x.member_id, x.since",
            {"omni_delta": "1"},
        ),
        # Lifecycle: each state change, +1 on the new state, -1 on the one left.
        *(
            _contribution(
                "FROM lifecycle AS x WHERE x.state IS DISTINCT FROM x.previous",
                total,
                {
                    f"{state}_delta": f"CASE WHEN x.state = '{state}' THEN 1 "
                    f"WHEN x.previous = '{state}' THEN -1 ELSE 0 END"
                    for state in ("active", "at_risk", "churned")
                },
            ),
        ),
        # Identified members: their first event day; the day their events reach a second channel.
        _contribution(
            "FROM (SELECT e.member_id, min(e.day) AS day FROM event_first AS e JOIN analysed AS a USING (member_id) "
            "WHERE a.identified GROUP BY 1) AS x",
            total,
            {"identified_delta": "1"},
        ),
        _contribution(
            "FROM (SELECT e.member_id, e.day FROM event_first AS e JOIN analysed AS a USING (member_id) "
            "WHERE a.identified AND e.rank = 2) AS x",
            total,
            {"unified_delta": "1"},
        ),
        # Conversion: an online (store) event day, a store (online) purchase that day or within the window.
        _contribution(
            "FROM event_days AS x",
            total,
            {
                "online_active": "CASE WHEN x.online THEN 1 ELSE 0 END",
                "online_to_store": "CASE WHEN x.online AND x.bought_in_store THEN 1 ELSE 0 END",
                "store_active": "CASE WHEN x.store THEN 1 ELSE 0 END",
                "store_to_online": "CASE WHEN x.store AND x.bought_online THEN 1 ELSE 0 END",
            },
        ),
    ]
    turns = " UNION ALL ".join(
        f"SELECT member_id, day + {after}, '{state}' FROM purchases "  # noqa: S608 - our own names
        f"WHERE following IS NULL OR day + {after} < following"
        for after, state in ((kpis.ACTIVE_DAYS, "at_risk"), (kpis.AT_RISK_DAYS, "churned"))
    )
    ctes = f"""
        analysed AS (SELECT member_id, identified FROM {STAGE_MEMBER} WHERE analysed),
        omni_since AS (
            SELECT member_id, first AS since FROM (
                SELECT member_id, first, row_number() OVER (PARTITION BY member_id ORDER BY first) AS rank
                FROM (SELECT member_id, channel, min(day) AS first FROM {STAGE_ORDER} GROUP BY 1, 2) AS f
            ) AS r WHERE rank = 2),
        purchases AS (
            SELECT member_id, day, lag(day) OVER w AS previous, lead(day) OVER w AS following
            FROM (SELECT DISTINCT member_id, day FROM {STAGE_ORDER}) AS d JOIN analysed USING (member_id)
            WINDOW w AS (PARTITION BY member_id ORDER BY day)),
        lifecycle AS (
            SELECT member_id, day, state, lag(state) OVER (PARTITION BY member_id ORDER BY day) AS previous
            FROM (SELECT member_id, day, 'active' AS state FROM purchases UNION ALL {turns}) AS s),
        event_first AS (
            SELECT member_id, day, row_number() OVER (PARTITION BY member_id ORDER BY day) AS rank
            FROM (SELECT member_id, channel, min(day) AS day FROM {STAGE_EVENT} GROUP BY 1, 2) AS f),
        event_days AS (
            -- A join on the member (hashed) and a range filter: an EXISTS per event day would scan
            -- the batch's orders once per day (measured: 2.6 s per batch of 2,000 members).
            SELECT e.member_id, e.day, e.online, e.store, coalesce(bool_or(o.channel = {_STORE}), false)
                   AS bought_in_store, coalesce(bool_or(o.channel = ANY({_ONLINE})), false) AS bought_online
            FROM (SELECT e.member_id, e.day, bool_or(e.channel = ANY({_ONLINE})) AS online,
                         bool_or(e.channel = {_STORE}) AS store
                  FROM {STAGE_EVENT} AS e JOIN analysed USING (member_id) GROUP BY 1, 2) AS e
            LEFT JOIN {STAGE_ORDER} AS o ON o.member_id = e.member_id
                 AND o.day BETWEEN e.day AND e.day + {kpis.CONVERSION_WINDOW_DAYS}
            GROUP BY 1, 2, 3, 4)"""  # noqa: S608
    # Two aggregates, joined on the member's all-channels row: the keyed columns of events and
    # orders per key, the member's columns per day (a third of the rows, half the columns each
    # compared with one aggregate of every column over every contribution).
    keyed_sums = ", ".join(f"{_aggregate(c)} AS {c}" for c in KEYED_COLUMNS)
    member_sums = ", ".join(f"{_aggregate(c)} AS {c}" for c in MEMBER_COLUMNS)
    keyed_nonzero = " OR ".join(f"{_aggregate(c)} <> 0" for c in KEYED_COLUMNS)
    member_nonzero = " OR ".join(f"{_aggregate(c)} <> 0" for c in MEMBER_COLUMNS)
    columns = ", ".join(f"coalesce({c}, 0)" for c in kpis.COLUMNS)
    return f"""WITH {ctes}
        SELECT member_id, day, channel, store_code, {columns}
        FROM (SELECT member_id, day, channel, store_code, {keyed_sums}
              FROM ({" UNION ALL ".join(keyed)}) AS c (member_id, day, channel, store_code, {", ".join(KEYED_COLUMNS)})
              GROUP BY 1, 2, 3, 4 HAVING {keyed_nonzero}) AS k
        FULL JOIN (SELECT member_id, day, {_ALL}::text AS channel, {_ALL}::text AS store_code, {member_sums}
              FROM ({" UNION ALL ".join(member)}) AS c (member_id, day, {", ".join(MEMBER_COLUMNS)})
              GROUP BY 1, 2 HAVING {member_nonzero}) AS m
        USING (member_id, day, channel, store_code)"""  # noqa: S608


ROWS_SELECT = _rows_select()


def rows_compute() -> None:
    """The staged members' rows into ``insights_stage_row``."""
    names = ", ".join(kpis.COLUMNS)
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {STAGE_ROW} (member_id, day, channel, store_code, {names}) {ROWS_SELECT}"
        )


def staged_rows() -> dict[kpis.Key, kpis.Values]:
    """The rows ``rows_compute`` wrote, as ``kpis.member_days`` returns them (tests)."""
    names = ", ".join(kpis.COLUMNS)
    with binary_parameters_cursor() as cursor:
        cursor.execute(f"SELECT member_id, day, channel, store_code, {names} FROM {STAGE_ROW}")  # noqa: S608
        return {tuple(row[:4]): tuple(_normal(v) for v in row[4:]) for row in cursor.fetchall()}


def _normal(value: int | Decimal) -> int | Decimal:
    return value if isinstance(value, int) else Decimal(value).quantize(kpis.ZERO)
