"""The consent panel of the member page in a real browser (Playwright, Debian's Chromium; see
``tests/members/test_console_browser.py``): an agent reads what the customer agreed to and where,
records a withdrawal the customer asks for at the desk, and sees it in force and in the history."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from cdp.models import AuditEntry
from cdp.roles import Role
from events.models import Source
from events.pipeline import events_process_pending
from members.consent.models import ConsentStatement
from tests.factories import EventFactory
from tests.members.conftest import T0
from tests.members.test_console_browser import (  # noqa: F401 - fixtures
    Console,
    Traffic,
    browser,
    screenshots,
    staff,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_agent_reads_and_records_consent_on_the_member_page(live_server, browser, zhang, screenshots):  # noqa: F811
    app = Source.objects.get(name="iOS app")  # Zhang's app, where the anonymous id is theirs
    EventFactory(source=app, user_id="", anonymous_id="anon-7", type="identify", event="", timestamp=T0 + timedelta(days=4),
                 traits={"consent": {"version": "2026-08", "marketing_sms": True, "marketing_push": True,
                                     "analytics": {"state": "denied"}}},
                 context={"app": {"name": "Brand App", "version": "5.1"}})  # fmt: skip
    EventFactory(source=app, user_id="", anonymous_id="anon-7", event="Consent Updated", timestamp=T0 + timedelta(days=5),
                 properties={"purpose": "marketing_push", "state": "withdrawn", "version": "2026-08"},
                 context={"app": {"name": "Brand App", "version": "5.1"}})  # fmt: skip
    events_process_pending()
    staff("li.na", Role.CRM_AGENT)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "agent-consent")
    page = console.log_in("li.na")

    console.open(f"/console/members/{zhang['member']}/")
    panel = page.get_by_test_id("consent")
    in_force = page.get_by_test_id("consent-in-force")
    expect(in_force.locator("tr", has_text="marketing_sms")).to_contain_text("granted")
    expect(in_force.locator("tr", has_text="marketing_push")).to_contain_text("withdrawn")
    expect(in_force.locator("tr", has_text="analytics")).to_contain_text("denied")
    expect(in_force.locator("tr", has_text="marketing_email")).to_contain_text("not asked")
    expect(page.get_by_test_id("consent-history")).to_contain_text("consent trait · iOS app · Brand App 5.1")
    expect(page.get_by_test_id("consent-history").locator("tr")).to_have_count(4)
    panel.scroll_into_view_if_needed()
    console.shot("01-consent-panel")

    form = page.get_by_test_id("consent-record")
    form.get_by_label("Purpose").select_option("marketing_sms")
    form.get_by_label("State").select_option("withdrawn")
    form.get_by_label("Wording version").fill("desk-2026")
    form.get_by_label("How the person said it").fill("asked at the Nanjing Rd counter")
    form.get_by_role("button", name="Record consent").click()

    expect(page.get_by_role("status")).to_contain_text("Recorded: marketing_sms withdrawn.")
    expect(in_force.locator("tr", has_text="marketing_sms")).to_contain_text("withdrawn")
    expect(in_force.locator("tr", has_text="marketing_sms")).to_contain_text("staff li.na")
    expect(page.get_by_test_id("consent-history").locator("tr").first).to_contain_text(
        "asked at the Nanjing Rd counter"
    )
    page.get_by_test_id("consent").scroll_into_view_if_needed()
    console.shot("02-consent-recorded")
    console.close()
    traffic.assert_clean()

    statement = ConsentStatement.objects.get(origin="staff")
    assert (statement.member_id, statement.purpose, statement.state, statement.version) == (
        zhang["member"], "marketing_sms", "withdrawn", "desk-2026"
    )  # fmt: skip
    entry = AuditEntry.objects.get(action=AuditEntry.Action.RECORD_CONSENT)
    assert (entry.user.username, entry.channel, entry.member_ids) == ("li.na", "console", [zhang["member"]])


def test_a_role_without_consent_cannot_record_it(zhang, client):
    staff("mark", Role.MARKETING)
    client.login(username="mark", password="desk-Password-1")

    answer = client.post(
        f"/console/members/{zhang['member']}/consent/", {"purpose": "analytics", "state": "granted"}
    )

    assert answer.status_code == 403
    assert not ConsentStatement.objects.exists()
