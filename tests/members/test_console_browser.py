"""The console in a real browser: Playwright drives Debian's Chromium (headless) through what an
agent does at the service desk: log in, search by phone, read the member's page."""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from cdp.roles import Role
from cdp.services import staff_user_ensure

CHROMIUM = Path(os.environ.get("CDP_CHROMIUM", "/usr/bin/chromium"))
# No sandbox as root; no background traffic to Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "desk-Password-1"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = (
            f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does it)"
        )
        if os.environ.get("CDP_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API runs an event loop in this thread; the ORM calls made around it are
    # plain synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_an_agent_logs_in_searches_by_phone_and_reads_the_member_page(live_server, browser, zhang, tmp_path):
    agent = staff_user_ensure(username="li.na", role=Role.CRM_AGENT)
    agent.set_password(PASSWORD)
    agent.save()
    page = browser.new_page()

    page.goto(f"{live_server.url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login/"))
    page.get_by_label("Username").fill("li.na")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.get_by_role("searchbox", name="Search members").fill("138 0013 8000")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(rf"/console/members/{zhang['member']}/$"))
    expect(page.get_by_test_id("member-name")).to_have_text("Zhang Wei")
    expect(page.get_by_test_id("identifiers")).to_contain_text("138****8000")
    expect(page.get_by_test_id("identifiers")).to_contain_text("z***@example.com")
    expect(page.get_by_test_id("figures")).to_contain_text("320.00 CNY")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("Order Refunded")
    expect(timeline).to_contain_text("Shanghai Nanjing Rd")
    expect(timeline.locator(".badge.app").first).to_have_text("App")
    expect(page.get_by_test_id("spend-chart")).to_be_visible()
    expect(page.get_by_text(f"#{zhang['absorbed']} merged into #{zhang['member']}")).to_be_visible()
    assert "13800138000" not in page.content()
    page.screenshot(path=tmp_path / "member.png", full_page=True)

    page.get_by_role("link", name="App", exact=True).click()
    expect(page).to_have_url(re.compile(r"channel=app"))
    expect(timeline.locator(".badge.app")).to_have_count(3)
    expect(timeline.locator(".badge.pos")).to_have_count(0)
    page.close()
