"""The member refresh's incremental path: a member who only gained later events since their
last refresh is brought up to date from those events and what is stored, not from their whole
history (``members.services.members_recompute``).

A refresh records how far it covered each member's events (``RefreshWatermark``: the highest
event id and the latest event time). The next refresh of the batch decides in one query
(``refresh_plan``) which members may go incrementally: those with a watermark whose events are
exactly the ones covered plus those after the watermark's event id (the count of events
resolved to them and the sum of their ids say so, as identity's tally keeps them
(``identity.models.MemberEventTally``): a merge, a split, an erasure, a late
resolution of an older event or a replay moving events between members changes them) and with
no merge or split recorded since. A member marked only for changed events
(``DirtyMark.from_events``) whose stored state already covers every event it holds is
*settled*: another worker's refresh read those events after they were committed, and there is
nothing left to do (under two workers, most marks of a busy member's batch are such). Their new events, read by index
(``resolution_by_member_event``), must then all be later than the time covered, state no
consent and make no group call, and touch no stored order but by refunding it; an order
another member's claim holds sends the member to the full path too, as does having its
watermark deleted (``members.orders``: an order taken away). Everything else is recomputed
from the log, and ``members_rebuild`` recomputes everyone.

What the incremental path combines:

- traits: a new observation is later than every stored one, so the latest new value of each
  key replaces the stored one (``latest_traits`` among the new ones);
- orders: new orders are added, refunds of stored orders update their ``refunded`` (capped at
  the total as ``aggregates.orders_of`` caps it);
- figures: the stored row plus the new orders and refunds and the new events' counts;
- points and tier: only for members whose new events earn (orders, loyalty events), resumed
  from where their last derivation stood (``points_refresh``: a checkpoint kept with the
  watermark) with the new events alone; a member whose checkpoint does not stand (another
  program, new facts such as a staff redemption, a new event not later than it) is derived
  from their earning events (``points_histories_whole``; time-driven changes are the account's
  ``recheck_at``'s, as for everyone);
- tags and segments: rules evaluated on the stored traits and figures and the consent
  statements held, reading none of the member's earlier events: what rules count over all
  time ("did it ever", "never did", a first time's "never before") from the stored counts of
  each such filter plus the new events passing it (``MemberAggregate.event_counts``,
  ``Definitions.ever_filters``), what windowed rules count from the stored times of the events
  passing each of their filters, as far back as the rules read it, plus the new events' times
  (``MemberAggregate.event_times``, ``Definitions.window_filters``). A member whose figures
  hold no count or times of one of those filters (a rule added or a window lengthened since
  its last refresh) goes the full way, which counts them all.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

import orjson
from django.conf import settings

from cdp.db import binary_parameters_cursor
from cdp.metrics import REFRESH_FULL_REASONS, REFRESH_PATHS
from cdp.vault import trait_open
from events.commerce import ORDER_COMPLETED, ORDER_EVENTS
from identity.models import MemberEventTally
from members.aggregates import CENT, CHANNELS, Order, OrderEvent, OrderKey, orders_of
from members.consent.selectors import consent_facts
from members.consent.statements import CONSENT_EVENT
from members.loyalty.points import LOYALTY_EVENTS
from members.loyalty.services import LoyaltyHistory
from members.member_events import (
    AGGREGATE_COLUMNS,
    MemberEvent,
    aggregates_upsert,
    events_after,
    events_since,
    loyalty_histories,
    order_events_of,
    orders_insert,
    sql,
    trait_observations,
    traits_write,
    watermarks_write,
)
from members.models import MemberAggregate, MemberOrder, MemberTrait, OrderOwner, RefreshWatermark
from members.orders import orders_held
from members.segments.rules.interpret import EventFact, MemberFacts, event_counts_add, event_times_add
from members.segments.rules.syntax import event_filter_key
from members.segments.selectors import Definitions
from members.traits import GROUP_CALL, latest_traits


@dataclass(frozen=True, slots=True)
class _Covered:
    """What a member's stored state covers, and how many events they hold now."""

    event_id: int
    covered_at: datetime | None
    counted: int  # the events the stored figures count
    covered_sum: int | None  # the sum of their ids (None: not known)
    held: int  # the events resolved to the member now
    held_sum: int  # the sum of their ids
    new_ids: frozenset[int]  # those after the watermark's event id, as counted
    counted_ever: bool  # the figures hold the counts and times of every filter rules count

    def covers(self, new: list[MemberEvent]) -> bool:
        """Whether the stored state and these new events are exactly the member's events (a
        count alone would miss a replay moving one event in and another out)."""
        return (
            self.covered_sum is not None
            and self.held == self.counted + len(new)
            and self.held_sum == self.covered_sum + sum(e.event_id for e in new)
        )


@dataclass(slots=True)
class Advance:
    """The members a refresh brings up to date incrementally, with their new events and the
    stored orders those events name."""

    events: dict[int, list[MemberEvent]] = field(default_factory=dict)
    orders: dict[int, dict[OrderKey, Order]] = field(default_factory=dict)
    #: Members whose stored state covers exactly the events they hold, with no new one.
    settled: set[int] = field(default_factory=set)
    #: The event id each planned member's watermark covered up to, and their new events' ids.
    after: dict[int, int] = field(default_factory=dict)
    new_ids: dict[int, frozenset[int]] = field(default_factory=dict)
    #: Why each of the other members needs the full recompute (``FULL_REASONS``).
    full_reasons: dict[int, str] = field(default_factory=dict)

    def new_events(self) -> list[MemberEvent]:
        return [e for found in self.events.values() for e in found]


#: Why a member goes the full way (``cdp_member_refresh_full_reasons_total``): a benchmark or
#: an operator seeing more full refreshes than expected learns which condition sent them.
FULL_REASONS = (
    "unrefreshed",  # no watermark (never refreshed, an order taken away) or a merge or split since
    "moved",  # the events held are not the covered ones plus the new ones (a replay, an erasure)
    "late",  # a new event earlier than the time covered
    "group",  # a group call
    "consent",  # a consent statement
    "orders",  # an order completed again, held by another member, or not in cents
    "marked",  # marked by something other than events (points, a manual tag, a rule's window)
    "rules",  # a rule counts events its figures hold no count or times of (a rule added or a window lengthened since)
    "off",  # the incremental path is switched off (MEMBER_REFRESH_INCREMENTAL)
)


def refresh_plan(member_ids: set[int], definitions: Definitions) -> Advance:
    """Which of these active members can be refreshed from their new events alone (see the
    module's docstring), with those events; the others need the full recompute."""
    covered = _covered_of(member_ids, sorted(definitions.ever_filters), sorted(definitions.window_filters))
    plan = Advance()
    events: dict[int, list[MemberEvent]] = defaultdict(list)
    # With the properties of consent events (a member whose new events state consent goes the
    # full way) and of those rules filter on (to count them in ``event_counts``).
    for e in events_after(
        {pk: c.event_id for pk, c in covered.items()},
        properties_of=definitions.property_events | {CONSENT_EVENT},
    ):
        # Only the events the counts were read with: one committed since waits for its mark.
        if e.event_id in covered[e.member_id].new_ids:
            events[e.member_id].append(e)
    plan.settled = {pk for pk, c in covered.items() if not events[pk] and c.covers([])}
    reasons = plan.full_reasons
    reasons.update(dict.fromkeys(member_ids - covered.keys(), "unrefreshed"))
    reasons.update(dict.fromkeys(plan.settled, "marked"))  # unless only events marked them
    candidates: dict[int, list[MemberEvent]] = {}
    for pk, c in covered.items():
        found = events[pk]
        if pk in plan.settled:
            continue
        if not found or not c.covers(found):
            reasons[pk] = "moved"
        elif not all(c.covered_at is None or e.at > c.covered_at for e in found):
            reasons[pk] = "late"
        elif any(e.type == GROUP_CALL and e.group_id for e in found):
            reasons[pk] = "group"
        elif not c.counted_ever:
            reasons[pk] = "rules"
        else:
            candidates[pk] = found
    _, consent = trait_observations(e for found in candidates.values() for e in found)
    for source in consent:
        if candidates.pop(source.member_id, None) is not None:
            reasons[source.member_id] = "consent"
    order_events = order_events_of(e for found in candidates.values() for e in found)
    stored = _stored_orders(order_events)
    held_elsewhere = _orders_held_by_others(order_events)
    for member_id, found in candidates.items():
        orders = stored.get(member_id, {})
        if _orders_advance(orders, order_events.get(member_id, []), held_elsewhere.get(member_id, set())):
            plan.events[member_id] = found
            plan.orders[member_id] = orders
            plan.after[member_id] = covered[member_id].event_id
            plan.new_ids[member_id] = frozenset(e.event_id for e in found)
        else:
            reasons[member_id] = "orders"
    return plan


def refresh_paths_count(
    *, incremental: int, full: int, settled: int = 0, reasons: Iterable[str] = ()
) -> None:
    """Count the members refreshed by each path, and the reason of each full one."""
    REFRESH_PATHS.labels("incremental").inc(incremental)
    REFRESH_PATHS.labels("full").inc(full)
    REFRESH_PATHS.labels("settled").inc(settled)
    for reason, count in Counter(reasons).items():
        REFRESH_FULL_REASONS.labels(reason).inc(count)


def _orders_advance(
    stored: Mapping[OrderKey, Order], events: list[OrderEvent], held_elsewhere: set[OrderKey]
) -> bool:
    """Whether these new order events can be combined with the stored orders they name: no
    completion of an order number the member already has, or of an order another member
    holds, and amounts in cents (figures add up exactly as the full path sums them)."""
    numbers = {key[1] for key in stored}
    for e in events:
        if e.amount != e.amount.quantize(CENT):
            return False
        if e.name == ORDER_COMPLETED and (e.order_id in numbers or e.order_key in held_elsewhere):
            return False
    return True


def members_advance(
    plan: Advance, owned: Mapping[int, list[OrderEvent]], definitions: Definitions, now: datetime
) -> dict[int, MemberFacts]:
    """Bring the planned members' traits, orders, figures and watermarks up to date from their
    new events (``owned``: their order events as ``members.orders`` weighed them) and stored
    state (the caller holds their refresh locks); returns what rules read of each, for the
    refresh to decide their tags and segments once their points are written
    (``members.services``: one lock phase of each kind per refresh)."""
    member_ids = set(plan.events)
    if not member_ids:
        return {}
    _traits_advance(plan.new_events())
    figures, counts, times = _figures_advance(plan, owned, definitions, now)
    watermarks_write(
        {
            pk: (max(e.event_id for e in found), max(e.at for e in found), sum(e.event_id for e in found))
            for pk, found in plan.events.items()
        },
        only_existing=True,
    )
    # What rules count, from the figures: the counts of all time (``event_counts``) and the
    # times windowed rules read (``event_times``); none of the member's earlier events.
    windowed = {key: event_filter_key(wanted) for key, (wanted, _) in definitions.window_filters.items()}
    traits = _traits_of(member_ids)
    consents = consent_facts(member_ids=member_ids)
    return {
        pk: MemberFacts(
            pk, traits=traits.get(pk, {}), aggregates=figures.get(pk, {}), consents=consents.get(pk, ()),
            event_counts=counts[pk], event_times={windowed[key]: found for key, found in times[pk].items()},
        )
        for pk in member_ids
    }  # fmt: skip


def points_histories(plan: Advance, owned: Mapping[int, list[OrderEvent]]) -> dict[int, LoyaltyHistory]:
    """The new events of the planned members whose new events earn (orders, loyalty events):
    their derivations resume from their checkpoints with these alone (``points_refresh``)."""
    new = plan.new_events()
    earning = {e.member_id for e in new if e.name in ORDER_EVENTS | LOYALTY_EVENTS}
    return loyalty_histories(earning, new, dict(owned)) if earning else {}


def points_histories_whole(plan: Advance, member_ids: set[int]) -> dict[int, LoyaltyHistory]:
    """The earning events of these planned members whose points could not resume, all of them.

    Exactly the events the watermark will cover (not one committed since this plan was read: it
    waits for its own mark), so the new checkpoint covers them too. Their orders are those they
    own as recorded, read without a lock (``orders_held``): this refresh weighed the new
    events' claims already, and every earlier claim of a member on this path was weighed by an
    earlier refresh (an order taken from it since sends it the full way), so none changes here.
    """
    history = [
        e for e in events_since(member_ids, dict.fromkeys(ORDER_EVENTS | LOYALTY_EVENTS))
        if e.event_id <= plan.after[e.member_id] or e.event_id in plan.new_ids[e.member_id]
    ]  # fmt: skip
    return loyalty_histories(member_ids, history, orders_held(order_events=order_events_of(history)))


def _traits_advance(events: list[MemberEvent]) -> None:
    """Each new observation is later than every stored one: the latest new value of a key
    replaces the stored value (ties among the new ones broken as ``latest_traits`` breaks them)."""
    observations, _ = trait_observations(events)
    traits_write(
        [
            (member_id, o)
            for member_id, found in observations.items()
            for o in latest_traits(found, settings.MEMBER_TRAIT_CHANNEL_PRECEDENCE).values()
        ]
    )


def _traits_of(member_ids: set[int]) -> dict[int, dict[str, object]]:
    traits: dict[int, dict[str, object]] = defaultdict(dict)
    with binary_parameters_cursor() as cursor:
        cursor.execute(_TRAITS_OF, [sorted(member_ids)])
        for member_id, key, value in cursor.fetchall():
            traits[member_id][key] = trait_open(key, orjson.loads(value))
    return traits


def _figures_advance(
    plan: Advance, owned: Mapping[int, list[OrderEvent]], definitions: Definitions, now: datetime
) -> tuple[dict[int, dict[str, object]], dict[int, dict[str, int]], dict[int, dict[str, list[datetime]]]]:
    """The new orders and refunds, and each member's stored figures moved by them and by the
    new events' counts and times; returns the figures as stored
    (``member_events.aggregates_upsert``), the counts of the events passing each filter rules
    count over all time and the times of those passing each filter windowed rules count, by
    ``window_key`` (``refresh_plan`` sent the members without one of them the full way)."""
    ever_filters, window_filters = definitions.ever_filters, definitions.window_filters
    stored = _aggregates_of(set(plan.events))
    counts: dict[int, dict[str, int]] = {}
    times: dict[int, dict[str, list[datetime]]] = {}
    rows: list[list] = []
    new_orders: list[tuple[int, Order]] = []
    refunded: list[tuple[int, Order]] = []
    currency = settings.CDP_CURRENCY
    for member_id, events in sorted(plan.events.items()):
        row = stored[member_id]
        orders = plan.orders[member_id]
        completions = [e for e in owned.get(member_id, []) if e.name == ORDER_COMPLETED]
        completed = {e.order_key for e in completions}
        numbered: dict[str, set[OrderKey]] = defaultdict(set)
        for key, order in orders.items():
            if order.placed_at is not None:
                numbered[key[1]].add(key)
        for key in completed:
            numbered[key[1]].add(key)
        fresh: list[OrderEvent] = list(completions)
        for refund in (e for e in owned.get(member_id, []) if e.name != ORDER_COMPLETED):
            key = refund.order_key
            # As ``aggregates.order_history`` attributes it: to its own order if placed, else
            # to the member's one placed order of that number, else to its own (refund-only).
            if key not in numbered.get(refund.order_id, ()) and len(numbered.get(refund.order_id, ())) == 1:
                key = next(iter(numbered[refund.order_id]))
            if (target := orders.get(key)) is None:
                fresh.append(
                    replace(refund, source_id=key[0], order_id=key[1]) if key in completed else refund
                )
                continue
            before = target.refunded
            if refund.currency == target.currency:
                target.refunded += refund.amount
                if target.placed_at is not None:
                    target.refunded = min(target.refunded, target.total)
            if target.refunded != before:
                refunded.append((member_id, target))
                _spend_move(row, target, -(target.refunded - before), currency)
        for order in orders_of(fresh).values():
            new_orders.append((member_id, order))
            if order.placed_at is None:
                continue
            if order.currency != currency:
                row["orders_in_other_currencies"] += 1
                continue
            row["orders"] += 1
            row["refunded"] += order.refunded
            _spend_move(row, order, order.net, currency, placed=True)
            first, last = row["first_purchase_at"], row["last_purchase_at"]
            row["first_purchase_at"] = order.placed_at if first is None else min(first, order.placed_at)
            row["last_purchase_at"] = order.placed_at if last is None else max(last, order.placed_at)
        row["average_order_value"] = (row["spend"] / row["orders"]).quantize(CENT) if row["orders"] else None
        row["events"] += len(events)
        stores = set(row["stores_visited"])
        for e in events:
            if e.channel in CHANNELS:
                row[f"events_{e.channel}"] += 1
            if e.store_code:
                stores.add(e.store_code)
            if row["last_event_at"] is None or e.at > row["last_event_at"]:
                row["last_event_at"] = e.at
        row["stores_visited"] = sorted(stores)
        facts = [EventFact(e.name, e.at, e.channel, e.store_code, e.properties or {}) for e in events]
        counts[member_id] = event_counts_add(_json_object(row["event_counts"]), facts, ever_filters)
        row["event_counts"] = orjson.dumps(counts[member_id]).decode()
        kept = {
            key: [datetime.fromisoformat(at) for at in found]
            for key, found in _json_object(row["event_times"]).items()
        }
        times[member_id] = event_times_add(kept, facts, window_filters, now)
        row["event_times"] = orjson.dumps(times[member_id]).decode()
        rows.append([row[column] for column in AGGREGATE_COLUMNS])
    orders_insert(new_orders)
    if refunded:
        sql(
            _ORDERS_REFUNDED,
            [[m for m, _ in refunded], [o.source_id for _, o in refunded], [o.order_id for _, o in refunded],
             [o.refunded for _, o in refunded]],
        )  # fmt: skip
    stores_at = AGGREGATE_COLUMNS.index("stores_visited")
    for values in rows:  # stores_visited travels as a JSON list (``aggregate_row``)
        values[stores_at] = _json_list(values[stores_at])
    return aggregates_upsert(rows), counts, times


def _spend_move(row: dict, order: Order, amount: Decimal, currency: str, *, placed: bool = False) -> None:
    """Move a member's spend (and their order's channel's) by ``amount`` of ``order``; a refund
    (``placed`` False) also counts as refunded."""
    if order.placed_at is None or order.currency != currency:
        return
    row["spend"] += amount
    if not placed:
        row["refunded"] -= amount
    if order.channel in CHANNELS:
        row[f"spend_{order.channel}"] += amount
        row[f"orders_{order.channel}"] += placed


def _json_list(values: Iterable[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _json_object(value: str | dict) -> dict:
    """A jsonb value as read raw (text, as Django's connection reads jsonb) or decoded."""
    return orjson.loads(value) if isinstance(value, str) else value


def _covered_of(member_ids: set[int], ever_keys: list[str], window_keys: list[str]) -> dict[int, _Covered]:
    """The members of these with a watermark and figures, no merge or split since the
    watermark, and what they cover (one query); ``ever_keys``, ``window_keys``: the counts
    and times their figures must hold."""
    if not member_ids:
        return {}
    with binary_parameters_cursor() as cursor:
        cursor.execute(_COVERED_OF, [ever_keys, window_keys, sorted(member_ids)])
        return {
            pk: _Covered(event_id, covered_at, counted, covered_sum, held, held_sum, frozenset(new_ids), ever)
            for pk, event_id, covered_at, counted, covered_sum, held, held_sum, new_ids, ever in cursor
        }


def _aggregates_of(member_ids: set[int]) -> dict[int, dict]:
    with binary_parameters_cursor() as cursor:
        cursor.execute(_AGGREGATES_OF, [sorted(member_ids)])
        return {row[0]: dict(zip(AGGREGATE_COLUMNS, row, strict=True)) for row in cursor.fetchall()}


def _stored_orders(order_events: Mapping[int, list[OrderEvent]]) -> dict[int, dict[OrderKey, Order]]:
    """The stored orders of each member with the order numbers their new events name."""
    pairs = sorted({(member_id, e.order_id) for member_id, events in order_events.items() for e in events})
    found: dict[int, dict[OrderKey, Order]] = defaultdict(dict)
    if not pairs:
        return found
    with binary_parameters_cursor() as cursor:
        cursor.execute(_ORDERS_OF, [[m for m, _ in pairs], [o for _, o in pairs]])
        for member_id, *columns in cursor.fetchall():
            order = Order(*columns)
            found[member_id][(order.source_id, order.order_id)] = order
    return found


def _orders_held_by_others(order_events: Mapping[int, list[OrderEvent]]) -> dict[int, set[OrderKey]]:
    """The orders completed in these new events whose recorded owner is another member."""
    claimed = sorted(
        {
            (member_id, *e.order_key)
            for member_id, events in order_events.items()
            for e in events
            if e.name == ORDER_COMPLETED
        }
    )
    held: dict[int, set[OrderKey]] = defaultdict(set)
    if not claimed:
        return held
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _HELD_BY_OTHERS, [[c[0] for c in claimed], [c[1] for c in claimed], [c[2] for c in claimed]]
        )
        for member_id, source_id, order_id in cursor.fetchall():
            held[member_id].add((source_id, order_id))
    return held


_COVERED_OF = (
    # The counts, sums and new event ids in one statement (one snapshot): read apart, a batch
    # another worker committed in between made the counts disagree with the events read.
    "SELECT m.id, w.event_id, w.covered_at, a.events, w.events_sum, h.held, h.held_sum, h.new_ids, "
    "a.event_counts ?& %b::text[] AND a.event_times ?& %b::text[] "
    "FROM unnest(%b::bigint[]) AS m(id) "
    f"JOIN {RefreshWatermark._meta.db_table} AS w ON w.member_id = m.id "
    f"JOIN {MemberAggregate._meta.db_table} AS a ON a.member_id = m.id "
    # What the member holds from identity's tally (kept by trigger with the resolutions), and
    # only the new events' resolutions by index: counted from the resolutions, this read all
    # of a member's events on every refresh (``identity.models.MemberEventTally``).
    f"LEFT JOIN {MemberEventTally._meta.db_table} AS t ON t.member_id = m.id "
    "CROSS JOIN LATERAL (SELECT coalesce(t.events, 0) AS held, coalesce(t.events_sum, 0) AS held_sum, "
    "ARRAY(SELECT r.event_id FROM identity_eventresolution AS r "
    "WHERE r.member_id = m.id AND r.event_id > w.event_id) AS new_ids) AS h "
    "WHERE NOT EXISTS (SELECT 1 FROM identity_mergerecord AS g WHERE g.survivor_id = m.id "
    "AND g.created_at >= w.refreshed_at) "
    "AND NOT EXISTS (SELECT 1 FROM identity_splitrecord AS s WHERE s.member_id = m.id "
    "AND s.created_at >= w.refreshed_at)"
)
_AGGREGATES_OF = (
    f"SELECT {', '.join(AGGREGATE_COLUMNS)} FROM {MemberAggregate._meta.db_table} "
    "WHERE member_id = ANY(%b::bigint[])"
)
# Lookups by a batch's keys walk an index once per key (a lateral subquery kept from being
# flattened by OFFSET 0), as identity's store does: without planner statistics (a table never
# analyzed, autovacuum late) a join of a few hundred keys, or an ``IN`` list of them, on a
# column of a non-unique index is estimated to match much of the table and planned as a scan
# of all of it, once per refresh batch: a cost that grew with the table (measured: the
# refresh's backend CPU per event rising through a stream, docs/benchmarks.md).
_TRAITS_OF = (
    "SELECT t.member_id, t.key, t.value FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL "
    f"(SELECT member_id, key, value FROM {MemberTrait._meta.db_table} WHERE member_id = k.id OFFSET 0) AS t"
)
_ORDERS_OF = (
    "SELECT o.member_id, o.source_id, o.order_id, o.currency, o.total, o.refunded, o.placed_at, o.channel, "
    "o.store_code, o.event_id FROM unnest(%b::bigint[], %b::text[]) AS k(member_id, order_id) "
    f"CROSS JOIN LATERAL (SELECT * FROM {MemberOrder._meta.db_table} "
    "WHERE member_id = k.member_id AND order_id = k.order_id OFFSET 0) AS o"
)
_HELD_BY_OTHERS = (
    "SELECT k.member_id, o.source_id, o.order_id FROM unnest(%b::bigint[], %b::bigint[], %b::text[]) "
    f"AS k(member_id, source_id, order_id) JOIN {OrderOwner._meta.db_table} AS o "
    "ON o.source_id = k.source_id AND o.order_id = k.order_id AND o.member_id <> k.member_id"
)
_ORDERS_REFUNDED = (
    f"UPDATE {MemberOrder._meta.db_table} AS o SET refunded = v.refunded "
    "FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::numeric[]) AS v(member_id, source_id, order_id, refunded) "
    "WHERE o.member_id = v.member_id AND o.source_id = v.source_id AND o.order_id = v.order_id"
)
