"""Segment webhooks: deliveries to a real HTTP receiver (signed, in order, retried with backoff,
logged, disabled after repeated failures), concurrency (two dispatchers; a change committed
late with a lower id), nudges and the sweep, and the API."""

import hashlib
import hmac
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from cdp.roles import Role
from cdp.services import staff_user_ensure
from events.pipeline import events_process_pending
from members.consent.services import consent_record
from members.models import Member
from members.segments.models import Segment, SegmentChange, SegmentMember, SegmentWebhook, WebhookDelivery
from members.segments.services import segment_static_set
from members.segments.webhooks.delivery import (
    Outcome,
    webhook_backoff_seconds,
    webhook_deliver,
    webhook_deliveries_prune,
    webhooks_due,
)
from members.segments.webhooks.services import webhook_create, webhooks_nudge
from members.segments.webhooks.tasks import webhook_deliver_task, webhooks_sweep
from members.services import members_recompute, members_refresh
from tests.factories import EventFactory, SourceFactory, UserFactory
from tests.factories.consent import consent_grant, consent_state
from tests.identity.test_split import member_of
from tests.members.test_api import staff_client

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)


# --- a receiver, as a marketing tool would run one ---------------------------------------------


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    path: str = "/"

    @property
    def payload(self) -> dict:
        return json.loads(self.body)

    @property
    def cursors(self) -> list[int]:
        return [change["cursor"] for change in self.payload["changes"]]


class Receiver:
    """A real HTTP server in a thread: records every POST and answers with the statuses queued
    in ``answers`` (then ``default``), after ``delay`` seconds; on ``port``, or a free one."""

    def __init__(self, tls: ssl.SSLContext | None = None, *, port: int = 0) -> None:
        self.received: list[Received] = []
        self.answers: deque[int] = deque()
        self.default = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.received.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, self.path)
                    )
                    status = receiver.answers.popleft() if receiver.answers else receiver.default
                time.sleep(receiver.delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"thanks" if status < 300 else b"something broke on our side")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/cdp?tool=crm"

    def cursors(self) -> list[int]:
        """Cursors of the changes the receiver took (answered 2xx for), in arrival order."""
        return [cursor for r, status in zip(self.received, self._statuses(), strict=True) if status < 300
                for cursor in r.cursors]  # fmt: skip

    def _statuses(self) -> list[int]:
        return [row.status_code or 0 for row in WebhookDelivery.objects.order_by("pk")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verified(request: Received, secret: str, *, now: datetime, tolerance: int = 300) -> bool:
    """What a receiver does with X-CDP-Signature (as the README says): HMAC-SHA256 of
    "<t>." + the raw body under the secret, compared in constant time; t within tolerance."""
    fields = dict(part.split("=", 1) for part in request.headers["x-cdp-signature"].split(","))
    expected = hmac.new(
        secret.encode(), f"{fields['t']}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    return (
        hmac.compare_digest(expected, fields["v1"]) and abs(now.timestamp() - int(fields["t"])) <= tolerance
    )


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def members(count: int, *, granted: bool = True) -> list[int]:
    """``count`` members; ``granted``: who consented to every purpose (the webhooks' purpose is
    marketing: every marketing purpose)."""
    made = Member.objects.bulk_create(
        Member(first_event_at=T0, first_event_message_id=f"m{n}", first_event_source_id=1, last_event_at=T0,
               last_event_message_id=f"m{n}", last_event_source_id=1)
        for n in range(count)
    )  # fmt: skip
    if granted:
        consent_grant([m.pk for m in made], at=T0 - timedelta(days=1))
    return [m.pk for m in made]


@pytest.fixture
def vip(db) -> Segment:
    return Segment.objects.create(key="vip", name="VIP list", kind="static")


def feed(segment: Segment) -> list[tuple[int, int, str]]:
    return list(
        SegmentChange.objects.filter(segment=segment).order_by("id").values_list("id", "member_id", "change")
    )


# --- signed deliveries -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delivery_is_signed_and_carries_the_changes_after_the_cursor(vip, receiver):
    people = members(4)
    segment_static_set(segment=vip, member_ids=people[:1], now=T0)  # before the subscription
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=people[1:3], now=T0 + timedelta(minutes=1))

    run = webhook_deliver(webhook_id=webhook.pk, now=T0 + timedelta(minutes=2))

    [request] = receiver.received
    changes = feed(vip)[1:]  # the first member left and two entered after it subscribed
    assert run.outcome is Outcome.IDLE
    assert run.batches == 1
    assert verified(request, webhook.secret, now=T0 + timedelta(minutes=2))
    assert not verified(Received(request.headers, request.body.replace(b"vip", b"vap")), webhook.secret,
                        now=T0 + timedelta(minutes=2))  # fmt: skip
    assert not verified(request, webhook.secret, now=T0 + timedelta(hours=1))  # a replay, too late
    assert request.headers["content-type"] == "application/json"
    assert request.payload["segment"] == "vip"
    assert request.payload["webhook_id"] == webhook.pk
    assert [(c["cursor"], c["member_id"], c["change"]) for c in request.payload["changes"]] == changes
    assert {c["at"] for c in request.payload["changes"]} == {"2026-09-01T10:01:00+00:00"}
    webhook.refresh_from_db()
    assert request.payload["next_cursor"] == webhook.cursor >= changes[-1][0]
    assert (webhook.failures, webhook.last_success_at) == (0, T0 + timedelta(minutes=2))
    log = WebhookDelivery.objects.get()
    assert str(log.delivery_id) == request.headers["x-cdp-delivery"] == request.payload["delivery_id"]
    assert (log.first_cursor, log.last_cursor, log.count, log.attempt, log.status_code, log.succeeded,
            log.response) == (changes[0][0], changes[-1][0], 3, 1, 200, True, "thanks")  # fmt: skip
    # Nothing new: nothing sent.
    assert webhook_deliver(webhook_id=webhook.pk, now=T0 + timedelta(minutes=3)).batches == 0
    assert len(receiver.received) == 1


@pytest.mark.django_db
def test_a_webhook_can_start_from_an_older_cursor_and_take_only_entries(vip, receiver):
    people = members(3)
    segment_static_set(segment=vip, member_ids=people, now=T0)
    segment_static_set(segment=vip, member_ids=people[:1], now=T0 + timedelta(minutes=1))
    entered_only = webhook_create(segment=vip, url=receiver.url, changes="entered", since=0)

    webhook_deliver(webhook_id=entered_only.pk, now=T0 + timedelta(minutes=2))

    [request] = receiver.received
    assert [(c["cursor"], c["change"]) for c in request.payload["changes"]] == [
        (pk, "entered") for pk, _, change in feed(vip) if change == "entered"
    ]
    assert sorted(c["member_id"] for c in request.payload["changes"]) == people
    entered_only.refresh_from_db()
    assert entered_only.cursor == max(pk for pk, _, _ in feed(vip))  # the exits are skipped, not pending
    assert webhooks_due(now=T0 + timedelta(minutes=3)) == []


@pytest.mark.django_db
def test_a_failed_batch_is_retried_with_backoff_before_anything_newer(vip, receiver, settings):
    settings.WEBHOOK_BATCH_SIZE = 2
    settings.WEBHOOK_RETRY_BASE_SECONDS = 30
    people = members(6)
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=people[:3], now=T0)
    receiver.answers.extend([500, 503])

    first = webhook_deliver(webhook_id=webhook.pk, now=T0)
    webhook.refresh_from_db()
    retry_at = webhook.next_attempt_at
    segment_static_set(segment=vip, member_ids=people, now=T0 + timedelta(seconds=5))  # more come meanwhile
    early = webhook_deliver(webhook_id=webhook.pk, now=retry_at - timedelta(seconds=1))
    second = webhook_deliver(webhook_id=webhook.pk, now=retry_at)
    webhook.refresh_from_db()
    later_retry = webhook.next_attempt_at
    third = webhook_deliver(webhook_id=webhook.pk, now=later_retry)

    assert first.outcome is Outcome.FAILED
    assert early.outcome is Outcome.IDLE
    assert second.outcome is Outcome.FAILED
    # Backoff: 30 s then 60 s nominal, each less up to half of it.
    assert T0 + timedelta(seconds=15) <= retry_at <= T0 + timedelta(seconds=30)
    assert retry_at + timedelta(seconds=30) <= later_retry <= retry_at + timedelta(seconds=60)
    assert (third.outcome, third.batches) == (Outcome.IDLE, 3)
    every_change = [pk for pk, _, _ in feed(vip)]
    assert receiver.cursors() == every_change  # each once, in order
    assert [r.cursors[0] for r in receiver.received] == [every_change[0]] * 3 + every_change[2::2]
    log = list(WebhookDelivery.objects.order_by("pk").values_list("attempt", "status_code", "succeeded"))
    assert log == [(1, 500, False), (2, 503, False), (3, 200, True), (1, 200, True), (1, 200, True)]
    assert WebhookDelivery.objects.order_by("pk").first().response == "something broke on our side"
    webhook.refresh_from_db()
    assert (webhook.failures, webhook.next_attempt_at, webhook.active) == (0, None, True)


@given(failures=st.integers(1, 200), base=st.integers(1, 600), cap=st.integers(1, 86_400),
       jitter=st.floats(0, 1, exclude_max=True))  # fmt: skip
def test_backoff_doubles_up_to_the_cap_less_at_most_half(failures, base, cap, jitter):
    nominal = min(cap, base * 2 ** (failures - 1))
    delay = webhook_backoff_seconds(failures=failures, base=base, cap=cap, jitter=jitter)
    assert nominal / 2 <= delay <= nominal
    assert webhook_backoff_seconds(failures=failures + 1, base=base, cap=cap, jitter=0) >= nominal


@pytest.mark.django_db
def test_a_webhook_failing_again_and_again_is_turned_off_and_staff_turn_it_on(vip, receiver, settings):
    settings.WEBHOOK_MAX_FAILURES = 3
    people = members(2)
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=people, now=T0)
    receiver.default = 502
    now = T0
    for _ in range(3):
        assert webhook_deliver(webhook_id=webhook.pk, now=now).outcome is Outcome.FAILED
        webhook.refresh_from_db()
        now = webhook.next_attempt_at or now

    assert (webhook.active, webhook.failures) == (False, 3)
    assert webhook.disabled_reason == "3 failed deliveries in a row; the last: HTTP 502"
    assert webhook_deliver(webhook_id=webhook.pk, now=now + timedelta(days=1)).outcome is Outcome.IDLE
    assert len(receiver.received) == 3

    receiver.default = 204
    client = staff_client(Role.MARKETING)
    body = client.patch(
        f"/api/v1/segments/vip/webhooks/{webhook.pk}/", {"active": True}, format="json"
    ).json()

    assert (body["active"], body["failures"], body["disabled_reason"]) == (True, 0, "")
    assert webhook_deliver(webhook_id=webhook.pk, now=now + timedelta(days=1)).batches == 1
    assert receiver.received[-1].cursors == [pk for pk, _, _ in feed(vip)]


@pytest.mark.django_db
def test_410_gone_turns_the_webhook_off_at_once(vip, receiver):
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=members(1), now=T0)
    receiver.answers.append(410)

    webhook_deliver(webhook_id=webhook.pk, now=T0)

    webhook.refresh_from_db()
    assert (webhook.active, webhook.disabled_reason) == (False, "the receiver answered 410 Gone")


@pytest.mark.django_db
def test_timeouts_redirects_and_refused_connections_are_failures(vip, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    segment_static_set(segment=vip, member_ids=members(1), now=T0)
    slow = webhook_create(segment=vip, url=receiver.url, since=0)
    receiver.delay = 1.0
    began = time.monotonic()
    webhook_deliver(webhook_id=slow.pk, now=T0)
    took = time.monotonic() - began
    receiver.delay = 0
    receiver.answers.append(302)
    webhook_deliver(webhook_id=slow.pk, now=T0 + timedelta(hours=1))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nobody = webhook_create(segment=vip, url=f"http://127.0.0.1:{port}/", since=0)
    webhook_deliver(webhook_id=nobody.pk, now=T0)

    log = list(WebhookDelivery.objects.order_by("pk").values_list("status_code", "error", "succeeded"))
    assert took < 0.9
    assert log[0] == (None, "timed out after 0.3 s", False)
    assert log[1] == (302, "redirects are not followed", False)
    assert log[2][0] is None
    assert "ConnectionRefused" in log[2][1]
    assert SegmentWebhook.objects.get(pk=slow.pk).failures == 2


@pytest.mark.django_db
def test_private_addresses_are_refused_unless_allowed(vip, receiver, settings):
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=members(1), now=T0)
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    client = staff_client(Role.MARKETING)

    webhook_deliver(webhook_id=webhook.pk, now=T0)
    answers = [client.post("/api/v1/segments/vip/webhooks/", {"url": url}, format="json")
               for url in ("http://127.0.0.1:8000/x", "http://localhost/x", "http://[::1]/", "http://10.1.2.3/",
                           "http://169.254.169.254/latest/meta-data/")]  # fmt: skip

    assert receiver.received == []
    assert (
        WebhookDelivery.objects.get().error
        == "refused: 127.0.0.1 is not a public address (private, loopback, link-local or reserved)"
    )
    assert {(a.status_code, a.json()["errors"][0]["field"]) for a in answers} == {(400, "url")}


# --- concurrency -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_send_each_batch_once(receiver, settings):
    settings.WEBHOOK_BATCH_SIZE = 3
    vip = Segment.objects.create(key="vip", name="VIP list", kind="static")
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=members(14), now=T0)
    receiver.delay = 0.05
    start, errors = threading.Barrier(2), []

    def dispatcher() -> None:
        try:
            start.wait()
            for _ in range(20):
                webhook_deliver(webhook_id=webhook.pk)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    sent = [cursor for request in receiver.received for cursor in request.cursors]
    assert sent == [pk for pk, _, _ in feed(vip)]  # each once, in order
    assert len(receiver.received) == 5
    assert WebhookDelivery.objects.filter(succeeded=True).count() == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("late_writer", ["commits", "rolls back"])
def test_a_change_committed_late_with_a_lower_id_is_not_overtaken(receiver, late_writer):
    vip = Segment.objects.create(key="vip", name="VIP list", kind="static")
    other = Segment.objects.create(key="other", name="Other list", kind="static")
    people = members(2)
    webhook = webhook_create(segment=vip, url=receiver.url)
    wrote, finish, errors, runs = threading.Event(), threading.Event(), [], []

    def late() -> None:  # takes the lower id first, commits last
        try:
            with transaction.atomic():
                segment_static_set(segment=vip, member_ids=people[:1], now=T0)
                wrote.set()
                finish.wait(10)
                if late_writer == "rolls back":
                    transaction.set_rollback(True)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def dispatcher() -> None:
        try:
            runs.append(webhook_deliver(webhook_id=webhook.pk))
        finally:
            connection.close()

    writer = threading.Thread(target=late)
    writer.start()
    assert wrote.wait(10)
    with transaction.atomic():  # a higher id, committed at once (and another segment's change)
        SegmentChange.objects.create(segment=vip, member_id=people[1], change="entered", at=T0)
        SegmentChange.objects.create(segment=other, member_id=people[1], change="entered", at=T0)
    delivering = threading.Thread(target=dispatcher)
    delivering.start()
    time.sleep(0.3)
    sent_while_writing = list(receiver.received)
    finish.set()
    writer.join(10)
    delivering.join(20)

    assert errors == []
    assert sent_while_writing == []
    assert runs[0].outcome is Outcome.IDLE
    expected = [pk for pk, _, _ in feed(vip)]
    assert [cursor for request in receiver.received for cursor in request.cursors] == expected
    assert len(expected) == (2 if late_writer == "commits" else 1)


# --- nudges and the sweep ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_nudge_delivers_on_commit_and_costs_one_query_when_nobody_listens(
    vip, receiver, django_capture_on_commit_callbacks, django_assert_num_queries
):
    quiet = Segment.objects.create(key="quiet", name="Nobody listens", kind="static")
    webhook = webhook_create(segment=vip, url=receiver.url)
    people = members(2)

    with django_capture_on_commit_callbacks(execute=False) as nothing, django_assert_num_queries(1):
        webhooks_nudge([quiet.pk, quiet.pk])
    with django_capture_on_commit_callbacks(execute=True):
        segment_static_set(segment=vip, member_ids=people, now=T0)
        webhooks_nudge([vip.pk, quiet.pk])

    assert nothing == []
    assert receiver.received[0].cursors == [pk for pk, _, _ in feed(vip)]
    webhook.refresh_from_db()
    assert webhook.cursor >= feed(vip)[-1][0]


@pytest.mark.django_db
def test_a_nudge_leaves_a_webhook_waiting_out_its_backoff_alone(
    vip, receiver, django_capture_on_commit_callbacks
):
    webhook = webhook_create(segment=vip, url=receiver.url)
    SegmentWebhook.objects.filter(pk=webhook.pk).update(
        next_attempt_at=datetime.now(UTC) + timedelta(minutes=5)
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        segment_static_set(segment=vip, member_ids=members(1), now=T0)
        webhooks_nudge([vip.pk])

    assert callbacks == []


@pytest.mark.django_db
def test_the_sweep_delivers_what_is_due_and_forgets_old_deliveries(vip, receiver, settings):
    settings.WEBHOOK_DELIVERY_LOG_DAYS = 30
    due = webhook_create(segment=vip, url=receiver.url)
    later = webhook_create(segment=vip, url=receiver.url + "&later=1")
    off = webhook_create(segment=vip, url=receiver.url + "&off=1")
    SegmentWebhook.objects.filter(pk=later.pk).update(
        next_attempt_at=datetime.now(UTC) + timedelta(minutes=5)
    )
    SegmentWebhook.objects.filter(pk=off.pk).update(active=False)
    segment_static_set(segment=vip, member_ids=members(2), now=T0)
    old = WebhookDelivery.objects.create(
        webhook=due, delivery_id="00000000-0000-4000-8000-000000000001", first_cursor=1, last_cursor=1, count=1,
        attempt=1, status_code=200, duration_ms=3, at=datetime.now(UTC) - timedelta(days=31), succeeded=True,
    )  # fmt: skip

    assert webhooks_due() == [due.pk]
    assert webhooks_sweep() == 1

    assert [r.payload["webhook_id"] for r in receiver.received] == [due.pk]
    assert not WebhookDelivery.objects.filter(pk=old.pk).exists()
    assert WebhookDelivery.objects.count() == 1
    assert webhook_deliveries_prune() == 0


# --- API ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "expected"), [(None, 401), (Role.CRM_AGENT, 403), (Role.CRM_MANAGER, 403),
                                                (Role.CHECKOUT, 403), (Role.MARKETING, 201), (Role.ADMIN, 201)])  # fmt: skip
def test_only_marketing_and_admins_manage_webhooks(vip, role, expected):
    client = staff_client(role)
    created = client.post(
        "/api/v1/segments/vip/webhooks/", {"url": "https://tool.example.com/hook"}, format="json"
    )
    listed = client.get("/api/v1/segments/vip/webhooks/")

    assert created.status_code == expected
    assert listed.status_code == (200 if expected == 201 else expected)


@pytest.mark.django_db
def test_the_secret_is_shown_once_and_a_webhook_can_be_read_paused_and_removed(vip):
    client = staff_client(Role.MARKETING)

    created = client.post("/api/v1/segments/vip/webhooks/",
                          {"url": "https://tool.example.com/hook", "changes": "exited"}, format="json")  # fmt: skip
    body = created.json()
    one = client.get(f"/api/v1/segments/vip/webhooks/{body['id']}/").json()
    listed = client.get("/api/v1/segments/vip/webhooks/").json()["results"]
    paused = client.patch(
        f"/api/v1/segments/vip/webhooks/{body['id']}/", {"active": False}, format="json"
    ).json()

    assert created.status_code == 201
    assert body["secret"].startswith("whsec_")
    assert len(body["secret"]) > 40
    assert SegmentWebhook.objects.get().secret == body["secret"]
    assert "secret" not in one
    assert one["secret_hint"] == body["secret"][:10] + "…"
    assert [w["id"] for w in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert (one["segment"], one["changes"], one["active"], one["created_by"]) == (
        "vip",
        "exited",
        True,
        "staff-marketing",
    )
    assert (paused["active"], paused["disabled_reason"]) == (False, "turned off by staff")
    assert client.delete(f"/api/v1/segments/vip/webhooks/{body['id']}/").status_code == 204
    assert client.get(f"/api/v1/segments/vip/webhooks/{body['id']}/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field"), [
    ({"url": "ftp://tool.example.com/hook"}, "url"),
    ({"url": "https://user:pass@tool.example.com/hook"}, "url"),
    ({"url": "not a url"}, "url"),
    ({}, "url"),
    ({"url": "https://tool.example.com/hook", "changes": "left"}, "changes"),
    ({"url": "https://tool.example.com/hook", "since": -1}, "since"),
    ({"url": "https://tool.example.com/hook", "since": 10**12}, "since"),
])  # fmt: skip
def test_a_bad_subscription_is_a_400_naming_the_field(vip, body, field):
    answer = staff_client(Role.MARKETING).post("/api/v1/segments/vip/webhooks/", body, format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid"
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert not SegmentWebhook.objects.exists()


@pytest.mark.django_db
def test_the_same_url_twice_and_too_many_webhooks_are_conflicts(vip, settings):
    client = staff_client(Role.MARKETING)
    for n in range(10):
        assert (
            client.post(
                "/api/v1/segments/vip/webhooks/", {"url": f"https://t.example.com/{n}"}, format="json"
            ).status_code
            == 201
        )

    again = client.post("/api/v1/segments/vip/webhooks/", {"url": "https://t.example.com/0"}, format="json")
    eleventh = client.post(
        "/api/v1/segments/vip/webhooks/", {"url": "https://t.example.com/10"}, format="json"
    )
    nowhere = client.post(
        "/api/v1/segments/nope/webhooks/", {"url": "https://t.example.com/0"}, format="json"
    )

    assert (again.status_code, again.json()["errors"][0]["field"]) == (
        409,
        "segment",
    )  # the limit is checked first
    assert (eleventh.status_code, eleventh.json()["code"]) == (409, "conflict")
    assert nowhere.status_code == 404
    SegmentWebhook.objects.filter(url="https://t.example.com/9").delete()
    again = client.post("/api/v1/segments/vip/webhooks/", {"url": "https://t.example.com/0"}, format="json")
    assert (again.status_code, again.json()["errors"][0]["field"]) == (409, "url")


@pytest.mark.django_db
def test_a_bad_change_is_a_400(vip):
    client = staff_client(Role.MARKETING)
    webhook = webhook_create(segment=vip, url="https://tool.example.com/hook")
    path = f"/api/v1/segments/vip/webhooks/{webhook.pk}/"

    unknown = client.patch(path, {"secret": "mine", "cursor": 0}, format="json")
    empty = client.patch(path, {}, format="json")
    bad_url = client.patch(path, {"url": "gopher://x"}, format="json")
    other_segment = Segment.objects.create(key="other", name="Other", kind="static")

    assert (unknown.status_code, sorted(e["field"] for e in unknown.json()["errors"])) == (
        400,
        ["cursor", "secret"],
    )
    assert (empty.status_code, empty.json()["errors"][0]["field"]) == (400, "active")
    assert (bad_url.status_code, bad_url.json()["errors"][0]["field"]) == (400, "url")
    assert client.get(f"/api/v1/segments/{other_segment.key}/webhooks/{webhook.pk}/").status_code == 404
    assert SegmentWebhook.objects.get().secret == webhook.secret


@pytest.mark.django_db
def test_the_delivery_log_comes_newest_first_in_keyset_pages(vip, receiver):
    webhook = webhook_create(segment=vip, url=receiver.url)
    people = members(5)
    receiver.answers.extend([500, 500])
    now = T0
    for n in range(1, 6):
        segment_static_set(segment=vip, member_ids=people[:n], now=now)
        webhook_deliver(webhook_id=webhook.pk, now=now)
        now += timedelta(hours=1)  # past any backoff
    client, seen, before = staff_client(Role.MARKETING), [], None

    while True:
        page = client.get(f"/api/v1/segments/vip/webhooks/{webhook.pk}/deliveries/?page_size=2"
                          + (f"&before={before}" if before else "")).json()  # fmt: skip
        seen += page["results"]
        before = page["next_cursor"]
        if before is None:
            break

    assert [d["id"] for d in seen] == list(
        WebhookDelivery.objects.order_by("-pk").values_list("pk", flat=True)
    )
    assert [(d["attempt"], d["status_code"], d["succeeded"]) for d in reversed(seen)] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
        (1, 200, True),
        (1, 200, True),
    ]
    assert seen[0]["delivery_id"] == receiver.received[-1].headers["x-cdp-delivery"]
    bad = client.get(f"/api/v1/segments/vip/webhooks/{webhook.pk}/deliveries/?before=x")
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "before")


@pytest.mark.django_db
def test_a_new_url_starts_afresh_and_a_paused_webhook_keeps_why(vip, receiver):
    webhook = webhook_create(segment=vip, url=receiver.url + "&old=1")
    segment_static_set(segment=vip, member_ids=members(1), now=T0)
    receiver.default = 500
    webhook_deliver(webhook_id=webhook.pk, now=T0)
    client = staff_client(Role.MARKETING)
    path = f"/api/v1/segments/vip/webhooks/{webhook.pk}/"

    moved = client.patch(path, {"url": receiver.url}, format="json").json()
    receiver.default = 200
    webhook_deliver(webhook_id=webhook.pk, now=T0 + timedelta(seconds=1))  # no backoff left to wait out
    paused = client.patch(path, {"active": False}, format="json").json()
    moved_while_paused = client.patch(path, {"url": receiver.url + "&new=1"}, format="json").json()

    assert (moved["failures"], moved["next_attempt_at"]) == (0, None)
    assert [r.path for r in receiver.received] == ["/hooks/cdp?tool=crm&old=1", "/hooks/cdp?tool=crm"]
    assert receiver.received[0].cursors == receiver.received[1].cursors
    assert SegmentWebhook.objects.get().last_success_at == T0 + timedelta(seconds=1)
    assert (paused["active"], paused["disabled_reason"]) == (False, "turned off by staff")
    assert (moved_while_paused["active"], moved_while_paused["disabled_reason"]) == (
        False,
        "turned off by staff",
    )


@pytest.mark.django_db
def test_a_delivery_task_hands_a_long_backlog_to_a_fresh_task(vip, receiver, settings, monkeypatch):
    settings.WEBHOOK_BATCH_SIZE = 1
    monkeypatch.setattr(
        "members.segments.webhooks.tasks.webhook_deliver",
        lambda webhook_id: webhook_deliver(webhook_id=webhook_id, max_batches=2),
    )
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=members(5), now=T0)

    webhook_deliver_task.delay(webhook.pk)  # eager in tests: each hand-over runs at once

    assert [cursor for r in receiver.received for cursor in r.cursors] == [pk for pk, _, _ in feed(vip)]


@pytest.mark.django_db
def test_the_admin_lists_webhooks_with_their_latest_deliveries(vip, receiver):
    webhook = webhook_create(segment=vip, url=receiver.url)
    segment_static_set(segment=vip, member_ids=members(2), now=T0)
    webhook_deliver(webhook_id=webhook.pk, now=T0)
    client = Client()
    client.force_login(staff_user_ensure(username="ops", role=Role.ADMIN))

    listing = client.get("/admin/segments/segmentwebhook/")
    page = client.get(f"/admin/segments/segmentwebhook/{webhook.pk}/change/")
    log = client.get("/admin/segments/webhookdelivery/")
    turned_off = client.post(f"/admin/segments/segmentwebhook/{webhook.pk}/change/", {})

    assert (listing.status_code, page.status_code, log.status_code) == (200, 200, 200)
    assert receiver.url.replace("&", "&amp;") in listing.content.decode()
    assert "Latest deliveries" in page.content.decode()
    first, last = feed(vip)[0][0], feed(vip)[-1][0]
    assert f"{first}-{last} (2)" in page.content.decode()
    assert webhook.secret not in page.content.decode()
    assert client.get("/admin/segments/segmentwebhook/add/").status_code == 403
    assert turned_off.status_code == 302
    webhook.refresh_from_db()
    assert (webhook.active, webhook.disabled_reason) == (False, "turned off by staff")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> str:
    """A self-signed certificate for the name localhost (and no address)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", folder / "key.pem", "-out", folder / "cert.pem"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(folder)


@pytest.fixture
def tls_receiver(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{certificate}/cert.pem", f"{certificate}/key.pem")
    server = Receiver(tls=context)
    yield server
    server.close()


@pytest.mark.django_db
def test_https_receivers_are_verified_by_name_on_the_vetted_address(
    vip, tls_receiver, certificate, monkeypatch
):
    port = tls_receiver.server.server_port
    by_name = webhook_create(segment=vip, url=f"https://localhost:{port}/hook")
    by_address = webhook_create(segment=vip, url=f"https://127.0.0.1:{port}/hook")
    segment_static_set(segment=vip, member_ids=members(1), now=T0)

    webhook_deliver(webhook_id=by_name.pk, now=T0)  # the system's authorities do not know this one
    trusting = ssl.create_default_context(cafile=f"{certificate}/cert.pem")
    monkeypatch.setattr("members.segments.webhooks.transport._TLS", trusting)
    webhook_deliver(webhook_id=by_name.pk, now=T0 + timedelta(hours=1))
    webhook_deliver(webhook_id=by_address.pk, now=T0)  # the certificate names localhost only

    untrusted, trusted, mismatch = WebhookDelivery.objects.order_by("pk")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    assert (trusted.status_code, trusted.succeeded) == (200, True)
    assert "CERTIFICATE_VERIFY_FAILED" in mismatch.error
    assert "IP address mismatch" in mismatch.error
    [request] = tls_receiver.received
    assert verified(request, by_name.secret, now=T0 + timedelta(hours=1))


# --- consent withdrawn (and granted again) while the member stays in the segment ----------------


@pytest.mark.django_db
def test_a_withdrawal_while_in_the_segment_is_an_exit_for_that_purpose_and_a_grant_an_entry(receiver):
    """End to end: consent from events and from staff, through the pipeline and the member
    refresh, to the changes feed and real HTTP deliveries. A webhook declaring marketing_sms hears
    an exit (``consent_withdrawn``) when the member withdraws SMS consent while staying in the
    segment, and an entry (``consent_granted``) when staff record a grant again; a webhook of
    another purpose hears nothing of it, and the changes API says the same per purpose."""
    vip = Segment.objects.create(key="vip", name="VIP list", kind="static")
    app = SourceFactory(kind="app")
    joined = EventFactory(source=app, type="identify", user_id="u-1", event="", timestamp=T0,
                          traits={"consent": {"marketing_sms": True, "marketing_email": True}})  # fmt: skip
    events_process_pending()
    member = member_of(joined)
    segment_static_set(segment=vip, member_ids=[member], now=T0)
    sms = webhook_create(segment=vip, url=receiver.url, purpose="marketing_sms", since=0)
    email = webhook_create(
        segment=vip, url=receiver.url + "&purpose=email", purpose="marketing_email", since=0
    )

    def sent(webhook: SegmentWebhook) -> list[tuple[int, str, str, str]]:
        webhook_deliver(webhook_id=webhook.pk, now=timezone.now())
        return [(c["member_id"], c["change"], c.get("reason", ""), c.get("purpose", ""))
                for r in receiver.received if ("purpose=email" in r.path) == (webhook is email)
                for c in r.payload["changes"]]  # fmt: skip

    assert sent(sms) == sent(email) == [(member, "entered", "", "")]

    EventFactory(source=app, user_id="u-1", event="Consent Updated", timestamp=T0 + timedelta(days=1),
                 properties={"purpose": "marketing_sms", "state": "withdrawn"})  # fmt: skip
    events_process_pending()

    assert SegmentMember.objects.filter(segment=vip, member_id=member).exists()  # still in it
    assert sent(sms)[1:] == [(member, "exited", "consent_withdrawn", "marketing_sms")]
    assert sent(email)[1:] == []  # email consent stands: nothing to tell its tool
    assert len([r for r in receiver.received if "purpose=email" in r.path]) == 1  # not even an empty POST

    consent_record(member_id=member, purpose="marketing_sms", state="granted", version="desk-1", note="",
                   user=UserFactory(), channel="api")  # fmt: skip
    members_refresh()

    assert sent(sms)[2:] == [(member, "entered", "consent_granted", "marketing_sms")]
    assert sent(email)[1:] == []
    # Read now, the SMS withdrawal's exit is past (SMS consent is granted again): its entry stands.
    for purpose, told in (("marketing_sms", ["entered", "entered"]), ("marketing_email", ["entered"])):
        answer = staff_client(Role.MARKETING).get(f"/api/v1/segments/vip/changes/?since=0&purpose={purpose}")
        assert [c["change"] for c in answer.json()["results"]] == told
        assert answer.json()["withheld"] == {"no_consent": 0}
    # A refresh with nothing new tells nothing again.
    members_recompute({member})
    assert SegmentChange.objects.filter(segment=vip).count() == 3


@pytest.mark.django_db
def test_a_consent_exit_goes_only_while_consent_is_missing_when_it_is_sent(vip, receiver):
    """Judged when it leaves, like an entry: an exit for a purpose the member granted again
    before the delivery is not sent (the grant's entry follows it), and a webhook declaring every
    marketing purpose hears the withdrawal of any one of them."""
    [member] = members(1)
    segment_static_set(segment=vip, member_ids=[member], now=T0)
    members_recompute({member})  # the feed learns what the member granted (written past it here)
    webhook = webhook_create(segment=vip, url=receiver.url, purpose="marketing")  # from now on
    withdraw_at = T0 + timedelta(days=1)
    consent_state([member], "withdrawn", purposes=["marketing_push"], at=withdraw_at)
    members_recompute({member})
    consent_state([member], "granted", purposes=["marketing_push"], at=withdraw_at + timedelta(hours=1))
    members_recompute({member})
    assert [(c.change, c.reason, c.purpose)
            for c in SegmentChange.objects.filter(segment=vip, id__gt=webhook.cursor).order_by("id")] == [
        ("exited", "consent_withdrawn", "marketing_push"), ("entered", "consent_granted", "marketing_push"),
    ]  # fmt: skip

    webhook_deliver(webhook_id=webhook.pk, now=timezone.now())

    [request] = receiver.received
    assert [(c["change"], c.get("reason")) for c in request.payload["changes"]] == [
        ("entered", "consent_granted")
    ]
