"""The KPI rollups end to end: Zhang Wei (a store order partly refunded, an app order, two
members merged into one) through the pipeline, the hook, the beat job and the API; a late POS
upload corrects only its day; consent to analytics; the API's answers, CSV and bad input."""

from datetime import datetime, timedelta

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from events.pipeline import events_process_pending
from members.insights import kpis
from members.insights.models import DailyRollup, DirtyMember, MemberFacts
from members.insights.services import insights_refresh
from members.models import Member
from tests.factories import EventFactory, SourceFactory
from tests.factories.consent import consent_grant
from tests.members.conftest import T0

pytestmark = pytest.mark.django_db
DAY0 = T0.date()


@pytest.fixture
def zhang(zhang: dict) -> dict:
    """Zhang Wei, who agreed to ``analytics`` when he joined at the till: the board analyses
    only members who did (no statement means no consent)."""
    consent_grant([zhang["member"]], purposes=["analytics"], at=T0)
    return zhang


def staff_client(role: Role) -> APIClient:
    client = APIClient()
    user = staff_user_ensure(username=f"staff-{role}", role=role)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='test').secret}")
    return client


def series(client: APIClient, key: str, **params: str) -> dict:
    response = client.get(
        f"/api/v1/insights/kpis/{key}/",
        {"start": DAY0.isoformat(), "end": (DAY0 + timedelta(days=3)).isoformat(), **params},
    )
    assert response.status_code == 200, response.content
    return response.json()


def values(answer: dict) -> dict[tuple[str, str], str | None]:
    return {(p["start"], p["key"]): p["value"] for p in answer["points"]}


def test_the_refresh_queues_its_members_and_the_job_rolls_their_days_up(zhang):
    # The refresh's hook queued both the survivor and the absorbed member.
    assert {zhang["member"], zhang["absorbed"]} <= set(
        DirtyMember.objects.values_list("member_id", flat=True)
    )
    done = insights_refresh()
    assert done["members"] >= 2
    assert not DirtyMember.objects.exists()
    assert not MemberFacts.objects.filter(
        member_id=zhang["absorbed"]
    ).exists()  # merged away: nothing of its own

    analyst = staff_client(Role.ANALYST)
    by_channel = values(series(analyst, "sales", breakdown="channel"))
    day0, day1 = DAY0.isoformat(), (DAY0 + timedelta(days=1)).isoformat()
    assert by_channel[(day0, "pos")] == "200"  # 300 less the refund of 100, on the order's day
    assert by_channel[(day1, "app")] == "120"
    assert values(series(analyst, "sales", breakdown="store"))[(day0, "SH01")] == "200"
    share = values(series(analyst, "omni_sales_share"))
    assert share[(day0, "")] == "0"  # one channel so far
    assert share[(day1, "")] == "1"  # the app order comes from a member who bought in 2 channels
    assert values(series(analyst, "omni_members"))[(day1, "")] == "1"
    assert values(series(analyst, "new_members"))[(day0, "")] == "1"


def test_a_late_upload_recomputes_only_the_days_it_changes(zhang):
    insights_refresh()
    before = dict(DailyRollup.objects.values_list("pk", "day"))
    web = SourceFactory(kind="web")
    late_day = DAY0 + timedelta(days=2)
    EventFactory(source=web, user_id="", anonymous_id="", event="Order Completed",
                 timestamp=datetime.combine(late_day, T0.timetz()), context={"traits": {"phone": "13800138000"}},
                 properties={"order_id": "W-7", "total": "80", "currency": "CNY"})  # fmt: skip
    events_process_pending()

    insights_refresh()
    after = dict(DailyRollup.objects.values_list("pk", "day"))
    # A day rolled up again has new rows; a day left with no rows has none.
    days = {day for pk, day in after.items() if pk not in before} | {
        day for pk, day in before.items() if pk not in after
    }
    # Its own day, and the lifecycle turns it moves: purchases on days 0, 1, 2 turn the member
    # at risk on day 92 (was 91) and churned on day 182 (was 181). Days 0 and 1 keep their facts.
    assert days == {late_day, *(DAY0 + timedelta(days=n) for n in (91, 92, 181, 182))}
    assert DailyRollup.objects.get(day=late_day, channel="web", store_code="*").sales == 80
    assert (
        DailyRollup.objects.get(day=DAY0 + timedelta(days=92), channel="*", store_code="*").at_risk_delta == 1
    )


def test_a_member_who_refused_analytics_counts_in_sales_only(zhang):
    store = SourceFactory(pos=True, store_code="SH09")
    EventFactory(source=store, type="identify", user_id="", anonymous_id="", event="",
                 timestamp=T0 + timedelta(days=3),
                 traits={"phone": "13800138000", "consent": {"analytics": False}})  # fmt: skip
    events_process_pending()
    insights_refresh()
    analyst = staff_client(Role.ANALYST)
    day1 = (DAY0 + timedelta(days=1)).isoformat()
    assert values(series(analyst, "sales"))[(day1, "")] == "120"  # the business's sums keep them
    assert values(series(analyst, "omni_sales_share"))[(day1, "")] is None  # no behaviour of theirs
    assert values(series(analyst, "new_members"))[(DAY0.isoformat(), "")] == "0"
    row = DailyRollup.objects.get(day=DAY0 + timedelta(days=1), channel="*", store_code="*")
    assert (row.buyers, row.analysed_buyers) == (1, 0)


def test_series_by_week_csv_and_the_summary(zhang):
    insights_refresh()
    analyst = staff_client(Role.ANALYST)
    weekly = series(analyst, "sales", interval="week", breakdown="channel")
    monday = kpis.period_start(DAY0, kpis.Period.WEEK)
    assert {(p["key"], p["value"]) for p in weekly["points"]} >= {("pos", "200"), ("app", "120")}
    assert weekly["points"][0]["start"] == DAY0.isoformat()  # the first bucket is clipped to start
    assert monday <= DAY0

    csv = analyst.get(
        "/api/v1/insights/kpis/sales/",
        {"start": DAY0.isoformat(), "end": DAY0.isoformat(), "format": "csv", "breakdown": "channel"},
    )
    assert csv.status_code == 200
    assert csv["Content-Type"].startswith("text/csv")
    lines = csv.content.decode().splitlines()
    assert lines[0] == "start,end,channel,sales"
    assert f"{DAY0},{DAY0},pos,200" in lines

    summary = analyst.get(
        "/api/v1/insights/kpis/summary/", {"period": "day", "end": (DAY0 + timedelta(days=1)).isoformat()}
    )
    assert summary.status_code == 200
    tiles = {t["kpi"]["key"]: t for t in summary.json()["tiles"]}
    assert tiles["sales"]["value"] == "120"
    assert tiles["sales"]["previous"] == "200"
    assert tiles["sales"]["change"] == "-0.4"
    assert tiles["unification_rate"]["kpi"]["target"] == 0.8
    assert summary.json()["previous"] == [DAY0.isoformat(), DAY0.isoformat()]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/v1/insights/kpis/sales/", {"start": "2026-13-01"}, 400, "start"),
        ("/api/v1/insights/kpis/sales/", {"start": "2026-02-01", "end": "2026-01-01"}, 400, "start"),
        ("/api/v1/insights/kpis/sales/", {"interval": "hour"}, 400, "interval"),
        ("/api/v1/insights/kpis/sales/", {"breakdown": "tier"}, 400, "breakdown"),
        ("/api/v1/insights/kpis/unification_rate/", {"breakdown": "channel"}, 400, "breakdown"),
        ("/api/v1/insights/kpis/sales/", {"format": "xml"}, 400, "format"),
        ("/api/v1/insights/kpis/sales/", {"start": "2000-01-01", "end": "2026-01-01"}, 400, "start"),
        ("/api/v1/insights/kpis/summary/", {"period": "quarter"}, 400, "period"),
        ("/api/v1/insights/kpis/nonsense/", {}, 404, None),
    ],
)
def test_bad_input_is_refused_naming_the_field(path, params, status, field):
    response = staff_client(Role.ANALYST).get(path, params)
    assert response.status_code == status
    if field:
        assert [e["field"] for e in response.json()["errors"]] == [field]


def test_roles(zhang):
    assert staff_client(Role.MARKETING).get("/api/v1/insights/kpis/").status_code == 200
    assert staff_client(Role.ADMIN).get("/api/v1/insights/kpis/").status_code == 200
    assert staff_client(Role.CRM_AGENT).get("/api/v1/insights/kpis/").status_code == 403
    listed = staff_client(Role.ANALYST).get("/api/v1/insights/kpis/").json()["results"]
    assert {k["key"] for k in listed} == {k.key for k in kpis.KPIS}
    assert all(k["definition"] for k in listed)
    # The analyst reaches no member.
    assert staff_client(Role.ANALYST).get(f"/api/v1/members/{zhang['member']}/").status_code == 403


def test_compute_insights_since_rolls_up_again(zhang):
    insights_refresh()
    before = sorted(DailyRollup.objects.values_list("day", "channel", "store_code", "sales", "orders"))
    DailyRollup.objects.all().delete()
    call_command("compute_insights", "--since", DAY0.isoformat())
    assert sorted(DailyRollup.objects.values_list("day", "channel", "store_code", "sales", "orders")) == [
        r for r in before if r[0] >= DAY0
    ]
    with pytest.raises(Exception, match="--since"):
        call_command("compute_insights", "--since", "yesterday")
    assert Member.objects.filter(pk=zhang["member"]).exists()
