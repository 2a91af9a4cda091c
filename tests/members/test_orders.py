"""One order, one owner, through the pipeline (events -> ``events_process_pending`` -> the
member refresh): an order is its source and its number there, and of two members holding
completions of one order the one with the latest completion owns it, with its figures and
points, whatever order the events arrive in and whichever refreshes come first. Nobody is
parked for it, and every balance is the sum of its ledger."""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connections, transaction

from events.models import Event, Source
from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.services import identity_resolve_events
from members.aggregates import OrderEvent
from members.loyalty.models import PointsAccount, PointsEntry
from members.models import DirtyMark, MemberAggregate, MemberOrder, OrderOwner, ParkedMember
from members.orders import order_owners_refresh
from members.services import members_rebuild, members_refresh
from tests.factories import EventFactory, SourceFactory
from tests.members.loyalty.test_ledger import balances_equal_ledgers

T0 = datetime(2026, 10, 5, 10, tzinfo=UTC)


def completed(source: Source, user_id: str, order_id: str, total: int, at: datetime) -> Event:
    return EventFactory.create(
        source=source, user_id=user_id, event="Order Completed", timestamp=at,
        properties={"order_id": order_id, "total": total, "currency": "CNY"},
    )  # fmt: skip


def member_of(event: Event) -> int:
    return EventResolution.objects.get(event=event).member_id


def balance(member_id: int) -> int:
    return PointsAccount.objects.filter(member_id=member_id).values_list("balance", flat=True).first() or 0


def figures(member_id: int) -> tuple[int, Decimal]:
    aggregate = MemberAggregate.objects.get(member_id=member_id)
    return aggregate.orders, aggregate.spend


def arrive(posts: list[Callable[[], Event]], order: tuple[int, ...], *, one_by_one: bool) -> list[Event]:
    """Post these events in this order (storing one enqueues it) and process them: each in its
    own batches (and refresh transactions), or all in one. Returns them as ``posts`` lists them."""
    events: dict[int, Event] = {}
    for index in order:
        events[index] = posts[index]()
        if one_by_one:
            events_process_pending()
    events_process_pending()
    return [events[index] for index in range(len(posts))]


def settled() -> None:
    assert not ParkedMember.objects.filter(replayed_at__isnull=True).exists(), "a member was parked"
    assert not DirtyMark.objects.exists(), "the refreshes did not settle"
    balances_equal_ledgers()


@pytest.mark.django_db
@pytest.mark.parametrize("one_by_one", [True, False], ids=["separate-batches", "one-batch"])
@pytest.mark.parametrize("arrival", [(0, 1), (1, 0)], ids=["store-first", "web-first"])
def test_one_number_in_two_sources_is_two_orders_each_earning_for_its_member(arrival, one_by_one):
    store, web = SourceFactory(pos=True), SourceFactory(kind="web")
    posts = [
        lambda: completed(store, "u-ann", "1001", 100, T0),
        lambda: completed(web, "u-bob", "1001", 40, T0),
    ]

    events = arrive(posts, arrival, one_by_one=one_by_one)

    ann, bob = member_of(events[0]), member_of(events[1])
    assert (balance(ann), balance(bob)) == (100, 40)
    assert (figures(ann), figures(bob)) == ((1, Decimal("100.00")), (1, Decimal("40.00")))
    assert set(MemberOrder.objects.values_list("member_id", "source_id", "order_id")) == {
        (ann, store.pk, "1001"), (bob, web.pk, "1001"),
    }  # fmt: skip
    settled()


@pytest.mark.django_db
def test_one_member_with_one_number_from_two_sources_has_two_orders_and_a_return_elsewhere_finds_its_order():
    store, web = SourceFactory(pos=True), SourceFactory(kind="web")
    completed(store, "u-ann", "1001", 100, T0)
    online = completed(web, "u-ann", "W-7", 60, T0)
    completed(web, "u-ann", "1001", 40, T0 + timedelta(hours=1))
    # Bought online, returned in the store: the till's refund names the web order.
    EventFactory(source=store, user_id="u-ann", event="Order Refunded", timestamp=T0 + timedelta(days=1),
                 properties={"order_id": "W-7", "total": 60, "currency": "CNY"})  # fmt: skip

    events_process_pending()

    ann = member_of(online)
    assert figures(ann) == (3, Decimal("140.00"))
    assert balance(ann) == 140
    settled()


@pytest.mark.django_db
@pytest.mark.parametrize("one_by_one", [True, False], ids=["separate-batches", "one-batch"])
@pytest.mark.parametrize("arrival", [(0, 1), (1, 0)], ids=["first-sale-first", "correction-first"])
def test_a_sale_re_sent_under_another_customer_belongs_to_the_latest(arrival, one_by_one):
    store = SourceFactory(pos=True)
    correction = T0 + timedelta(minutes=5)  # the till re-sends the sale under the right customer
    posts = [
        lambda: completed(store, "u-wrong", "POS-1001", 259, T0),
        lambda: completed(store, "u-right", "POS-1001", 259, correction),
    ]

    events = arrive(posts, arrival, one_by_one=one_by_one)

    wrong, right = member_of(events[0]), member_of(events[1])
    assert (balance(wrong), balance(right)) == (0, 259)
    assert (figures(wrong), figures(right)) == ((0, Decimal("0.00")), (1, Decimal("259.00")))
    assert list(MemberOrder.objects.values_list("member_id", "order_id")) == [(right, "POS-1001")]
    assert OrderOwner.objects.get(source_id=store.pk, order_id="POS-1001").member_id == right
    if arrival == (0, 1) and one_by_one:  # the first attribution earned, and was reversed
        earned_and_reversed = PointsEntry.objects.filter(member_id=wrong).values_list("points", flat=True)
        assert sorted(earned_and_reversed) == [-259, 259]
    settled()

    rows = PointsEntry.objects.count()
    members_rebuild()
    assert PointsEntry.objects.count() == rows
    assert (balance(wrong), balance(right)) == (0, 259)
    settled()


@pytest.mark.django_db
def test_a_refund_under_the_first_customer_leaves_the_owners_order_alone():
    store = SourceFactory(pos=True)
    first = completed(store, "u-wrong", "POS-9", 100, T0)
    second = completed(store, "u-right", "POS-9", 100, T0 + timedelta(minutes=1))
    EventFactory(source=store, user_id="u-wrong", event="Order Refunded", timestamp=T0 + timedelta(days=1),
                 properties={"order_id": "POS-9", "total": 100, "currency": "CNY"})  # fmt: skip

    events_process_pending()

    wrong, right = member_of(first), member_of(second)
    assert (balance(wrong), balance(right)) == (0, 100)
    assert (figures(wrong), figures(right)) == ((0, Decimal("0.00")), (1, Decimal("100.00")))
    settled()


@pytest.mark.django_db
def test_ledger_rows_under_the_keys_of_an_earlier_release_count_for_their_cause():
    """Rows written as ``earn:<order_id>`` before keys named events: a refresh writes nothing."""
    store = SourceFactory(pos=True)
    old = completed(store, "u-old", "P-1", 100, T0)
    identity_resolve_events([old])
    member = member_of(old)
    PointsEntry.objects.create(member_id=member, kind="earn", points=100, key="earn:P-1", cause_key="earn:P-1",
                               reason="order P-1", derived=True, event_id=old.pk, order_id="P-1", at=T0)  # fmt: skip

    members_refresh()

    assert list(PointsEntry.objects.values_list("key", "points")) == [("earn:P-1", 100)]
    assert balance(member) == 100
    settled()


@pytest.mark.django_db(transaction=True)
def test_two_refreshes_claiming_one_order_at_once_leave_one_owner():
    """A refresh that weighed a claim on a stale view (it read before the later completion was
    resolved) holds the order's row until it commits; the later claim's refresh waits for it,
    then displaces it and marks its member, whose next refresh gives the order up."""
    store = SourceFactory(pos=True)
    first = completed(store, "u-first", "POS-5", 80, T0)
    later = completed(store, "u-later", "POS-5", 80, T0 + timedelta(minutes=1))
    identity_resolve_events([first, later])
    DirtyMark.objects.all().delete()
    early, late = member_of(first), member_of(later)

    def claim_of(event: Event, member_id: int) -> dict[int, list[OrderEvent]]:
        return {member_id: [OrderEvent(event_id=event.pk, name="Order Completed", order_id="POS-5",
                                       amount=Decimal(80), currency="CNY", at=event.timestamp, channel="pos",
                                       store_code=store.store_code, message_id=event.message_id,
                                       source_id=store.pk)]}  # fmt: skip

    holding = threading.Event()
    stale: list[list[OrderEvent]] = []

    def stale_refresh() -> None:  # the early member's refresh, blind to the later completion
        try:
            with transaction.atomic():
                stale.append(order_owners_refresh(order_events=claim_of(first, early))[early])
                holding.set()
                time.sleep(0.5)  # the other refresh must wait for this commit
        finally:
            connections.close_all()

    thread = threading.Thread(target=stale_refresh)
    thread.start()
    assert holding.wait(10)
    started = time.monotonic()
    with transaction.atomic():
        owned = order_owners_refresh(order_events=claim_of(later, late))
    waited = time.monotonic() - started
    thread.join()

    assert stale == [claim_of(first, early)[early]]  # on its stale view, the early member owned it
    assert waited > 0.2, "the later claim did not wait for the row"
    assert owned == claim_of(later, late)
    assert OrderOwner.objects.get(order_id="POS-5").member_id == late
    assert list(DirtyMark.objects.values_list("member_id", flat=True)) == [early]  # told to give it up

    DirtyMark.objects.create(member_id=late)
    members_refresh()
    assert list(MemberOrder.objects.values_list("member_id", "order_id")) == [(late, "POS-5")]
    assert (balance(early), balance(late)) == (0, 80)
    settled()


@pytest.mark.django_db
def test_orders_new_to_the_platform_are_read_once_and_those_held_again_under_the_lock():
    """A history's first refresh (every order new: an import) reads the owners once and
    creates their rows, not reading them back; an order already held is read again under its
    row's lock, and its later claim takes it from the member holding it, who is marked."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    store = SourceFactory(pos=True)
    held = completed(store, "u-held", "POS-1", 50, T0)
    identity_resolve_events([held])
    holder = member_of(held)
    with transaction.atomic():
        order_owners_refresh(order_events={holder: [_order_event(held, store, "POS-1", 50)]})
    DirtyMark.objects.all().delete()

    new = [completed(store, "u-new", f"POS-{n}", 10 * n, T0 + timedelta(hours=n)) for n in (2, 3)]
    later = completed(store, "u-new", "POS-1", 50, T0 + timedelta(days=1))
    identity_resolve_events([*new, later])
    DirtyMark.objects.all().delete()
    buyer = member_of(later)
    claims = {
        buyer: [_order_event(event, store, f"POS-{n}", 10 * n) for event, n in zip(new, (2, 3), strict=True)]
    }
    with transaction.atomic(), CaptureQueriesContext(connection) as only_new:
        assert order_owners_refresh(order_events=claims) == claims
    reads = [q["sql"] for q in only_new.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 1, reads  # before the lock only: the rows it created hold its claims
    claims[buyer].append(_order_event(later, store, "POS-1", 50))
    with transaction.atomic(), CaptureQueriesContext(connection) as with_held:
        order_owners_refresh(order_events=claims)
    reads = [q["sql"] for q in with_held.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 2, reads  # and POS-1 again, under its lock
    assert dict(OrderOwner.objects.values_list("order_id", "member_id")) == {
        "POS-1": buyer, "POS-2": buyer, "POS-3": buyer,
    }  # fmt: skip
    assert list(DirtyMark.objects.values_list("member_id", flat=True)) == [holder]


def _order_event(event: Event, store: Source, order_id: str, total: int) -> OrderEvent:
    return OrderEvent(event_id=event.pk, name="Order Completed", order_id=order_id, amount=Decimal(total),
                      currency="CNY", at=event.timestamp, channel="pos", store_code=store.store_code,
                      message_id=event.message_id, source_id=store.pk)  # fmt: skip
