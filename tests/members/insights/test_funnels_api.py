"""The funnel, attribution, ROI, spend and cohort API: a journey through the real pipeline
(an app view, a WeChat coupon, a store purchase of the same person after a merge, a refund),
roles, CSV, bad input named by field."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from cdp.roles import Role
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.insights.models import CampaignSpend, Funnel
from members.segments.models import SegmentMember
from tests.factories import EventFactory, SourceFactory
from tests.members.test_api import staff_client
from tests.members.test_scopes import scoped_client

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 10, 5, 10, tzinfo=UTC)
RANGE = "start=2026-10-01&end=2026-10-31"


@pytest.fixture
def journey() -> dict:
    """Li Na views a product in the app (anonymous), claims a spring-sale coupon in the
    mini-program and buys in the Shanghai store two days later; her app identity is merged into
    her store one when she logs in with her phone (and agrees to ``analytics``). Part of the
    order is refunded. Wang Wei only views, in the web shop (and agrees to ``analytics``).
    Zhao Lei does all Li Na does, with a vip-week coupon, but withdraws her ``analytics``
    consent afterwards: no insight may read her."""
    store = SourceFactory(pos=True, store_code="SH01", name="Shanghai")
    app = SourceFactory(kind="app", name="App")
    mini = SourceFactory(kind="mini_program", name="Mini")
    web = SourceFactory(kind="web", name="Web")
    phone = {"traits": {"phone": "13800138000"}}
    viewed = EventFactory.create(source=app, user_id="", anonymous_id="anon-li", event="Product Viewed",
                                 timestamp=T0, properties={"product_id": "P1"})  # fmt: skip
    EventFactory(source=mini, user_id="", anonymous_id="mini-li", event="Coupon Claimed", context={
        **phone, "campaign": {"name": "spring-sale", "source": "wechat"}}, timestamp=T0 + timedelta(hours=3),
        properties={"coupon_id": "SPRING50"})  # fmt: skip
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Completed", context=phone,
                 timestamp=T0 + timedelta(days=2), properties={"order_id": "S1", "total": "400.00", "currency": "CNY"})  # fmt: skip
    EventFactory(source=web, user_id="", anonymous_id="anon-wang", event="Product Viewed", timestamp=T0)
    EventFactory(source=web, type="identify", user_id="", anonymous_id="anon-wang", event="", timestamp=T0,
                 traits={"consent": {"analytics": True}})  # fmt: skip
    zhao = {"traits": {"phone": "13900139000"}}
    zhao_viewed = EventFactory.create(source=app, user_id="", anonymous_id="anon-zhao", event="Product Viewed",
                                      timestamp=T0, properties={"product_id": "P1"})  # fmt: skip
    EventFactory(source=mini, user_id="", anonymous_id="mini-zhao", event="Coupon Claimed", context={
        **zhao, "campaign": {"name": "vip-week", "source": "wechat"}}, timestamp=T0 + timedelta(hours=3),
        properties={"coupon_id": "VIP20"})  # fmt: skip
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Completed", context=zhao,
                 timestamp=T0 + timedelta(days=2), properties={"order_id": "S2", "total": "500.00", "currency": "CNY"})  # fmt: skip
    events_process_pending()
    EventFactory(source=app, type="identify", user_id="", anonymous_id="anon-li", timestamp=T0 + timedelta(days=3),
                 traits={"phone": "+86 138 0013 8000", "consent": {"analytics": True}})  # fmt: skip
    EventFactory(source=app, type="identify", user_id="", anonymous_id="anon-zhao", timestamp=T0 + timedelta(days=3),
                 traits={"phone": "+86 139 0013 9000", "consent": {"analytics": True}})  # fmt: skip
    EventFactory(source=app, user_id="", anonymous_id="anon-zhao", event="Consent Updated",
                 timestamp=T0 + timedelta(days=5), properties={"purpose": "analytics", "state": "withdrawn"})  # fmt: skip
    EventFactory(source=store, user_id="", anonymous_id="", event="Order Refunded", context=phone,
                 timestamp=T0 + timedelta(days=4), properties={"order_id": "S1", "total": "100.00", "currency": "CNY"})  # fmt: skip
    events_process_pending()
    return {
        "li": EventResolution.objects.get(event=viewed).member_id,
        "zhao": EventResolution.objects.get(event=zhao_viewed).member_id,
    }


FUNNEL = {
    "name": "View to store purchase",
    "steps": [{"event": "Product Viewed"}, {"event": "Order Completed", "where": {"channel": "pos"}}],
    "window_hours": 72,
    "breakdown": "channel",
}


def test_a_view_in_the_app_converts_in_the_store(journey):
    client = staff_client(Role.MARKETING)
    created = client.post("/api/v1/insights/funnels/", FUNNEL, format="json")
    assert created.status_code == 201, created.json()
    answer = client.get(f"/api/v1/insights/funnels/{created.json()['id']}/results/?{RANGE}").json()

    rows = [(r["step"], r["group"], r["entered"], r["converted"], r["dropped"]) for r in answer["rows"]]
    # Li Na (app view, store order: one member after the merge) converts; Wang Wei drops.
    assert rows == [(1, "app", 1, 1, 0), (1, "web", 1, 0, 1), (2, "pos", 1, 0, 0)]
    assert answer["rows"][0]["median_seconds_to_next"] == 2 * 86400
    assert answer["rows"][2]["conversion_from_start"] == 0.5


def test_outside_the_window_nobody_converts(journey):
    client = staff_client(Role.MARKETING)
    body = {**FUNNEL, "window_hours": 24, "breakdown": ""}
    answer = client.post(f"/api/v1/insights/funnels/preview/?{RANGE}", body, format="json").json()
    assert [(r["step"], r["entered"], r["converted"]) for r in answer["rows"]] == [(1, 2, 0)]


def test_a_member_who_withdrew_analytics_is_in_no_answer(journey):
    """Zhao Lei would convert exactly as Li Na does (and be credited to vip-week, and start a
    cohort), but withdrew ``analytics``: she is counted nowhere and put in no step segment."""
    assert journey["zhao"] != journey["li"]
    client = staff_client(Role.MARKETING)
    funnel = client.post("/api/v1/insights/funnels/", {**FUNNEL, "breakdown": ""}, format="json").json()
    answer = client.get(f"/api/v1/insights/funnels/{funnel['id']}/results/?{RANGE}").json()
    assert [(r["step"], r["entered"], r["converted"]) for r in answer["rows"]] == [(1, 2, 1), (2, 1, 0)]
    for step, dropped in ((1, False), (2, False), (1, True)):
        made = client.post(f"/api/v1/insights/funnels/{funnel['id']}/segments/",
                           {"step": step, "dropped": dropped, "key": f"s{step}{dropped:d}", "name": "at a step",
                            "start": "2026-10-01", "end": "2026-10-31"}, format="json")  # fmt: skip
        assert made.status_code == 201, made.json()
    kept = set(
        SegmentMember.objects.filter(segment__key__in=["s10", "s20", "s11"]).values_list(
            "member_id", flat=True
        )
    )
    assert journey["li"] in kept
    assert journey["zhao"] not in kept
    groups = client.get(f"/api/v1/insights/attribution/?{RANGE}&by=campaign&lookback_days=7").json()["rows"]
    assert [r["group"] for r in groups] == ["spring-sale"]  # no vip-week, no (no touch) for her order
    cohorts = client.get(f"/api/v1/insights/cohorts/?{RANGE}&period=week").json()["cohorts"]
    assert [(c["cohort"], c["members"]) for c in cohorts] == [("2026-10-05", 1)]


def test_a_bad_funnel_is_refused_by_path():
    client = staff_client(Role.MARKETING)
    body = {**FUNNEL, "steps": [{"event": "Product Viewed", "where": {"channel": "fax"}}, {"event": ""}],
            "window_hours": 0, "breakdown": "colour"}  # fmt: skip
    answer = client.post("/api/v1/insights/funnels/", body, format="json")
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"steps[0].where.channel", "steps[1].event", "window_hours", "breakdown"}
    assert not Funnel.objects.exists()


def test_a_step_becomes_a_static_segment(journey):
    client = staff_client(Role.MARKETING)
    funnel = client.post("/api/v1/insights/funnels/", FUNNEL, format="json").json()
    made = client.post(f"/api/v1/insights/funnels/{funnel['id']}/segments/",
                       {"step": 1, "dropped": True, "key": "viewed-not-bought", "name": "Viewed, not bought",
                        "start": "2026-10-01", "end": "2026-10-31"}, format="json")  # fmt: skip
    assert made.status_code == 201, made.json()
    assert made.json() == {"key": "viewed-not-bought", "size": 1}
    assert SegmentMember.objects.filter(segment__key="viewed-not-bought").count() == 1
    again = client.post(f"/api/v1/insights/funnels/{funnel['id']}/segments/",
                        {"step": 1, "key": "viewed-not-bought", "name": "again"}, format="json")  # fmt: skip
    assert again.status_code in (400, 409)


def test_attribution_credits_the_coupon_and_the_view_is_not_a_touch(journey):
    client = staff_client(Role.MARKETING)
    answer = client.get(f"/api/v1/insights/attribution/?{RANGE}&by=campaign&lookback_days=7").json()
    # The order net of its refund (300) goes to the coupon's campaign under every model.
    assert answer["rows"] == [{
        "group": "spring-sale", "value": dict.fromkeys(answer["models"], "300.00"),
        "conversions": dict.fromkeys(answer["models"], 1.0),
    }]  # fmt: skip
    by_channel = client.get(f"/api/v1/insights/attribution/?{RANGE}&by=channel&format=csv")
    assert by_channel["Content-Type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(by_channel.content.decode())))
    assert lines[0][0] == "group"
    assert lines[1][:2] == ["mini_program", "300.00"]


def test_a_short_lookback_leaves_the_order_untouched(journey):
    answer = staff_client(Role.MARKETING).get(f"/api/v1/insights/attribution/?{RANGE}&lookback_days=1").json()
    assert [(r["group"], r["value"]["linear"]) for r in answer["rows"]] == [("(no touch)", "300.00")]


def test_spend_roi_and_roas_per_campaign(journey):
    client = staff_client(Role.MARKETING)
    lines = [{"channel": "mini_program", "campaign": "spring-sale", "period_start": "2026-10-01",
              "period_end": "2026-10-31", "amount": "150.00"}]  # fmt: skip
    assert client.post("/api/v1/insights/spend/", lines, format="json").status_code == 201
    answer = client.get(f"/api/v1/insights/roi/?{RANGE}&by=campaign&lookback_days=7").json()
    sale = next(r for r in answer["rows"] if r["group"] == "spring-sale")
    assert (sale["spend"], sale["roas"]["linear"], sale["roi"]["linear"]) == ("150.00", "2.00", "1.00")
    # Half the month: half the spend.
    half = client.get(
        "/api/v1/insights/roi/?start=2026-10-01&end=2026-10-15&by=campaign&lookback_days=7"
    ).json()
    assert next(r for r in half["rows"] if r["group"] == "spring-sale")["spend"] == "72.58"


def test_spend_csv_upload_is_all_or_nothing():
    client = staff_client(Role.MARKETING)
    good = b"channel,campaign,period_start,period_end,amount,currency\napp,spring-sale,2026-10-01,2026-10-31,12000,CNY\n"
    bad = good + b"fax,x,2026-10-01,2026-09-01,-5,CNY\n"
    refused = client.post(
        "/api/v1/insights/spend/upload/", {"file": SimpleUploadedFile("s.csv", bad)}, format="multipart"
    )
    assert refused.status_code == 400
    assert {e["field"] for e in refused.json()["errors"]} == {
        "line 3.channel",
        "line 3.period_end",
        "line 3.amount",
    }
    assert not CampaignSpend.objects.exists()
    kept = client.post(
        "/api/v1/insights/spend/upload/", {"file": SimpleUploadedFile("s.csv", good)}, format="multipart"
    )
    assert kept.status_code == 201
    exported = client.get("/api/v1/insights/spend/?format=csv").content.decode()
    assert exported.splitlines()[1] == "app,spring-sale,2026-10-01,2026-10-31,12000.00,CNY"


def test_cohorts_by_first_purchase(journey):
    answer = staff_client(Role.MARKETING).get(f"/api/v1/insights/cohorts/?{RANGE}&period=week").json()
    # Li Na's first order (a Wednesday) starts the week of Monday 5 October, in the store.
    assert answer["cohorts"] == [{"cohort": "2026-10-05", "channel": "pos", "members": 1,
                                  "periods": [{"period": 0, "active": 1, "repurchased": 0}]}]  # fmt: skip


@pytest.mark.parametrize(("role", "expected"), [(None, 401), (Role.CRM_AGENT, 403), (Role.CHECKOUT, 403),
                                                (Role.MARKETING, 200), (Role.ADMIN, 200)])  # fmt: skip
def test_who_reads_insights(role, expected):
    for path in ("funnels/", "attribution/", "roi/", "spend/", "cohorts/"):
        assert staff_client(role).get(f"/api/v1/insights/{path}").status_code == expected, path


def test_scoped_staff_are_refused_answers_covering_every_store():
    assert scoped_client(Role.MARKETING, stores=("SH01",)).get("/api/v1/insights/cohorts/").status_code == 403


def test_bad_ranges_and_parameters_are_named():
    client = staff_client(Role.MARKETING)
    for query, field in (("start=2026-13-01", "start"), ("start=2026-10-05&end=2026-10-01", "start"),
                         ("start=2024-01-01&end=2026-01-01", "start"), ("lookback_days=0", "lookback_days"),
                         ("half_life_hours=x", "half_life_hours"), ("by=colour", "by"), ("format=xml", "format")):  # fmt: skip
        answer = client.get(f"/api/v1/insights/attribution/?{query}")
        assert answer.status_code == 400, query
        assert answer.json()["errors"][0]["field"] == field, query
