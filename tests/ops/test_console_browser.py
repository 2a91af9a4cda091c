"""The alerts page in a real browser (Playwright and Chromium, as the console's other browser
tests): an administrator opens Alerts from the navigation, sees what is open by level,
acknowledges the red alert, resolves another by hand, and finds both in the history with who
did what. Screenshots under ``test-output/screenshots/``."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from cdp.roles import Role
from events.models import RejectedEvent
from events.parking import event_park
from members.segments.models import Segment, SegmentWebhook
from ops.models import Alert
from ops.services import alerts_evaluate
from tests.factories import EventFactory, SourceFactory
from tests.members.test_console_browser import Console, Traffic, browser, screenshots, staff

__all__ = ["browser", "screenshots"]  # fixtures, used by name

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_administrator_acknowledges_and_resolves_alerts(live_server, browser, screenshots):
    # Real data for three levels: a parked event (red), a noisy source (yellow), a webhook off (blue).
    event_park(
        event_id=EventFactory().pk, stage="identity.services.identity_resolve_events", error=ValueError("bad")
    )
    noisy = SourceFactory(name="Mini-program (上海)")
    now = timezone.now()
    alerts_evaluate(now=now)  # (starts counting traffic)
    EventFactory.create_batch(100, source=noisy, received_at=now - timedelta(minutes=5))
    RejectedEvent.objects.bulk_create(
        RejectedEvent(
            source=noisy,
            received_at=now - timedelta(minutes=5),
            endpoint="batch",
            code="invalid",
            reason="bad",
        )
        for _ in range(20)
    )
    segment = Segment.objects.create(key="vip", name="VIP", kind=Segment.Kind.STATIC)
    SegmentWebhook.objects.create(
        segment=segment, url="https://crm.example.com/hook", secret="s", active=False,
        disabled_reason="20 failed deliveries in a row; the last: HTTP 503",
    )  # fmt: skip
    alerts_evaluate(now=now)
    assert set(Alert.objects.values_list("level", flat=True)) >= {"red", "yellow", "blue"}

    staff("oncall", Role.ADMIN)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "ops")
    page = console.log_in("oncall")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Alerts").click()
    expect(page).to_have_url(re.compile(r"/console/alerts/$"))
    current = page.get_by_test_id("alerts-open")
    red = current.locator("tr.level-red")
    expect(red).to_contain_text("Parked events or members")
    expect(red).to_contain_text("1 event parked")
    expect(current.locator("tr.level-yellow")).to_contain_text(
        "Mini-program (上海): 20 of 120 events rejected (16.7%)"
    )
    webhook_off = current.locator("tr.level-blue", has_text="A segment webhook turned off")
    expect(webhook_off).to_contain_text("HTTP 503")
    expect(current.locator("tbody tr").first).to_have_class(re.compile("level-red"))  # red first
    expect(page.get_by_test_id("alert-rules")).to_contain_text("Retention jobs behind")
    console.shot("01-alerts-open")

    red.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_contain_text("acknowledged")
    expect(current.locator("tr.level-red")).to_contain_text("by oncall")
    expect(current.locator("tr.level-red").get_by_role("button", name="Acknowledge")).to_have_count(0)
    console.shot("02-red-acknowledged")

    webhook_off.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("status")).to_contain_text("resolved")
    expect(webhook_off).to_have_count(0)
    history = page.get_by_test_id("alerts-history")
    expect(history).to_contain_text("A segment webhook turned off")
    expect(history).to_contain_text("by oncall")
    console.shot("03-blue-resolved")
    traffic.assert_clean()
    console.close()

    red_alert = Alert.objects.get(level="red")
    assert (red_alert.status, red_alert.acknowledged_by.username) == ("acknowledged", "oncall")
