"""Staff edit the loyalty program in the admin; the ledger stays read-only there."""

import pytest
from django.test import Client

from cdp.roles import Role
from cdp.services import staff_user_ensure
from members.loyalty.models import LoyaltyProgram, PointsAccount

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    user = staff_user_ensure(username="ops", role=Role.ADMIN)
    client = Client()
    client.force_login(user)
    return client


def test_every_loyalty_page_opens_and_the_ledger_cannot_be_edited(admin_client, zhang):
    for name in ("loyaltyprogram", "earnrule", "tier", "couponcampaign", "pointsentry", "pointsaccount", "coupon",
                 "couponredemption"):  # fmt: skip
        assert admin_client.get(f"/admin/members/{name}/").status_code == 200, name
    assert admin_client.get("/admin/members/pointsentry/add/").status_code == 403
    assert admin_client.get("/admin/members/earnrule/add/").status_code == 200


def test_forbidding_debt_in_the_admin_holds_every_account_to_it(admin_client, zhang):
    program = LoyaltyProgram.objects.get(key="default")
    form = {f: getattr(program, f) for f in ("negative_balance", "tier_basis", "tier_window_days", "tier_downgrade",
                                             "tier_review_months", "expiring_soon_days")}  # fmt: skip

    response = admin_client.post(
        f"/admin/members/loyaltyprogram/{program.pk}/change/",
        {**form, "key": "default", "negative_balance": "forbid", "refund_returns_redeemed_points": "on"},
    )

    assert response.status_code == 302, response.content[:2000]
    assert not PointsAccount.objects.get(member_id=zhang["member"]).negative_allowed
