"""Writers of points accounts lock them in one global order (member id), so two refreshes
moving points between the same accounts from opposite sides wait for each other instead of
deadlocking. Real transactions on two connections, made to interleave."""

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from events.pipeline import events_process_pending
from identity.models import EventResolution
from members import services
from members.locks import member_refresh_locks
from members.loyalty import services as loyalty_services
from members.loyalty.demo import loyalty_demo_setup
from members.loyalty.models import PointsAccount, PointsEntry
from members.models import DirtyMark, Member, RefreshWatermark
from members.segments import evaluate
from members.segments.models import Segment, SegmentMember
from members.services import members_recompute
from tests.factories import EventFactory, SourceFactory
from tests.factories.members import MemberFactory
from tests.members.loyalty.test_ledger import balances_equal_ledgers

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
#: How long the first transaction waits at the barrier for the second: with locks in one
#: order the second is blocked on the first's locks and never comes, so the first goes on.
RENDEZVOUS_SECONDS = 3


def credit(member: Member, points: int, key: str) -> None:
    PointsEntry.objects.create(
        member=member,
        kind="adjust",
        points=points,
        key=key,
        cause_key=key,
        reason="test",
        derived=False,
        at=T0,
    )


def concurrently(*work: Callable[[], None]) -> list[BaseException]:
    """Run each on its own thread (its own connection and transaction); the errors raised."""
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:  # reported to the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a transaction never finished"
    return errors


def test_two_refreshes_moving_points_into_each_others_accounts_do_not_deadlock(monkeypatch):
    """Worker A refreshes {absorbed_a, survivor_a} where absorbed_a was merged into survivor_b;
    worker B refreshes {absorbed_b, survivor_b} where absorbed_b was merged into survivor_a.
    Each moves its absorbed member's points to the other's survivor and writes its own
    survivor's account: the same two accounts, from opposite sides. Both are held at a
    barrier after their first account lock, so without one lock order each would hold the
    account the other wants next."""
    survivor_a, survivor_b = MemberFactory(), MemberFactory()
    absorbed_a = MemberFactory(status=Member.Status.MERGED, merged_into=survivor_b)
    absorbed_b = MemberFactory(status=Member.Status.MERGED, merged_into=survivor_a)
    for member, points in ((survivor_a, 1), (survivor_b, 20), (absorbed_a, 300), (absorbed_b, 4000)):
        credit(member, points, f"adjust:{member.pk}")
    barrier = threading.Barrier(2, timeout=RENDEZVOUS_SECONDS)
    accounts_write = loyalty_services._accounts_write

    def after_first_lock(*args: object) -> None:
        # Broken: the other transaction waits for this one's locks, so this one goes on alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        accounts_write(*args)

    monkeypatch.setattr(loyalty_services, "_accounts_write", after_first_lock)

    def refresh(batch: set[int]) -> Callable[[], None]:
        def job() -> None:
            with transaction.atomic():
                member_refresh_locks(batch)
                members_recompute(batch)

        return job

    errors = concurrently(refresh({absorbed_a.pk, survivor_a.pk}), refresh({absorbed_b.pk, survivor_b.pk}))

    assert errors == []
    balances = dict(PointsAccount.objects.values_list("member_id", "balance"))
    assert balances == {survivor_a.pk: 1 + 4000, survivor_b.pk: 20 + 300}
    balances_equal_ledgers()


def test_a_refresh_taking_both_paths_takes_each_kind_of_lock_once(monkeypatch):
    """One refresh recomputes a new member in full and advances a known one from a new order;
    another retires a member merged into the known one (its points move to that survivor's
    account, and it leaves a segment). When the first took the full path's segment row before
    the incremental path's points accounts, the second could hold the survivor's account while
    waiting for the segment row the first held, and the first wait for that account: a
    deadlock. Each kind of lock taken once per refresh, in one order, makes one wait instead."""

    loyalty_demo_setup()
    buyers = Segment.objects.create(key="buyers", name="buyers", kind=Segment.Kind.DYNAMIC,
                                    rule={"event": "Order Completed"})  # fmt: skip
    till = SourceFactory(pos=True)

    def order(user: str, number: str, hour: int) -> int:
        event = EventFactory.create(
            source=till, event="Order Completed", user_id=user, timestamp=T0.replace(hour=hour),
            properties={"order_id": number, "total": "200.00", "currency": "CNY"},
        )  # fmt: skip
        events_process_pending()
        return EventResolution.objects.get(event=event).member_id

    survivor, absorbed = order("survivor", "o-1", 10), order("absorbed", "o-2", 10)
    assert set(SegmentMember.objects.filter(segment=buyers).values_list("member_id", flat=True)) == {
        survivor, absorbed,
    }  # fmt: skip
    Member.objects.filter(pk=absorbed).update(status=Member.Status.MERGED, merged_into=survivor)
    monkeypatch.setattr("events.pipeline.pipeline_follow_ups", lambda: [])
    order("survivor", "o-3", 12)  # the survivor's refresh goes the incremental way
    newcomer = order("newcomer", "o-4", 12)  # the full way, into the segment

    first_sized, sizes_move, this = threading.Event(), evaluate._sizes_move, threading.local()

    def sized(sizes: dict[int, int]) -> set[int]:
        moved = sizes_move(sizes)
        if getattr(this, "first", False) and not first_sized.is_set():
            first_sized.set()
            second_waits_for_a_lock()
        return moved

    monkeypatch.setattr(evaluate, "_sizes_move", sized)

    def refresh(batch: set[int], after: threading.Event | None = None) -> Callable[[], None]:
        def job() -> None:
            this.first = after is None
            if after is not None:
                assert after.wait(10)
            with transaction.atomic():
                member_refresh_locks(batch)
                services.members_update(batch)

        return job

    errors = concurrently(refresh({newcomer, survivor}), refresh({absorbed}, after=first_sized))

    assert errors == []
    assert set(SegmentMember.objects.filter(segment=buyers).values_list("member_id", flat=True)) == {
        survivor, newcomer,
    }  # fmt: skip
    assert Segment.objects.get(pk=buyers.pk).size == 2
    assert not PointsAccount.objects.filter(member_id=absorbed).exists()
    balances_equal_ledgers()


def second_waits_for_a_lock(seconds: float = 5) -> None:
    """Until another backend of this database waits for a lock (or ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)


def test_retiring_a_member_whose_orders_its_survivor_takes_over_does_not_deadlock(monkeypatch):
    """A merge: the survivor's refresh takes the absorbed member's order over and so deletes its
    watermark (``members.orders``: the member it displaced starts from the log), then locks the
    survivor's account; the absorbed member's refresh moves its points to that same account and
    deletes its own rows, that watermark among them. Deleted after the accounts, each refresh
    would hold what the other waits for."""

    loyalty_demo_setup()
    till = SourceFactory(pos=True)
    EventFactory.create(source=till, type="identify", user_id="li", timestamp=T0)
    events_process_pending()  # the older member: the merge's survivor
    bought = EventFactory.create(
        source=till, event="Order Completed", user_id="", anonymous_id="device-1", timestamp=T0.replace(hour=11),
        properties={"order_id": "o-1", "total": "200.00", "currency": "CNY"},
    )  # fmt: skip
    events_process_pending()
    absorbed = EventResolution.objects.get(event=bought).member_id
    assert RefreshWatermark.objects.filter(member_id=absorbed).exists()
    assert PointsAccount.objects.get(member_id=absorbed).balance > 0
    monkeypatch.setattr("events.pipeline.pipeline_follow_ups", lambda: [])
    EventFactory.create(source=till, type="identify", user_id="li", anonymous_id="device-1",
                        timestamp=T0.replace(hour=12))  # fmt: skip
    events_process_pending()
    survivor = Member.objects.get(pk=absorbed, status=Member.Status.MERGED).merged_into_id
    DirtyMark.objects.all().delete()

    took_over, owners_refresh, this = threading.Event(), services.order_owners_refresh, threading.local()

    def refreshed_owners(**kwargs: object) -> object:
        found = owners_refresh(**kwargs)
        if getattr(this, "survivor", False):
            took_over.set()
            second_waits_for_a_lock()
        return found

    monkeypatch.setattr(services, "order_owners_refresh", refreshed_owners)

    def refresh(member_id: int, after: threading.Event | None = None) -> Callable[[], None]:
        def job() -> None:
            this.survivor = after is None
            if after is not None:
                assert after.wait(10)
            with transaction.atomic():
                member_refresh_locks({member_id})
                services.members_update({member_id})

        return job

    errors = concurrently(refresh(survivor), refresh(absorbed, after=took_over))

    assert errors == []
    assert not PointsAccount.objects.filter(member_id=absorbed).exists()
    assert PointsAccount.objects.get(member_id=survivor).balance > 0
    balances_equal_ledgers()
