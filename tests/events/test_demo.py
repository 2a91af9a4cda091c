"""The demo: a deterministic, contract-valid, cross-channel stream, loaded idempotently by
``manage.py demo``, whose banner hands out credentials that really work."""

import os
import re
import stat
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from cdp.credentials import credential_hash
from cdp.models import ApiToken
from cdp.roles import Role, user_roles
from events.commerce import ORDER_EVENTS
from events.contract import Message, message_parse
from events.demo import (
    DEMO_SOURCES,
    DEMO_SOURCES_BY_SLUG,
    JUNK_IDENTIFIERS,
    SHARED_IPAD_DEVICE_ID,
    WEB_SOURCE_SLUG,
    demo_stream,
)
from events.management.commands.demo import _write_private
from events.models import Event, PendingEvent, RejectedEvent, Source
from events.selectors import source_for_write_key
from members.models import Member
from tests.conftest import basic_auth

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
WRITE_KEY = re.compile(r"\bwk_[\w-]{20,}")
TOKEN = re.compile(r"\bcdp_[\w-]{20,}")


def _phone_digits(value: str) -> str:
    """The 11-digit national number, whatever form it was written in."""
    digits = re.sub(r"\D", "", value)
    return digits[2:] if len(digits) == 13 and digits.startswith("86") else digits


def _channel(source_slug: str) -> str:
    return DEMO_SOURCES_BY_SLUG[source_slug].kind


# --- the generator -----------------------------------------------------------------------


def test_the_stream_is_deterministic_for_a_seed():
    first = list(demo_stream(members=40, seed=7, now=NOW))
    again = list(demo_stream(members=40, seed=7, now=NOW))
    other_seed = list(demo_stream(members=40, seed=8, now=NOW))

    assert first == again
    assert [e.message["messageId"] for e in first] != [e.message["messageId"] for e in other_seed]


def test_message_ids_do_not_depend_on_when_or_how_many():
    """A re-run tomorrow, or with more members, must hit the same messageIds to dedupe."""
    today = list(demo_stream(members=20, seed=7, now=NOW))
    tomorrow = list(demo_stream(members=30, seed=7, now=NOW + timedelta(days=1, hours=5)))

    def timeless(message):
        return {key: value for key, value in message.items() if key not in ("timestamp", "sentAt")}

    ids_today = {e.message["messageId"]: e for e in today}
    shared = [e for e in tomorrow if e.message["messageId"] in ids_today]
    # The whole history moves by whole days; only what would fall after ``now`` (refunds not
    # yet due) differs. Everything else is the same message, days later.
    assert len(shared) >= 0.98 * len(today)
    for event in shared:
        before = ids_today[event.message["messageId"]]
        assert timeless(event.message) == timeless(before.message)
        assert event.source_slug == before.source_slug
        assert event.message["timestamp"] > before.message["timestamp"]


def test_message_ids_are_unique():
    ids = [e.message["messageId"] for e in demo_stream(members=200, seed=42, now=NOW)]

    assert len(ids) == len(set(ids))


def test_every_message_passes_the_contract_and_keeps_its_time():
    events = list(demo_stream(members=150, seed=42, now=NOW))
    orders = 0
    for event in events:
        parsed = message_parse(event.message, received_at=event.received_at)

        assert isinstance(parsed, Message), (parsed, event.message)
        # Late store uploads still land at the time of the sale, not of the upload.
        assert parsed.timestamp == datetime.fromisoformat(event.message["timestamp"])
        assert NOW - timedelta(days=180) <= parsed.timestamp < NOW
        assert parsed.sent_at is not None
        assert parsed.timestamp <= parsed.sent_at <= NOW
        if parsed.event in ORDER_EVENTS:
            orders += 1
            assert parsed.properties["currency"] == "CNY"
            assert parsed.properties["order_id"]
            assert parsed.properties["total"] >= 0
            # Channel and store come from the source, never the payload.
            assert "store" not in parsed.properties
            assert "channel" not in parsed.properties
    assert orders > 100


def test_each_person_is_in_event_time_order():
    by_person = defaultdict(list)
    for event in demo_stream(members=100, seed=3, now=NOW):
        by_person[event.person].append(event.message["timestamp"])

    assert len(by_person) == 100
    assert all(stamps == sorted(stamps) for stamps in by_person.values())


def test_the_same_person_shows_up_in_several_channels_under_different_forms():
    channels_by_person = defaultdict(set)
    channels_by_phone = defaultdict(set)
    forms_by_phone = defaultdict(set)
    for event in demo_stream(members=200, seed=42, now=NOW):
        channel = _channel(event.source_slug)
        channels_by_person[event.person].add(channel)
        phone = event.message.get("traits", {}).get("phone")
        if phone and phone not in JUNK_IDENTIFIERS:
            channels_by_phone[_phone_digits(phone)].add(channel)
            forms_by_phone[_phone_digits(phone)].add(phone)

    multi_channel = [person for person, channels in channels_by_person.items() if len(channels) >= 2]
    assert len(multi_channel) >= 0.5 * len(channels_by_person)
    # The link identity resolution will need: one phone, typed differently, in two channels.
    assert any(len(channels) >= 2 for channels in channels_by_phone.values())
    assert any(len(forms) >= 2 for forms in forms_by_phone.values())
    assert all(len(digits) == 11 and digits.startswith("1") for digits in channels_by_phone)


def test_identifiers_each_channel_is_known_for():
    events = list(demo_stream(members=200, seed=42, now=NOW))

    def external_types(event):
        return {entry["type"] for entry in event.message["context"].get("externalIds", [])}

    pos = [e for e in events if _channel(e.source_slug) == "pos"]
    mini = [e for e in events if e.source_slug == "mini_program"]
    app = [e for e in events if e.source_slug == "app"]
    web = [e for e in events if e.source_slug == WEB_SOURCE_SLUG]

    assert any("member_card" in external_types(e) for e in pos)
    assert all({"wechat_openid", "wechat_unionid"} <= external_types(e) for e in mini)
    assert all(e.message["context"]["device"]["id"] and e.message["anonymousId"] for e in app)
    # Anonymous app browsing first, then a login with the phone.
    assert any(e.message["type"] == "identify" and "userId" in e.message for e in app)
    assert any(e.message.get("event") == "Cart Viewed" and "userId" not in e.message for e in app)
    assert all(e.message["anonymousId"] for e in web)
    assert any("userId" in e.message for e in web)
    assert any(e.message["type"] == "page" for e in web)
    assert any(e.message["type"] == "screen" for e in app)
    assert {e.message.get("event") for e in events} >= {
        "Order Completed",
        "Order Refunded",
        "Coupon Redeemed",
        "Product Viewed",
        "Product Added",
        "Cart Viewed",
    }


def test_noise_a_platform_must_survive():
    events = list(demo_stream(members=400, seed=42, now=NOW))
    pos = [e for e in events if _channel(e.source_slug) == "pos"]

    junk_user_ids = [e for e in pos if e.message.get("userId") in JUNK_IDENTIFIERS]
    junk_phones = [e for e in pos if e.message.get("traits", {}).get("phone") in JUNK_IDENTIFIERS]
    ipad = [e for e in pos if e.message["context"].get("device", {}).get("id") == SHARED_IPAD_DEVICE_ID]
    late = [
        e
        for e in pos
        if datetime.fromisoformat(e.message["sentAt"]) - datetime.fromisoformat(e.message["timestamp"])
        > timedelta(hours=1)
    ]

    assert junk_user_ids
    assert junk_phones
    assert len({e.person for e in ipad}) >= 10
    assert {e.source_slug for e in ipad} == {"pos-S001"}
    assert len(late) >= 0.05 * len(pos)


def test_refunds_follow_their_order():
    completed, refunds, order_ids = {}, [], []
    for event in demo_stream(members=400, seed=42, now=NOW):
        properties = event.message.get("properties", {})
        if event.message.get("event") == "Order Completed":
            completed[properties["order_id"]] = (event, properties)
            order_ids.append(properties["order_id"])
        elif event.message.get("event") == "Order Refunded":
            refunds.append((event, properties))

    assert refunds
    assert len(order_ids) == len(set(order_ids))
    partial = 0
    for refund, properties in refunds:
        order, order_properties = completed[properties["order_id"]]
        assert order.source_slug == refund.source_slug
        assert order.message["timestamp"] < refund.message["timestamp"]
        assert 0 < properties["total"] <= order_properties["total"]
        partial += properties["total"] < order_properties["total"]
    assert partial


# --- the command -------------------------------------------------------------------------


def _run_demo(tmp_path, **options):
    out = StringIO()
    call_command(
        "demo",
        members=30,
        seed=11,
        welcome_file=tmp_path / "welcome.txt",
        stdout=out,
        stderr=StringIO(),
        **options,
    )
    return out.getvalue()


def _credentials(banner: str) -> tuple[str, str]:
    tail = "\n".join(banner.strip().splitlines()[-8:])
    write_key, token = WRITE_KEY.search(tail), TOKEN.search(tail)
    assert write_key, banner
    assert token, banner
    return write_key.group(), token.group()


@pytest.mark.django_db
def test_running_the_demo_twice_stores_the_events_once(tmp_path):
    banner = _run_demo(tmp_path)
    sources = Source.objects.filter(name__in=[demo.name for demo in DEMO_SOURCES])
    stored = Event.objects.count()

    assert sources.count() == len(DEMO_SOURCES)
    assert set(sources.filter(kind="pos").values_list("store_code", flat=True)) == {"S001", "S002", "S003"}
    assert stored > 200
    assert RejectedEvent.objects.count() == 0
    assert f"{stored:,} stored now, 0 skipped" in banner

    again = _run_demo(tmp_path)

    assert Event.objects.count() == stored
    assert Source.objects.count() == len(DEMO_SOURCES)
    assert f"0 stored now, {stored:,} skipped as already stored" in again
    assert (tmp_path / "welcome.txt").read_text() == again
    assert (tmp_path / "welcome.txt").stat().st_mode & 0o077 == 0


@pytest.mark.django_db
def test_the_banner_says_how_many_members_the_events_made_as_the_database_counts_them(tmp_path):
    banner = _run_demo(tmp_path, process=True)

    active = Member.objects.filter(status=Member.Status.ACTIVE).count()
    merged = Member.objects.filter(status=Member.Status.MERGED).count()
    assert active > 0
    assert f"Members      {active:,} in the database ({merged:,} more were merged" in banner
    assert not PendingEvent.objects.exists()  # processed before the banner, as the worker would


@pytest.mark.django_db
def test_without_process_the_banner_leaves_the_members_to_the_worker(tmp_path):
    banner = _run_demo(tmp_path)

    assert "Members      0 in the database so far; more as the worker processes the events" in banner
    assert "the worker (started by `make run`) processes them" in banner


@pytest.mark.django_db
def test_events_keep_channel_store_and_sale_time(tmp_path):
    _run_demo(tmp_path)

    pos_events = Event.objects.filter(source__name="Demo POS S002 Shanghai Xuhui")
    assert pos_events.exists()
    assert set(pos_events.values_list("channel", "store_code").distinct()) == {("pos", "S002")}
    assert Event.objects.filter(channel="mini_program").exists()
    for event in Event.objects.filter(type="track", event="Order Completed"):
        assert event.timestamp == event.original_timestamp


@pytest.mark.django_db
def test_the_banner_hands_out_working_credentials(tmp_path, api_client):
    first_key, first_token = _credentials(_run_demo(tmp_path))
    banner = _run_demo(tmp_path)
    write_key, token = _credentials(banner)

    web = source_for_write_key(write_key)
    assert web is not None
    assert web.name == DEMO_SOURCES_BY_SLUG[WEB_SOURCE_SLUG].name
    assert source_for_write_key(first_key) is None  # rotated

    active = ApiToken.objects.get(key_hash=credential_hash(token), revoked_at__isnull=True)
    assert active.user.username == "demo-admin"
    assert Role.ADMIN in user_roles(active.user)
    assert ApiToken.objects.get(key_hash=credential_hash(first_token)).revoked_at is not None

    passwords = dict(re.findall(r"^ +(demo-\S+) +password (\S+)", banner, re.MULTILINE))
    assert set(passwords) == {"demo-agent", "demo-manager", "demo-marketing", "demo-analyst", "demo-admin"}
    assert active.user.check_password(passwords["demo-admin"])
    assert active.user.is_staff
    for username, role in [("demo-agent", Role.CRM_AGENT), ("demo-manager", Role.CRM_MANAGER),
                           ("demo-marketing", Role.MARKETING), ("demo-analyst", Role.ANALYST)]:  # fmt: skip
        user = get_user_model().objects.get(username=username)
        assert user.check_password(passwords[username])
        assert user_roles(user) == {role}
        assert not user.is_superuser

    # The two copy-paste examples work as printed.
    listed = api_client.get("/api/v1/sources/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert listed.status_code == 200, listed.json()
    order = re.search(r"-d '(\{.*\})'", banner).group(1)
    tracked = api_client.generic(
        "POST", "/v1/track", order, content_type="application/json", HTTP_AUTHORIZATION=basic_auth(write_key)
    )
    assert tracked.status_code == 200, tracked.json()
    assert Event.objects.filter(
        source=web, event="Order Completed", properties__order_id="W-CURL-0001"
    ).exists()


@pytest.mark.django_db
def test_the_banner_is_saved_under_run_by_default(tmp_path, settings):
    settings.BASE_DIR = tmp_path
    out = StringIO()

    call_command("demo", members=3, seed=11, stdout=out, stderr=StringIO())

    saved = tmp_path / ".run" / "welcome.txt"
    assert saved.read_text() == out.getvalue()
    assert "Saved to     .run/welcome.txt" in out.getvalue()


def test_the_welcome_banner_written_to_a_device_leaves_its_mode_alone():
    """``--welcome-file /dev/null`` (the tests' way of discarding it) must not make the device
    private: run as root, that locked PostgreSQL and every other user out of /dev/null."""
    device = Path(os.devnull)
    before = stat.S_IMODE(device.stat().st_mode)
    try:
        _write_private(device, "banner")
        assert stat.S_IMODE(device.stat().st_mode) == before
    finally:
        if os.geteuid() == 0:  # put the device back if the command did change it
            device.chmod(before)
