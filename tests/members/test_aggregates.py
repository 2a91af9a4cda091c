"""A member's orders and figures: computed from their events, exact after merges and refunds,
and the same when rebuilt from the event log."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from events.models import Event
from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.services import identity_resolve_events
from members.aggregates import (
    Claim,
    OrderEvent,
    aggregates_of,
    order_claims,
    order_event,
    order_owners,
    orders_of,
    orders_owned,
)
from members.models import MemberAggregate, MemberOrder
from members.services import members_refresh
from tests.factories import EventFactory, SourceFactory

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def placed(order_id: str, amount: str, *, at: datetime = T0, channel: str = "pos", currency: str = "CNY",
           name: str = "Order Completed", message_id: str = "", source_id: int = 1) -> OrderEvent:  # fmt: skip
    return OrderEvent(
        event_id=hash((order_id, name, message_id, source_id)) % 10_000, name=name, order_id=order_id,
        amount=Decimal(amount), currency=currency, at=at, channel=channel, store_code="SH01",
        message_id=message_id or f"{name}-{order_id}-{amount}", source_id=source_id,
    )  # fmt: skip


def refunded(order_id: str, amount: str, **kwargs: Any) -> OrderEvent:
    return placed(order_id, amount, name="Order Refunded", at=T0 + timedelta(days=3), **kwargs)


def test_partial_refunds_reduce_spend_and_never_below_the_order():
    orders = orders_of([
        placed("A", "100.00"), placed("B", "50.00", channel="app", at=T0 + timedelta(days=1)),
        refunded("A", "30.00"), refunded("B", "40.00"), refunded("B", "40.00", message_id="again"),
    ])  # fmt: skip

    figures = aggregates_of(orders.values(), "CNY")

    assert (orders[1, "A"].refunded, orders[1, "B"].refunded) == (Decimal("30.00"), Decimal("50.00"))
    assert figures.orders == 2
    assert figures.spend == Decimal("70.00")
    assert figures.refunded == Decimal("80.00")
    assert figures.average_order_value == Decimal("35.00")
    assert (figures.by_channel["pos"].spend, figures.by_channel["app"].spend) == (
        Decimal("70.00"),
        Decimal("0.00"),
    )
    assert (figures.first_purchase_at, figures.last_purchase_at) == (T0, T0 + timedelta(days=1))


def test_a_completion_sent_twice_counts_once_and_other_currencies_are_kept_apart():
    orders = orders_of([
        placed("A", "10", message_id="first"), placed("A", "10", message_id="resent", at=T0 + timedelta(seconds=5)),
        placed("U", "99", currency="USD"), refunded("OLD", "20"),
    ])  # fmt: skip

    figures = aggregates_of(orders.values(), "CNY")

    assert orders[1, "A"].placed_at == T0
    assert orders[1, "OLD"].placed_at is None  # a refund of an order we never saw: kept, not spend
    assert (figures.orders, figures.spend, figures.orders_in_other_currencies) == (1, Decimal("10"), 1)


def test_order_event_reads_total_or_revenue_and_ignores_what_is_not_an_order():
    common = {"event_id": 1, "at": T0, "channel": "web", "store_code": "", "message_id": "m", "source_id": 3}

    assert order_event(name="Order Completed", properties={"order_id": 7, "revenue": "12.5", "currency": "cny"},
                       **common).amount == Decimal("12.5")  # fmt: skip
    assert order_event(name="Order Completed", properties={"order_id": 7, "revenue": "1", "currency": "cny"},
                       **common).currency == "CNY"  # fmt: skip
    assert (
        order_event(
            name="Product Viewed", properties={"order_id": 7, "total": 1, "currency": "CNY"}, **common
        )
        is None
    )
    assert (
        order_event(
            name="Order Completed", properties={"order_id": "", "total": 1, "currency": "CNY"}, **common
        )
        is None
    )
    padded = order_event(name="Order Completed", properties={"order_id": " P-1 ", "total": 1, "currency": "CNY"},
                         **common)  # fmt: skip
    assert padded is not None
    assert padded.order_key == (3, "P-1")
    too_long = {"order_id": "x" * 256, "total": 1, "currency": "CNY"}  # an old row: ingestion refuses it now
    assert order_event(name="Order Completed", properties=too_long, **common) is None


def test_two_sources_numbering_alike_are_two_orders_and_a_refund_finds_its_own():
    orders = orders_of([
        placed("1001", "100", source_id=1), placed("1001", "40", source_id=2, channel="web"),
        refunded("1001", "30", source_id=2),  # the web shop's order, refunded by the web shop
        placed("W-7", "60", source_id=2, channel="web"), refunded("W-7", "60", source_id=1),  # bought online, returned in store
        refunded("GONE", "5", source_id=1), refunded("GONE", "5", source_id=2),  # two orders we never saw
    ])  # fmt: skip

    assert {key: (o.total, o.refunded) for key, o in orders.items()} == {
        (1, "1001"): (Decimal("100"), Decimal("0.00")),
        (2, "1001"): (Decimal("40"), Decimal("30")),
        (2, "W-7"): (Decimal("60"), Decimal("60")),
        (1, "GONE"): (Decimal("0.00"), Decimal("5")),
        (2, "GONE"): (Decimal("0.00"), Decimal("5")),
    }
    assert aggregates_of(orders.values(), "CNY").spend == Decimal("110")
    # Returned in store with two web orders of that number: which one is unknown; neither is taken.
    ambiguous = orders_of([placed("W-7", "60", source_id=2), placed("W-7", "60", source_id=3),
                           refunded("W-7", "60", source_id=1)])  # fmt: skip
    assert [o.refunded for o in ambiguous.values() if o.placed_at] == [0, 0]


def test_the_latest_claim_owns_an_order_whatever_order_claims_are_weighed_in():
    def claim(member_id: int, event_id: int, at: datetime) -> Claim:
        return Claim(at, f"m{event_id}", event_id, member_id)

    first, correction, late_retry = claim(1, 10, T0), claim(2, 11, T0 + timedelta(hours=1)), claim(1, 12, T0)
    key = (1, "POS-1001")

    for arrival in ([first, correction], [correction, first]):
        recorded: dict = {}
        for one in arrival:
            recorded |= order_owners(recorded, [(key, one)])
        assert recorded == {key: correction}
    # Weighed together, as one batch holding both members.
    assert order_owners({}, [(key, first), (key, correction)]) == {key: correction}
    # A claim that changes nothing is not a change; one on the owner's event, moved to another
    # member by a merge or a split, takes the order over.
    assert order_owners({key: correction}, [(key, late_retry)]) == {}
    moved = claim(3, 11, T0 + timedelta(hours=1))
    assert order_owners({key: correction}, [(key, moved)]) == {key: moved}

    one = placed("POS-1001", "10", message_id="m10")
    other = placed("POS-1001", "10", message_id="m12", at=T0 + timedelta(minutes=1))
    mine = [one, other, refunded("POS-1001", "10")]
    assert order_claims(1, mine) == {(1, "POS-1001"): Claim(other.at, "m12", other.event_id, 1)}
    assert orders_owned(1, mine, {key: correction}) == mine[2:]  # only the refund is left
    assert orders_owned(2, mine, {key: correction}) == mine[2:]  # the owner's event is not among these
    assert orders_owned(1, mine, {key: Claim(other.at, "m12", other.event_id, 1)}) == mine


amounts = st.decimals(min_value=0, max_value=1000, places=2)
order_streams = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C"]), st.booleans(), amounts, st.integers(0, 5)), max_size=15
)


@given(order_streams, st.randoms())
def test_figures_do_not_depend_on_the_order_events_arrive_in(stream, rnd):
    events = [
        placed(order_id, str(amount), name="Order Completed" if completes else "Order Refunded",
               at=T0 + timedelta(days=day), message_id=f"m{index}")
        for index, (order_id, completes, amount, day) in enumerate(stream)
    ]  # fmt: skip
    shuffled = rnd.sample(events, len(events))

    one, other = (
        aggregates_of(orders_of(events).values(), "CNY"),
        aggregates_of(orders_of(shuffled).values(), "CNY"),
    )

    assert one == other
    assert one.spend >= 0
    assert one.spend == sum((o.net for o in orders_of(events).values() if o.placed_at), Decimal(0))


# --- through the pipeline -----------------------------------------------------------------


def order(
    source, user_id: str, name: str, order_id: str, total: str, at: datetime, anonymous_id: str = ""
) -> Event:
    return EventFactory.create(
        source=source, user_id=user_id, anonymous_id=anonymous_id, event=name, timestamp=at,
        properties={"order_id": order_id, "total": total, "currency": "CNY"},
    )  # fmt: skip


@pytest.mark.django_db
def test_figures_follow_the_events_through_the_pipeline_and_a_merge():
    store, app = SourceFactory(pos=True, store_code="SH01"), SourceFactory(kind="app")
    first = order(store, "u1", "Order Completed", "P-1", "120.00", T0)
    EventFactory(
        source=SourceFactory(pos=True, store_code="HZ02"), user_id="u1", event="Product Viewed", timestamp=T0
    )
    order(app, "", "Order Completed", "A-1", "80.00", T0 + timedelta(days=2), anonymous_id="dev-9")  # a guest
    events_process_pending()
    survivor = EventResolution.objects.get(event=first).member_id

    assert MemberAggregate.objects.get(member_id=survivor).spend == Decimal("120.00")

    # the app user logs in: the device's member (and its order) joins u1
    EventFactory(
        source=app, user_id="u1", anonymous_id="dev-9", type="identify", timestamp=T0 + timedelta(days=3)
    )
    order(store, "u1", "Order Refunded", "P-1", "20.00", T0 + timedelta(days=4))
    events_process_pending()

    figures = MemberAggregate.objects.get(member_id=survivor)
    assert (figures.orders, figures.spend, figures.refunded) == (2, Decimal("180.00"), Decimal("20.00"))
    assert (figures.orders_pos, figures.spend_pos, figures.orders_app, figures.spend_app) == (
        1, Decimal("100.00"), 1, Decimal("80.00"),
    )  # fmt: skip
    assert figures.average_order_value == Decimal("90.00")
    assert figures.stores_visited == ["HZ02", "SH01"]
    assert (figures.events, figures.events_pos, figures.events_app) == (5, 3, 2)
    assert figures.first_purchase_at == T0
    assert set(MemberOrder.objects.values_list("member_id", "source_id", "order_id")) == {
        (survivor, store.pk, "P-1"),
        (survivor, app.pk, "A-1"),
    }
    assert MemberAggregate.objects.count() == 1  # the absorbed member keeps nothing


def figures() -> tuple[set, set]:
    aggregates = {
        tuple(
            tuple(value)
            if isinstance(value := getattr(a, f.attname), list)
            # event_times: {window key: [times]}
            else tuple((key, tuple(v) if isinstance(v, list) else v) for key, v in sorted(value.items()))
            if isinstance(value, dict)
            else value
            for f in MemberAggregate._meta.concrete_fields
            if f.name != "computed_at"
        )
        for a in MemberAggregate.objects.all()
    }
    orders = set(MemberOrder.objects.values_list("member_id", "order_id", "total", "refunded", "placed_at"))
    return aggregates, orders


@pytest.mark.django_db
def test_rebuilt_figures_equal_the_incremental_ones():
    call_command("demo", "--members", "25", "--seed", "11", "--welcome-file", "/dev/null", stdout=StringIO())
    events = list(Event.objects.all())
    arrival = random.Random(5).sample(events, len(events))  # many late events, merges, replays
    for start in range(0, len(arrival), 50):
        identity_resolve_events(arrival[start : start + 50])
        members_refresh()
    incremental = figures()
    assert any(a for a in incremental[1] if a[3] > 0), "the demo should include refunds"
    MemberAggregate.objects.all().delete()
    MemberOrder.objects.all().delete()

    out = StringIO()
    call_command("rebuild_members", "--batch-size", "7", stdout=out)

    assert figures() == incremental
    assert "Recomputed" in out.getvalue()
