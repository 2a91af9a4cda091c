"""The console's insights board (``insights.view_insights``: analysts, marketing, admins):
the KPI tiles with their change against the previous period and their targets, the sales by
channel over time, the target KPIs' trends against their reference lines, and coupon
redemption by issuing and redeeming channel. Charts are drawn by Chart.js, served from our
static files (``static/insights/vendor``); the figures go to the page as JSON
(``json_script``), and each chart has its table beside it."""

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from cdp.replica import replica_reads
from cdp.scopes import request_scope
from members.insights import kpis
from members.insights.selectors import coupon_cells, kpi_tiles, kpi_total, kpis_series, sales_by_channel

VIEW_INSIGHTS = "insights.view_insights"
CHANNEL_LABELS = {"pos": "Stores", "app": "App", "mini_program": "Mini-program", "web": "Web shop"}
#: How many buckets the charts show, per interval.
CHART_BUCKETS = {kpis.Period.DAY: 30, kpis.Period.WEEK: 13, kpis.Period.MONTH: 12, kpis.Period.YEAR: 5}
#: The KPIs drawn against their targets.
TARGET_TRENDS = ("unification_rate", "aov_omni_uplift", "omni_sales_share", "online_to_store")


def _chart_start(end: date, interval: kpis.Period) -> date:
    start = kpis.period_start(end, interval)
    for _ in range(CHART_BUCKETS[interval] - 1):
        start = kpis.period_start(start - timedelta(days=1), interval)
    return start


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@login_required
@permission_required(VIEW_INSIGHTS, raise_exception=True)
@replica_reads()
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request_scope(request).unrestricted:
        raise PermissionDenied("The board covers every store: open to unscoped accounts only.")
    problem = ""
    try:
        end = date.fromisoformat(request.GET["end"]) if request.GET.get("end") else timezone.localdate()
    except ValueError:
        end, problem = timezone.localdate(), "end: a date, YYYY-MM-DD"
    period = request.GET.get("period", "week")
    if period not in kpis.Period.__members__.values():
        period, problem = "week", "period: day, week, month or year"
    period = kpis.Period(period)
    interval = kpis.Period.MONTH if period == kpis.Period.YEAR else period
    start = _chart_start(end, interval)
    tiles = kpi_tiles(end=end, period=period)
    sales = sales_by_channel(start=start, end=end, interval=interval)
    buckets = kpis.buckets(start, end, interval)
    labels = [_label(first, interval) for first, _ in buckets]
    channels = [c for c in CHANNEL_LABELS if c in sales] + sorted(set(sales) - set(CHANNEL_LABELS))
    chart_sales: dict[str, Any] = {
        "labels": labels,
        "datasets": [
            {"key": c, "label": CHANNEL_LABELS.get(c, c), "data": [_number(p.value) for p in sales[c]]}
            for c in channels
        ],
    }
    trends = []
    series = kpis_series(kpi_list=[kpis.KPI_BY_KEY[key] for key in TARGET_TRENDS], start=start, end=end,
                         interval=interval)  # fmt: skip
    for key in TARGET_TRENDS:
        kpi = kpis.KPI_BY_KEY[key]
        trends.append({"key": key, "label": kpi.label, "target": kpi.target, "percent": kpi.percent,
                       "labels": labels, "data": [_number(p.value) for p in series[key]]})  # fmt: skip
    coupons = _coupon_matrix(start, end)
    return render(request, "insights/dashboard.html", {
        "tiles": [_tile(t) for t in tiles], "period": period.value, "end": end, "problem": problem,
        "current": tiles[0].period, "previous": tiles[0].previous_period,
        "periods": [p.value for p in kpis.Period], "interval": interval.value,
        "chart_sales": chart_sales, "sales_table": _table(labels, chart_sales["datasets"]),
        "trends": trends, "coupons": coupons, "chart_start": start,
    })  # fmt: skip


def _label(first: date, interval: kpis.Period) -> str:
    if interval == kpis.Period.MONTH:
        return first.strftime("%b %Y")
    if interval == kpis.Period.YEAR:
        return str(first.year)
    return first.strftime("%d %b")


def _table(labels: list[str], datasets: list[dict[str, Any]]) -> list[list[Any]]:
    return [[label, *(d["data"][i] for d in datasets)] for i, label in enumerate(labels)]


def _tile(tile: Any) -> dict[str, Any]:
    """A tile's figures formatted and its classes chosen here, not in the template: the page
    has 28 tiles, and the template's loop over them was most of its rendering (profiled)."""
    kpi = tile.kpi
    change = None if tile.change is None else float(tile.change * 100)
    met = None if kpi.target is None or tile.value is None else tile.value >= Decimal(str(kpi.target))
    return {
        "key": kpi.key, "label": kpi.label, "doc": kpi.doc,
        "value": _format(kpi, tile.value), "previous": _format(kpi, tile.previous),
        "change": change, "change_text": None if change is None else f"{change:.1f}",
        "direction": "up" if change is not None and change >= 0 else "down",
        "arrow": "▲" if change is not None and change >= 0 else "▼",
        "target": None if kpi.target is None else _format(kpi, Decimal(str(kpi.target))),
        "met": met, "target_class": {True: "met", False: "missed", None: ""}[met],
        "target_note": {True: " · met", False: " · not yet", None: ""}[met],
    }  # fmt: skip


def _format(kpi: kpis.Kpi, value: Decimal | None) -> str:
    if value is None:
        return "—"
    if kpi.percent:
        return f"{value * 100:+.1f}%" if kpi.key == "aov_omni_uplift" else f"{value * 100:.1f}%"
    if kpi.money:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def _coupon_matrix(start: date, end: date) -> dict[str, Any]:
    """Redemptions by issuing channel (rows) x redeeming channel (columns) over the charts' range."""
    cells = coupon_cells(start=start, end=end)
    issuing = sorted({i for i, _ in cells})
    redeeming = sorted({r for _, r in cells})
    kpi = kpis.KPI_BY_KEY["coupon_redemption_rate"]
    return {
        "issuing": issuing, "redeeming": redeeming, "rate": _format(kpi, kpi_total(kpi=kpi, start=start, end=end)),
        "cells": [[i, *(cells.get((i, r), 0) for r in redeeming)] for i in issuing],
    }  # fmt: skip


urlpatterns = [path("insights/", dashboard, name="insights")]
