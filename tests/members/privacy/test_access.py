"""Access requests: everything held about a person, as JSON from the API, recorded as a request
and in the audit log; who may ask."""

import pytest

from cdp.models import AuditEntry
from cdp.roles import Role
from members.privacy.models import PrivacyRequest
from tests.members.privacy.person import EMAIL, PHONE, lin_lives, ok
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def lin():
    yield from lin_lives()


def test_the_export_holds_everything_and_is_audited(lin):
    officer = staff_client(Role.PRIVACY_OFFICER)

    export = ok(officer.get(f"/api/v1/members/{lin.member}/export/")).json()

    assert export["member_id"] == lin.member
    profile = export["profile"]
    assert {i["value"] for i in profile["identifiers"]["phone"]} == {PHONE}  # unmasked
    assert {i["value"] for i in profile["identifiers"]["email"]} == {EMAIL}
    assert set(profile["identifiers"]) >= {
        "user_id",
        "member_card",
        "wechat_unionid",
        "wechat_openid",
        "device_id",
    }
    assert profile["traits"]["last_name"]["value"] == "Lindqvist"
    assert {t["key"] for t in profile["tags"]} >= {"vip"}
    assert {s["key"] for s in profile["segments"]} >= {"big-spenders", "invited"}
    assert [g["group_id"] for g in profile["groups"]] == ["club-runners"]
    assert any(h["kind"] == "merge" for h in profile["history"])
    assert any(h["kind"] == "split" for h in profile["history"])
    assert {o["order_id"] for o in export["orders"]} == {"POS-5501", "APP-8801", "MP-3301", "WEB-1201"}
    messages = {e["message_id"] for e in export["events"]}
    assert {"pos-1", "app-1", "app-3", "mini-1", "web-1"} <= messages
    web = next(e for e in export["events"] if e["message_id"] == "web-1")
    assert web["properties"]["shipping_address"]["phone"] == PHONE  # as it was sent
    assert web["source"] == "Web shop"
    points = export["points"]
    assert points["balance"] == sum(row["points"] for row in points["ledger"])
    assert any(row["reason"].startswith("Goodwill") for row in points["ledger"])
    assert [c["status"] for c in points["coupons"]] == ["redeemed"]
    # Who saw her data: the manager's lookups and the split.
    assert {a["action"] for a in export["audit"]} >= {"view_contact_details", "split_member"}

    request = PrivacyRequest.objects.get(kind="access")
    assert (request.status, request.member_id, request.requested_by.username) == (
        "done",
        lin.member,
        "staff-privacy_officer",
    )
    assert request.counts["orders"] == 4
    assert request.counts["events"] == len(export["events"])
    entry = AuditEntry.objects.get(action="export_member")
    assert (entry.member_ids, entry.channel, entry.user.username) == (
        [lin.member],
        "api",
        "staff-privacy_officer",
    )
    listed = ok(officer.get("/api/v1/privacy/requests/?kind=access&status=done")).json()["results"]
    assert [r["id"] for r in listed] == [request.pk]


def test_an_absorbed_id_exports_the_person_and_roles_are_held_to_theirs(lin):
    absorbed = next(h["absorbed_id"] for h in ok(staff_client(Role.ADMIN).get(
        f"/api/v1/members/{lin.member}/")).json()["history"] if h["kind"] == "merge")  # fmt: skip

    export = ok(staff_client(Role.ADMIN).get(f"/api/v1/members/{absorbed}/export/")).json()

    assert export["member_id"] == lin.member
    for role, status in {None: 401, Role.CRM_AGENT: 403, Role.CRM_MANAGER: 403, Role.MARKETING: 403,
                         Role.CHECKOUT: 403}.items():  # fmt: skip
        assert staff_client(role).get(f"/api/v1/members/{lin.member}/export/").status_code == status, role
    assert staff_client(Role.ADMIN).get("/api/v1/members/987654321/export/").status_code == 404
    assert AuditEntry.objects.filter(action="export_member").count() == 1  # refusals export nothing
