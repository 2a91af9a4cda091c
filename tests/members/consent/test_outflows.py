"""Every outflow declares a purpose and checks consent to it at the moment data leaves: segment
member pages, exports, the changes feed, webhooks and coupon campaigns leave out members
without it, count them, and say so (and the audit entry records it)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from cdp.models import AuditEntry
from cdp.roles import Role
from members.consent.statements import marketing_purposes
from members.loyalty.models import Coupon, CouponCampaign
from members.segments import exports
from members.segments.models import Segment, SegmentChange, WebhookDelivery
from members.segments.services import segment_static_set
from members.segments.webhooks.delivery import webhook_deliver
from members.segments.webhooks.services import webhook_create
from tests.factories.consent import consent_grant, consent_state
from tests.members.segments.test_members_fields import members_create, segment_of
from tests.members.segments.test_webhooks import receiver  # noqa: F401 - a fixture
from tests.members.test_api import staff_client

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MARKETING = marketing_purposes(settings.CONSENT_PURPOSES)


@pytest.fixture
def people() -> dict[str, int]:
    """Five members: one who granted everything, one SMS only, one never asked, one who granted
    everything and later withdrew from marketing, one whose grant is dated ahead (not in force)."""
    everything, sms, never, withdrew, ahead = members_create(
        5, granted=False, phone=lambda i: f"+8613900139{i:03d}", name=lambda i: f"N{i}"
    )
    consent_grant([everything, withdrew], at=T0)
    consent_grant([sms], purposes=["marketing_sms"], at=T0)
    consent_state([withdrew], "withdrawn", purposes=MARKETING, at=T0 + timedelta(days=30))
    consent_grant([ahead], at=timezone.now() + timedelta(days=2))
    return {"everything": everything, "sms": sms, "never": never, "withdrew": withdrew, "ahead": ahead}


@pytest.fixture
def audience(people) -> Segment:
    return segment_of("audience", people.values())


def page(key: str, query: str = "", role: Role = Role.MARKETING) -> dict:
    answer = staff_client(role).get(f"/api/v1/segments/{key}/members/?{query}")
    assert answer.status_code == 200, answer.content
    return answer.json()


@pytest.mark.parametrize(
    ("purpose", "given", "withheld"),
    [("", ["everything"], 4), ("marketing", ["everything"], 4), ("marketing_sms", ["everything", "sms"], 3),
     ("analytics", ["everything", "withdrew"], 3), ("personalization", ["everything", "withdrew"], 3)],
)  # fmt: skip
def test_a_members_page_gives_only_members_with_consent_to_its_purpose(
    people, audience, purpose, given, withheld
):
    body = page(audience.key, f"fields=name,phone&purpose={purpose}")

    assert [m["member_id"] for m in body["results"]] == sorted(people[name] for name in given)
    assert body["withheld"] == {"no_consent": withheld}
    assert body["purpose"] == (purpose or "marketing")


def test_pages_shortened_by_consent_still_walk_the_whole_segment(people, audience):
    seen, withheld, cursor = [], 0, 0
    while cursor is not None:
        body = page(audience.key, f"page_size=2&cursor={cursor}&purpose=marketing_sms")
        seen += [m["member_id"] for m in body["results"]]
        withheld += body["withheld"]["no_consent"]
        cursor = body["next_cursor"]

    assert seen == sorted([people["everything"], people["sms"]])
    assert withheld == 3


def test_an_unknown_purpose_is_a_400_naming_it(audience):
    for path in ("members/", "export/", "changes/"):
        answer = staff_client(Role.MARKETING).get(
            f"/api/v1/segments/{audience.key}/{path}?purpose=marketing_fax"
        )
        assert answer.status_code == 400, path
        assert answer.json()["errors"][0] == {
            "field": "purpose",
            "reason": "one of marketing, marketing_sms, marketing_wechat, marketing_email, marketing_push, "
            "personalization, analytics",
        }


def test_an_admins_page_audits_what_it_showed_and_how_many_it_left_out(people, audience):
    page(audience.key, "fields=phone", role=Role.ADMIN)

    [entry] = AuditEntry.objects.filter(action=AuditEntry.Action.VIEW_CONTACT_DETAILS)
    assert entry.member_ids == [people["everything"]]
    assert entry.detail.endswith("(withheld no_consent=4)")


def test_an_export_says_what_it_left_out_in_its_headers_and_audit_entry(people, audience):
    answer = staff_client(Role.MARKETING).get(
        f"/api/v1/segments/{audience.key}/export/?format=ndjson&fields=name&purpose=marketing_sms"
    )
    rows = b"".join(answer.streaming_content).splitlines()

    assert (answer["X-CDP-Purpose"], answer["X-CDP-Withheld"]) == ("marketing_sms", "no_consent=3")
    assert len(rows) == 2
    entry = AuditEntry.objects.get(action=AuditEntry.Action.EXPORT_SEGMENT)
    assert entry.detail == (
        "segment audience as ndjson for marketing_sms, 2 rows, withheld no_consent=3, personal data masked: "
        "member_id,entered_at,name"
    )


def test_an_export_checks_each_batch_as_it_leaves(monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_BATCH", 2)
    ids = members_create(4, {"name": "N"})
    segment_of("live", ids)
    answer = staff_client(Role.MARKETING).get("/api/v1/segments/live/export/?format=ndjson")
    chunks = iter(answer.streaming_content)
    next(chunks)  # the first two members have left

    consent_state(
        [ids[3]], "withdrawn", purposes=["marketing_email"], at=timezone.now() - timedelta(seconds=1)
    )
    rest = b"".join(chunks).splitlines()

    assert answer["X-CDP-Withheld"] == "no_consent=0"  # as counted when the export started
    assert len(rest) == 1  # the withdrawal took effect before the member's batch left


def test_the_changes_feed_leaves_out_entries_without_consent_and_always_gives_exits(people):
    segment = Segment.objects.create(key="feed", name="Feed", kind="static")
    segment_static_set(segment=segment, member_ids=[people["everything"], people["never"]])
    segment_static_set(segment=segment, member_ids=[])

    body = staff_client(Role.MARKETING).get(f"/api/v1/segments/{segment.key}/changes/?since=0").json()

    assert [(c["member_id"], c["change"]) for c in body["results"]] == [
        (people["everything"], "entered"), *sorted((people[n], "exited") for n in ("everything", "never")),
    ]  # fmt: skip
    assert body["withheld"] == {"no_consent": 1}


def test_a_webhook_declares_a_purpose_and_deliveries_leave_out_entries_without_it(people, receiver):  # noqa: F811
    segment = Segment.objects.create(key="hook", name="Hook", kind="static")
    webhook = webhook_create(segment=segment, url=receiver.url, purpose="marketing_sms")
    segment_static_set(segment=segment, member_ids=list(people.values()))
    segment_static_set(segment=segment, member_ids=[people["sms"], people["never"]])

    webhook_deliver(webhook_id=webhook.pk)

    [request] = receiver.received
    changes = [(c["member_id"], c["change"]) for c in request.payload["changes"]]
    entered = [m for m, change in changes if change == "entered"]
    assert sorted(entered) == sorted([people["everything"], people["sms"]])
    assert sorted(m for m, change in changes if change == "exited") == sorted(
        people[n] for n in ("everything", "withdrew", "ahead")
    )  # exits go whatever the consent: they only tell the tool to drop an id
    assert (request.payload["purpose"], request.payload["withheld"]) == ("marketing_sms", {"no_consent": 3})
    delivery = WebhookDelivery.objects.get()
    assert (delivery.count, delivery.withheld) == (5, {"no_consent": 3})
    assert SegmentChange.objects.filter(segment=segment).count() == 8


def test_a_webhook_delivers_a_batch_of_only_withheld_entries_as_a_count(people, receiver):  # noqa: F811
    segment = Segment.objects.create(key="none", name="None", kind="static")
    webhook = webhook_create(segment=segment, url=receiver.url)  # marketing by default
    segment_static_set(segment=segment, member_ids=[people["never"], people["sms"]])

    webhook_deliver(webhook_id=webhook.pk)

    [request] = receiver.received
    assert (request.payload["changes"], request.payload["withheld"]) == ([], {"no_consent": 2})
    webhook.refresh_from_db()
    assert webhook.cursor == SegmentChange.objects.latest("id").pk  # nothing is sent again


def test_a_webhooks_purpose_is_set_shown_changed_and_checked():
    Segment.objects.create(key="hooked", name="Hooked", kind="static")
    client = staff_client(Role.MARKETING)

    made = client.post(
        "/api/v1/segments/hooked/webhooks/", {"url": "https://tool.example.com/a"}, format="json"
    )
    sms = client.post("/api/v1/segments/hooked/webhooks/",
                      {"url": "https://tool.example.com/b", "purpose": "marketing_sms"}, format="json")  # fmt: skip
    bad = client.post("/api/v1/segments/hooked/webhooks/",
                      {"url": "https://tool.example.com/c", "purpose": "fax"}, format="json")  # fmt: skip
    changed = client.patch(f"/api/v1/segments/hooked/webhooks/{made.json()['id']}/", {"purpose": "analytics"},
                           format="json")  # fmt: skip
    refused = client.patch(
        f"/api/v1/segments/hooked/webhooks/{made.json()['id']}/", {"purpose": ""}, format="json"
    )

    assert (made.json()["purpose"], sms.json()["purpose"], changed.json()["purpose"]) == (
        "marketing", "marketing_sms", "analytics"
    )  # fmt: skip
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "purpose")
    assert (refused.status_code, refused.json()["errors"][0]["field"]) == (400, "purpose")


@pytest.fixture
def campaign() -> CouponCampaign:
    now = timezone.now()
    return CouponCampaign.objects.create(
        name="Autumn", benefit="amount", value=Decimal(20), minimum_spend=Decimal(100),
        valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30), channels=[],
    )  # fmt: skip


def test_a_campaign_to_a_segment_skips_members_without_consent_and_says_so(people, audience, campaign):
    client = staff_client(Role.MARKETING)

    marketing = client.post(
        f"/api/v1/campaigns/{campaign.pk}/issue/", {"segment": audience.key}, format="json"
    )
    sms = client.post(f"/api/v1/campaigns/{campaign.pk}/issue/", {"segment": audience.key, "purpose": "marketing_sms"},
                      format="json")  # fmt: skip

    assert marketing.json() == {"issued": 1, "purpose": "marketing", "withheld": {"no_consent": 4}}
    assert sms.json() == {"issued": 1, "purpose": "marketing_sms", "withheld": {"no_consent": 3}}
    assert set(Coupon.objects.values_list("member_id", flat=True)) == {people["everything"], people["sms"]}
    details = list(
        AuditEntry.objects.filter(action=AuditEntry.Action.ISSUE_COUPONS)
        .order_by("id")
        .values_list("detail", flat=True)
    )
    assert details == [
        f"campaign {campaign.pk} to segment audience for marketing: 1 issued, withheld no_consent=4",
        f"campaign {campaign.pk} to segment audience for marketing_sms: 1 issued, withheld no_consent=3",
    ]


def test_coupons_to_named_members_are_checked_only_when_a_purpose_is_named(people, campaign):
    client = staff_client(Role.MARKETING)
    named = [people["never"], people["sms"]]

    unchecked = client.post(f"/api/v1/campaigns/{campaign.pk}/issue/", {"member_ids": named}, format="json")
    Coupon.objects.all().delete()
    checked = client.post(f"/api/v1/campaigns/{campaign.pk}/issue/", {"member_ids": named, "purpose": "marketing_sms"},
                          format="json")  # fmt: skip
    bad = client.post(
        f"/api/v1/campaigns/{campaign.pk}/issue/", {"member_ids": named, "purpose": "fax"}, format="json"
    )

    assert unchecked.json() == {"issued": 2, "purpose": None, "withheld": {"no_consent": 0}}
    assert checked.json() == {"issued": 1, "purpose": "marketing_sms", "withheld": {"no_consent": 1}}
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "purpose")
