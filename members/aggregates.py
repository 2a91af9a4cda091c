"""What a member bought and where, computed from their events. Pure (no ORM).

A member's orders come from their ``Order Completed`` events, keyed by ``order_id``; an
``Order Refunded`` with the same ``order_id`` takes its ``total`` (or ``revenue``) back, in
full or in part. The aggregates are sums over the orders, so computing them again from all of
a member's events, after a merge, a split or a late upload, gives the same answer as if the
events had arrived in order: that is how the refresh keeps them current and how a rebuild
checks them.

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

from events.commerce import ORDER_COMPLETED, ORDER_REFUNDED, as_amount

CHANNELS = ("pos", "app", "mini_program", "web")
ZERO = Decimal("0.00")
CENT = Decimal("0.01")
#: Digits of a stored money figure (an order's total, a member's spend), 2 of them cents: 18
#: before the point hold a member with a million orders of the largest amount ingestion
#: accepts (``events.commerce.MAX_AMOUNT``, 10^8, so 10^14), and refunds of it, with room.
FIGURE_DIGITS = 20


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


@dataclass(slots=True)
class Order:
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
) -> OrderEvent | None:
    """The order facts of an event, or None when it is not an order event with a usable
    order id and amount (ingestion refuses those, so this only guards old rows)."""
    if name not in (ORDER_COMPLETED, ORDER_REFUNDED):
        return None
    order_id = properties.get("order_id")
    if isinstance(order_id, bool) or not isinstance(order_id, str | int) or not str(order_id).strip():
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
        order_id=str(order_id).strip(),
        amount=amount,
        currency=currency.upper(),
        at=at,
        channel=channel,
        store_code=store_code,
        message_id=message_id,
    )


def orders_of(events: Iterable[OrderEvent]) -> dict[str, Order]:
    """Orders by id. A completion sent twice (new messageId) counts once: the earliest. Refunds
    add up, never beyond the order's total."""
    completions: dict[str, OrderEvent] = {}
    refunds: dict[str, list[OrderEvent]] = {}
    for event in events:
        if event.name == ORDER_COMPLETED:
            current = completions.get(event.order_id)
            if current is None or (event.at, event.message_id) < (current.at, current.message_id):
                completions[event.order_id] = event
        else:
            refunds.setdefault(event.order_id, []).append(event)
    orders = {
        order_id: Order(
            order_id=order_id,
            currency=done.currency,
            total=done.amount,
            refunded=ZERO,
            placed_at=done.at,
            channel=done.channel,
            store_code=done.store_code,
            event_id=done.event_id,
        )
        for order_id, done in completions.items()
    }
    for order_id, taken_back in refunds.items():
        order = orders.get(order_id)
        if order is None:
            first = min(taken_back, key=lambda e: (e.at, e.message_id))
            order = orders[order_id] = Order(
                order_id=order_id,
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
