"""Where a webhook may post (``WEBHOOK_ALLOW_PRIVATE_ADDRESSES`` off, as in production): IPv6
forms carrying a refused IPv4 address, the IETF protocol block, numeric host forms and names
resolving to a refused address are refused when the webhook is made or pointed elsewhere (a 400
naming ``url``) and again at delivery (the name may resolve elsewhere by then); public
addresses, and IPv6 forms carrying a public one, pass."""

import socket
from datetime import UTC, datetime

import pytest

from cdp.roles import Role
from members.segments.models import Segment, SegmentWebhook, WebhookDelivery
from members.segments.services import segment_static_set
from members.segments.webhooks import transport
from members.segments.webhooks.addresses import address_refusal
from members.segments.webhooks.delivery import webhook_deliver
from members.segments.webhooks.services import webhook_create
from tests.factories.members import MemberFactory
from tests.members.test_api import staff_client

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)

REFUSED = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "255.255.255.255", "198.18.0.1",
    "192.0.0.1", "192.0.0.9", "192.0.0.10", "192.0.0.255",  # the whole IETF protocol block
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1", "fec0::1",
    "::127.0.0.1", "::8.8.8.8",  # IPv4-compatible (deprecated): refused whatever it carries
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:192.0.0.9",  # IPv4-mapped
    "::ffff:0:7f00:1",  # SIIT
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::c0a8:101", "64:ff9b::c000:9",  # NAT64 of refused IPv4
    "64:ff9b:1::808:808",  # local-use NAT64
    "2002:7f00:1::", "2002:a00:1::1", "2002:c0a8:101::", "2002:a9fe:a9fe::",  # 6to4 of refused IPv4
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]  # fmt: skip
ALLOWED = [
    "8.8.8.8",
    "93.184.215.14",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses_say_why(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_and_forms_carrying_one_pass(address):
    assert address_refusal(address) is None


def test_a_name_is_not_an_address():
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        address_refusal("tool.example.com")


@pytest.fixture
def dns(monkeypatch):
    """Names this test resolves (the DNS, the one boundary faked here); every other name, and
    every address, goes to the real resolver."""
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            family = {True: socket.AF_INET6, False: socket.AF_INET}
            return [(family[":" in a], socket.SOCK_STREAM, 6, "", (a, port)) for a in names[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(transport.socket, "getaddrinfo", getaddrinfo)
    return names


@pytest.fixture
def production(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False


@pytest.fixture
def vip(db):
    return Segment.objects.create(key="vip", name="VIP list", kind="static")


def subscribe(url: str):
    return staff_client(Role.MARKETING).post("/api/v1/segments/vip/webhooks/", {"url": url}, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    "http://[::127.0.0.1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://[::ffff:a00:1]/hook",
    "http://[64:ff9b::a00:1]/hook", "http://[64:ff9b::127.0.0.1]/hook", "http://[2002:c0a8:101::1]/hook",
    "http://[fe80::1%25eth0]/hook", "http://192.0.0.9/hook", "https://192.0.0.170/hook",
    "http://2130706433/hook", "http://0x7f000001/hook", "http://127.1/hook", "http://017700000001/hook",
    "http://localhost/hook", "http://cdp.localhost/hook", "http://metadata.internal/hook",
    "http://rebound.example.com/hook", "http://half-inside.example.com/hook", "http://nat64.example.com/hook",
    "http://unknown-name.invalid/hook", "http://[::1/hook",
])  # fmt: skip
def test_registration_refuses_inside_addresses_naming_the_url(vip, production, dns, url):
    dns["rebound.example.com"] = ["10.0.0.8"]
    dns["half-inside.example.com"] = ["93.184.215.14", "::ffff:127.0.0.1"]
    dns["nat64.example.com"] = ["64:ff9b::a9fe:a9fe"]  # DNS64's answer for 169.254.169.254

    answer = subscribe(url)

    assert answer.status_code == 400, answer.content
    body = answer.json()
    assert body["code"] == "invalid"
    assert [error["field"] for error in body["errors"]] == ["url"]
    assert body["errors"][0]["reason"]
    assert not SegmentWebhook.objects.exists()


@pytest.mark.django_db
def test_the_reason_names_what_the_name_resolved_to(vip, production, dns):
    dns["rebound.example.com"] = ["93.184.215.14", "64:ff9b::a00:1"]

    reason = subscribe("https://rebound.example.com/hook").json()["errors"][0]["reason"]

    assert reason == "must be a public address: rebound.example.com resolves to 64:ff9b::a00:1 carries 10.0.0.1, " \
        "not a public address (private, loopback, link-local or reserved)"  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    "https://tool.example.com/hook", "http://93.184.215.14/hook", "https://[2606:4700::1111]/hook",
    "https://[64:ff9b::808:808]/hook", "https://[::ffff:8.8.8.8]/hook",
])  # fmt: skip
def test_registration_accepts_public_receivers(vip, production, dns, url):
    dns["tool.example.com"] = ["93.184.215.14", "2606:4700::1111"]

    answer = subscribe(url)

    assert answer.status_code == 201, answer.content


@pytest.mark.django_db
def test_pointing_a_webhook_inside_is_refused_too(vip, production, dns):
    dns["tool.example.com"] = ["93.184.215.14"]
    webhook = webhook_create(segment=vip, url="https://tool.example.com/hook")

    answer = staff_client(Role.MARKETING).patch(
        f"/api/v1/segments/vip/webhooks/{webhook.pk}/",
        {"url": "http://[::ffff:169.254.169.254]/"},
        format="json",
    )

    assert answer.status_code == 400
    assert [error["field"] for error in answer.json()["errors"]] == ["url"]
    assert SegmentWebhook.objects.get().url == "https://tool.example.com/hook"


@pytest.mark.django_db
def test_a_name_that_turned_inside_after_registration_is_refused_at_delivery(vip, production, dns):
    dns["tool.example.com"] = ["93.184.215.14"]
    webhook = webhook_create(segment=vip, url="http://tool.example.com/hook", since=0)
    segment_static_set(segment=vip, member_ids=[MemberFactory().pk], now=T0)
    dns["tool.example.com"] = ["2002:7f00:1::1"]  # rebound: 6to4 of 127.0.0.1

    webhook_deliver(webhook_id=webhook.pk, now=T0)

    delivery = WebhookDelivery.objects.get()
    assert not delivery.succeeded
    assert delivery.error == "refused: tool.example.com resolves to 2002:7f00:1::1 carries 127.0.0.1, " \
        "not a public address (private, loopback, link-local or reserved)"  # fmt: skip
    assert SegmentWebhook.objects.get().cursor == 0
