"""The KPI rollups of members' facts computed set-wise in PostgreSQL: the sums per day,
channel and store of ``kpis.member_days`` over a set of members, straight from their facts,
without a row per member and day.

``kpis.member_days`` stays the definition (and the reference the tests hold this SQL to): the
contributions below follow its parts in its order, each added up per day at once. That is
exact because within one part a member contributes at most once per day and column (one
purchase day, one lifecycle state per day, one first event day…), so a sum over the part's
rows equals the sum of the member-day rows ``kpis.member_days`` would give; the flags that
can repeat per key (``buyers``: a member with two orders on a day) count distinct members.

The facts of a set of members — whether each is identified and analysed, its events per day,
channel and store, its orders with a net above zero per day, channel and store — are:

- **staged** (``facts_stage``, ``facts_stage_all``) from members' tables into temporary tables of
  the session (``insights_stage_*``); tests may fill them directly (``facts_stage_rows``);
- **stored** packed, one row per member (``MemberFacts``: its flags and parallel arrays), as they
  were when the rollups last counted the member: what the incremental path takes back off the
  rollups when the member's facts change (``services``).

``day_sums_select`` gives the rollup rows of either. Temporary tables rather than one statement:
the facts are read several times; they are created once per connection and emptied at the
start of each use, so a rolled-back or failed run leaves nothing that the next run would read.
"""

from collections import defaultdict
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
#: The staged members' facts packed as ``MemberFacts`` stores them (compared with the stored).
STAGE_PACKED = "insights_stage_packed"
#: Rollup rows being summed: a batch's changes, then the changed days (``services``).
STAGE_DAY = "insights_stage_day"
_KEY = "member_id bigint NOT NULL, day date NOT NULL, channel text NOT NULL, store_code text NOT NULL"
_SUMS = ", ".join(
    f"{c} {'numeric(20, 2)' if c in kpis.MONEY_COLUMNS else 'bigint'} NOT NULL" for c in kpis.COLUMNS
)
#: The packed columns: events' and orders' parallel arrays, in (day, channel, store) order.
EVENT_ARRAYS = ("event_days", "event_channels", "event_stores", "event_counts")
ORDER_ARRAYS = ("order_days", "order_channels", "order_stores", "order_counts", "order_nets")
PACKED = ("member_id", "identified", "analysed", *EVENT_ARRAYS, *ORDER_ARRAYS)
_PACKED_COLUMNS = (
    "member_id bigint NOT NULL, identified boolean NOT NULL, analysed boolean NOT NULL, "
    "event_days date[] NOT NULL, event_channels text[] NOT NULL, event_stores text[] NOT NULL, "
    "event_counts int[] NOT NULL, order_days date[] NOT NULL, order_channels text[] NOT NULL, "
    "order_stores text[] NOT NULL, order_counts int[] NOT NULL, order_nets numeric(20, 2)[] NOT NULL"
)
_DAY_COLUMNS = f"day date NOT NULL, channel text NOT NULL, store_code text NOT NULL, {_SUMS}"
_STAGES = {
    STAGE_MEMBER: "member_id bigint PRIMARY KEY, identified boolean NOT NULL, analysed boolean NOT NULL",
    STAGE_EVENT: f"{_KEY}, events int NOT NULL",
    # Orders per key: their count and net (every KPI reads orders by day, channel and store).
    STAGE_ORDER: f"{_KEY}, orders int NOT NULL, net numeric(20, 2) NOT NULL",
    STAGE_PACKED: f"{_PACKED_COLUMNS}, PRIMARY KEY (member_id)",
    STAGE_DAY: _DAY_COLUMNS,
}
#: work_mem of a batch's transaction (``stages_empty`` sets it): the rollup sums and the
#: distinct buyers per key sort every order of the nightly.
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
            f"INSERT INTO {STAGE_ORDER} (member_id, day, channel, store_code, orders, net) "  # noqa: S608
            "SELECT m.member_id, (o.placed_at AT TIME ZONE %b)::date, o.channel, o.store_code, count(*), sum(o.net) "
            f"FROM {STAGE_MEMBER} AS m CROSS JOIN LATERAL (SELECT placed_at, channel, store_code, total - refunded "
            f"AS net FROM {MemberOrder._meta.db_table} WHERE member_id = m.member_id AND placed_at IS NOT NULL "
            "AND currency = %b AND total - refunded > 0 OFFSET 0) AS o GROUP BY 1, 2, 3, 4",
            [tz, settings.CDP_CURRENCY],
        )
        cursor.execute(f"ANALYZE {STAGE_MEMBER}, {STAGE_EVENT}, {STAGE_ORDER}")


def facts_stage_all(*, part: int = 0, parts: int = 1) -> None:
    """Stage the facts of every member (active or erased) as ``facts_stage`` reads a batch's,
    for the rollups from scratch: a scan and a hash join per table. Every member's events are
    read, and walking them member by member costs two index probes per event (EXPLAIN ANALYZE
    at 200,000 events: 1.4 to 2.0 s for every member's walks against 0.6 to 0.7 s for one
    grouped hash join, under the same load).

    Of the members whose id is ``part`` modulo ``parts`` only: the nightly stages its parts on
    as many connections at once (``services._from_scratch``)."""
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
            "WHERE m.status IN ('active', 'erased') AND m.id %% %b = %b",
            [list(ANONYMOUS_TYPES), CONSENT_PURPOSE, parts, part],
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
            f"INSERT INTO {STAGE_ORDER} (member_id, day, channel, store_code, orders, net) "  # noqa: S608
            "SELECT o.member_id, (o.placed_at AT TIME ZONE %b)::date, o.channel, o.store_code, count(*), "
            f"sum(o.total - o.refunded) FROM {MemberOrder._meta.db_table} AS o WHERE o.member_id IN "
            f"(SELECT member_id FROM {STAGE_MEMBER}) AND o.placed_at IS NOT NULL AND o.currency = %b "
            "AND o.total - o.refunded > 0 GROUP BY 1, 2, 3, 4",
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
                by_key: dict[tuple, list[Decimal]] = defaultdict(list)
                for o in h.orders:
                    if o.net > 0:  # as facts_stage reads them: an order refunded in full is none
                        by_key[(o.day, o.channel, o.store_code)].append(o.net)
                for (day, channel, store), nets in by_key.items():
                    copy.write_row((h.member_id, day, channel, store, len(nets), sum(nets)))


def part_tables_empty(part: int) -> tuple[str, str]:
    """The nightly's tables of one part (``services._from_scratch``), created if needed and
    emptied: the part's facts packed as ``MemberFacts`` stores them, and their rollup rows as
    ``STAGED_DAY_SUMS`` gives them. Unlogged, not temporary: the connection that staged the part
    commits them for the one that writes the rollups; a failed run's are emptied by the next."""
    facts, sums = f"insights_nightly_facts_{part}", f"insights_nightly_sums_{part}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SET LOCAL client_min_messages = warning; CREATE UNLOGGED TABLE IF NOT EXISTS {facts} ({_PACKED_COLUMNS}); "
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {sums} ({_DAY_COLUMNS}); TRUNCATE {facts}, {sums}"
        )
    return facts, sums


def facts_pack(into: str = STAGE_PACKED) -> int:
    """The staged members' facts into ``into`` (``insights_stage_packed``, or the stored facts
    when nothing is stored: the nightly) as ``MemberFacts`` stores them, one row per member,
    its events and orders as parallel arrays in (day, channel, store) order, so that the same
    facts pack into equal rows (the incremental path compares them). Returns the members."""
    events = _packed_arrays(STAGE_EVENT, EVENT_ARRAYS, ("day", "channel", "store_code", "events"))
    orders = _packed_arrays(STAGE_ORDER, ORDER_ARRAYS, ("day", "channel", "store_code", "orders", "net"))
    arrays = ", ".join(f"coalesce({a}, '{{}}')" for a in (*EVENT_ARRAYS, *ORDER_ARRAYS))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {into} ({', '.join(PACKED)}) "  # noqa: S608 - our own names
            f"SELECT m.member_id, m.identified, m.analysed, {arrays} FROM {STAGE_MEMBER} AS m "
            f"LEFT JOIN ({events}) AS e USING (member_id) LEFT JOIN ({orders}) AS o USING (member_id)"
        )
        return cursor.rowcount


def _packed_arrays(stage: str, names: Sequence[str], columns: Sequence[str]) -> str:
    # Aggregates keep their input's order (temporary tables are never read in parallel): one
    # sort of the facts rather than one per array and member (ORDER BY inside each array_agg).
    aggregates = ", ".join(f"array_agg({c}) AS {n}" for c, n in zip(columns, names, strict=True))
    return (
        f"SELECT member_id, {aggregates} FROM (SELECT * FROM {stage} "  # noqa: S608
        "ORDER BY member_id, day, channel, store_code) AS s GROUP BY member_id"
    )


def facts_unpacked(packed: str, prefix: str) -> str:
    """Common table expressions ``{prefix}_member``, ``{prefix}_event`` and ``{prefix}_order``:
    the facts of the packed rows that the query ``packed`` selects, as the stages hold them."""
    events = ", ".join(f"f.{a}" for a in EVENT_ARRAYS)
    orders = ", ".join(f"f.{a}" for a in ORDER_ARRAYS)
    return (
        f"{prefix}_packed AS ({packed}), "  # noqa: S608 - our own names
        f"{prefix}_member AS (SELECT member_id, identified, analysed FROM {prefix}_packed), "
        f"{prefix}_event AS (SELECT f.member_id, u.* FROM {prefix}_packed AS f "
        f"CROSS JOIN LATERAL unnest({events}) AS u(day, channel, store_code, events)), "
        f"{prefix}_order AS (SELECT f.member_id, u.* FROM {prefix}_packed AS f "
        f"CROSS JOIN LATERAL unnest({orders}) AS u(day, channel, store_code, orders, net))"
    )


def _part(source: str, key: str, sums: dict[str, str]) -> str:
    """One part of the rollup rows: ``sums`` (aggregates, per column) over ``source`` grouped by
    ``key`` (day, channel, store), 0 in every other column, each column of its rollup type."""
    columns = ", ".join(_typed(c, sums.get(c, "0")) for c in kpis.COLUMNS)
    return f"SELECT {key}, {columns} {source} GROUP BY 1, 2, 3"


def _typed(column: str, value: str) -> str:
    return f"({value})::numeric(20, 2)" if column in kpis.MONEY_COLUMNS else f"({value})::bigint"


def day_sums_select(member: str, event: str, order: str) -> str:
    """A query of the rollup rows (``day, channel, store_code`` and ``kpis.COLUMNS``) of the
    members in the relation ``member`` with their events and orders in ``event`` and ``order``
    (stage tables, or ``facts_unpacked``'s expressions): ``kpis.member_days`` of each member,
    summed per day, channel and store; rows all zero left out."""
    analysed = "CASE WHEN m.analysed THEN {} ELSE 0 END"
    omni = "(c.since IS NOT NULL AND o.day >= c.since)"
    # The keys of a fact: all channels, its channel and, for a store, its store (``kpis._keys``).
    keys = (
        f"CROSS JOIN LATERAL (VALUES ({_ALL}, {_ALL}), ({{0}}.channel, {_ALL}), ({{0}}.channel, {{0}}.store_code)) "
        "AS k(channel, store_code) WHERE k.store_code <> ''"
    )
    total = f"x.day, {_ALL}, {_ALL}"  # the member-level columns: the all-channels rows only
    parts = [
        # Events: every member's count; analysed and identified members' counts.
        _part(
            f"FROM {event} AS e JOIN {member} AS m USING (member_id) {keys.format('e')}",
            "e.day, k.channel, k.store_code",
            {
                "events": "sum(e.events)",
                "analysed_events": f"sum({analysed.format('e.events')})",
                "identified_events": f"sum({analysed.format('CASE WHEN m.identified THEN e.events ELSE 0 END')})",
            },
        ),
        # Orders: counts and sums; of analysed members, split omnichannel / single by the day
        # the member's orders first span two channels (``kpis._omni_since``). A buyer is a
        # member: two stores of a channel on one day are one buyer of the channel.
        _part(
            f"FROM {order} AS o JOIN {member} AS m USING (member_id) "
            "LEFT JOIN omni_since AS c USING (member_id) " + keys.format("o"),
            "o.day, k.channel, k.store_code",
            {
                "orders": "sum(o.orders)",
                "sales": "sum(o.net)",
                "buyers": "count(DISTINCT o.member_id)",
                "analysed_buyers": "count(DISTINCT o.member_id) FILTER (WHERE m.analysed)",
                "omni_orders": f"sum({analysed.format(f'CASE WHEN {omni} THEN o.orders ELSE 0 END')})",
                "omni_sales": f"sum({analysed.format(f'CASE WHEN {omni} THEN o.net ELSE 0 END')})",
                "single_orders": f"sum({analysed.format(f'CASE WHEN {omni} THEN 0 ELSE o.orders END')})",
                "single_sales": f"sum({analysed.format(f'CASE WHEN {omni} THEN 0 ELSE o.net END')})",
            },
        ),
        # Member level, analysed members only (``kpis._member_level``): first purchase, repurchase.
        _part(
            "FROM purchases AS x",
            total,
            {
                "new_buyers": "count(*) FILTER (WHERE x.previous IS NULL)",
                **{
                    f"repeat_{n}": f"count(*) FILTER (WHERE x.day - x.previous <= {n})"
                    for n in kpis.REPURCHASE_WINDOWS
                },
            },
        ),
        _part(
            "FROM (SELECT c.since AS day FROM omni_since AS c JOIN analysed USING (member_id)) AS x",
            total,
            {"omni_delta": "count(*)"},
        ),
        # Lifecycle: each state change, +1 on the new state, -1 on the one left.
        _part(
            "FROM lifecycle AS x WHERE x.state IS DISTINCT FROM x.previous",
            total,
            {
                f"{state}_delta": f"sum(CASE WHEN x.state = '{state}' THEN 1 WHEN x.previous = '{state}' THEN -1 ELSE 0 END)"
                for state in ("active", "at_risk", "churned")
            },
        ),
        # Identified members: their first event day; the day their events reach a second channel.
        _part(
            "FROM (SELECT e.member_id, min(e.day) AS day FROM event_first AS e JOIN analysed AS a USING (member_id) "
            "WHERE a.identified GROUP BY 1) AS x",
            total,
            {"identified_delta": "count(*)"},
        ),
        _part(
            "FROM event_first AS x JOIN analysed AS a USING (member_id) WHERE a.identified AND x.rank = 2",
            total,
            {"unified_delta": "count(*)"},
        ),
        # Conversion: an online (store) event day, a store (online) purchase that day or within the window.
        _part(
            "FROM event_days AS x",
            total,
            {
                "online_active": "count(*) FILTER (WHERE x.online)",
                "online_to_store": "count(*) FILTER (WHERE x.online AND x.bought_in_store)",
                "store_active": "count(*) FILTER (WHERE x.store)",
                "store_to_online": "count(*) FILTER (WHERE x.store AND x.bought_online)",
            },
        ),
    ]
    turns = " UNION ALL ".join(
        f"SELECT member_id, day + {after}, '{state}' FROM purchases "  # noqa: S608 - our own names
        f"WHERE following IS NULL OR day + {after} < following"
        for after, state in ((kpis.ACTIVE_DAYS, "at_risk"), (kpis.AT_RISK_DAYS, "churned"))
    )
    ctes = f"""
        analysed AS (SELECT member_id, identified FROM {member} WHERE analysed),
        omni_since AS (
            SELECT member_id, first AS since FROM (
                SELECT member_id, first, row_number() OVER (PARTITION BY member_id ORDER BY first) AS rank
                FROM (SELECT member_id, channel, min(day) AS first FROM {order} GROUP BY 1, 2) AS f
            ) AS r WHERE rank = 2),
        purchases AS (
            SELECT member_id, day, lag(day) OVER w AS previous, lead(day) OVER w AS following
            FROM (SELECT DISTINCT member_id, day FROM {order}) AS d JOIN analysed USING (member_id)
            WINDOW w AS (PARTITION BY member_id ORDER BY day)),
        lifecycle AS (
            SELECT member_id, day, state, lag(state) OVER (PARTITION BY member_id ORDER BY day) AS previous
            FROM (SELECT member_id, day, 'active' AS state FROM purchases UNION ALL {turns}) AS s),
        event_first AS (
            SELECT member_id, day, row_number() OVER (PARTITION BY member_id ORDER BY day) AS rank
            FROM (SELECT member_id, channel, min(day) AS day FROM {event} GROUP BY 1, 2) AS f),
        event_days AS (
            -- A join on the member (hashed) and a range filter: an EXISTS per event day would scan
            -- the batch's orders once per day (measured: 2.6 s per batch of 2,000 members).
            SELECT e.member_id, e.day, e.online, e.store, coalesce(bool_or(o.channel = {_STORE}), false)
                   AS bought_in_store, coalesce(bool_or(o.channel = ANY({_ONLINE})), false) AS bought_online
            FROM (SELECT e.member_id, e.day, bool_or(e.channel = ANY({_ONLINE})) AS online,
                         bool_or(e.channel = {_STORE}) AS store
                  FROM {event} AS e JOIN analysed USING (member_id) GROUP BY 1, 2) AS e
            LEFT JOIN {order} AS o ON o.member_id = e.member_id
                 AND o.day BETWEEN e.day AND e.day + {kpis.CONVERSION_WINDOW_DAYS}
            GROUP BY 1, 2, 3, 4)"""  # noqa: S608
    return f"WITH {ctes}\n{sums_select(' UNION ALL '.join(parts))}"


def sums_select(rows: str) -> str:
    """The rollup rows of ``rows`` (a query of rollup rows) added up per day, channel and store,
    rows all zero left out: every rollup row has a figure (events, orders, buyers… counted up;
    on a day without them a lifecycle turn only takes members off ``active`` or adds them to
    ``churned``), so a row summing to zero is one no member contributes to."""
    sums = ", ".join(f"{_typed(c, f'sum({c})')} AS {c}" for c in kpis.COLUMNS)
    nonzero = " OR ".join(f"sum({c}) <> 0" for c in kpis.COLUMNS)
    return (
        f"SELECT day, channel, store_code, {sums} FROM ({rows}) AS r (day, channel, store_code, "  # noqa: S608
        f"{', '.join(kpis.COLUMNS)}) GROUP BY 1, 2, 3 HAVING {nonzero}"
    )


#: The rollup rows of the staged facts.
STAGED_DAY_SUMS = day_sums_select(STAGE_MEMBER, STAGE_EVENT, STAGE_ORDER)


def staged_day_sums() -> dict[tuple, kpis.Values]:
    """The rollup rows of the staged facts, by (day, channel, store) (tests: against the sums of
    ``kpis.member_days``)."""
    return _day_sums(STAGED_DAY_SUMS)


def packed_day_sums() -> dict[tuple, kpis.Values]:
    """The rollup rows of the staged facts once packed and unpacked again (tests: what the
    incremental path takes off the rollups is what the facts gave)."""
    facts_pack()
    ctes = facts_unpacked(f"SELECT * FROM {STAGE_PACKED}", "p")  # noqa: S608 - our own names
    sums = day_sums_select("p_member", "p_event", "p_order")
    return _day_sums(f"WITH {ctes} SELECT * FROM ({sums}) AS d")  # noqa: S608


def _day_sums(query: str) -> dict[tuple, kpis.Values]:
    with connection.cursor() as cursor:
        cursor.execute(query)
        return {tuple(row[:3]): tuple(_normal(v) for v in row[3:]) for row in cursor.fetchall()}


def _normal(value: int | Decimal) -> int | Decimal:
    return value if isinstance(value, int) else Decimal(value).quantize(kpis.ZERO)
