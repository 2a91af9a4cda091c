"""The insights board in a real browser (Debian's Chromium through Playwright), over the demo's
data as ``make run`` leaves it: an analyst lands on the board, sees every KPI tile with its
change against the previous period and its target, the sales-by-channel chart and the target
trends drawn by Chart.js from the app's own static files (nothing from another host), then
switches the period. Screenshots are saved for a reviewer (``test-output/screenshots/``)."""

import os
import re
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from cdp.roles import Role
from members.insights import kpis
from tests.members.test_console_browser import Console, Traffic, browser, screenshots, staff  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def chart_values(page, canvas_id: str) -> dict:
    """What Chart.js drew on a canvas: its labels and datasets (None: no chart there)."""
    page.wait_for_load_state("load")  # the scripts at the end of the page have run
    return page.evaluate(
        """id => { const c = Chart.getChart(document.getElementById(id));
                   return c ? {labels: c.data.labels, datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))} : null; }""",
        canvas_id,
    )


def test_an_analyst_reads_the_board_over_the_demo(live_server, browser, screenshots):  # noqa: F811
    call_command("demo", members=60, seed=7, process=True, welcome_file=os.devnull, stdout=StringIO())
    staff("analyst", Role.ANALYST)
    staff("marketing", Role.MARKETING)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "analyst")
    page = console.log_in("analyst")

    expect(page).to_have_url(re.compile(r"/console/insights/$"))  # the analyst's landing page
    tiles = page.locator(".tile")
    expect(tiles).to_have_count(len(kpis.KPIS))
    sales = page.locator('.tile[data-kpi="sales"]')
    expect(sales.locator(".value")).not_to_have_text("—")
    expect(sales.locator(".change")).to_contain_text("vs")
    expect(page.locator('.tile[data-kpi="unification_rate"] .target')).to_contain_text("target 80.0%")
    expect(page.locator('.tile[data-kpi="aov_omni_uplift"] .target')).to_contain_text("target +20.0%")
    drawn = chart_values(page, "sales-chart")
    assert drawn is not None
    assert len(drawn["labels"]) == 13  # thirteen weeks
    assert {d["label"] for d in drawn["datasets"]} >= {"Stores", "App", "Mini-program", "Web shop"}
    assert sum(v or 0 for d in drawn["datasets"] for v in d["data"]) > 0
    trend = chart_values(page, "trend-unification_rate")
    assert trend is not None
    assert [d["label"] for d in trend["datasets"]] == ["Member data unification", "Target 80.0%"]
    assert any(v is not None for v in trend["datasets"][0]["data"])
    expect(page.locator("table").last).to_contain_text("pos")  # coupons: issued for / redeemed in
    console.shot("01-board-week")

    page.locator("select[name=period]").select_option("month")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"period=month"))
    assert len(chart_values(page, "sales-chart")["labels"]) == 12
    console.shot("02-board-month")
    page.goto("/console/insights/?period=day&end=not-a-date")
    expect(page.get_by_role("alert")).to_contain_text("end: a date")
    console.close()

    marketing = Console(browser, live_server.url, traffic, screenshots, "marketing")
    page = marketing.log_in("marketing")
    page.get_by_role("link", name="Insights").click()
    expect(page).to_have_url(re.compile(r"/console/insights/$"))
    expect(page.locator(".tile")).to_have_count(len(kpis.KPIS))
    marketing.shot("01-board")
    marketing.close()
    traffic.assert_clean()
