"""The console in a real browser: Playwright drives Debian's Chromium (headless) through what an
agent does at the service desk (log in, search by phone, read the member's page), then opens
every console page as each role would, over the demo's data.

Every page may load only from the test server: a request to any other host fails the test
(the API docs included: Swagger UI and ReDoc come from the app's static files). Each page is
saved as a screenshot under ``test-output/screenshots/`` (or ``$CDP_SCREENSHOTS``) for a
reviewer to look at; the folder is printed at the end of the run.
"""

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response, expect, sync_playwright

from cdp.roles import Role
from cdp.services import staff_user_ensure
from identity.models import Identifier
from members.models import Member, MemberAggregate, MemberTrait
from members.segments.models import Segment, Tag
from tests.factories.sealed import opened
from tests.members.conftest import SCREENSHOTS_SAVED

CHROMIUM = Path(os.environ.get("CDP_CHROMIUM", "/usr/bin/chromium"))
# No sandbox as root; no background traffic to Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "desk-Password-1"
SCREENSHOTS = Path(
    os.environ.get("CDP_SCREENSHOTS", "") or Path(settings.BASE_DIR) / "test-output" / "screenshots"
)

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


@dataclass
class Traffic:
    """What the pages asked for: anything off the test server is refused and remembered, as
    is any of the server's own files that failed to load and any script error."""

    host: str
    off_host: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def watch(self, context: BrowserContext) -> None:
        context.route("**/*", self._route)
        context.on("response", self._response)
        context.on(
            "page", lambda page: page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        )

    def _route(self, route, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about") or parts.netloc == self.host:
            route.continue_()
        else:
            self.off_host.append(request.url)
            route.abort()

    def _response(self, response: Response) -> None:
        # Pages may answer 403 or 404 on purpose; what they load must not fail.
        if response.status >= 400 and response.request.resource_type != "document":
            self.failed.append(f"{response.status} {response.url}")

    def assert_clean(self) -> None:
        assert self.off_host == [], "requests to other hosts"
        assert self.failed == [], "the server's own files failed to load"
        assert self.script_errors == [], "script errors"


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    request.config.stash[SCREENSHOTS_SAVED] = str(SCREENSHOTS.resolve())  # printed in the summary
    return SCREENSHOTS


class Console:
    """A browser session of one staff user, saving each page it shows as a screenshot."""

    def __init__(self, browser: Browser, base_url: str, traffic: Traffic, folder: Path, who: str) -> None:
        self.context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=base_url)
        traffic.watch(self.context)
        self.page: Page = self.context.new_page()
        self.folder, self.who = folder, who

    def log_in(self, username: str) -> Page:
        self.page.goto("/console/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_load_state()
        return self.page

    def open(self, path: str, *, status: int = 200) -> Page:
        response = self.page.goto(path)
        assert response is not None
        assert response.status == status, f"{path}: {response.status}"
        return self.page

    def shot(self, name: str, *, full_page: bool = True) -> None:
        self.page.wait_for_load_state("networkidle")
        self.page.screenshot(path=self.folder / f"{self.who}-{name}.png", full_page=full_page)

    def close(self) -> None:
        self.context.close()


def staff(username: str, role: Role) -> None:
    user = staff_user_ensure(username=username, role=role)
    user.set_password(PASSWORD)
    user.save()


def test_an_agent_logs_in_searches_by_phone_and_reads_the_member_page(
    live_server, browser, zhang, screenshots
):
    staff("li.na", Role.CRM_AGENT)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "agent-desk")
    page = console.page

    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/login/"))
    console.shot("01-login")
    console.log_in("li.na")

    page.get_by_role("searchbox", name="Search members").fill("138 0013 8000")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(rf"/console/members/{zhang['member']}/$"))
    expect(page.get_by_test_id("member-name")).to_have_text("Z***")  # a name is personal too
    expect(page.get_by_test_id("identifiers")).to_contain_text("138****8000")
    expect(page.get_by_test_id("identifiers")).to_contain_text("z***@example.com")
    expect(page.get_by_test_id("identifiers")).to_contain_text("Member card")
    expect(page.get_by_test_id("figures")).to_contain_text("320.00 CNY")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("Order Refunded")
    expect(timeline).to_contain_text("Shanghai Nanjing Rd")
    expect(timeline).to_contain_text("refund of order POS-1: 100.00 CNY")
    expect(timeline.locator(".badge.app").first).to_have_text("App")
    expect(page.get_by_test_id("spend-chart")).to_be_visible()
    expect(page.get_by_test_id("spend-chart").locator("g[data-month]")).to_have_count(12)
    expect(page.get_by_text(f"#{zhang['absorbed']} merged into #{zhang['member']}")).to_be_visible()
    assert "13800138000" not in page.content()
    assert "None" not in page.get_by_test_id("timeline").inner_text()
    console.shot("02-member")

    page.get_by_role("link", name="App", exact=True).click()
    expect(page).to_have_url(re.compile(r"channel=app"))
    expect(timeline.locator(".badge.app")).to_have_count(3)
    expect(timeline.locator(".badge.pos")).to_have_count(0)
    console.shot("03-member-app-channel")
    console.close()
    traffic.assert_clean()


def test_every_console_page_for_every_role_loads_only_from_the_server(live_server, browser, screenshots):
    """The demo's data, as a new user sees it after ``make run``: each role's landing page and
    navigation, every page it may open, the refusal of one it may not, and the API docs."""
    call_command("demo", members=40, seed=7, process=True, welcome_file=os.devnull, stdout=StringIO())
    for username, role in [("agent", Role.CRM_AGENT), ("manager", Role.CRM_MANAGER),
                           ("marketing", Role.MARKETING), ("admin", Role.ADMIN), ("till", Role.CHECKOUT)]:  # fmt: skip
        staff(username, role)
    busiest = MemberAggregate.objects.filter(member__status=Member.Status.ACTIVE).order_by(
        "-orders", "member_id"
    )[0]
    member_id = busiest.member_id
    # An identifier as long as real ones get (a unionid with its app prefix): it must wrap.
    Identifier.objects.create(
        type="wechat_unionid", value="oWx9" + "Zq3Kf8Lm2Np5Rt7Vw1Yb4" * 4, member_id=member_id
    )
    traffic = Traffic(urlsplit(live_server.url).netloc)
    built_in = Segment.objects.filter(built_in=True).order_by("key").first()
    computed = Tag.objects.filter(kind=Tag.Kind.COMPUTED).order_by("key").first()
    assert built_in is not None
    assert computed is not None

    # A CRM agent: lands on the member search; no segments in the navigation.
    agent = Console(browser, live_server.url, traffic, screenshots, "agent")
    page = agent.log_in("agent")
    expect(page).to_have_url(re.compile(r"/console/$"))
    expect(page.get_by_role("navigation", name="Console")).to_have_text(re.compile(r"^\s*Members\s*Tags\s*$"))
    agent.shot("01-search")
    surname = Counter(
        str(opened("name", name))[:1]
        for name in MemberTrait.objects.filter(key="name").values_list("value", flat=True)
    ).most_common(1)[0][0]
    agent.open(f"/console/?q={surname}")  # the commonest surname of the demo: several members
    expect(page.locator("main table tbody tr")).not_to_have_count(0)
    agent.shot("02-search-results")
    agent.open(f"/console/members/{member_id}/")
    expect(page.get_by_test_id("identifiers")).to_contain_text("WeChat unionid")
    identity_card = page.locator("section[aria-labelledby=identity]").bounding_box()
    identifiers = page.get_by_test_id("identifiers").bounding_box()
    assert identifiers["x"] + identifiers["width"] <= identity_card["x"] + identity_card["width"] + 1
    expect(page.get_by_test_id("spend-chart")).to_be_visible()
    expect(page.locator("ul.legend")).to_contain_text("Store")
    expect(page.get_by_test_id("loyalty").locator("td.number").first).to_be_visible()  # a running balance
    agent.shot("03-member")
    agent.open(f"/console/members/{member_id}/?channel=pos")
    agent.shot("04-member-store-channel")
    agent.open("/console/tags/")
    agent.shot("05-tags")
    agent.open("/console/tags/vip/")
    agent.shot("06-tag-manual")
    agent.open("/console/segments/", status=403)
    expect(page.get_by_test_id("forbidden")).to_be_visible()
    agent.shot("07-segments-refused")
    agent.close()

    # A CRM manager: contact details in full.
    manager = Console(browser, live_server.url, traffic, screenshots, "manager")
    page = manager.log_in("manager")
    manager.open(f"/console/members/{member_id}/")
    expect(page.get_by_test_id("identifiers")).to_contain_text(re.compile(r"\+86\d{11}"))
    manager.shot("01-member")
    manager.close()

    # Marketing: lands on the segments, never on a bare 403; no member pages in the navigation.
    marketing = Console(browser, live_server.url, traffic, screenshots, "marketing")
    page = marketing.log_in("marketing")
    expect(page).to_have_url(re.compile(r"/console/segments/$"))
    expect(page.get_by_role("navigation", name="Console")).to_have_text(
        re.compile(r"^\s*Segments\s*Tags\s*Insights\s*$")
    )
    marketing.shot("01-segments")
    marketing.open(f"/console/segments/{built_in.key}/")
    marketing.shot("02-segment-built-in")
    marketing.open("/console/new-segment/")
    marketing.shot("03-segment-new")
    page.get_by_label("Key").fill("top-spenders")
    page.get_by_label("Name").fill("Top spenders")
    page.get_by_label("Rule").fill('{"aggregate": "spend", "op": "gte", "value": "nope"}')
    page.get_by_role("button", name="Save").click()
    marketing.shot("04-segment-new-rule-errors")
    page.get_by_label("Rule").fill('{"aggregate": "spend", "op": "gte", "value": 500}')
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/console/segments/top-spenders/$"))
    marketing.shot("05-segment-created")
    marketing.open("/console/segments/top-spenders/edit/")
    marketing.shot("06-segment-edit")
    Segment.objects.create(key="store-event-guests", name="Store event guests", kind=Segment.Kind.STATIC)
    marketing.open("/console/segments/store-event-guests/")
    marketing.shot("07-segment-static-upload")
    marketing.open("/console/tags/")
    marketing.shot("08-tags-with-form")
    marketing.open("/console/tags/frequent-buyer/")
    marketing.shot("09-tag-rule")
    marketing.open(f"/console/tags/{computed.key}/")
    marketing.shot("10-tag-computed")
    marketing.open(f"/console/members/{member_id}/", status=403)
    expect(page.get_by_test_id("forbidden")).to_contain_text("Segments")
    marketing.shot("11-member-refused")
    marketing.close()

    # A checkout till's account: no console pages, and told so.
    till = Console(browser, live_server.url, traffic, screenshots, "checkout")
    page = till.log_in("till")
    expect(page.get_by_test_id("forbidden")).to_contain_text("no pages in the console")
    till.shot("01-no-console-pages")
    till.close()

    # An administrator: everything, and the API docs, served by the app itself.
    admin = Console(browser, live_server.url, traffic, screenshots, "admin")
    page = admin.log_in("admin")
    expect(page.get_by_role("navigation", name="Console")).to_have_text(
        re.compile(r"^\s*Members\s*Segments\s*Tags\s*Insights\s*Audit log\s*Alerts\s*Imports\s*$")
    )
    admin.open(f"/console/members/{member_id}/")
    admin.shot("01-member")
    admin.open("/api/docs/")
    # Both API docs fetch the schema (generated per request) and render it in the browser before
    # they show anything: seconds on a busy 2-core machine, more than expect's default 5 s.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("CDP API", timeout=30_000)
    admin.shot("02-api-docs", full_page=False)  # the docs run to tens of thousands of pixels
    admin.open("/api/redoc/")
    expect(page.locator("redoc, #redoc, .redoc-wrap").first).to_be_visible()
    expect(page.get_by_text("CDP API").first).to_be_visible(timeout=30_000)
    admin.shot("03-api-redoc", full_page=False)
    admin.close()

    traffic.assert_clean()
