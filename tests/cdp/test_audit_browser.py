"""The audit log page in a real browser (Playwright and Chromium, as the console's other browser
tests): the privacy officer logs in, opens the log from the navigation, filters it, and
downloads the selection as CSV. Screenshots under ``test-output/screenshots/``."""

import csv
import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect
from rest_framework.test import APIClient

from cdp.models import AuditEntry
from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from tests.members.test_console_browser import Console, Traffic, browser, screenshots, staff

__all__ = ["browser", "screenshots"]  # fixtures, used by name

pytestmark = pytest.mark.django_db(transaction=True)


def api(role: Role, username: str) -> APIClient:
    client = APIClient()
    token = token_issue(user=staff_user_ensure(username=username, role=role), name="t").secret
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_the_privacy_officer_reads_filters_and_exports_the_log(
    live_server, browser: Browser, zhang, screenshots
):
    member = zhang["member"]
    api(Role.CRM_MANAGER, "wang.manager").get(f"/api/v1/members/{member}/", REMOTE_ADDR="203.0.113.7")
    api(Role.CRM_MANAGER, "wang.manager").post(
        f"/api/v1/members/{member}/points/adjust/", {"points": 30, "reason": "late delivery"},
        format="json", HTTP_IDEMPOTENCY_KEY="k-1", REMOTE_ADDR="203.0.113.7",
    )  # fmt: skip
    api(Role.MARKETING, "chen.marketing").post(
        "/api/v1/segments/", {"key": "big", "name": "Big spenders", "kind": "dynamic",
                              "rule": {"aggregate": "spend", "op": "gte", "value": 1000}}, format="json",
    )  # fmt: skip
    staff("officer", Role.PRIVACY_OFFICER)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "privacy-officer")

    page = console.log_in("officer")
    nav = page.get_by_role("navigation", name="Console")
    expect(nav).to_have_text(re.compile(r"^\s*Members\s*Audit log\s*Alerts\s*$"))
    nav.get_by_role("link", name="Audit log").click()
    expect(page).to_have_url(re.compile(r"/console/audit/$"))
    entries = page.get_by_test_id("audit-entries")
    expect(entries).to_contain_text("Saw personal data unmasked")
    expect(entries).to_contain_text("203.0.113.7")
    expect(entries).to_contain_text("+30 points: late delivery")
    expect(entries).to_contain_text("Changed a segment, tag or earning rule")
    console.shot("01-audit-log")

    page.get_by_label("Action").select_option(label="Saw personal data unmasked")
    page.get_by_label("Member id").fill(str(member))
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"action=view_contact_details.*member={member}"))
    expect(entries.locator("tbody tr")).to_have_count(1)
    expect(entries).to_contain_text("wang.manager")
    expect(entries).to_contain_text("traits.name")  # the fields given in full
    console.shot("02-audit-filtered")

    with page.expect_download() as download:
        page.get_by_test_id("audit-export").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text(), newline="")))
    assert [row[2:5] for row in rows[1:]] == [["wang.manager", "view_contact_details", str(member)]]
    assert AuditEntry.objects.filter(action=AuditEntry.Action.EXPORT_AUDIT, actor="officer").exists()

    page.get_by_label("From").fill("last tuesday")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("alert")).to_contain_text("since: an ISO 8601 date or time")
    console.shot("03-audit-bad-filter")
    console.close()
    traffic.assert_clean()
