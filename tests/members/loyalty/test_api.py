"""The loyalty API: points view, staff adjustments, spending at checkout, coupons across
channels (exactly once, with clear refusals), campaigns, members about to lose points."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from cdp.roles import Role
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.models import (
    Coupon,
    CouponCampaign,
    CouponRedemption,
    EarnRule,
    PointsAccount,
    PointsEntry,
    Tier,
)
from members.segments.models import Segment
from members.segments.services import segment_compute
from members.services import members_rebuild
from tests.factories import EventFactory, SourceFactory
from tests.factories.consent import consent_grant
from tests.members.conftest import T0
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db


def points_of(member: int, client=None) -> dict:
    response = (client or staff_client(Role.CRM_AGENT)).get(f"/api/v1/members/{member}/points/")
    assert response.status_code == 200, response.content
    return response.json()


ROLES = [None, Role.CRM_AGENT, Role.CRM_MANAGER, Role.MARKETING, Role.CHECKOUT, Role.ADMIN]
ENDPOINTS = {
    "points": ("get", "/api/v1/members/{member}/points/", None),
    "adjust": ("post", "/api/v1/members/{member}/points/adjust/", {"points": 5, "reason": "goodwill"}),
    "redeem": ("post", "/api/v1/members/{member}/points/redeem/", {"points": 5, "order_id": "R-1", "channel": "pos"}),
    "expiring": ("get", "/api/v1/points/expiring/", None),
    "campaigns": ("get", "/api/v1/campaigns/", None),
}  # fmt: skip
EXPECTED = {  # role -> statuses in ENDPOINTS order
    None: (401, 401, 401, 401, 401),
    Role.CRM_AGENT: (200, 403, 403, 200, 403),
    Role.CRM_MANAGER: (200, 201, 403, 200, 403),
    Role.MARKETING: (403, 403, 403, 403, 200),
    Role.CHECKOUT: (403, 403, 201, 403, 403),
    Role.ADMIN: (200, 201, 201, 200, 200),
}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_for_every_role(zhang, role, endpoint):
    method, path, body = ENDPOINTS[endpoint]

    response = getattr(staff_client(role), method)(
        path.format(**zhang), body, format="json", HTTP_IDEMPOTENCY_KEY=f"k-{role}-{endpoint}"
    )

    assert response.status_code == EXPECTED[role][list(ENDPOINTS).index(endpoint)], response.content


def test_the_points_view_follows_a_merged_id_and_shows_the_ledger_newest_first(zhang):
    body = points_of(zhang["absorbed"])

    assert body["member_id"] == zhang["member"]
    assert (body["balance"], body["available"], body["pending"]) == (320, 320, 0)
    assert [(e["kind"], e["points"]) for e in body["ledger"]] == [
        ("reverse", -100),
        ("earn", 120),
        ("earn", 300),
    ]
    assert body["ledger"][0]["reason"].startswith("order POS-1 refunded 100")


def test_ledger_pages_with_a_keyset_cursor(zhang):
    client = staff_client(Role.CRM_AGENT)

    first = client.get(f"/api/v1/members/{zhang['member']}/points/?page_size=2").json()
    second = client.get(
        f"/api/v1/members/{zhang['member']}/points/?page_size=2&before={first['next_cursor']}"
    ).json()

    assert [e["points"] for e in first["ledger"] + second["ledger"]] == [-100, 120, 300]
    assert second["next_cursor"] is None


def test_the_ledger_is_in_time_order_with_a_running_balance_whatever_order_rows_were_written(zhang):
    """A store's late upload (an order ten days before the others, processed last) is the
    oldest line of the statement, not the newest; each line says the balance after it."""
    store = SourceFactory(pos=True, store_code="SH02", name="Late till")
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Completed",
                 timestamp=T0 - timedelta(days=10), context={"traits": {"phone": "13800138000"}},
                 properties={"order_id": "POS-LATE", "total": "50.00", "currency": "CNY"})  # fmt: skip
    events_process_pending()
    client = staff_client(Role.CRM_AGENT)

    first = client.get(f"/api/v1/members/{zhang['member']}/points/?page_size=2").json()
    second = client.get(
        f"/api/v1/members/{zhang['member']}/points/?page_size=2&before={first['next_cursor']}"
    ).json()
    ledger = first["ledger"] + second["ledger"]

    assert [(e["points"], e["balance_after"]) for e in ledger] == [
        (-100, 370),
        (120, 470),
        (300, 350),
        (50, 50),
    ]
    assert [e["at"] for e in ledger] == sorted((e["at"] for e in ledger), reverse=True)
    assert first["balance"] == ledger[0]["balance_after"] == 370
    assert second["next_cursor"] is None
    # The late row was written last: in id order it would have come first.
    assert max(e["id"] for e in ledger) == ledger[-1]["id"]


def test_an_adjustment_needs_a_reason_and_an_idempotency_key_and_happens_once(zhang):
    client, path = staff_client(Role.CRM_MANAGER), f"/api/v1/members/{zhang['member']}/points/adjust/"

    no_key = client.post(path, {"points": 50, "reason": "complaint"}, format="json")
    no_reason = client.post(path, {"points": 50}, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    first = client.post(
        path, {"points": 50, "reason": "complaint"}, format="json", HTTP_IDEMPOTENCY_KEY="c-1"
    )
    again = client.post(
        path, {"points": 50, "reason": "complaint"}, format="json", HTTP_IDEMPOTENCY_KEY="c-1"
    )
    reused = client.post(
        path, {"points": 70, "reason": "complaint"}, format="json", HTTP_IDEMPOTENCY_KEY="c-1"
    )
    too_much = client.post(
        path, {"points": -1000, "reason": "fraud"}, format="json", HTTP_IDEMPOTENCY_KEY="c-2"
    )

    assert (no_key.status_code, no_key.json()["errors"][0]["field"]) == (400, "Idempotency-Key")
    assert (no_reason.status_code, no_reason.json()["errors"][0]["field"]) == (400, "reason")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["staff"] == "staff-crm_manager"
    assert reused.status_code == 409
    assert (too_much.status_code, too_much.json()["errors"][0]["field"]) == (409, "points")
    assert points_of(zhang["member"])["balance"] == 370


def test_spending_points_at_a_till_is_idempotent_and_refused_beyond_what_is_available(zhang):
    client, path = staff_client(Role.CHECKOUT), f"/api/v1/members/{zhang['member']}/points/redeem/"
    body = {"points": 200, "order_id": "POS-77", "channel": "pos"}

    first = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="till-3:receipt-77")
    retry = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="till-3:receipt-77")
    over = client.post(path, {**body, "order_id": "WEB-1", "channel": "web"}, format="json",
                       HTTP_IDEMPOTENCY_KEY="web:cart-1")  # fmt: skip

    assert (first.status_code, retry.status_code) == (201, 200)
    assert over.status_code == 409
    assert over.json()["message"] == "only 120 points are available (spendable now)"
    assert points_of(zhang["member"])["balance"] == 120


def test_pending_points_cannot_be_spent_until_the_returns_window_ends():
    EarnRule.objects.create(name="30-day returns window", pending_days=30)
    store = SourceFactory(pos=True)
    EventFactory(source=store, user_id="u-p", event="Order Completed", timestamp=timezone.now() - timedelta(days=1),
                 properties={"order_id": "P-1", "total": 500, "currency": "CNY"})  # fmt: skip
    events_process_pending()
    member = PointsEntry.objects.get(kind="earn", order_id="P-1").member_id

    body = points_of(member)
    refused = staff_client(Role.CHECKOUT).post(
        f"/api/v1/members/{member}/points/redeem/", {"points": 1, "order_id": "X", "channel": "pos"},
        format="json", HTTP_IDEMPOTENCY_KEY="p-1",
    )  # fmt: skip

    assert (body["balance"], body["available"], body["pending"]) == (500, 0, 500)
    assert refused.status_code == 409


@pytest.fixture
def campaign() -> CouponCampaign:
    now = timezone.now()
    return CouponCampaign.objects.create(
        name="Autumn 20 off 100", benefit="amount", value=Decimal(20), minimum_spend=Decimal(100),
        valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30), channels=[],
    )  # fmt: skip


def issue(campaign: CouponCampaign, member_ids: list[int]) -> int:
    response = staff_client(Role.MARKETING).post(
        f"/api/v1/campaigns/{campaign.pk}/issue/", {"member_ids": member_ids}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()["issued"]


def test_a_coupon_issued_online_is_redeemed_at_the_till_once(zhang, campaign):
    assert issue(campaign, [zhang["absorbed"]]) == 1
    assert issue(campaign, [zhang["member"]]) == 0  # the same person: no second coupon
    code = Coupon.objects.get(campaign=campaign).code
    till = staff_client(Role.CHECKOUT)
    body = {"order_id": "POS-9", "channel": "pos", "order_total": "150.00", "member_id": zhang["absorbed"]}

    redeemed = till.post(f"/api/v1/coupons/{code}/redeem", body, format="json")
    retried = till.post(f"/api/v1/coupons/{code}/redeem/", body, format="json")
    online = staff_client(Role.CHECKOUT).post(
        f"/api/v1/coupons/{code}/redeem", {**body, "order_id": "WEB-3", "channel": "web"}, format="json"
    )

    assert (redeemed.status_code, redeemed.json()["discount"]) == (201, "20.00")
    assert (retried.status_code, retried.json()["repeated"]) == (200, True)
    assert online.status_code == 409
    assert online.json()["message"].startswith("already redeemed on order POS-9 (pos)")
    assert points_of(zhang["member"])["coupons"][0]["status"] == "redeemed"


@pytest.mark.parametrize(
    ("change", "body", "field", "reason"),
    [
        ({"valid_until_days": -1}, {}, "code", "expired"),
        ({"valid_from_days": 2}, {}, "code", "not valid yet"),
        ({"channels": ["app", "mini_program"]}, {}, "channel", "valid in app, mini_program only, not pos"),
        ({}, {"order_total": "99.99"}, "order_total", "below the minimum spend of 100.00"),
        ({}, {"member_id": "other"}, "member_id", "issued to another member"),
        ({}, {"member_id": None}, "member_id", "issued to a member"),
    ],
)
def test_a_coupon_is_refused_with_the_reason(zhang, campaign, change, body, field, reason):
    now = timezone.now()
    if "valid_until_days" in change:
        campaign.valid_from, campaign.valid_until = (
            now - timedelta(days=10),
            now + timedelta(days=change["valid_until_days"]),
        )
    if "valid_from_days" in change:
        campaign.valid_from = now + timedelta(days=change["valid_from_days"])
    campaign.channels = change.get("channels", [])
    campaign.save()
    other = EventFactory(source=SourceFactory(), user_id="someone-else", event="Page Viewed")
    events_process_pending()
    issue(campaign, [zhang["member"]])
    code = Coupon.objects.get(campaign=campaign).code
    request = {
        "order_id": "POS-9",
        "channel": "pos",
        "order_total": "150.00",
        "member_id": zhang["member"],
        **body,
    }
    if request["member_id"] == "other":
        request["member_id"] = EventResolution.objects.get(event=other).member_id
    if request["member_id"] is None:
        del request["member_id"]

    response = staff_client(Role.CHECKOUT).post(f"/api/v1/coupons/{code}/redeem", request, format="json")

    assert response.status_code == 422, response.content
    assert response.json()["errors"][0]["field"] == field
    assert reason in response.json()["message"]


def test_a_full_refund_releases_the_coupon_and_it_can_be_used_again(zhang, campaign):
    issue(campaign, [zhang["member"]])
    code = Coupon.objects.get(campaign=campaign).code
    till = staff_client(Role.CHECKOUT)
    body = {"order_id": "POS-20", "channel": "pos", "order_total": "180.00", "member_id": zhang["member"]}
    assert till.post(f"/api/v1/coupons/{code}/redeem", body, format="json").status_code == 201

    store = SourceFactory(pos=True)
    for name in ("Order Completed", "Order Refunded"):
        EventFactory(source=store, user_id="", anonymous_id="", event=name, context={"traits": {"phone": "13800138000"}},
                     properties={"order_id": "POS-20", "total": "180.00", "currency": "CNY"})  # fmt: skip
    events_process_pending()

    assert CouponRedemption.objects.get(order_id="POS-20").release_reason == "order refunded in full"
    again = till.post(f"/api/v1/coupons/{code}/redeem", {**body, "order_id": "POS-21"}, format="json")
    assert again.status_code == 201


@pytest.mark.django_db(transaction=True)
def test_two_tills_redeeming_one_code_at_once_one_wins_one_gets_409(campaign):
    coupon = Coupon.objects.create(code="SAMEONE123", campaign=campaign)
    barrier, answers = threading.Barrier(2), []

    def till(number: int) -> None:
        try:
            client = staff_client(Role.CHECKOUT)
            barrier.wait()
            answers.append(client.post(f"/api/v1/coupons/{coupon.code}/redeem",
                                       {"order_id": f"T{number}-1", "channel": "pos", "order_total": "200"},
                                       format="json").status_code)  # fmt: skip
        finally:
            connection.close()

    threads = [threading.Thread(target=till, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [201, 409]
    assert CouponRedemption.objects.filter(coupon=coupon, released_at__isnull=True).count() == 1


def test_campaigns_are_validated(campaign):
    client = staff_client(Role.MARKETING)
    now = timezone.now()

    bad = client.post("/api/v1/campaigns/", {"name": "x", "benefit": "percent", "value": "120",
                                             "valid_from": now.isoformat(), "valid_until": (now - timedelta(days=1)).isoformat(),
                                             "channels": ["pos", "fax"]}, format="json")  # fmt: skip
    good = client.post("/api/v1/campaigns/", {"name": "10% in the app", "benefit": "percent", "value": "10",
                                              "valid_from": now.isoformat(), "valid_until": (now + timedelta(days=7)).isoformat(),
                                              "channels": ["app"]}, format="json")  # fmt: skip

    assert bad.status_code == 400
    assert {e["field"] for e in bad.json()["errors"]} >= {"channels"}
    assert good.status_code == 201
    assert [c["name"] for c in client.get("/api/v1/campaigns/").json()["results"]][:2] == [
        "10% in the app",
        campaign.name,
    ]


def test_members_about_to_lose_points_are_listed():
    EarnRule.objects.create(name="points last 30 days", expiry="days", expiry_days=30)
    store = SourceFactory(pos=True)
    now = timezone.now()
    for user, days_ago in (("soon", 25), ("later", 1)):
        EventFactory(source=store, user_id=user, event="Order Completed", timestamp=now - timedelta(days=days_ago),
                     properties={"order_id": f"O-{user}", "total": 100, "currency": "CNY"})  # fmt: skip
    events_process_pending()
    soon = PointsEntry.objects.get(kind="earn", order_id="O-soon").member_id

    listed = staff_client(Role.CRM_AGENT).get("/api/v1/points/expiring/?within_days=7").json()["results"]

    assert [(r["member_id"], r["points"]) for r in listed] == [(soon, 100)]
    assert PointsAccount.objects.get(member_id=soon).recheck_at is not None


def test_the_360_view_shows_points_and_tier(zhang):
    Tier.objects.create(key="member", name="Member", rank=0, threshold=0)
    Tier.objects.create(key="silver", name="Silver", rank=1, threshold=400)
    members_rebuild(points_only=True)

    profile = staff_client(Role.CRM_AGENT).get(f"/api/v1/members/{zhang['member']}/").json()

    assert profile["loyalty"]["balance"] == 320
    assert (profile["loyalty"]["tier"], profile["loyalty"]["tier_name"]) == ("silver", "Silver")


def test_a_campaign_issues_to_a_segment(zhang, campaign):
    consent_grant([zhang["member"]])  # a campaign to a segment reaches only members who consented
    segment = Segment.objects.create(key="buyers", name="Buyers", kind="dynamic",
                                     rule={"aggregate": "orders", "op": "gte", "value": 1})  # fmt: skip
    segment_compute(segment=segment)
    client = staff_client(Role.MARKETING)

    both = client.post(
        f"/api/v1/campaigns/{campaign.pk}/issue/", {"member_ids": [1], "segment": "buyers"}, format="json"
    )
    unknown = client.post(f"/api/v1/campaigns/{campaign.pk}/issue/", {"segment": "nope"}, format="json")
    issued = client.post(f"/api/v1/campaigns/{campaign.pk}/issue/", {"segment": "buyers"}, format="json")

    assert (both.status_code, unknown.status_code) == (400, 400)
    assert issued.json() == {"issued": 1, "purpose": "marketing", "withheld": {"no_consent": 0}}
    assert Coupon.objects.get(campaign=campaign).member_id == zhang["member"]
