"""Unmodified Segment (analytics-python) and RudderStack (rudder-sdk-python) SDKs talk to our
server as they would to their own services."""

from typing import Any

import pytest
from rest_framework.test import APIClient
from rudderstack.analytics.client import Client as RudderStackClient
from segment.analytics import Client
from segment.analytics.request import APIError

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from events.models import Event, PendingEvent
from identity.models import EventResolution
from members.models import Group, Member
from tests.factories import SourceFactory

#: The SDKs a retailer may already run; both post Segment's HTTP Tracking API to ``<host>/v1/batch``.
SDKS = {"segment": Client, "rudderstack": RudderStackClient}


def sdk_client(live_server, source, sdk: str = "segment") -> tuple[Any, list]:
    errors: list = []
    client = SDKS[sdk](
        write_key=source.write_key,
        host=live_server.url,
        sync_mode=True,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )
    return client, errors


def staff_api() -> APIClient:
    api = APIClient()
    user = staff_user_ensure(username="sdk-manager", role=Role.CRM_MANAGER)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='sdk').secret}")
    return api


def lookup(api: APIClient, field: str, value: str) -> list[int]:
    response = api.get("/api/v1/members/", {field: value})
    assert response.status_code == 200, response.json()
    return [found["id"] for found in response.json()["results"]]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_python_client_events_are_stored(live_server, gzip):
    source = SourceFactory(pos=True, store_code="S009")
    errors = []
    client = Client(
        write_key=source.write_key,
        host=live_server.url,
        sync_mode=True,
        gzip=gzip,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )

    client.identify("member-1", {"phone": "13800138000", "name": "Han Meimei"})
    client.track(
        "member-1",
        "Order Completed",
        {
            "order_id": "POS-1",
            "total": 259.0,
            "currency": "CNY",
            "products": [{"sku": "T-1", "price": 259.0}],
        },
    )
    client.page(anonymous_id="anon-7", name="Home", properties={"path": "/"})
    client.alias("anon-7", "member-1")
    client.flush()

    assert errors == []
    events = {event.type: event for event in Event.objects.filter(source=source)}
    assert set(events) == {"identify", "track", "page", "alias"}
    assert events["identify"].traits == {"phone": "13800138000", "name": "Han Meimei"}
    assert events["track"].properties["order_id"] == "POS-1"
    assert events["track"].store_code == "S009"
    assert events["track"].context["library"]["name"] == "analytics-python"
    assert events["track"].sent_at is not None
    assert events["alias"].previous_id == "anon-7"
    assert not PendingEvent.objects.exists()  # eager pipeline nudge


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_segment_client_with_a_bad_key_gets_401(live_server):
    client = Client(write_key="wk_wrong", host=live_server.url, sync_mode=True, max_retries=0)

    with pytest.raises(APIError) as refused:
        client.track("member-1", "Product Viewed")

    assert refused.value.status == 401
    assert not Event.objects.exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sdk", sorted(SDKS))
def test_sdk_alias_makes_the_previous_id_find_the_customer(live_server, sdk):
    client, errors = sdk_client(live_server, SourceFactory(kind="web"), sdk)
    api = staff_api()

    client.alias("seg-old-id", "seg-cust-1")  # nothing seen before: both ids are the customer's
    # The previous id seen before as an anonymous id: the anonymous visitor joins the customer.
    client.page(anonymous_id="seg-anon-9", name="Home", properties={"path": "/"})
    client.identify("seg-cust-1", {"name": "Han Meimei"})
    client.alias("seg-anon-9", "seg-cust-1")
    # The previous id seen before as a user id (a login that changed): one customer, both ids.
    client.identify("seg-legacy-7", {"phone": "13800138000"})
    client.alias("seg-legacy-7", "seg-cust-1")
    client.flush()

    assert errors == []
    [customer] = lookup(api, "user_id", "seg-cust-1")
    for field, value in [("user_id", "seg-old-id"), ("anonymous_id", "seg-old-id"), ("anonymous_id", "seg-anon-9"),
                         ("user_id", "seg-anon-9"), ("user_id", "seg-legacy-7"), ("phone", "13800138000")]:  # fmt: skip
        assert lookup(api, field, value) == [customer], (field, value)
    assert set(EventResolution.objects.values_list("member_id", flat=True)) == {customer}
    assert Member.objects.filter(status=Member.Status.ACTIVE).count() == 1
    profile = api.get(f"/api/v1/members/{customer}/").json()
    assert {i["value"] for i in profile["identifiers"]["user_id"]} == {"seg-cust-1", "seg-old-id", "seg-anon-9",
                                                                     "seg-legacy-7"}  # fmt: skip
    assert profile["traits"]["name"]["value"] == "Han Meimei"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sdk", sorted(SDKS))
def test_sdk_group_traits_belong_to_the_group(live_server, sdk):
    client, errors = sdk_client(live_server, SourceFactory(kind="app"), sdk)
    api = staff_api()

    client.identify("seg-cust-3", {"name": "Li Lei", "email": "li@example.com"})
    client.group(
        "seg-cust-3", "acme-1", {"name": "ACME Ltd", "email": "office@acme.example", "employees": 40}
    )
    client.flush()

    assert errors == []
    [member] = lookup(api, "user_id", "seg-cust-3")
    assert lookup(api, "email", "office@acme.example") == []
    profile = api.get(f"/api/v1/members/{member}/").json()
    assert profile["traits"]["name"]["value"] == "Li Lei"
    assert profile["traits"]["email"]["value"] == "li@example.com"
    assert {i["value"] for i in profile["identifiers"]["email"]} == {"li@example.com"}
    [group] = profile["groups"]
    assert (group["group_id"], group["name"]) == ("acme-1", "ACME Ltd")
    assert group["traits"] == {"name": "ACME Ltd", "email": "office@acme.example", "employees": 40}
    assert Group.objects.get(group_id="acme-1").traits["employees"] == 40
