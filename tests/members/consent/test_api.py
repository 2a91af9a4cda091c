"""Consent in the staff API: in force now or at a past moment, the history, and statements staff
record (audited; rules follow)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from cdp.models import AuditEntry
from cdp.roles import Role
from events.pipeline import events_process_pending
from members.consent.models import ConsentStatement
from members.segments.models import Segment, SegmentMember
from members.services import members_refresh
from tests.factories import EventFactory
from tests.identity.test_split import member_of
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)


@pytest.fixture
def member() -> int:
    """A member who granted SMS on day 0 and withdrew it on day 10, and granted analytics on day 5."""
    first = EventFactory(type="identify", user_id="c-1", event="", timestamp=T0,
                         traits={"consent": {"marketing_sms": {"state": "granted", "version": "sms-1"}}})  # fmt: skip
    EventFactory(user_id="c-1", event="Consent Updated", timestamp=T0 + timedelta(days=5),
                 properties={"purpose": "analytics", "state": "granted"})  # fmt: skip
    EventFactory(user_id="c-1", event="Consent Updated", timestamp=T0 + timedelta(days=10),
                 properties={"purpose": "marketing_sms", "state": "withdrawn", "version": "sms-2"})  # fmt: skip
    events_process_pending()
    return member_of(first)


def states(body: dict) -> dict[str, str | None]:
    return {p["purpose"]: p["state"] for p in body["purposes"]}


@pytest.mark.parametrize(
    ("role", "read", "record"),
    [(None, 401, 401), (Role.CRM_AGENT, 200, 201), (Role.CRM_MANAGER, 200, 201), (Role.MARKETING, 403, 403),
     (Role.CHECKOUT, 403, 403), (Role.ADMIN, 200, 201)],
)  # fmt: skip
def test_who_may_read_and_record_consent(member, role, read, record):
    client = staff_client(role)

    assert client.get(f"/api/v1/members/{member}/consent/").status_code == read
    assert client.get(f"/api/v1/members/{member}/consent/history/").status_code == read
    answer = client.post(
        f"/api/v1/members/{member}/consent/", {"purpose": "analytics", "state": "denied"}, format="json"
    )
    assert answer.status_code == record


def test_the_consent_in_force_now_and_at_any_past_moment(member):
    client = staff_client(Role.CRM_AGENT)

    now = client.get(f"/api/v1/members/{member}/consent/").json()
    then = client.get(f"/api/v1/members/{member}/consent/", {"at": "2026-09-03T00:00:00+08:00"}).json()
    before = client.get(f"/api/v1/members/{member}/consent/", {"at": "2026-08-01T00:00:00Z"}).json()

    assert [p["purpose"] for p in now["purposes"]] == [
        "marketing_sms", "marketing_wechat", "marketing_email", "marketing_push", "personalization", "analytics",
    ]  # fmt: skip
    assert states(now) == {"marketing_sms": "withdrawn", "marketing_wechat": None, "marketing_email": None,
                           "marketing_push": None, "personalization": None, "analytics": "granted"}  # fmt: skip
    assert states(then) == {**states(now), "marketing_sms": "granted", "analytics": None}
    assert then["at"] == "2026-09-02T16:00:00Z"
    sms = then["purposes"][0]
    assert (sms["granted"], sms["statement"]["version"], sms["statement"]["origin"]) == (
        True,
        "sms-1",
        "trait",
    )
    assert not any(p["granted"] for p in before["purposes"])


@pytest.mark.parametrize("at", ["yesterday", "2026-09-03", "2026-09-03T00:00:00", "2026-13-01T00:00:00Z"])
def test_a_moment_must_be_a_date_time_with_its_offset(member, at):
    answer = staff_client(Role.CRM_AGENT).get(f"/api/v1/members/{member}/consent/", {"at": at})

    assert (answer.status_code, answer.json()["errors"][0]["field"]) == (400, "at")


def test_the_history_newest_first_a_page_at_a_time_and_by_purpose(member):
    client = staff_client(Role.CRM_AGENT)

    first = client.get(f"/api/v1/members/{member}/consent/history/", {"page_size": 2}).json()
    rest = client.get(f"/api/v1/members/{member}/consent/history/", {"cursor": first["next_cursor"]}).json()
    sms = client.get(f"/api/v1/members/{member}/consent/history/", {"purpose": "marketing_sms"}).json()
    bad = client.get(f"/api/v1/members/{member}/consent/history/", {"purpose": "fax"})

    assert [(s["purpose"], s["state"]) for s in first["results"] + rest["results"]] == [
        ("marketing_sms", "withdrawn"), ("analytics", "granted"), ("marketing_sms", "granted"),
    ]  # fmt: skip
    assert rest["next_cursor"] is None
    assert [s["version"] for s in sms["results"]] == ["sms-2", "sms-1"]
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "purpose")


def test_staff_record_a_statement_it_is_audited_and_rules_follow(member):
    segment = Segment.objects.create(key="sms", name="SMS", kind="dynamic", rule={"consent": "marketing_sms"})
    client = staff_client(Role.CRM_AGENT)

    answer = client.post(
        f"/api/v1/members/{member}/consent/",
        {"purpose": "marketing_sms", "state": "granted", "version": "desk-3", "note": "asked at the counter"},
        format="json",
    )
    members_refresh()  # (the nudge runs it in production; the worker is eager in tests)

    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert (body["purpose"], body["state"], body["version"], body["origin"], body["recorded_by"], body["note"]) == (
        "marketing_sms", "granted", "desk-3", "staff", "staff-crm_agent", "asked at the counter"
    )  # fmt: skip
    assert states(client.get(f"/api/v1/members/{member}/consent/").json())["marketing_sms"] == "granted"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.RECORD_CONSENT)
    assert (entry.user.username, entry.member_ids, entry.channel, entry.detail) == (
        "staff-crm_agent", [member], "api", "marketing_sms granted (version desk-3)"
    )  # fmt: skip
    assert SegmentMember.objects.filter(segment=segment, member_id=member).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"purpose": "fax", "state": "granted"}, "purpose"), ({"purpose": "analytics", "state": "maybe"}, "state"),
     ({"state": "granted"}, "purpose"), ({"purpose": "analytics", "state": "granted", "version": "v" * 65}, "version"),
     ({"purpose": "analytics", "state": "granted", "note": "n" * 256}, "note")],
)  # fmt: skip
def test_a_bad_statement_is_a_400_naming_the_field(member, body, field):
    answer = staff_client(Role.CRM_MANAGER).post(f"/api/v1/members/{member}/consent/", body, format="json")

    assert answer.status_code == 400
    assert field in {e["field"] for e in answer.json()["errors"]}
    assert not ConsentStatement.objects.filter(origin="staff").exists()
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.RECORD_CONSENT).exists()


def test_an_unknown_member_is_a_404_and_a_merged_id_answers_for_its_survivor(zhang):
    client = staff_client(Role.CRM_MANAGER)

    missing = client.get("/api/v1/members/999999999/consent/")
    recorded = client.post(f"/api/v1/members/{zhang['absorbed']}/consent/", {"purpose": "analytics", "state": "granted"},
                           format="json")  # fmt: skip
    read = client.get(f"/api/v1/members/{zhang['absorbed']}/consent/").json()

    assert (missing.status_code, client.post("/api/v1/members/999999999/consent/",
                                             {"purpose": "analytics", "state": "granted"}, format="json").status_code) == (404, 404)  # fmt: skip
    assert recorded.status_code == 201
    assert ConsentStatement.objects.get().member_id == zhang["member"]
    assert (read["member_id"], read["resolved_from"], states(read)["analytics"]) == (
        zhang["member"], zhang["absorbed"], "granted"
    )  # fmt: skip
    assert timezone.now() - datetime.fromisoformat(read["at"].replace("Z", "+00:00")) < timedelta(minutes=1)


def test_a_rule_may_read_only_configured_purposes():
    client = staff_client(Role.MARKETING)
    rule = {"all": [{"consent": "marketing_sms"}, {"not": {"consent": "marketing_fax"}}]}

    refused = client.post("/api/v1/segments/", {"key": "fax", "name": "Fax", "kind": "dynamic", "rule": rule},
                          format="json")  # fmt: skip
    saved = client.post("/api/v1/segments/", {"key": "sms", "name": "SMS", "kind": "dynamic",
                                              "rule": {"consent": "marketing_sms"}}, format="json")  # fmt: skip

    assert refused.status_code == 400
    assert refused.json()["errors"] == [{
        "field": "rule.all[1].not.consent",
        "reason": "no consent purpose 'marketing_fax'; one of marketing_sms, marketing_wechat, marketing_email, "
        "marketing_push, personalization, analytics",
    }]  # fmt: skip
    assert saved.status_code == 201, saved.content
