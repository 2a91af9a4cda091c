"""The member API for CRM staff: lookup by any identifier, the 360 view, the timeline, split,
with least privilege per role."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from cdp.models import AuditEntry
from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from events.pipeline import events_process_pending
from tests.conftest import basic_auth
from tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)


def staff_client(role: Role | None) -> APIClient:
    client = APIClient()
    if role is not None:
        user = staff_user_ensure(username=f"staff-{role}", role=role)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='test').secret}")
    return client


ROLES = [None, Role.CRM_AGENT, Role.CRM_MANAGER, Role.MARKETING, Role.ADMIN]
ENDPOINTS = {
    "lookup": ("get", "/api/v1/members/?phone=13800138000", None),
    "profile": ("get", "/api/v1/members/{member}/", None),
    "timeline": ("get", "/api/v1/members/{member}/events/", None),
    "split": ("post", "/api/v1/members/{member}/split/", {"identifiers": ["anonymous_id:anon-7"], "reason": "two people"}),
}  # fmt: skip
EXPECTED = {  # role -> status per endpoint (lookup, profile, timeline, split)
    None: (401, 401, 401, 401),
    Role.CRM_AGENT: (200, 200, 200, 403),
    Role.CRM_MANAGER: (200, 200, 200, 200),
    Role.MARKETING: (403, 403, 403, 403),
    Role.ADMIN: (200, 200, 200, 200),
}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_for_every_role(zhang, role, endpoint):
    method, path, body = ENDPOINTS[endpoint]
    client = staff_client(role)

    response = getattr(client, method)(path.format(**zhang), body, format="json")

    assert response.status_code == EXPECTED[role][list(ENDPOINTS).index(endpoint)], response.content
    if response.status_code >= 400:
        assert set(response.json()) == {"code", "message", "errors"}


def test_a_write_key_never_opens_the_staff_api(zhang):
    source = SourceFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth(source.write_key))

    assert client.get("/api/v1/members/?phone=13800138000").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {source.write_key}")
    assert client.get("/api/v1/members/?phone=13800138000").status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        "phone=13800138000", "phone=138 0013 8000", "phone=%2B86 13800138000", "phone=8613800138000",
        "email=ZHANG.WEI@example.com", "member_card=MC-0042", "anonymous_id=anon-7", "order_id=APP-9",
        "order_id=POS-1", "q=zhang",
    ],
)  # fmt: skip
def test_any_written_form_of_any_identifier_finds_the_member(zhang, query):
    response = staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/?{query}")

    assert response.status_code == 200
    assert [m["id"] for m in response.json()["results"]] == [zhang["member"]]


def test_lookup_finds_nobody_for_an_unknown_identifier(zhang):
    response = staff_client(Role.CRM_AGENT).get("/api/v1/members/?email=nobody@example.com")

    assert response.json() == {"results": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [("phone=12345", "phone"), ("email=not-an-email", "email"), ("phone=null", "phone"), ("", "phone"),
     ("phone=13800138000&email=a@b.cn", "email")],
)  # fmt: skip
def test_a_malformed_lookup_is_a_400_naming_the_field(zhang, query, field):
    response = staff_client(Role.CRM_AGENT).get(f"/api/v1/members/?{query}")

    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]]


def test_an_agent_sees_phone_and_email_masked_everywhere(zhang):
    client = staff_client(Role.CRM_AGENT)

    found = client.get("/api/v1/members/?phone=13800138000").json()["results"][0]
    profile = client.get(f"/api/v1/members/{zhang['member']}/").json()
    timeline = client.get(f"/api/v1/members/{zhang['member']}/events/").json()["results"]

    assert (found["phone"], found["email"]) == ("138****8000", "z***@example.com")
    assert [i["value"] for i in profile["identifiers"]["phone"]] == ["138****8000"]
    assert [i["value"] for i in profile["identifiers"]["email"]] == ["z***@example.com"]
    assert profile["traits"]["email"]["value"] == "z***@example.com"
    assert profile["traits"]["name"]["value"] == "Z***"  # a name is personal too (PERSONAL_DATA_KEYS)
    assert found["name"] == "Z***"
    stated = [e["traits"]["phone"] for e in timeline if "phone" in e["traits"]]
    assert stated
    assert all("****" in phone for phone in stated)
    assert "13800138000" not in str(profile) + str(timeline) + str(found)


def test_a_manager_sees_them_in_full_and_the_audit_log_says_so(zhang):
    profile = staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/{zhang['member']}/").json()
    staff_client(Role.CRM_AGENT).get(f"/api/v1/members/{zhang['member']}/")  # masked: not an entry

    entry = AuditEntry.objects.get(action=AuditEntry.Action.VIEW_CONTACT_DETAILS)
    assert (entry.user.username, entry.actor, entry.member_ids) == (
        "staff-crm_manager", "staff-crm_manager", [zhang["member"]],
    )  # fmt: skip
    # what was given in full, by field, and from where
    assert {"phone", "email", "traits.phone", "traits.email", "traits.name"} <= set(entry.personal_fields)
    assert entry.address == "127.0.0.1"

    assert [i["value"] for i in profile["identifiers"]["phone"]] == ["+8613800138000"]
    assert profile["traits"]["email"]["value"] == " Zhang.Wei@Example.com"  # as the customer wrote it


def test_the_360_view(zhang):
    profile = staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/{zhang['member']}/").json()

    assert profile["id"] == zhang["member"]
    assert profile["resolved_from"] is None
    assert set(profile["identifiers"]) == {"phone", "email", "member_card", "anonymous_id"}
    assert profile["traits"]["name"] == {
        "value": "Zhang Wei", "observed_at": "2026-09-01T10:00:00Z", "channel": "pos", "source": "Shanghai Nanjing Rd",
    }  # fmt: skip
    figures = profile["aggregates"]
    assert (figures["orders"], figures["spend"], figures["refunded"]) == (2, "320.00", "100.00")
    assert figures["average_order_value"] == "160.00"
    assert figures["by_channel"]["pos"] == {"orders": 1, "spend": "200.00", "events": 3}
    assert figures["by_channel"]["app"] == {"orders": 1, "spend": "120.00", "events": 3}
    assert figures["stores_visited"] == ["SH01"]
    assert [o["order_id"] for o in profile["recent_orders"]] == ["APP-9", "POS-1"]
    merge = profile["history"][0]
    assert (merge["kind"], merge["survivor_id"], merge["absorbed_id"]) == (
        "merge",
        zhang["member"],
        zhang["absorbed"],
    )
    assert "anonymous_id:anon-7" in merge["identifiers"]


def test_an_absorbed_id_answers_with_its_survivor(zhang):
    profile = staff_client(Role.CRM_AGENT).get(f"/api/v1/members/{zhang['absorbed']}/").json()

    assert (profile["id"], profile["resolved_from"]) == (zhang["member"], zhang["absorbed"])


@pytest.mark.parametrize("member", ["999999999", "abc"])
def test_an_unknown_member_is_a_404(zhang, member):
    client = staff_client(Role.CRM_AGENT)

    for path in (f"/api/v1/members/{member}/", f"/api/v1/members/{member}/events/"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_the_timeline_is_newest_first_across_channels_and_pages_with_a_cursor(zhang):
    client = staff_client(Role.CRM_AGENT)
    seen, cursor, url = [], "", f"/api/v1/members/{zhang['member']}/events/?page_size=2"
    while cursor is not None:
        page = client.get(url, {"cursor": cursor} if cursor else {}).json()
        assert set(page) == {"results", "next_cursor"}  # the one page shape
        seen += page["results"]
        cursor = page["next_cursor"]

    assert len(seen) == 6
    assert len({e["id"] for e in seen}) == 6
    assert [e["timestamp"] for e in seen] == sorted((e["timestamp"] for e in seen), reverse=True)
    assert {e["channel"] for e in seen} == {"pos", "app"}
    assert seen[-1]["source"] == "Shanghai Nanjing Rd"
    assert seen[-1]["store_code"] == "SH01"


def test_the_timeline_filters_by_channel_and_event(zhang):
    client = staff_client(Role.CRM_AGENT)
    base = f"/api/v1/members/{zhang['member']}/events/"

    orders = client.get(base + "?event=Order Completed").json()["results"]
    app = client.get(base + "?channel=app").json()["results"]

    assert [e["properties"]["order_id"] for e in orders] == ["APP-9", "POS-1"]
    assert {e["channel"] for e in app} == {"app"}
    assert len(app) == 3
    assert client.get(base + "?channel=fax").status_code == 400


def test_a_manager_splits_a_wrong_merge(zhang):
    client = staff_client(Role.CRM_MANAGER)

    response = client.post(
        f"/api/v1/members/{zhang['member']}/split/",
        {"identifiers": ["anonymous_id:anon-7"], "reason": "a shared tablet"},
        format="json",
    )
    events_process_pending()  # the follow-ups refresh both members

    assert response.status_code == 200
    other = [m for m in response.json()["resulting_members"] if m != zhang["member"]]
    assert len(other) == 1
    assert client.get(f"/api/v1/members/{other[0]}/").json()["aggregates"]["spend"] == "120.00"
    assert client.get(f"/api/v1/members/{zhang['member']}/").json()["aggregates"]["spend"] == "200.00"


def test_a_split_without_reason_or_with_a_foreign_identifier_is_refused(zhang):
    client = staff_client(Role.CRM_MANAGER)
    path = f"/api/v1/members/{zhang['member']}/split/"

    no_reason = client.post(path, {"identifiers": ["anonymous_id:anon-7"]}, format="json")
    foreign = client.post(path, {"identifiers": ["phone:13900000000"], "reason": "x"}, format="json")

    assert no_reason.status_code == 400
    assert no_reason.json()["errors"][0]["field"] == "reason"
    assert foreign.status_code == 400
    assert foreign.json()["errors"][0]["field"] == "identifiers"


def test_the_360_view_costs_a_bounded_number_of_queries(zhang, django_assert_max_num_queries):
    client = staff_client(Role.CRM_AGENT)
    for n in range(30):  # more orders and events make no more queries
        EventFactory(source=SourceFactory(pos=True, store_code=f"S{n}"), user_id="", anonymous_id="",
                     event="Order Completed", context={"traits": {"phone": "13800138000"}},
                     properties={"order_id": f"X{n}", "total": 10, "currency": "CNY"})  # fmt: skip
    events_process_pending()

    # Three to read the token (cdp.staff_tokens), one for the source names (per process too)
    with django_assert_max_num_queries(13):
        client.get(f"/api/v1/members/{zhang['member']}/")
    # Both read once per process: the member with its figures, points and tier, its traits,
    # orders, identifiers, merges, splits, tags, segments and groups.
    with django_assert_max_num_queries(9):
        profile = client.get(f"/api/v1/members/{zhang['member']}/").json()

    assert profile["aggregates"]["orders"] == 32
    assert Decimal(profile["aggregates"]["spend"]) == Decimal("620.00")
