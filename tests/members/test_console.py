"""The staff console's member pages (server-rendered), with the Django test client."""

import re

import orjson
import pytest
from django.test import Client

from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.pipeline import events_process_pending
from identity.models import EventResolution, Identifier
from members.segments.models import Segment
from members.segments.services import segment_static_set
from tests.factories import EventFactory, SourceFactory
from tests.factories.consent import consent_grant
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db


def console_client(role: Role) -> Client:
    client = Client()
    client.force_login(staff_user_ensure(username=f"console-{role}", role=role))
    return client


def test_the_console_asks_for_a_login():
    response = Client().get("/console/?q=13800138000")

    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/")


def test_marketing_may_not_open_member_pages(zhang):
    client = console_client(Role.MARKETING)

    denied = client.get(f"/console/members/{zhang['member']}/")

    assert denied.status_code == 403
    # A page in the console's frame pointing to what the role may open, not a bare 403.
    assert 'data-testid="forbidden"' in denied.content.decode()
    assert '<a href="/console/segments/">Segments</a>' in denied.content.decode()


@pytest.mark.parametrize(
    ("role", "landing"),
    [
        (Role.CRM_AGENT, None),
        (Role.CRM_MANAGER, None),
        (Role.ADMIN, None),
        (Role.MARKETING, "/console/segments/"),
    ],
)
def test_each_role_lands_on_a_page_it_may_open(role, landing):
    client = Client()
    user = staff_user_ensure(username=f"landing-{role}", role=role)
    user.set_password("pw-Landing-1")
    user.save()

    logged_in = client.post("/console/login/", {"username": f"landing-{role}", "password": "pw-Landing-1"})
    home = client.get(logged_in["Location"])

    if landing is None:
        assert home.status_code == 200
        assert "Find a member" in home.content.decode()
    else:
        assert home.status_code == 302
        assert home["Location"] == landing
        assert client.get(landing).status_code == 200


def test_a_role_without_console_pages_is_told_so():
    client = console_client(Role.CHECKOUT)

    response = client.get("/console/")

    assert response.status_code == 403
    assert "Your role has no pages in the console" in response.content.decode()


@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        (Role.CRM_AGENT, ["Members", "Tags"], ["Segments"]),
        (Role.MARKETING, ["Segments", "Tags"], ["Members"]),
        (Role.ADMIN, ["Members", "Segments", "Tags"], []),
    ],
)
def test_the_navigation_shows_only_what_the_role_may_open(role, shown, hidden):
    client = console_client(role)
    page = client.get("/console/", follow=True).content.decode()
    nav = page[page.index('<nav class="nav"') : page.index("</nav>")]

    for label in shown:
        assert f">{label}</a>" in nav
    for label in hidden:
        assert f">{label}</a>" not in nav
    for href in re.findall(r'href="([^"]+)"', nav):
        assert client.get(href).status_code == 200


def test_a_phone_in_any_form_leads_straight_to_the_member(zhang):
    response = console_client(Role.CRM_AGENT).get("/console/", {"q": "+86 138-0013-8000"})

    assert response.status_code == 302
    assert response["Location"] == f"/console/members/{zhang['member']}/"


def test_a_search_with_several_results_lists_them_masked(zhang):
    app = SourceFactory(kind="app")
    EventFactory(
        source=app, type="identify", user_id="zhang-2", anonymous_id="", traits={"name": "Zhang Min"}
    )
    events_process_pending()

    page = console_client(Role.CRM_AGENT).get("/console/", {"q": "zhang"}).content.decode()

    assert "2 members for “zhang”" in page
    assert "138****8000" in page
    assert "13800138000" not in page


def test_the_member_page_shows_what_an_agent_needs(zhang):
    page = console_client(Role.CRM_AGENT).get(f"/console/members/{zhang['member']}/").content.decode()

    assert "Z***" in page  # the name is personal too
    assert "Zhang Wei" not in page
    assert "138****8000" in page
    assert "z***@example.com" in page
    assert "13800138000" not in page
    assert "320.00 CNY" in page  # spend net of the refund
    assert "Shanghai Nanjing Rd" in page
    assert "iOS app" in page
    assert "Order Refunded" in page
    assert "Store" in page
    assert "App" in page
    assert f"#{zhang['absorbed']} merged into #{zhang['member']}" in page
    assert 'data-testid="spend-chart"' in page


def test_a_manager_sees_contact_details_in_full(zhang):
    page = console_client(Role.CRM_MANAGER).get(f"/console/members/{zhang['member']}/").content.decode()

    assert "+8613800138000" in page


def test_an_absorbed_id_leads_to_the_survivor(zhang):
    client = console_client(Role.CRM_AGENT)
    response = client.get(f"/console/members/{zhang['absorbed']}/")

    assert response.status_code == 302
    assert "was merged into this member" in client.get(response["Location"]).content.decode()
    assert client.get("/console/members/999999999/").status_code == 404


def test_the_timeline_pages_back_in_time_and_filters_by_channel(zhang, monkeypatch):
    monkeypatch.setattr("members.console.TIMELINE_PAGE", 4)
    client = console_client(Role.CRM_AGENT)
    url = f"/console/members/{zhang['member']}/"

    first = client.get(url)
    second = client.get(url, {"before": first.context["older"]})
    app_only = client.get(url, {"channel": "app"})

    assert len(first.context["timeline"]) == 4
    assert len(second.context["timeline"]) == 2
    assert not second.context["older"]
    ids = [e["id"] for e in first.context["timeline"] + second.context["timeline"]]
    assert len(set(ids)) == 6
    assert {e["channel"] for e in app_only.context["timeline"]} == {"app"}


def test_a_member_page_costs_a_bounded_number_of_queries(zhang, django_assert_max_num_queries):
    client = console_client(Role.CRM_AGENT)
    client.get(f"/console/members/{zhang['member']}/")  # the session and user are loaded once
    for n in range(40):
        EventFactory(source=SourceFactory(pos=True, store_code=f"S{n}"), user_id="", anonymous_id="",
                     event="Order Completed", context={"traits": {"phone": "13800138000"}},
                     properties={"order_id": f"X{n}", "total": 10, "currency": "CNY"})  # fmt: skip
    events_process_pending()

    # 13 for the profile and timeline, 5 for points: account, ledger (lots), program, tier
    # changes, coupons with their redemptions, and the ledger page shown; 3 for the tags card:
    # the member's tags, segments, and the manual tags the agent may add; 1 for the groups card;
    # 2 for the consent card: the statements in force, the latest history; 1 for the user's
    # scope (cdp.scopes).
    with django_assert_max_num_queries(26):
        response = client.get(f"/console/members/{zhang['member']}/")

    assert response.status_code == 200
    assert b"order X39: 10 CNY in pos" in response.content  # the newest ledger rows, in the same queries


def test_a_placeholder_phone_is_never_shown_as_a_phone(zhang):
    """A till typed 000000 into the phone field: search results, the 360 view (console and
    API) and a segment export show no phone for it, and the real phone in its normalized form."""
    web = SourceFactory(kind="web")
    placeholder = EventFactory(source=web, type="identify", user_id="zhang-2", anonymous_id="",
                               traits={"name": "Zhang Min", "phone": "000000", "email": "n/a"})  # fmt: skip
    events_process_pending()
    min_id = EventResolution.objects.get(event=placeholder).member_id
    manager = console_client(Role.CRM_MANAGER)

    results = manager.get("/console/", {"q": "zhang"}).context["results"]
    member_page = manager.get(f"/console/members/{min_id}/").content.decode()
    api_profile = staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/{min_id}/").json()
    segment = segment_static_set(
        segment=Segment.objects.create(key="both", name="Both", kind="static"),
        member_ids=[zhang["member"], min_id],
    )
    consent_grant([zhang["member"], min_id])  # an export gives only members who consented
    exported = staff_client(Role.ADMIN).get(
        f"/api/v1/segments/{segment.key}/export/?format=ndjson&fields=phone,email,traits.phone"
    )
    rows = [orjson.loads(line) for line in b"".join(exported.streaming_content).splitlines()]

    assert [(r["id"], r["phone"], r["email"]) for r in results] == [
        (zhang["member"], "+8613800138000", "zhang.wei@example.com"),
        (min_id, None, None),
    ]
    assert "000000" not in member_page
    assert "n/a" not in member_page
    assert "phone" not in api_profile["traits"]
    assert "email" not in api_profile["traits"]
    assert [(r["phone"], r["email"], r["traits.phone"]) for r in rows] == [
        ("+8613800138000", "zhang.wei@example.com", "+8613800138000"),
        (None, None, None),
    ]


def test_identifier_types_and_merge_history_are_labelled_for_people(zhang):
    Identifier.objects.create(
        type="wechat_unionid", value="o6_bmasdasdsad6_2sgVt7hMZOPfL", member_id=zhang["member"]
    )
    page = console_client(Role.CRM_AGENT).get(f"/console/members/{zhang['member']}/").content.decode()

    assert "<th>WeChat unionid</th>" in page
    assert "<th>Member card</th>" in page
    assert "wechat_unionid" not in page
    assert f"#{zhang['absorbed']} merged into #{zhang['member']}" in page
    assert re.search(r"via (Phone|Anonymous id) ", page)


@pytest.mark.parametrize(
    "before",
    [
        "²",
        "2026-10-01T00:00:00+00:00|²",
        "2026-13-45T00:00:00|1",
        "2026-10-01T00:00:00+00:00|99999999999999999999",
    ],
)
def test_a_malformed_timeline_position_shows_the_newest_events(zhang, before):
    client = console_client(Role.CRM_AGENT)
    response = client.get(f"/console/members/{zhang['member']}/", {"before": before})
    assert response.status_code == 200


def test_an_object_trait_reads_as_json_not_as_python(zhang):
    store = SourceFactory(pos=True, store_code="SH02", name="Shanghai Huaihai Rd")
    EventFactory(source=store, type="identify", user_id="", anonymous_id="", traits={
        "phone": "13800138000", "consent": {"marketing_sms": True, "analytics": {"state": "denied"}},
    })  # fmt: skip
    events_process_pending()

    page = console_client(Role.CRM_MANAGER).get(f"/console/members/{zhang['member']}/").content.decode()

    assert (
        "{&quot;analytics&quot;: {&quot;state&quot;: &quot;denied&quot;}, &quot;marketing_sms&quot;: true}"
        in page
    )
    assert "&#x27;marketing_sms&#x27;: True" not in page
