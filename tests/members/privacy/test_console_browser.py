"""The access export in a real browser: the privacy officer opens a member's page and downloads
everything held about the person as a JSON file (audited); an agent sees no such button."""

import json
import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from cdp.models import AuditEntry
from cdp.roles import Role
from members.privacy.models import PrivacyRequest
from tests.members.test_console_browser import Console, Traffic, staff
from tests.members.test_console_browser import browser as browser
from tests.members.test_console_browser import screenshots as screenshots

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_privacy_officer_downloads_everything_held_about_a_member(
    live_server, browser, zhang, screenshots
):
    staff("officer.wu", Role.PRIVACY_OFFICER)
    staff("li.na", Role.CRM_AGENT)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "privacy-officer")
    page = console.log_in("officer.wu")
    console.open(f"/console/members/{zhang['member']}/")

    button = page.get_by_role("link", name="Download everything held (access request, JSON)")
    expect(button).to_be_visible()
    expect(page.get_by_test_id("identifiers")).to_contain_text(
        "+8613800138000"
    )  # the officer checks who asks
    console.shot("01-member-with-export")
    with page.expect_download() as started:
        button.click()
    download = started.value
    assert re.fullmatch(rf"member-{zhang['member']}-\d{{8}}T\d{{6}}Z\.json", download.suggested_filename)
    export = json.loads(download.path().read_text(encoding="utf-8"))
    assert export["member_id"] == zhang["member"]
    assert export["profile"]["traits"]["name"]["value"] == "Zhang Wei"
    assert {o["order_id"] for o in export["orders"]} == {"POS-1", "APP-9"}
    assert len(export["events"]) == 6
    console.close()

    entry = AuditEntry.objects.get(action="export_member")
    assert (entry.member_ids, entry.channel, entry.user.username) == (
        [zhang["member"]],
        "console",
        "officer.wu",
    )
    assert PrivacyRequest.objects.get(kind="access").requested_by.username == "officer.wu"

    agent = Console(browser, live_server.url, traffic, screenshots, "agent-no-export")
    agent.log_in("li.na")
    agent.open(f"/console/members/{zhang['member']}/")
    expect(agent.page.get_by_test_id("export-member")).to_have_count(0)
    agent.open(f"/console/members/{zhang['member']}/export/", status=403)
    agent.close()
    traffic.assert_clean()
