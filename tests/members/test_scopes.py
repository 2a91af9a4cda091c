"""Least privilege by place (``cdp.scopes``): staff scoped to stores, regions and channels find
and open only the members seen there, and see only those orders and timeline rows, in the API
and the console alike; unscoped staff see everything their role allows."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.models import AuditEntry, Region
from cdp.roles import Role
from cdp.scopes import UNSCOPED, Scope, staff_scope
from cdp.services import staff_scope_set, staff_user_ensure, token_issue
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.models import PointsAccount
from members.segments.models import Segment
from members.segments.services import segment_static_set
from members.selectors import members_in_scope
from tests.factories import EventFactory, SourceFactory
from tests.members.conftest import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def beijing(zhang) -> dict:
    """Zhang Wei (Shanghai store SH01 and the app) and Wang Fang, seen only at the Beijing store."""
    store = SourceFactory(pos=True, store_code="BJ01", name="Beijing Sanlitun")
    first = EventFactory.create(source=store, type="identify", user_id="", anonymous_id="", timestamp=T0,
                         traits={"phone": "13900139000", "name": "Wang Fang"})  # fmt: skip
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Completed", timestamp=T0 + timedelta(hours=1),
                 context={"traits": {"phone": "13900139000"}},
                 properties={"order_id": "BJ-7", "total": "88.00", "currency": "CNY"})  # fmt: skip
    events_process_pending()
    return {**zhang, "wang": EventResolution.objects.get(event=first).member_id}


def scoped_client(
    role: Role, *, stores: tuple[str, ...] = (), regions: tuple[str, ...] = (), channels: tuple[str, ...] = ()
) -> APIClient:
    user = staff_user_ensure(username=f"scoped-{role}", role=role)
    staff_scope_set(user=user, stores=stores, regions=regions, channels=channels, by=None, channel="cli")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='t').secret}")
    return client


def test_a_store_agent_finds_only_members_seen_at_the_store(beijing):
    shanghai = scoped_client(Role.CRM_AGENT, stores=("SH01",))

    assert [m["id"] for m in shanghai.get("/api/v1/members/?phone=13800138000").json()["results"]] == [
        beijing["member"]
    ]
    assert shanghai.get("/api/v1/members/?phone=13900139000").json()["results"] == []
    assert shanghai.get("/api/v1/members/?order_id=BJ-7").json()["results"] == []
    assert shanghai.get("/api/v1/members/?q=wang").json()["results"] == []


def test_a_member_seen_elsewhere_is_not_found_by_any_path(beijing):
    shanghai = scoped_client(Role.CRM_MANAGER, stores=("SH01",))
    wang = beijing["wang"]

    for path in (f"/api/v1/members/{wang}/", f"/api/v1/members/{wang}/events/", f"/api/v1/members/{wang}/points/",
                 f"/api/v1/members/{wang}/tags/", f"/api/v1/members/{wang}/tags/history/"):  # fmt: skip
        response = shanghai.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"  # as for an id that names nobody
    split = shanghai.post(f"/api/v1/members/{wang}/split/", {}, format="json")
    adjust = shanghai.post(f"/api/v1/members/{wang}/points/adjust/", {}, format="json")
    assert (split.status_code, adjust.status_code) == (404, 404)  # before the body is even read


def test_a_store_agent_sees_only_the_stores_orders_and_timeline_rows(beijing):
    shanghai = scoped_client(Role.CRM_AGENT, stores=("SH01",))

    profile = shanghai.get(f"/api/v1/members/{beijing['member']}/").json()
    timeline = shanghai.get(f"/api/v1/members/{beijing['member']}/events/").json()["results"]
    found = shanghai.get("/api/v1/members/?phone=13800138000").json()["results"][0]

    assert [o["order_id"] for o in profile["recent_orders"]] == ["POS-1"]  # not the app's APP-9
    assert profile["aggregates"] is None  # figures add up every store and channel
    assert timeline
    assert {(e["channel"], e["store_code"]) for e in timeline} == {("pos", "SH01")}
    # the result line's figures are the store's: one order, 300 less the 100 refunded
    assert (found["orders"], found["spend"]) == (1, "200.00")


def test_unscoped_staff_see_every_store(beijing):
    anywhere = scoped_client(Role.CRM_AGENT)

    profile = anywhere.get(f"/api/v1/members/{beijing['member']}/").json()

    assert [o["order_id"] for o in profile["recent_orders"]] == ["APP-9", "POS-1"]
    assert profile["aggregates"]["orders"] == 2
    assert anywhere.get(f"/api/v1/members/{beijing['wang']}/").status_code == 200


def test_a_manager_scoped_to_a_region_sees_its_stores(beijing):
    Region.objects.create(key="north", name="North", stores=["BJ01", "TJ01"])
    north = scoped_client(Role.CRM_MANAGER, regions=("north",))

    assert north.get(f"/api/v1/members/{beijing['wang']}/").status_code == 200
    assert north.get(f"/api/v1/members/{beijing['member']}/").status_code == 404


def test_a_channel_scope_keeps_that_channels_rows(beijing):
    app_desk = scoped_client(Role.CRM_AGENT, channels=("app",))

    timeline = app_desk.get(f"/api/v1/members/{beijing['member']}/events/").json()["results"]

    assert {e["channel"] for e in timeline} == {"app"}
    assert app_desk.get(f"/api/v1/members/{beijing['wang']}/").status_code == 404


def test_a_token_narrows_its_users_scope_and_never_widens_it(beijing):
    user = staff_user_ensure(username="narrow", role=Role.CRM_AGENT)
    token = token_issue(user=user, name="till").token
    token.stores = ["BJ01"]
    token.save()

    assert staff_scope(user, token) == Scope(stores=frozenset({"BJ01"}))
    staff_scope_set(user=user, stores=["SH01"], by=None, channel="cli")
    user.refresh_from_db()
    assert staff_scope(user, token) == Scope(stores=frozenset())  # SH01 and BJ01: nothing in both
    assert members_in_scope([beijing["member"], beijing["wang"]], staff_scope(user, token)) == []
    assert staff_scope(user) == Scope(stores=frozenset({"SH01"}))


def test_a_scope_change_is_audited_and_nothing_makes_the_user_unscoped(beijing):
    admin = staff_user_ensure(username="boss", role=Role.ADMIN)
    user = staff_user_ensure(username="desk", role=Role.CRM_AGENT)

    staff_scope_set(user=user, stores=["SH01"], by=admin, channel="admin")
    staff_scope_set(user=user, stores=["SH01"], by=admin, channel="admin")  # no change: no entry
    staff_scope_set(user=user, by=admin, channel="admin")

    changes = list(
        AuditEntry.objects.filter(action=AuditEntry.Action.CHANGE_ROLE, actor="boss")
        .order_by("id")
        .values_list("detail", flat=True)
    )
    assert changes == [
        "user desk: scope unscoped -> stores SH01",
        "user desk: scope stores SH01 -> unscoped",
    ]
    user.refresh_from_db()
    assert staff_scope(user) == UNSCOPED
    with pytest.raises(ValueError, match="unknown region"):
        staff_scope_set(user=user, regions=["atlantis"], by=admin, channel="admin")


def test_bulk_pulls_across_stores_are_refused_to_scoped_marketing(beijing):
    segment = segment_static_set(
        segment=Segment.objects.create(key="list", name="List", kind="static"),
        member_ids=[beijing["member"], beijing["wang"]],
    )
    scoped = scoped_client(Role.MARKETING, stores=("SH01",))
    unscoped = scoped_client(Role.ADMIN)

    for path in (f"/api/v1/segments/{segment.key}/members/", f"/api/v1/segments/{segment.key}/export/",
                 f"/api/v1/segments/{segment.key}/changes/", f"/api/v1/segments/{segment.key}/webhooks/"):  # fmt: skip
        assert scoped.get(path).status_code == 403, path
        assert unscoped.get(path).status_code == 200, path
    assert scoped.get("/api/v1/segments/").status_code == 200  # definitions are not members
    assert (
        scoped.put(f"/api/v1/segments/{segment.key}/members/", {"member_ids": []}, format="json").status_code
        == 403
    )


def test_the_console_is_scoped_the_same_way(beijing):
    user = staff_user_ensure(username="console-desk", role=Role.CRM_AGENT)
    staff_scope_set(user=user, stores=["SH01"], by=None, channel="cli")
    client = Client()
    client.force_login(user)

    assert client.get(f"/console/members/{beijing['wang']}/").status_code == 404
    page = client.get(f"/console/members/{beijing['member']}/")
    assert page.status_code == 200
    assert {e["channel"] for e in page.context["timeline"]} == {"pos"}
    assert 'data-testid="scope"' in page.content.decode()
    assert client.get("/console/", {"q": "13900139000"}).context["results"] == []
    assert client.post(f"/console/members/{beijing['wang']}/tags/", {"tag": "x"}).status_code == 404


def test_members_about_to_lose_points_are_those_within_the_scope(beijing):
    soon = timezone.now() + timedelta(days=3)
    for member_id in (beijing["member"], beijing["wang"]):
        PointsAccount.objects.update_or_create(
            member_id=member_id, defaults={"balance": 50, "next_expiry_at": soon, "next_expiry_points": 50}
        )

    scoped = scoped_client(Role.CRM_AGENT, stores=("BJ01",)).get("/api/v1/points/expiring/").json()
    unscoped = scoped_client(Role.CRM_MANAGER).get("/api/v1/points/expiring/").json()

    assert [row["member_id"] for row in scoped["results"]] == [beijing["wang"]]
    assert {row["member_id"] for row in unscoped["results"]} == {beijing["member"], beijing["wang"]}
