"""What a member bought and where, computed from their events. Pure (no ORM).

An order is identified by its source and its ``order_id`` there (``OrderKey``): stores and
channels number their orders independently, so ``POS-1001`` of one store and ``POS-1001`` of
another (or of the web shop) are two orders. A member's orders come from their ``Order
Completed`` events; an ``Order Refunded`` takes its ``total`` (or ``revenue``) back, in full or
in part, from the order of its own source with that ``order_id`` or, when the member has none
(a web order returned at a till), from the member's one order of that number from another
source. The aggregates are sums over the orders, so computing them again from all of a
member's events, after a merge, a split or a late upload, gives the same answer as if the
events had arrived in order: that is how the refresh keeps them current and how a rebuild
checks them.

One order, one owner: when the completions of one order are resolved to several members (a
till re-sent a sale under the right customer, or two systems were confused), the member
holding the latest completion (event time, then messageId) owns the order; the others'
completions of it count for nothing (``order_claims``, ``order_owners``,
``orders_owned``). Within one member a second completion is a retry: the earliest counts.

Amounts are Decimal throughout. Spend is counted in one currency, the platform's
(``CDP_CURRENCY``); orders in another currency are kept with their own currency, counted in
``orders_in_other_currencies`` and left out of spend rather than added as if they were the same
money.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from events.commerce import MAX_ORDER_ID_LENGTH, ORDER_COMPLETED, ORDER_REFUNDED, as_amount

CHANNELS = ("pos", "app", "mini_program", "web")
ZERO = Decimal("0.00")
CENT = Decimal("0.01")
#: Digits of a stored money figure (an order's total, a member's spend), 2 of them cents: 18
#: before the point hold a member with a million orders of the largest amount ingestion
#: accepts (``events.commerce.MAX_AMOUNT``, 10^8, so 10^14), and refunds of it, with room.
FIGURE_DIGITS = 20

#: An order's identity: the source that numbered it and its ``order_id`` there.
OrderKey = tuple[int, str]


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An ``Order Completed`` or ``Order Refunded`` event, as the aggregates read it."""

    event_id: int
    name: str
    order_id: str
    amount: Decimal
    currency: str
    at: datetime
    channel: str
    store_code: str
    message_id: str
    source_id: int = 0  # tests of the pure functions may leave it out: one source

    @property
    def order_key(self) -> OrderKey:
        return (self.source_id, self.order_id)


@dataclass(slots=True)
class Order:
    source_id: int
    order_id: str
    currency: str
    total: Decimal
    refunded: Decimal
    placed_at: datetime | None  # None: only a refund was seen (the order predates the platform)
    channel: str
    store_code: str
    event_id: int

    @property
    def net(self) -> Decimal:
        return self.total - self.refunded


@dataclass(slots=True)
class ChannelFigures:
    orders: int = 0
    spend: Decimal = ZERO


@dataclass(slots=True)
class Aggregates:
    currency: str
    orders: int = 0
    spend: Decimal = ZERO
    refunded: Decimal = ZERO
    average_order_value: Decimal | None = None
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None
    by_channel: dict[str, ChannelFigures] = field(
        default_factory=lambda: {c: ChannelFigures() for c in CHANNELS}
    )
    orders_in_other_currencies: int = 0


def order_event(
    *,
    event_id: int,
    name: str,
    properties: Mapping[str, Any],
    at: datetime,
    channel: str,
    store_code: str,
    message_id: str,
    source_id: int,
) -> OrderEvent | None:
    """The order facts of an event, or None when it is not an order event with a usable
    order id and amount (ingestion refuses those, so this only guards old rows)."""
    if name not in (ORDER_COMPLETED, ORDER_REFUNDED):
        return None
    order_id = properties.get("order_id")
    if isinstance(order_id, bool) or not isinstance(order_id, str | int):
        return None
    order_id = str(order_id).strip()
    if not order_id or len(order_id) > MAX_ORDER_ID_LENGTH:
        return None
    amount = as_amount(properties.get("total"))
    if amount is None:
        amount = as_amount(properties.get("revenue"))
    currency = properties.get("currency")
    if amount is None or amount < 0 or not isinstance(currency, str):
        return None
    return OrderEvent(
        event_id=event_id,
        name=name,
        order_id=order_id,
        amount=amount,
        currency=currency.upper(),
        at=at,
        channel=channel,
        store_code=store_code,
        message_id=message_id,
        source_id=source_id,
    )


@dataclass(frozen=True, slots=True)
class OrderHistory:
    """A member's order events sorted out: each order's completion and the refunds of each."""

    completions: dict[OrderKey, OrderEvent]
    refunds: dict[OrderKey, list[OrderEvent]]


def order_history(events: Iterable[OrderEvent]) -> OrderHistory:
    """Each order's completion (sent twice with a new messageId, it counts once: the earliest)
    and its refunds. A refund is of the order of its own source with its ``order_id``; failing
    that, of the member's one order of that number from another source (returned elsewhere
    than bought); failing that, of an order placed before the platform saw any (its own key)."""
    completions: dict[OrderKey, OrderEvent] = {}
    refunds: list[OrderEvent] = []
    for event in events:
        if event.name == ORDER_COMPLETED:
            current = completions.get(event.order_key)
            if current is None or (event.at, event.message_id) < (current.at, current.message_id):
                completions[event.order_key] = event
        else:
            refunds.append(event)
    numbered: dict[str, list[OrderKey]] = {}
    for key in completions:
        numbered.setdefault(key[1], []).append(key)
    refunds_of: dict[OrderKey, list[OrderEvent]] = {}
    for refund in refunds:
        key = refund.order_key
        if key not in completions and len(elsewhere := numbered.get(refund.order_id, [])) == 1:
            key = elsewhere[0]
        refunds_of.setdefault(key, []).append(refund)
    return OrderHistory(completions, refunds_of)


def orders_of(events: Iterable[OrderEvent]) -> dict[OrderKey, Order]:
    """Orders by their key (``order_history``). Refunds add up, never beyond the order's total."""
    history = order_history(events)
    orders = {
        key: Order(
            source_id=done.source_id,
            order_id=done.order_id,
            currency=done.currency,
            total=done.amount,
            refunded=ZERO,
            placed_at=done.at,
            channel=done.channel,
            store_code=done.store_code,
            event_id=done.event_id,
        )
        for key, done in history.completions.items()
    }
    for key, taken_back in history.refunds.items():
        order = orders.get(key)
        if order is None:
            first = min(taken_back, key=lambda e: (e.at, e.message_id))
            order = orders[key] = Order(
                source_id=first.source_id,
                order_id=first.order_id,
                currency=first.currency,
                total=ZERO,
                refunded=ZERO,
                placed_at=None,
                channel=first.channel,
                store_code=first.store_code,
                event_id=first.event_id,
            )
        refunded = sum((e.amount for e in taken_back if e.currency == order.currency), ZERO)
        order.refunded = min(refunded, order.total) if order.placed_at is not None else refunded
    return orders


@dataclass(frozen=True, slots=True, order=True)
class Claim:
    """A member's claim on an order: their latest completion of it. Claims compare by event
    time, then messageId (unique within a source, so within an order): the greatest wins."""

    at: datetime
    message_id: str
    event_id: int
    member_id: int


def order_claims(member_id: int, events: Iterable[OrderEvent]) -> dict[OrderKey, Claim]:
    """The member's claim on each order they completed."""
    claims: dict[OrderKey, Claim] = {}
    for event in events:
        if event.name != ORDER_COMPLETED:
            continue
        claim = Claim(event.at, event.message_id, event.event_id, member_id)
        if (current := claims.get(event.order_key)) is None or claim > current:
            claims[event.order_key] = claim
    return claims


def order_owners(
    recorded: Mapping[OrderKey, Claim], claims: Iterable[tuple[OrderKey, Claim]]
) -> dict[OrderKey, Claim]:
    """Each order's owning claim once these ``claims`` are weighed against the ``recorded``
    owners: the greatest wins, and a claim on the recorded owner's very event takes it over
    (the event moved to another member: a merge, a split). Only the orders that change."""
    changed: dict[OrderKey, Claim] = {}
    for key, claim in claims:
        current = changed.get(key) or recorded.get(key)
        if current is None or claim > current or (claim.event_id == current.event_id and claim != current):
            changed[key] = claim
    return changed


def orders_owned(
    member_id: int, events: Iterable[OrderEvent], owners: Mapping[OrderKey, Claim]
) -> list[OrderEvent]:
    """The member's order events without their completions of orders they do not own: an order
    is the member's when its owning claim is the member's, on an event the member still holds
    (one a split took away is its new holder's, once their refresh takes the order over)."""
    events = list(events)
    # From the member's completions, not from ``owners``: the caller passes the owners of a
    # whole batch of members, and walking them once per member cost quadratic time.
    own = {
        e.order_key
        for e in events
        if e.name == ORDER_COMPLETED
        and (owner := owners.get(e.order_key)) is not None
        and owner.member_id == member_id
        and owner.event_id == e.event_id
    }
    return [e for e in events if e.name != ORDER_COMPLETED or e.order_key in own]


def aggregates_of(orders: Iterable[Order], currency: str) -> Aggregates:
    result = Aggregates(currency=currency)
    for order in orders:
        if order.currency != currency:
            result.orders_in_other_currencies += order.placed_at is not None
            continue
        if order.placed_at is None:
            continue  # a refund of an order placed before we saw any: its spend was never counted
        result.refunded += order.refunded
        result.orders += 1
        result.spend += order.net
        channel = result.by_channel.setdefault(order.channel, ChannelFigures())
        channel.orders += 1
        channel.spend += order.net
        if result.first_purchase_at is None or order.placed_at < result.first_purchase_at:
            result.first_purchase_at = order.placed_at
        if result.last_purchase_at is None or order.placed_at > result.last_purchase_at:
            result.last_purchase_at = order.placed_at
    if result.orders:
        result.average_order_value = (result.spend / result.orders).quantize(CENT)
    return result
