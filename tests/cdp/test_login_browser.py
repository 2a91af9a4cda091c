"""In a real browser: after too many wrong passwords the console's log-in page says to wait,
and the right password does not get in meanwhile."""

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from cdp.roles import Role
from tests.members.test_console_browser import Console, Traffic, browser, screenshots, staff

__all__ = ["browser", "screenshots"]  # fixtures of the console's browser test, used here

pytestmark = pytest.mark.django_db(transaction=True)


def test_too_many_attempts_are_refused_and_the_page_says_until_when(
    live_server, browser, screenshots, settings
):
    settings.RATE_LIMIT_LOGIN_ACCOUNT = "3/15min"
    staff("li.na", Role.CRM_AGENT)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "login-limit")
    page = console.page

    for _ in range(3):
        page.goto("/console/login/")
        page.get_by_label("Username").fill("li.na")
        page.get_by_label("Password").fill("guess-again")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("didn't match")).to_be_visible()
    console.shot("01-wrong-password")
    console.log_in("li.na")  # the right password (Console's), too late

    expect(page).to_have_url(re.compile(r"/console/login/"))
    expect(page.get_by_test_id("login-refused")).to_have_text(
        re.compile(r"Too many log-in attempts\. Try again in \d+ minutes?\.")
    )
    expect(page.get_by_text("didn't match")).to_have_count(0)
    console.shot("02-refused")
    console.close()
    traffic.assert_clean()
