"""Staff edit the loyalty program in the admin; the ledger stays read-only there."""

import pytest
from django.test import Client

from cdp.roles import Role
from cdp.services import staff_user_ensure
from members.loyalty.models import EarnRule, LoyaltyProgram, PointsAccount

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
        assert admin_client.get(f"/admin/loyalty/{name}/").status_code == 200, name
    assert admin_client.get("/admin/loyalty/pointsentry/add/").status_code == 403
    assert admin_client.get("/admin/loyalty/earnrule/add/").status_code == 200


def test_forbidding_debt_in_the_admin_holds_every_account_to_it(admin_client, zhang):
    program = LoyaltyProgram.objects.get(key="default")
    form = {f: getattr(program, f) for f in ("negative_balance", "tier_basis", "tier_window_days", "tier_downgrade",
                                             "tier_review_months", "expiring_soon_days")}  # fmt: skip

    response = admin_client.post(
        f"/admin/loyalty/loyaltyprogram/{program.pk}/change/",
        {**form, "key": "default", "negative_balance": "forbid", "refund_returns_redeemed_points": "on"},
    )

    assert response.status_code == 302, response.content[:2000]
    assert not PointsAccount.objects.get(member_id=zhang["member"]).negative_allowed


def earn_rule_form(**fields: str) -> dict[str, str]:
    """The admin's form for a new earning rule, filled as staff would."""
    return {
        "name": "Double points in stores", "valid_from_0": "", "valid_from_1": "", "valid_until_0": "",
        "valid_until_1": "", "points_per_unit": "1", "channel_multipliers": '{"pos": 2}',
        "tier_multipliers": "{}", "excluded_skus": "", "excluded_categories": "", "first_purchase_bonus": "0",
        "signup_bonus": "0", "referral_bonus": "0", "pending_days": "0", "expiry": "never", "expiry_days": "",
        **fields,
    }  # fmt: skip


def test_an_earning_rule_within_its_bounds_is_saved_from_the_admin(admin_client):
    response = admin_client.post(
        "/admin/loyalty/earnrule/add/", earn_rule_form(tier_multipliers='{"gold": 1.5, "black": 10}')
    )

    assert response.status_code == 302, response.content[:2000]
    rule = EarnRule.objects.get()
    assert (rule.channel_multipliers, rule.tier_multipliers) == ({"pos": 2}, {"gold": 1.5, "black": 10})


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("channel_multipliers", '{"pos": 11}', "pos: must be between 0 and 10."),
        ("channel_multipliers", '{"pos": 1e999}', "pos: must be a number."),
        ("channel_multipliers", '{"pos": NaN}', "pos: must be a number."),
        (
            "channel_multipliers",
            '{"pos": -1, "app": "2"}',
            "pos: must be between 0 and 10; app: must be a number.",
        ),
        ("tier_multipliers", '{"gold": true}', "gold: must be a number."),
        ("tier_multipliers", '{"gold": 1.00001}', "gold: must have at most 4 decimal places."),
        ("tier_multipliers", "[2]", 'Must be an object of names to multipliers, e.g. {"pos": 2}.'),
        ("points_per_unit", "-1", "Ensure this value is greater than or equal to 0."),
    ],
)
def test_an_earning_rule_beyond_its_bounds_is_refused_in_the_admin_naming_the_field(
    admin_client, field, value, reason
):
    response = admin_client.post("/admin/loyalty/earnrule/add/", earn_rule_form(**{field: value}))

    assert response.status_code == 200  # the form again, with the error
    assert response.context["adminform"].form.errors == {field: [reason]}
    assert not EarnRule.objects.exists()
