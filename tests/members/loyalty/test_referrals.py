"""A referral bonus is earned by the referrer from the referred member's sign-up: it lands on
the referrer's ledger and is theirs to spend like any other points."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection

from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.models import EarnRule, LoyaltyProgram, PointsAccount, PointsEntry
from members.loyalty.services import points_redeem
from members.models import DirtyMark, Member
from members.services import members_rebuild, members_refresh
from tests.factories import EventFactory, SourceFactory

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def ledger(member_id: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for cause, points in PointsEntry.objects.filter(member_id=member_id).values_list("cause_key", "points"):
        found[cause] = found.get(cause, 0) + points
    return {cause: points for cause, points in found.items() if points}


@pytest.mark.parametrize("policy", ["forbid", "allow"])
def test_a_referrer_spends_their_referral_bonus_and_keeps_having_spent_it(policy):
    LoyaltyProgram.objects.update_or_create(key="default", defaults={"negative_balance": policy})
    EarnRule.objects.create(name="referrals", referral_bonus=30)
    app = SourceFactory(kind="app")
    EventFactory(source=app, user_id="u-ann", event="Product Viewed", timestamp=T0)
    EventFactory(source=app, user_id="u-bob", event="Signed Up", timestamp=T0 + timedelta(hours=1),
                 properties={"referrer": "u-ann"})  # fmt: skip
    events_process_pending()
    ann = EventResolution.objects.get(event__user_id="u-ann").member_id
    signed_up = EventResolution.objects.get(event__user_id="u-bob")
    assert ledger(ann) == {f"bonus:referred:{signed_up.event_id}": 30}

    points_redeem(member=Member.objects.get(pk=ann), points=30, order_id="TILL-1", channel="pos",
                  idempotency_key="k1", user=AnonymousUser())  # fmt: skip
    members_refresh()
    DirtyMark.objects.create(member_id=ann)
    members_refresh()
    members_rebuild()

    assert ledger(ann) == {f"bonus:referred:{signed_up.event_id}": 30, "redeem:k1": -30}
    assert PointsAccount.objects.get(member_id=ann).balance == 0
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
