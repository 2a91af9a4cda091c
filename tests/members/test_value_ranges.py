"""Every sum of values ingestion accepts is stored: points in 64 bits, money figures in 20
digits, and dates at the edge of the calendar computed with, so the member refresh never fails
on a member for the size of their numbers (it did: the refresh then failed on every try)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from events.models import Event, EventType
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.models import EarnRule, LoyaltyProgram, PointsAccount, PointsEntry, Tier
from members.loyalty.points import MAX_POINTS_MOVE
from members.loyalty.program import MAX_MULTIPLIER
from members.loyalty.services import points_adjust
from members.models import DirtyMark, Member, MemberAggregate, MemberOrder
from members.segments.computed import TICK, LifecycleWindows, lifecycle_changes_at, lifecycle_stage
from members.segments.models import Segment, SegmentMember
from members.services import members_refresh
from tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
#: ``events.commerce.MAX_AMOUNT``: the largest amount ingestion accepts.
MAX_AMOUNT = 10**8
#: The highest rate an earning rule holds (``EarnRule.points_per_unit``, 4 + 4 digits).
HIGHEST_RATE = Decimal("9999.9999")


def order(user_id: str, order_id: str, total: int, at: datetime = T0, **fields: object) -> None:
    EventFactory(user_id=user_id, event="Order Completed", timestamp=at,
                 properties={"order_id": order_id, "total": total, "currency": "CNY"}, **fields)  # fmt: skip


def member_of(order_id: str) -> int:
    return EventResolution.objects.get(event__properties__order_id=order_id).member_id


def refreshed(batch_size: int | None = None) -> None:
    _, more = events_process_pending(batch_size=batch_size, time_budget=600)
    assert not more
    members_refresh()
    assert not DirtyMark.objects.exists(), "a refresh left a member unrefreshed"


def test_an_order_of_the_largest_amount_at_the_highest_rate_earns_its_exact_points():
    EarnRule.objects.create(name="most generous", points_per_unit=HIGHEST_RATE)
    order("u-max", "MAX-1", MAX_AMOUNT)
    order("u-max", "MAX-2", MAX_AMOUNT, at=T0 + timedelta(hours=1))

    refreshed()

    member = member_of("MAX-1")
    per_order = 999_999_990_000  # 10^8 x 9999.9999, beyond 2^31 in one row
    assert (
        list(PointsEntry.objects.filter(member_id=member).values_list("points", flat=True)) == [per_order] * 2
    )
    assert PointsAccount.objects.get(member_id=member).balance == 2 * per_order


def test_a_rule_stored_before_its_bounds_earns_within_them():
    """Written before the admin checked them (``create`` runs no validators): multipliers of
    10^30 are held to ``MAX_MULTIPLIER``, and one that is no number is left out, instead of
    overflowing the ledger or failing every member's refresh."""
    EarnRule.objects.create(name="stored before the bounds", points_per_unit=HIGHEST_RATE,
                            channel_multipliers={"web": 1e30, "pos": "lots"}, tier_multipliers={"": 1e30})  # fmt: skip
    order("u-greedy", "GREEDY-1", MAX_AMOUNT)

    refreshed()

    member = member_of("GREEDY-1")
    most = int(MAX_AMOUNT * HIGHEST_RATE * MAX_MULTIPLIER**2)  # 99,999,999,000,000 points
    assert list(PointsEntry.objects.filter(member_id=member).values_list("points", flat=True)) == [most]
    assert PointsAccount.objects.get(member_id=member).balance == most


def test_a_balance_at_the_32_bit_limit_takes_one_more_order():
    order("u-full", "FULL-1", 100)
    refreshed()
    member = Member.objects.get(pk=member_of("FULL-1"))
    # A single staff move is capped (MAX_POINTS_MOVE); three reach the old 32-bit limit.
    remaining = 2**31 - 1 - 100
    for step in range(3):
        move = min(MAX_POINTS_MOVE, remaining)
        points_adjust(member=member, points=move, reason="at the limit", idempotency_key=f"k-full-{step}",
                      user=AnonymousUser())  # fmt: skip
        remaining -= move
    assert PointsAccount.objects.get(member=member).balance == 2**31 - 1

    order("u-full", "FULL-2", 250, at=T0 + timedelta(days=1))
    refreshed()

    assert PointsAccount.objects.get(member=member).balance == 2**31 - 1 + 250


def test_a_members_spend_beyond_10_to_the_12_is_stored_exactly():
    """10,000 orders of the largest amount: 10^12, one digit more than ``numeric(14, 2)`` held."""
    source = SourceFactory()
    count = 10_000
    received = timezone.now()
    Event.objects.bulk_create(
        Event(
            source=source,
            message_id=f"big-{n}",
            type=EventType.TRACK,
            event="Order Completed",
            user_id="u-big",
            channel=source.kind,
            timestamp=T0 + timedelta(minutes=n),
            received_at=received,
            properties={"order_id": f"BIG-{n}", "total": MAX_AMOUNT, "currency": "CNY"},
        )
        for n in range(count)
    )

    refreshed(batch_size=count)  # one batch: one refresh of the member, not one per batch

    member = member_of("BIG-0")
    figures = MemberAggregate.objects.get(member_id=member)
    assert (figures.orders, figures.spend, figures.average_order_value) == (
        count,
        Decimal(count * MAX_AMOUNT),
        Decimal(MAX_AMOUNT),
    )
    assert MemberOrder.objects.filter(member_id=member, total=MAX_AMOUNT).count() == count
    assert PointsAccount.objects.get(member_id=member).balance == count * MAX_AMOUNT


@pytest.mark.parametrize("expiry", ["days", "end_of_month", "end_of_year"])
def test_an_order_at_the_end_of_the_calendar_is_refreshed(expiry):
    """Ingestion refuses such dates now; one stored before must not stop its member's refresh:
    pending days, expiry, tier reviews, the lifecycle and rule windows all reach past 9999."""
    EarnRule.objects.create(name="pending and expiring", pending_days=7, expiry=expiry, expiry_days=365)
    LoyaltyProgram.objects.update(tier_downgrade="periodic", tier_review_months=1)
    Tier.objects.create(key="base", name="Base", rank=0)
    Tier.objects.create(key="gold", name="Gold", rank=1, threshold=50)
    Segment.objects.create(key="recent", name="Recent", kind="dynamic",
                           rule={"event": "Order Completed", "in_last_days": 30})  # fmt: skip
    Segment.objects.create(key="lately", name="Lately", kind="dynamic",
                           rule={"aggregate": "last_purchase_at", "op": "within_days", "value": 30})  # fmt: skip
    end = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    order("u-end", "END-1", 100, at=end, received_at=end)

    refreshed()

    member = member_of("END-1")
    assert MemberAggregate.objects.get(member_id=member).last_purchase_at == end
    account = PointsAccount.objects.get(member_id=member)
    assert (account.balance, account.tier) == (100, "gold")
    in_segments = set(SegmentMember.objects.filter(member_id=member).values_list("segment__key", flat=True))
    # "in the last days" counts a future order; "within days" of a future moment waits for it.
    assert {"recent", "lifecycle-new"} <= in_segments
    assert "lately" not in in_segments


def test_lifecycle_boundaries_past_the_calendar_never_come():
    windows = LifecycleWindows(new_days=30, active_days=90, churn_days=365)
    end = datetime(9999, 12, 1, tzinfo=UTC)
    no_longer_new = end + timedelta(days=30) + TICK

    assert lifecycle_stage(end, end, T0, windows) == "new"
    assert lifecycle_changes_at(end, end, T0, windows) == no_longer_new
    assert lifecycle_stage(end, end, no_longer_new, windows) == "active"
    assert lifecycle_changes_at(end, end, no_longer_new, windows) is None  # at risk: after year 9999
    start = datetime(1, 1, 1, tzinfo=UTC)
    assert lifecycle_stage(start, start, datetime(1, 1, 2, tzinfo=UTC), windows) == "new"
