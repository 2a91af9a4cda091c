"""What the member refresh reads of members' events, and the rows it writes from them: shared
by the full recompute (``members.services``) and the incremental path (``members.incremental``).

The refresh writes a few hundred members' rows per statement: parameters go as binary arrays
through ``unnest`` (Django's bulk_create builds and quotes one placeholder per value, which
cost more than the recomputation itself). Only model table names are interpolated.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.conf import settings

from cdp.db import binary_parameters_cursor
from cdp.metrics import REFRESH_EVENTS_READ
from cdp.vault import trait_lookup, trait_seal
from events.commerce import ORDER_COMPLETED, ORDER_EVENTS
from members.aggregates import CHANNELS, Aggregates, Order, OrderEvent, order_event
from members.consent.services import ConsentSource
from members.consent.statements import CONSENT_EVENT, CONSENT_TRAIT
from members.loyalty.points import LOYALTY_EVENTS, LoyaltyEvent
from members.loyalty.services import LoyaltyHistory, order_lines
from members.models import ORDER_FIELDS, MemberAggregate, MemberOrder, MemberTrait, RefreshWatermark
from members.segments.rules.syntax import AGGREGATES
from members.traits import TraitObservation, traits_of_event


@dataclass(frozen=True, slots=True)
class MemberEvent:
    member_id: int
    event_id: int
    name: str
    channel: str
    store_code: str
    at: datetime
    message_id: str
    source_id: int
    type: str  # the Segment call
    group_id: str  # a group call's group
    traits: dict | None  # None: states none
    context_traits: object
    properties: dict | None  # only for order and loyalty events, and those rules filter on


_EVENT_COLUMNS = """
SELECT m.id, e.id, e.event, e.channel, e.store_code, e.timestamp, e.message_id, e.source_id, e.type, e.group_id,
       CASE WHEN e.traits <> '{}'::jsonb THEN e.traits END, e.context -> 'traits',
       CASE WHEN e.event = ANY(%b::text[]) THEN e.properties END
"""
# One query for everything the refresh reads. The lateral joins walk each member's events by
# index, and fetch each event by its key, whatever the planner believes about table sizes: a
# plain join let it hash the whole event log once per member when the average member held
# hundreds of events (stale statistics must not turn a refresh of 500 members into a scan of
# every event either).
_EVENTS_OF_MEMBERS = (
    _EVENT_COLUMNS
    + """
FROM unnest(%b::bigint[]) AS m(id)
CROSS JOIN LATERAL (
    SELECT ev.* FROM identity_eventresolution AS r
    CROSS JOIN LATERAL (SELECT * FROM events_event WHERE id = r.event_id OFFSET 0) AS ev
    WHERE r.member_id = m.id AND (%b::text[] IS NULL OR ev.event = ANY(%b::text[]))
    OFFSET 0  -- keeps the subquery lateral (not flattened into a join): one index walk per member
) AS e
"""
)
# Each member's events of some names, each name's from a time on.
_EVENTS_SINCE = (
    _EVENT_COLUMNS
    + """
FROM unnest(%b::bigint[]) AS m(id)
CROSS JOIN LATERAL (
    SELECT ev.* FROM identity_eventresolution AS r
    CROSS JOIN LATERAL (SELECT * FROM events_event WHERE id = r.event_id OFFSET 0) AS ev
    WHERE r.member_id = m.id AND EXISTS (
        SELECT 1 FROM unnest(%b::text[], %b::timestamptz[]) AS w(name, since)
        WHERE w.name = ev.event AND (w.since IS NULL OR ev.timestamp >= w.since)
    )
    OFFSET 0
) AS e
"""
)
# Each member's events after an event id: one range of ``resolution_by_member_event`` each.
_EVENTS_AFTER = (
    _EVENT_COLUMNS
    + """
FROM unnest(%b::bigint[], %b::bigint[]) AS m(id, after)
CROSS JOIN LATERAL (
    SELECT ev.* FROM identity_eventresolution AS r
    CROSS JOIN LATERAL (SELECT * FROM events_event WHERE id = r.event_id OFFSET 0) AS ev
    WHERE r.member_id = m.id AND r.event_id > m.after
    OFFSET 0
) AS e
"""
)


def _member_events(rows: list[tuple]) -> list[MemberEvent]:
    REFRESH_EVENTS_READ.inc(len(rows))
    # Django reads jsonb as text (its JSONField decodes); so does this raw query.
    return [
        MemberEvent(*row[:10], *(None if v is None else orjson.loads(v) for v in row[10:])) for row in rows
    ]


def events_of(
    member_ids: Iterable[int],
    *,
    only: Iterable[str] | None = None,
    properties_of: frozenset[str] = frozenset(),
) -> list[MemberEvent]:
    """The events of these members (only those named ``only``, if given), in one query, with
    the properties of order and loyalty events and of those named ``properties_of``."""
    member_ids = sorted(member_ids)
    if not member_ids:
        return []
    names = sorted(only) if only is not None else None
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _EVENTS_OF_MEMBERS,
            [sorted(ORDER_EVENTS | LOYALTY_EVENTS | properties_of), member_ids, names, names],
        )
        return _member_events(cursor.fetchall())


def events_since(member_ids: Iterable[int], since: Mapping[str, datetime | None]) -> list[MemberEvent]:
    """The events of these members named in ``since``, each name's from its time on (None:
    all of them), in one query, with the properties of order and loyalty events only (what a
    points derivation reads)."""
    member_ids = sorted(member_ids)
    if not member_ids or not since:
        return []
    names = sorted(since)
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _EVENTS_SINCE,
            [
                sorted(ORDER_EVENTS | LOYALTY_EVENTS),
                member_ids,
                names,
                [since[n] for n in names],
            ],
        )
        return _member_events(cursor.fetchall())


def events_after(
    after: Mapping[int, int], *, properties_of: frozenset[str] = frozenset()
) -> list[MemberEvent]:
    """The events of these members (id: the event id after which to read) resolved to them
    with a higher event id, in one query (as ``events_of`` reads them)."""
    if not after:
        return []
    ids = sorted(after)
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _EVENTS_AFTER,
            [sorted(ORDER_EVENTS | LOYALTY_EVENTS | properties_of), ids, [after[pk] for pk in ids]],
        )
        return _member_events(cursor.fetchall())


def order_events_of(events: Iterable[MemberEvent]) -> dict[int, list[OrderEvent]]:
    found: dict[int, list[OrderEvent]] = defaultdict(list)
    for e in events:
        if e.properties is not None and e.name in ORDER_EVENTS:
            order = order_event(
                event_id=e.event_id, name=e.name, properties=e.properties, at=e.at,
                channel=e.channel, store_code=e.store_code, message_id=e.message_id, source_id=e.source_id,
            )  # fmt: skip
            if order is not None:
                found[e.member_id].append(order)
    return found


def loyalty_histories(
    member_ids: set[int], events: Iterable[MemberEvent], order_events: dict[int, list[OrderEvent]]
) -> dict[int, LoyaltyHistory]:
    histories = {
        member_id: LoyaltyHistory(orders=order_events.get(member_id, [])) for member_id in member_ids
    }
    for e in events:
        if e.properties is None or e.member_id not in histories:
            continue
        history = histories[e.member_id]
        if e.name == ORDER_COMPLETED:
            history.lines[e.event_id] = order_lines(e.properties)
        elif e.name in LOYALTY_EVENTS:
            referrer = e.properties.get("referrer")
            history.events.append(
                LoyaltyEvent(event_id=e.event_id, name=e.name, at=e.at, message_id=e.message_id,
                             referrer=str(referrer).strip() or None if isinstance(referrer, str | int) else None)
            )  # fmt: skip
    return histories


def trait_observations(
    events: Iterable[MemberEvent],
) -> tuple[dict[int, list[TraitObservation]], list[ConsentSource]]:
    """The traits these events state, by member, and the events that may state consent (a
    consent trait, the legacy one, or a ``Consent Updated`` event) for ``members.consent``."""
    observations: dict[int, list[TraitObservation]] = defaultdict(list)
    consent: list[ConsentSource] = []
    legacy = settings.MARKETING_CONSENT_TRAIT
    for e in events:
        stating = e.name == CONSENT_EVENT and e.type == "track" and e.properties is not None
        if not stating and e.traits is None and not isinstance(e.context_traits, dict):
            continue
        stated = traits_of_event(
            e.traits or {}, {"traits": e.context_traits} if isinstance(e.context_traits, dict) else {}, e.type
        )
        if stating or CONSENT_TRAIT in stated or legacy in stated:
            consent.append(ConsentSource(e.member_id, e.event_id, stated, e.properties if stating else None))
        observations[e.member_id] += [
            TraitObservation(key[:255], value, e.at, e.channel, e.message_id, e.source_id, e.event_id)
            for key, value in stated.items()
        ]
    return observations, consent


def traits_write(rows: list[tuple[int, TraitObservation]]) -> None:
    """Store these traits (member, latest observation), replacing a member's stored value of
    the same key."""
    if not rows:
        return
    sql(
        _UPSERT_TRAITS,
        [
            [member_id for member_id, _ in rows],
            [o.key for _, o in rows],
            # None is SQL NULL, as the model's JSONField(null=True) stores it; phones, emails and
            # names are sealed (cdp.vault), names found by their terms' blind indexes.
            [None if o.value is None else orjson.dumps(trait_seal(o.key, o.value)).decode() for _, o in rows],
            [o.observed_at for _, o in rows],
            [o.channel for _, o in rows],
            [o.source_id for _, o in rows],
            [o.event_id for _, o in rows],
            [",".join(trait_lookup(o.key, o.value)) for _, o in rows],
        ],
    )


def orders_insert(orders: list[tuple[int, Order]]) -> None:
    if orders:
        sql(
            _INSERT_ORDERS,
            [[member_id for member_id, _ in orders]]
            + [[getattr(order, name) for _, order in orders] for name in ORDER_FIELDS],
        )


def aggregate_row(
    member_id: int,
    figures: Aggregates,
    counts: Mapping[str, int],
    stores: Iterable[str],
    last_event_at: datetime | None,
    event_counts: Mapping[str, int],
    event_times: Mapping[str, Sequence[datetime]],
) -> list:
    """A member's row of figures as ``aggregates_upsert`` writes it (``event_counts``: of
    ``Definitions.ever_filters``; ``event_times``: of ``Definitions.window_filters``)."""
    return [
        member_id, figures.currency, figures.orders, figures.spend, figures.refunded,
        figures.average_order_value, figures.first_purchase_at, figures.last_purchase_at,
        *(figures.by_channel[channel].orders for channel in CHANNELS),
        *(figures.by_channel[channel].spend for channel in CHANNELS),
        figures.orders_in_other_currencies, counts.get("events", 0),
        *(counts.get(channel, 0) for channel in CHANNELS),
        orjson.dumps(sorted(stores)).decode(), last_event_at, orjson.dumps(event_counts).decode(),
        orjson.dumps(event_times).decode(),
    ]  # fmt: skip


def aggregates_upsert(rows: list[list]) -> dict[int, dict[str, object]]:
    """Write these rows of figures (``aggregate_row``); returns each member's figures as
    stored (the names rules read: ``rules.syntax.AGGREGATES``)."""
    if not rows:
        return {}
    with binary_parameters_cursor() as cursor:
        cursor.execute(_UPSERT_AGGREGATES, [list(column) for column in zip(*rows, strict=True)])
        return {row[0]: dict(zip(AGGREGATES, row[1:], strict=True)) for row in cursor.fetchall()}


def watermarks_write(covered: Mapping[int, tuple[int, datetime | None, int]], *, only_existing: bool) -> None:
    """Record how far each member's state now covers their events (highest event id, latest
    event time, sum of the event ids). ``only_existing``: move only the watermarks still there,
    adding the sum to theirs (the incremental path, given the new events: one deleted meanwhile
    means the member's next refresh must start from the log)."""
    if not covered:
        return
    ids = sorted(covered)
    sql(
        _ADVANCE_WATERMARKS if only_existing else _UPSERT_WATERMARKS,
        [ids, [covered[pk][0] for pk in ids], [covered[pk][1] for pk in ids], [covered[pk][2] for pk in ids]],
    )


def sql(statement: str, params: list) -> None:
    with binary_parameters_cursor() as cursor:
        cursor.execute(statement, params)


_UPSERT_TRAITS = (
    f"INSERT INTO {MemberTrait._meta.db_table} (member_id, key, value, observed_at, channel, source_id, event_id, "
    "lookup) SELECT v.m, v.k, v.val::jsonb, v.at, v.ch, v.s, v.e, string_to_array(v.l, ',') "
    "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::bigint[], %b::bigint[], "
    "%b::text[]) AS v(m, k, val, at, ch, s, e, l) "
    "ON CONFLICT (member_id, key) DO UPDATE SET value = EXCLUDED.value, observed_at = EXCLUDED.observed_at, "
    "channel = EXCLUDED.channel, source_id = EXCLUDED.source_id, event_id = EXCLUDED.event_id, "
    "lookup = EXCLUDED.lookup"
)
_INSERT_ORDERS = (
    f"INSERT INTO {MemberOrder._meta.db_table} (member_id, {', '.join(ORDER_FIELDS)}) "
    "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::numeric[], %b::numeric[], "
    "%b::timestamptz[], %b::text[], %b::text[], %b::bigint[], %b::bigint[])"
)
_CHANNEL_COLUMNS = (
    *(f"orders_{channel}" for channel in CHANNELS),
    *(f"spend_{channel}" for channel in CHANNELS),
)
AGGREGATE_COLUMNS = (
    "member_id", "currency", "orders", "spend", "refunded", "average_order_value",
    "first_purchase_at", "last_purchase_at", *_CHANNEL_COLUMNS, "orders_in_other_currencies",
    "events", *(f"events_{channel}" for channel in CHANNELS), "stores_visited", "last_event_at",
    "event_counts", "event_times",
)  # fmt: skip
_AGGREGATE_TYPES = (
    "bigint", "text", "integer", "numeric", "numeric", "numeric", "timestamptz", "timestamptz",
    *("integer" for _ in CHANNELS), *("numeric" for _ in CHANNELS), "integer", "integer",
    *("integer" for _ in CHANNELS), "text", "timestamptz", "text", "text",
)  # fmt: skip
_AGGREGATE_VALUES = {
    # stores_visited travels as a JSON list: unnest cannot carry an array per row.
    "stores_visited": "ARRAY(SELECT jsonb_array_elements_text({}::jsonb))",
    "event_counts": "{}::jsonb",
    "event_times": "{}::jsonb",
}
_UPSERT_AGGREGATES = (
    f"INSERT INTO {MemberAggregate._meta.db_table} ({', '.join(AGGREGATE_COLUMNS)}, computed_at) "
    f"SELECT {', '.join(_AGGREGATE_VALUES.get(c, '{}').format(f'v.c{n}') for n, c in enumerate(AGGREGATE_COLUMNS))}, "
    "now() "
    f"FROM unnest({', '.join(f'%b::{t}[]' for t in _AGGREGATE_TYPES)}) "
    f"AS v({', '.join(f'c{n}' for n in range(len(AGGREGATE_COLUMNS)))}) "
    "ON CONFLICT (member_id) DO UPDATE SET "
    + ", ".join(f"{column} = EXCLUDED.{column}" for column in (*AGGREGATE_COLUMNS[1:], "computed_at"))
    # As stored (numeric rounding included): what a segment's SQL would read.
    + f" RETURNING member_id, {', '.join(AGGREGATES)}"
)
_WATERMARKS = RefreshWatermark._meta.db_table
_UPSERT_WATERMARKS = (
    f"INSERT INTO {_WATERMARKS} (member_id, event_id, covered_at, events_sum, refreshed_at) "
    "SELECT v.m, v.e, v.at, v.s, now() FROM unnest(%b::bigint[], %b::bigint[], %b::timestamptz[], %b::bigint[]) "
    "AS v(m, e, at, s) ON CONFLICT (member_id) DO UPDATE SET event_id = EXCLUDED.event_id, "
    "covered_at = EXCLUDED.covered_at, events_sum = EXCLUDED.events_sum, refreshed_at = EXCLUDED.refreshed_at"
)
_ADVANCE_WATERMARKS = (
    f"UPDATE {_WATERMARKS} AS w SET event_id = v.e, covered_at = v.at, events_sum = w.events_sum + v.s, "
    "refreshed_at = now() FROM unnest(%b::bigint[], %b::bigint[], %b::timestamptz[], %b::bigint[]) "
    "AS v(m, e, at, s) WHERE w.member_id = v.m"
)
