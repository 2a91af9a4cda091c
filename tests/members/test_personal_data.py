"""Masking that follows the data: every shape a source states a phone or email in (not only
``traits.phone`` and ``traits.email``) is masked for a role that may not see it, in the 360
view, the timeline, the console, segment member pages and exports alike; withheld for a member
who refused marketing; and the audit log says truthfully what was given in full."""

import csv
import io
from datetime import UTC, datetime

import orjson
import pytest
from django.test import Client

from cdp.models import AuditEntry
from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.segments.models import Segment
from members.segments.services import segment_static_set
from tests.factories import EventFactory, SourceFactory
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
#: The values planted, each in a shape other than traits.phone / traits.email; none may show.
PLANTED = ("13700137000", "13600136000", "13500135000", "13300133000", "13100131000", "13200132000",
           "li.mobile@example.com", "second@example.org", "contact@example.net", "ship@example.cn")  # fmt: skip


@pytest.fixture
def li(db) -> int:
    web = SourceFactory(kind="web", name="Web shop")
    first = EventFactory.create(
        source=web, type="identify", user_id="li-1", timestamp=T0,
        traits={
            "name": "Li Na",
            "mobile": "13700137000",
            "phone_number": "+86 136 0013 6000",
            "emails": ["li.mobile@example.com", "second@example.org"],
            "contact": {"email": "contact@example.net", "phone": 13500135000},
            "address": {"city": "Hangzhou", "phone": "133-0013-3000"},
            "note": "call 131 0013 1000 after six",
            "marketing_consent": True,
        },
    )  # fmt: skip
    EventFactory(
        source=web, user_id="li-1", event="Order Completed", timestamp=T0,
        properties={"order_id": "W-1", "total": 99, "currency": "CNY",
                    "shipping_address": {"phone": "13200132000", "email": "ship@example.cn", "city": "Hangzhou"}},
    )  # fmt: skip
    events_process_pending()
    return EventResolution.objects.get(event=first).member_id


def leaks(text: str) -> list[str]:
    digits = text.replace(" ", "").replace("-", "")
    return [value for value in PLANTED if value in digits or value in text.casefold()]


def test_an_agent_sees_none_of_them_in_the_360_view_timeline_and_lookup(li):
    client = staff_client(Role.CRM_AGENT)

    profile = client.get(f"/api/v1/members/{li}/").json()
    timeline = client.get(f"/api/v1/members/{li}/events/").json()
    found = client.get("/api/v1/members/?user_id=li-1").json()

    assert leaks(orjson.dumps([profile, timeline, found]).decode()) == []
    traits = {key: trait["value"] for key, trait in profile["traits"].items()}
    assert traits["mobile"] == "137****7000"
    assert traits["emails"] == ["l***@example.com", "s***@example.org"]
    assert traits["contact"] == {"email": "c***@example.net", "phone": "135****5000"}
    assert traits["address"] == {"city": "H***", "phone": "133****3000"}
    assert traits["note"] == "call 131****1000 after six"
    assert traits["marketing_consent"] is True
    [order] = [e for e in timeline["results"] if e["event"] == "Order Completed"]
    assert order["properties"]["shipping_address"]["phone"] == "132****2000"
    assert order["properties"]["order_id"] == "W-1"
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.VIEW_CONTACT_DETAILS).exists()


def test_a_manager_sees_them_and_the_audit_entry_names_each_field(li):
    profile = staff_client(Role.CRM_MANAGER).get(f"/api/v1/members/{li}/").json()

    assert profile["traits"]["contact"]["value"]["phone"] == 13500135000
    entry = AuditEntry.objects.get(action=AuditEntry.Action.VIEW_CONTACT_DETAILS)
    assert entry.member_ids == [li]
    assert {
        "traits.mobile", "traits.phone_number", "traits.emails", "traits.contact.email", "traits.contact.phone",
        "traits.address.phone", "traits.note", "traits.name",
    } <= set(entry.personal_fields)  # fmt: skip


def test_the_console_page_masks_them_too(li):
    client = Client()
    client.force_login(staff_user_ensure(username="desk", role=Role.CRM_AGENT))

    page = client.get(f"/console/members/{li}/").content.decode()

    assert leaks(page) == []
    assert "137****7000" in page


def segment_with(member_id: int) -> str:
    segment = Segment.objects.create(key="list", name="List", kind="static")
    segment_static_set(segment=segment, member_ids=[member_id])
    return segment.key


FIELDS = "traits.mobile,traits.emails,traits.contact,traits.address,traits.note,name"


def test_marketing_gets_them_masked_in_pages_and_exports(li):
    key = segment_with(li)
    client = staff_client(Role.MARKETING)

    [row] = client.get(f"/api/v1/segments/{key}/members/?fields={FIELDS}").json()["results"]
    exported = client.get(f"/api/v1/segments/{key}/export/?format=csv&fields={FIELDS}").getvalue().decode()

    assert leaks(orjson.dumps(row).decode() + exported) == []
    assert row["traits.mobile"] == "137****7000"
    assert row["traits.contact"] == {"email": "c***@example.net", "phone": "135****5000"}
    [header, line] = list(csv.reader(io.StringIO(exported, newline="")))
    assert dict(zip(header, line, strict=True))["traits.mobile"] == "137****7000"
    [export] = AuditEntry.objects.filter(action=AuditEntry.Action.EXPORT_SEGMENT)
    assert "personal data masked" in export.detail
    assert export.personal_fields == []


def test_an_admins_export_audit_says_what_went_out_in_full(li):
    key = segment_with(li)

    exported = staff_client(Role.ADMIN).get(f"/api/v1/segments/{key}/export/?format=csv&fields={FIELDS}")

    assert "13700137000" in exported.getvalue().decode()
    export = AuditEntry.objects.get(action=AuditEntry.Action.EXPORT_SEGMENT)
    assert "personal data in full" in export.detail
    # personal by its key: known before any row leaves
    assert export.personal_fields == [
        "name",
        "traits.address",
        "traits.contact",
        "traits.emails",
        "traits.mobile",
    ]
    shown = AuditEntry.objects.get(action=AuditEntry.Action.VIEW_CONTACT_DETAILS)
    assert shown.member_ids == [li]
    # traits.note is personal by what it holds: the batch's entry names it
    assert "traits.note" in shown.personal_fields
    assert "traits.mobile" in shown.personal_fields


@pytest.mark.parametrize("role", [Role.MARKETING, Role.ADMIN])
def test_a_member_who_refused_marketing_is_left_out_whatever_the_role(li, role):
    # Consent (members.consent) decides who leaves, not which fields: the member is left out whole.
    EventFactory(source=SourceFactory(kind="web"), type="identify", user_id="li-1", timestamp=T0.replace(hour=11),
                 traits={"marketing_consent": False})  # fmt: skip
    events_process_pending()
    key = segment_with(li)

    body = staff_client(role).get(f"/api/v1/segments/{key}/members/?fields={FIELDS},traits.city").json()

    assert (body["results"], body["withheld"]) == ([], {"no_consent": 1})
    assert leaks(orjson.dumps(body).decode()) == []


def test_a_refused_events_payload_shown_in_full_is_audited(ingest):
    # no user id: refused
    refused = ingest("identify", {"traits": {"mobile": "13700137000", "email": "x@example.com"}})
    assert refused.status_code == 400

    listed = staff_client(Role.ADMIN).get("/api/v1/rejected-events/").json()["results"]

    assert listed[0]["payload"]["traits"]["mobile"] == "13700137000"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.VIEW_CONTACT_DETAILS)
    assert entry.member_ids == []
    assert entry.personal_fields == ["payload.traits.email", "payload.traits.mobile"]
