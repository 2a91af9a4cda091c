"""The funnel, attribution and cohort pages in a real browser (Debian's Chromium, headless) over
the demo's data, as marketing uses them: the charts drawn by the app's own Chart.js with their
values on the bars, a funnel saved from the form, a step turned into a static segment, spend
entered, the cohort heat map. Nothing loads from another host; every page is saved as a
screenshot (``test-output/screenshots/insights-*.png``)."""

import os
import re
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from cdp.roles import Role
from members.insights.models import CampaignSpend, Funnel
from members.segments.models import Segment
from tests.members.test_console_browser import Console, Traffic, browser, screenshots, staff  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def chart_drawn(console: Console, canvas: str) -> None:
    """The canvas was drawn by Chart.js (the page's script marks it) and is not blank."""
    page = console.page
    expect(page.locator(f"canvas#{canvas}")).to_have_attribute("data-drawn", "true")
    painted = page.evaluate(
        """(id) => { const c = document.getElementById(id); const d = c.getContext('2d')
             .getImageData(0, 0, c.width, c.height).data; let n = 0;
             for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n; }""",
        canvas,
    )
    assert painted > 2000, f"{canvas}: {painted} painted pixels"


def test_marketing_reads_funnels_attribution_and_cohorts(live_server, browser, screenshots):  # noqa: F811
    call_command("demo", members=120, seed=7, process=True, welcome_file=os.devnull, stdout=StringIO())
    staff("marketing", Role.MARKETING)
    traffic = Traffic(urlsplit(live_server.url).netloc)
    console = Console(browser, live_server.url, traffic, screenshots, "insights")
    page = console.log_in("marketing")

    # Funnels, attribution and cohorts are tabs of the one Insights section (the top navigation
    # keeps few entries, so the search box keeps its room).
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Insights").click()
    tabs = page.get_by_role("navigation", name="Insights")
    expect(tabs).to_have_text(re.compile(r"^\s*KPIs\s*Funnels\s*Attribution\s*Cohorts\s*$"))
    expect(tabs.get_by_role("link", name="KPIs")).to_have_attribute("aria-current", "page")
    tabs.get_by_role("link", name="Funnels").click()
    expect(page.get_by_test_id("funnels")).to_contain_text("Viewed, then bought in any channel")
    expect(tabs.get_by_role("link", name="Funnels")).to_have_attribute("aria-current", "page")
    expect(
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Insights")
    ).to_have_attribute("aria-current", "page")
    console.shot("01-funnels")

    funnel = Funnel.objects.get(name="Viewed, then bought in any channel")
    console.open(f"/console/insights/funnels/{funnel.pk}/")
    chart_drawn(console, "funnel-chart")
    rows = page.get_by_test_id("funnel-rows")
    expect(rows).to_contain_text("Product Viewed")
    expect(rows).to_contain_text("mini_program")
    console.shot("02-funnel-by-channel")

    spring = Funnel.objects.get(name="Spring sale: coupon to purchase")
    console.open(f"/console/insights/funnels/{spring.pk}/")
    chart_drawn(console, "funnel-chart")
    console.shot("03-funnel-spring-sale")
    form = page.get_by_test_id("segment-form")
    form.get_by_label("Step").select_option("1")
    form.get_by_label("only those who went no further").check()
    form.get_by_label("Key").fill("claimed-not-bought")
    form.get_by_label("Name").fill("Claimed the spring coupon, did not buy")
    form.get_by_role("button", name="Create segment").click()
    expect(page).to_have_url(re.compile(r"/console/segments/claimed-not-bought/$"))
    segment = Segment.objects.get(key="claimed-not-bought")
    assert segment.kind == Segment.Kind.STATIC
    assert segment.size > 0
    console.shot("04-step-segment")

    console.open("/console/insights/funnels/")
    form = page.get_by_test_id("funnel-form")
    form.get_by_label("Name").fill("Cart to store")
    form.get_by_label("Steps").fill(
        '[{"event": "Product Added"}, {"event": "Order Completed", "where": {"channel": "tv"}}]'
    )
    form.get_by_role("button", name="Save funnel").click()
    expect(page.locator("ul.error")).to_contain_text("steps[1].where.channel")
    console.shot("05-funnel-form-error")
    form.get_by_label("Steps").fill(
        '[{"event": "Product Added"}, {"event": "Order Completed", "where": {"channel": "pos"}}]'
    )
    form.get_by_label("Breakdown").select_option("tier")
    form.get_by_role("button", name="Save funnel").click()
    expect(page).to_have_url(re.compile(r"/console/insights/funnels/\d+/$"))
    chart_drawn(console, "funnel-chart")
    console.shot("06-funnel-created-by-tier")

    expect(tabs.get_by_role("link", name="Funnels")).to_have_attribute("aria-current", "page")  # a saved one
    tabs.get_by_role("link", name="Attribution").click()
    chart_drawn(console, "attribution-chart")
    chart_drawn(console, "roas-chart")
    expect(page.get_by_test_id("roi-campaign")).to_contain_text("spring-sale")
    expect(page.get_by_test_id("untouched")).to_be_visible()
    console.shot("07-attribution-by-channel")
    console.open("/console/insights/attribution/?by=campaign&lookback_days=14&half_life_hours=24")
    chart_drawn(console, "attribution-chart")
    expect(page.get_by_test_id("attribution-rows")).to_contain_text("vip-week")
    console.shot("08-attribution-by-campaign")
    spend = page.get_by_test_id("spend-form")
    spend.get_by_label("Channel").select_option("web")
    spend.get_by_label("Campaign").fill("vip-week")
    spend.get_by_label("Period start").fill("2026-01-01")
    spend.get_by_label("Period end").fill("2026-01-31")
    spend.get_by_label("Amount").fill("2500")
    spend.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("1 spend line(s) recorded")
    assert CampaignSpend.objects.filter(channel="web", campaign="vip-week").exists()
    console.shot("09-spend-added")

    tabs.get_by_role("link", name="Cohorts").click()
    heat = page.get_by_test_id("cohort-heatmap")
    expect(heat.locator("tbody tr")).not_to_have_count(0)
    expect(heat).to_contain_text("100%")  # a cohort's own month: everyone was active in it
    console.shot("10-cohorts-retention")
    console.open("/console/insights/cohorts/?basis=signup&period=week&metric=repurchased")
    expect(heat.locator("tbody tr")).not_to_have_count(0)
    console.shot("11-cohorts-signup-weekly-repurchase")
    console.close()
    traffic.assert_clean()
