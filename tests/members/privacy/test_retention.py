"""Retention with real rows of every data class: a dry run counts and changes nothing; a run
strips or deletes exactly what is past its period, in batches, logging its progress, and the
next run finds nothing more to do."""

from datetime import timedelta
from io import StringIO
from unittest import mock
from uuid import uuid4

import pytest
from django.core.management import call_command
from django.utils import timezone

from cdp.models import AuditEntry
from config.celery import _beat_schedule
from events.models import Event, RejectedEvent
from events.pipeline import events_process_pending
from identity.models import EventResolution, Identifier, Member
from members.privacy.models import PrivacyRequest, RetentionRun
from members.privacy.retention import retention_apply
from members.segments.models import Segment, SegmentWebhook, WebhookDelivery
from tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now()
OLD, RECENT = NOW - timedelta(days=800), NOW - timedelta(days=3)


def payload_event(source, message_id: str, received_at) -> Event:
    return EventFactory.create(
        source=source, message_id=message_id, user_id=f"u-{message_id}", received_at=received_at,
        timestamp=received_at, traits={"name": "Kept Name"},
        context={"ip": "10.9.8.7", "userAgent": "Safari", "locale": "zh-CN", "device": {"id": "d-1", "model": "X"},
                 "traits": {"phone": "13900001111"}},
        properties={"order_id": "O-1", "total": 10, "shipping_address": {"street": "1 Long Rd"}, "note": "ring 13900002222"},
    )  # fmt: skip


@pytest.fixture
def rows(settings) -> dict:
    settings.RETENTION_EVENT_PAYLOAD_DAYS = 395
    settings.RETENTION_REJECTED_EVENT_DAYS = 30
    settings.WEBHOOK_DELIVERY_LOG_DAYS = 30
    settings.RETENTION_AUDIT_DAYS = 1095
    settings.RETENTION_ANONYMOUS_MEMBER_DAYS = 395
    source = SourceFactory.create(kind="app")
    # Events arrive in id order. Members: anonymous and idle (erased), idle but known by phone,
    # anonymous but recent.
    EventFactory(source=source, message_id="anon-old", user_id="", anonymous_id="anon-idle", timestamp=OLD,
                 received_at=OLD, event="Order Completed", properties={"order_id": "G-1", "total": 30, "currency": "CNY"})  # fmt: skip
    EventFactory(source=source, message_id="known-old", user_id="", anonymous_id="anon-k", timestamp=OLD,
                 received_at=OLD, traits={"phone": "13900003333"}, type="identify")  # fmt: skip
    old_events = [payload_event(source, f"old-{n}", OLD + timedelta(minutes=n)) for n in range(3)]
    EventFactory(source=source, message_id="anon-new", user_id="", anonymous_id="anon-busy", timestamp=RECENT,
                 received_at=RECENT)  # fmt: skip
    new_events = [payload_event(source, f"new-{n}", RECENT) for n in range(2)]
    events_process_pending()
    for n, received in enumerate([OLD, OLD, RECENT]):
        RejectedEvent.objects.create(source=source, received_at=received, endpoint="track", code="invalid_event",
                                     reason="event is required", payload={"n": n})  # fmt: skip
    segment = Segment.objects.create(key="s", name="S", kind="static")
    hook = SegmentWebhook.objects.create(segment=segment, url="https://tool.example.com/h", secret="s")
    for when in (OLD, NOW - timedelta(days=40), RECENT):
        WebhookDelivery.objects.create(webhook=hook, delivery_id=uuid4(), first_cursor=1, last_cursor=1, count=1,
                                       attempt=1, duration_ms=5, at=when, succeeded=True, status_code=200)  # fmt: skip
    for when in (
        OLD - timedelta(days=400),
        RECENT,
    ):  # written then: the log refuses to change an entry's time
        with mock.patch("django.utils.timezone.now", return_value=when):
            AuditEntry.objects.create(action="view_contact_details", channel="api", detail="/x")
    member = {
        m: EventResolution.objects.get(event__message_id=m).member_id
        for m in ("anon-old", "anon-new", "known-old")
    }
    return {"old": old_events, "new": new_events, "member": member}


def test_a_dry_run_counts_what_is_due_and_changes_nothing(rows):
    before = (list(Event.objects.order_by("id").values()), RejectedEvent.objects.count(),
              WebhookDelivery.objects.count(), AuditEntry.objects.count(), Member.objects.filter(status="erased").count())  # fmt: skip
    out = StringIO()

    call_command("apply_retention", "--dry-run", "--batch-size", "2", stdout=out)

    run = RetentionRun.objects.get()
    # Old payloads: the three old events and the two old members' events.
    assert run.counts == {"event_payloads": 5, "rejected_events": 2, "webhook_deliveries": 2, "audit_entries": 1,
                          "anonymous_members": 1}  # fmt: skip
    assert run.dry_run
    after = (list(Event.objects.order_by("id").values()), RejectedEvent.objects.count(),
             WebhookDelivery.objects.count(), AuditEntry.objects.count(), Member.objects.filter(status="erased").count())  # fmt: skip
    assert after == before
    assert "would be deleted or stripped" in out.getvalue()
    assert "anonymous-only members with no activity (erased): 1 due" in out.getvalue()


def test_a_run_strips_and_deletes_what_is_past_its_period_in_batches(rows):
    run = retention_apply(batch_size=2, now=NOW)

    assert run.counts == {"event_payloads": 5, "rejected_events": 2, "webhook_deliveries": 2, "audit_entries": 1,
                          "anonymous_members": 1}  # fmt: skip
    for event in Event.objects.filter(message_id__startswith="old-"):
        assert event.context == {"locale": "zh-CN", "device": {"id": "d-1"}, "traits": {"phone": "13900001111"},
                                 "cdp": {"expired": True}}  # fmt: skip
        # the address gone, the phone out of the note (cdp.personal: a text holding a phone keeps its words)
        assert event.properties == {"order_id": "O-1", "total": 10, "note": "ring [removed]"}
        assert event.traits == {"name": "Kept Name"}  # the profile's source stays
        assert event.user_id.startswith("u-old-")
    for event in Event.objects.filter(message_id__startswith="new-"):
        assert event.context["ip"] == "10.9.8.7"
        assert "shipping_address" in event.properties
    assert list(RejectedEvent.objects.values_list("received_at", flat=True)) == [RECENT]
    assert WebhookDelivery.objects.count() == 1
    assert AuditEntry.objects.count() == 1
    # The idle anonymous member is erased (its ids not blocked: it may come back as new); the
    # recent one and the one known by phone stay.
    members = rows["member"]
    assert Member.objects.get(pk=members["anon-old"]).status == Member.Status.ERASED
    assert Member.objects.get(pk=members["anon-new"]).status == Member.Status.ACTIVE
    assert Member.objects.get(pk=members["known-old"]).status == Member.Status.ACTIVE
    assert not Identifier.objects.filter(value="anon-idle").exists()
    retention = PrivacyRequest.objects.get(kind="retention")
    assert (retention.member_id, retention.status) == (members["anon-old"], "done")
    assert "raw event payloads (stripped): 2 so far" in run.log  # batches of two: the first logged
    assert "raw event payloads (stripped): 5 done" in run.log
    assert run.finished_at is not None

    again = retention_apply(batch_size=2, now=NOW)
    assert again.counts == dict.fromkeys(run.counts, 0)


def test_a_period_of_zero_keeps_the_class_and_beat_runs_retention_nightly(rows, settings):
    settings.RETENTION_EVENT_PAYLOAD_DAYS = 0

    run = retention_apply(now=NOW)

    assert "event_payloads" not in run.counts
    assert "raw event payloads (stripped): kept (no period set)" in run.log
    assert Event.objects.get(message_id="old-0").context["ip"] == "10.9.8.7"
    schedule = _beat_schedule()
    assert schedule["privacy-retention"]["task"] == "privacy.retention_apply"
    assert schedule["privacy-erasures-sweep"]["task"] == "privacy.erasures_sweep"
