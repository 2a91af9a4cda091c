"""The points ledger through the pipeline: earned and reversed by workers from events, kept
equal to its balance by the database, idempotent, following merges and splits."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.services import member_split
from members.loyalty import services as loyalty_services
from members.loyalty.models import EarnRule, LoyaltyProgram, PointsAccount, PointsEntry
from members.loyalty.services import points_recheck_due
from members.loyalty.tasks import loyalty_recheck
from members.models import DirtyMark
from members.services import members_rebuild, members_refresh
from tests.factories import EventFactory, SourceFactory

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def ledger(member_id: int) -> dict[str, int]:
    """Net points per cause; an order's causes, named after its completion event, are named here
    after the order's number (``purchase:POS-1``) to read."""
    found: dict[str, int] = {}
    entries = PointsEntry.objects.filter(member_id=member_id).values_list("cause_key", "order_id", "points")
    for cause, order_id, points in entries:
        head, _, _ = cause.rpartition(":")
        cause = f"{head}:{order_id}" if head.endswith(("purchase", "first_order")) else cause
        found[cause] = found.get(cause, 0) + points
    return {cause: points for cause, points in found.items() if points}


def balance(member_id: int) -> int:
    return PointsAccount.objects.get(member_id=member_id).balance


def balances_equal_ledgers() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.member_id, a.balance, COALESCE(sum(e.points), 0) FROM members_pointsaccount a "
            "LEFT JOIN members_pointsentry e ON e.member_id = a.member_id GROUP BY a.member_id, a.balance "
            "HAVING a.balance <> COALESCE(sum(e.points), 0)"
        )
        assert cursor.fetchall() == []
        cursor.execute(
            "SELECT count(*) FROM members_pointsentry e JOIN members_member m ON m.id = e.member_id "
            "WHERE m.status <> 'active'"
        )
        assert cursor.fetchone() == (0,), "ledger rows left on a merged-away member"


def test_orders_earn_refunds_reverse_and_the_merged_member_brings_its_points(zhang):
    member = zhang["member"]

    assert ledger(member) == {
        "purchase:POS-1": 300,
        "purchase:APP-9": 120,
        f"reverse:{refund_event('POS-1')}": -100,
    }
    assert balance(member) == 320
    assert not PointsAccount.objects.filter(member_id=zhang["absorbed"]).exists()
    balances_equal_ledgers()


def refund_event(order_id: str) -> int:
    return EventResolution.objects.get(
        event__event="Order Refunded", event__properties__order_id=order_id
    ).event_id


def test_reprocessing_and_rebuilding_change_nothing(zhang):
    member = zhang["member"]
    rows = PointsEntry.objects.count()

    members_rebuild()
    DirtyMark.objects.create(member_id=member)
    members_refresh()
    members_rebuild()

    assert PointsEntry.objects.count() == rows
    assert balance(member) == 320


def test_a_refresh_killed_after_writing_the_ledger_rolls_back_and_the_retry_counts_once(monkeypatch):
    store = SourceFactory(pos=True)
    EventFactory(source=store, user_id="u-kill", event="Order Completed", timestamp=T0,
                 properties={"order_id": "K-1", "total": 88, "currency": "CNY"})  # fmt: skip

    def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit("worker killed")

    monkeypatch.setattr(loyalty_services, "_tier_changes_write", killed)
    with pytest.raises(SystemExit):
        events_process_pending()
    assert PointsEntry.objects.count() == 0  # the ledger rows went with the transaction

    monkeypatch.undo()
    events_process_pending()
    events_process_pending()
    member = EventResolution.objects.get(event__properties__order_id="K-1").member_id
    assert ledger(member) == {"purchase:K-1": 88}
    assert balance(member) == 88


def test_ledger_rows_cannot_be_changed_or_deleted(zhang):
    entry = PointsEntry.objects.filter(member_id=zhang["member"]).first()

    with pytest.raises(IntegrityError, match="never changed"), transaction.atomic():
        PointsEntry.objects.filter(pk=entry.pk).update(points=1_000_000)
    with pytest.raises(IntegrityError, match="never deleted"), transaction.atomic():
        PointsEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(IntegrityError), transaction.atomic():
        PointsEntry.objects.create(member_id=zhang["member"], kind="earn", points=5, key=entry.key,
                                   cause_key=entry.key, reason="again", derived=True, at=T0)  # fmt: skip
    assert balance(zhang["member"]) == 320


def test_the_floor_holds_when_the_program_forbids_debt(zhang):
    LoyaltyProgram.objects.update(negative_balance="forbid")
    PointsAccount.objects.update(negative_allowed=False)

    def overdraw() -> None:
        PointsEntry.objects.create(member_id=zhang["member"], kind="adjust", points=-321, key="adjust:x",
                                   cause_key="adjust:x", reason="too much", derived=False, at=T0)  # fmt: skip
        with connection.cursor() as cursor:  # the floor is checked at commit; this test never commits
            cursor.execute("SET CONSTRAINTS points_balance_floor IMMEDIATE")

    with pytest.raises(IntegrityError, match="below 0"), transaction.atomic():
        overdraw()
    assert balance(zhang["member"]) == 320


def test_a_split_takes_the_points_of_the_split_off_person_with_it(zhang):
    member = zhang["member"]

    member_split(member_id=member, identifiers=["anonymous_id:anon-7"], reason="two people")
    members_refresh()

    other = EventResolution.objects.get(
        event__properties__order_id="APP-9", event__event="Order Completed"
    ).member_id
    assert other != member
    assert ledger(other) == {"purchase:APP-9": 120}
    assert ledger(member) == {"purchase:POS-1": 300, f"reverse:{refund_event('POS-1')}": -100}
    assert (balance(member), balance(other)) == (200, 120)
    balances_equal_ledgers()


def test_points_expire_when_beat_finds_them_due_first_in_first_out():
    EarnRule.objects.create(name="points last 30 days", expiry="days", expiry_days=30)
    store = SourceFactory(pos=True)
    now = timezone.now()
    for order, days_ago in (("OLD", 40), ("NEW", 10)):
        EventFactory(source=store, user_id="u-exp", event="Order Completed", timestamp=now - timedelta(days=days_ago),
                     properties={"order_id": order, "total": 100, "currency": "CNY"})  # fmt: skip
    events_process_pending()
    member = PointsEntry.objects.get(kind="earn", order_id="OLD").member_id
    assert ledger(member) == {"purchase:OLD": 100, "purchase:NEW": 100, "expire:purchase:OLD": -100}

    assert points_recheck_due(now=now) == 0  # nothing due yet
    assert loyalty_recheck() == 0
    assert points_recheck_due(now=now + timedelta(days=21)) == 1
    assert points_recheck_due(now=now + timedelta(days=21)) == 0  # marked once
    members_refresh()  # "now" is the real clock: nothing expired yet, nothing written
    assert ledger(member) == {"purchase:OLD": 100, "purchase:NEW": 100, "expire:purchase:OLD": -100}
    balances_equal_ledgers()
