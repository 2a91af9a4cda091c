"""The console's funnel, attribution (with spend and channel ROI) and cohort pages.

Server-rendered over the same services as the API (``members.insights.funnel_services``), with
the same permissions, open to unscoped staff only (the answers cover every store). Charts are
drawn by Chart.js served from the app itself (``static/insights/vendor``) from the figures the
page embeds as JSON; each chart writes its values on the bars and has a table of the same
figures beside it.
"""

import json
from datetime import date
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_POST

from cdp.forms import JSONTextField
from cdp.permissions import request_staff
from cdp.replica import replica_reads
from cdp.scopes import request_scope
from members.insights.api_funnels import (
    ADD_FUNNELS,
    ADD_SEGMENTS,
    ADD_SPEND,
    CHANGE_FUNNELS,
    DELETE_FUNNELS,
    DELETE_SPEND,
    VIEW_FUNNELS,
    VIEW_SPEND,
    funnel_rows_json,
)
from members.insights.attribution import DIMENSIONS, MODELS, NO_TOUCH, AttributionInvalid, attribution_parse
from members.insights.cohorts import BASES, PERIODS, CohortsInvalid, cohorts_parse
from members.insights.funnel_services import (
    DateRange,
    InsightRefused,
    attribution_results,
    cohorts_results,
    date_range_parse,
    funnel_results,
    funnel_save,
    funnel_spec,
    funnel_step_segment,
    roi_results,
    spend_add,
    spend_upload,
)
from members.insights.funnels import BREAKDOWNS, FunnelInvalid
from members.insights.models import CampaignSpend, Funnel
from members.insights.spend import CHANNELS, SpendInvalid, spend_line_check
from members.segments.definitions.writes import DefinitionRefused

MODEL_LABELS = {"first": "First touch", "last": "Last touch", "linear": "Linear", "time_decay": "Time decay",
                "position": "Position (40/20/40)"}  # fmt: skip


def _unscoped(request: HttpRequest) -> None:
    if not request_scope(request).unrestricted:
        raise PermissionDenied("Insights cover every store: open to unscoped accounts only.")


#: A page's range when none is asked for: two months, long enough for a campaign and its buyers.
DEFAULT_DAYS = 60


def _dates(request: HttpRequest) -> tuple[DateRange, list[str]]:
    """The page's date range, or the default one and the reasons the given one was refused."""
    try:
        return date_range_parse(
            request.GET.get("start"), request.GET.get("end"), default_days=DEFAULT_DAYS
        ), []
    except InsightRefused as error:
        problems = [f"{field}: {reason}" for field, reason in error.errors]
        return date_range_parse(None, None, default_days=DEFAULT_DAYS), problems


def _int(request: HttpRequest, name: str, default: int) -> object:
    raw = request.GET.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        return raw


# --- funnels ------------------------------------------------------------------------------------


class FunnelForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(max_length=500, required=False)
    steps = JSONTextField(rows=10, help_text='A list of steps: {"event": "Product Viewed", "where": {"channel": "app"}} '
                                "(where as in docs/rules.md).")  # fmt: skip
    window_hours = forms.IntegerField(
        min_value=1, max_value=90 * 24, initial=168, help_text="Conversion window, 1 to 2160 hours (90 days).",
        # Room for four digits and the browser's spin buttons (its default fits about two).
        widget=forms.NumberInput(attrs={"style": "width: 10rem"}),
    )  # fmt: skip
    breakdown = forms.ChoiceField(choices=[(b, b or "(none)") for b in BREAKDOWNS], required=False)
    segments = forms.CharField(required=False, help_text="Segment keys, comma separated (segment breakdown).")

    def save(self, request: HttpRequest, funnel: Funnel | None) -> Funnel | None:
        data = self.cleaned_data
        keys = [k.strip() for k in data["segments"].split(",") if k.strip()]
        try:
            return funnel_save(
                funnel=funnel, name=data["name"], description=data["description"], steps=data["steps"],
                window_hours=data["window_hours"], breakdown=data["breakdown"] or "", segments=keys,
                by=request_staff(request),
            )  # fmt: skip
        except (FunnelInvalid, InsightRefused) as error:
            for field, reason in error.errors:
                self.add_error(None, f"{field}: {reason}")
            return None


@login_required
@permission_required(VIEW_FUNNELS, raise_exception=True)
def funnels(request: HttpRequest) -> HttpResponse:
    _unscoped(request)
    form = FunnelForm(request.POST or None)
    if request.method == "POST":
        if not request.user.has_perm(ADD_FUNNELS):
            raise PermissionDenied
        if form.is_valid() and (funnel := form.save(request, None)) is not None:
            messages.success(request, f"Funnel {funnel.name} saved.")
            return redirect("console:insights-funnel", funnel_id=funnel.pk)
    listed = [
        (f, [(step.get("event", ""), json.dumps(step["where"], ensure_ascii=False) if step.get("where") else "")
             for step in f.steps if isinstance(step, dict)])
        for f in Funnel.objects.all()
    ]  # fmt: skip
    return render(request, "insights/funnels.html", {"funnels": listed, "form": form})


class StepSegmentForm(forms.Form):
    step = forms.IntegerField(min_value=1)
    dropped = forms.BooleanField(required=False, label="Only those who went no further")
    key = forms.SlugField(max_length=64)
    name = forms.CharField(max_length=200)


@login_required
@permission_required(VIEW_FUNNELS, raise_exception=True)
@replica_reads()
def funnel(request: HttpRequest, funnel_id: int) -> HttpResponse:
    _unscoped(request)
    saved = get_object_or_404(Funnel, pk=funnel_id)
    dates, problems = _dates(request)
    spec = funnel_spec(saved)
    rows = funnel_rows_json(spec, funnel_results(spec=spec, dates=dates))
    groups = sorted({row["group"] for row in rows})
    for row in rows:
        row["median_text"] = duration_text(row["median_seconds_to_next"])
    chart = {"valueTitle": "Members", "categoryTitle": "Step", "kind": "count", "data": {
        "labels": [f"{k}. {step.name}" for k, step in enumerate(spec.steps, 1)],
        "datasets": [
            {"label": (group or "(none)") if spec.breakdown else "Members", "data": [
                next((r["entered"] for r in rows if r["step"] == k and r["group"] == group), 0)
                for k in range(1, len(spec.steps) + 1)
            ]}
            for group in groups or [""]
        ],
    }}  # fmt: skip
    segment_form = StepSegmentForm(initial={"step": len(spec.steps)})
    edit_form = FunnelForm(initial={
        "name": saved.name, "description": saved.description, "steps": saved.steps,
        "window_hours": saved.window_hours, "breakdown": saved.breakdown, "segments": ", ".join(saved.segments),
    })  # fmt: skip
    return render(request, "insights/funnel.html", {
        "funnel": saved, "spec": spec, "rows": rows, "chart": chart, "dates": dates, "problems": problems,
        "segment_form": segment_form, "edit_form": edit_form, "steps": list(enumerate(spec.steps, 1)),
    })  # fmt: skip


def duration_text(seconds: float | None) -> str:
    """A median time as people say it: 45 s, 12 min, 5.5 h, 3.2 days."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@login_required
@permission_required((VIEW_FUNNELS, CHANGE_FUNNELS), raise_exception=True)
@require_POST
def funnel_edit(request: HttpRequest, funnel_id: int) -> HttpResponse:
    _unscoped(request)
    saved = get_object_or_404(Funnel, pk=funnel_id)
    form = FunnelForm(request.POST)
    if form.is_valid() and form.save(request, saved) is not None:
        messages.success(request, f"Funnel {saved.name} saved.")
    else:
        messages.error(
            request, "Not saved: " + "; ".join(str(e) for errors in form.errors.values() for e in errors)
        )
    return redirect("console:insights-funnel", funnel_id=saved.pk)


@login_required
@permission_required((VIEW_FUNNELS, DELETE_FUNNELS), raise_exception=True)
@require_POST
def funnel_delete(request: HttpRequest, funnel_id: int) -> HttpResponse:
    _unscoped(request)
    saved = get_object_or_404(Funnel, pk=funnel_id)
    saved.delete()
    messages.success(request, f"Funnel {saved.name} deleted.")
    return redirect("console:insights-funnels")


@login_required
@permission_required((VIEW_FUNNELS, ADD_SEGMENTS), raise_exception=True)
@require_POST
def funnel_segment(request: HttpRequest, funnel_id: int) -> HttpResponse:
    """A static segment of the members at a step, over the page's date range."""
    _unscoped(request)
    saved = get_object_or_404(Funnel, pk=funnel_id)
    form = StepSegmentForm(request.POST)
    back = f"?start={request.POST.get('start', '')}&end={request.POST.get('end', '')}"
    if not form.is_valid():
        messages.error(
            request, "No segment: " + "; ".join(str(e) for errors in form.errors.values() for e in errors)
        )
        return redirect(f"/console/insights/funnels/{saved.pk}/{back}")
    try:
        dates = date_range_parse(request.POST.get("start"), request.POST.get("end"))
        segment = funnel_step_segment(
            spec=funnel_spec(saved), dates=dates, step=form.cleaned_data["step"],
            dropped=form.cleaned_data["dropped"], key=form.cleaned_data["key"], name=form.cleaned_data["name"],
            by=request_staff(request), channel="console",
        )  # fmt: skip
    except (InsightRefused, DefinitionRefused) as error:
        reasons = "; ".join(f"{f}: {r}" for f, r in error.errors) if error.errors else str(error)
        messages.error(request, f"No segment: {reasons}")
        return redirect(f"/console/insights/funnels/{saved.pk}/{back}")
    messages.success(request, f"Static segment {segment.key} created with {segment.size} members.")
    return redirect("console:segment", key=segment.key)


# --- attribution, ROI and spend -----------------------------------------------------------------


class SpendForm(forms.Form):
    channel = forms.ChoiceField(choices=[(c, c) for c in CHANNELS])
    campaign = forms.CharField(max_length=200, required=False)
    period_start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    period_end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    amount = forms.DecimalField(max_digits=14, decimal_places=2, min_value=0)
    currency = forms.CharField(max_length=3, initial=settings.CDP_CURRENCY)


class SpendUploadForm(forms.Form):
    file = forms.FileField(
        help_text="CSV, UTF-8, header: channel,campaign,period_start,period_end,amount,currency"
    )


@login_required
@permission_required(VIEW_SPEND, raise_exception=True)
@replica_reads()
def attribution(request: HttpRequest) -> HttpResponse:
    _unscoped(request)
    dates, problems = _dates(request)
    dimension = request.GET.get("by", "channel")
    try:
        spec = attribution_parse(lookback_days=_int(request, "lookback_days", 30),
                                 half_life_hours=_int(request, "half_life_hours", 168), dimension=dimension)  # fmt: skip
    except AttributionInvalid as error:
        problems += [f"{field}: {reason}" for field, reason in error.errors]
        spec = attribution_parse(lookback_days=30, half_life_hours=168, dimension="channel")
    credits = attribution_results(spec=spec, dates=dates)
    # The chart leaves out orders without a touch (told in a line under it): their bar would
    # dwarf every campaign's, and every model gives them the same.
    touched = [c for c in credits if c.group != NO_TOUCH]
    untouched = next((c.value["last"] for c in credits if c.group == NO_TOUCH), None)
    chart = {"valueTitle": f"Credited revenue ({settings.CDP_CURRENCY})", "categoryTitle": spec.dimension.capitalize(),
             "kind": "money", "data": {
        "labels": [c.group or "(none)" for c in touched],
        "datasets": [{"label": MODEL_LABELS[m], "data": [float(c.value[m]) for c in touched]} for m in MODELS],
    }}  # fmt: skip
    roi = {dim: roi_results(spec=spec, dates=dates, dimension=dim) for dim in ("channel", "campaign")}
    roas_chart = {"valueTitle": "ROAS (revenue ÷ spend)", "categoryTitle": "Channel", "kind": "ratio", "data": {
        "labels": [r.group for r in roi["channel"] if r.spend],
        "datasets": [{"label": MODEL_LABELS[m], "data": [float(r.roas[m] or 0) for r in roi["channel"] if r.spend]}
                     for m in MODELS],
    }}  # fmt: skip
    credit_rows = [{"group": c.group, "values": [c.value[m] for m in MODELS]} for c in credits]
    roi_rows = {
        dim: [{"group": r.group, "spend": r.spend, "cells": [
            (r.revenue[m], _ratio(r.roas[m]), _percent(r.roi[m])) for m in MODELS
        ]} for r in rows]
        for dim, rows in roi.items()
    }  # fmt: skip
    return render(request, "insights/attribution.html", {
        "dates": dates, "problems": problems, "spec": spec, "credits": credit_rows, "chart": chart, "untouched": untouched,
        "roas_chart": roas_chart, "roi": roi_rows, "models": [(m, MODEL_LABELS[m]) for m in MODELS],
        "dimensions": DIMENSIONS, "currency": settings.CDP_CURRENCY, "half_life_hours": int(spec.half_life.total_seconds() // 3600),
        "spend": CampaignSpend.objects.all()[:200], "spend_form": SpendForm(), "upload_form": SpendUploadForm(),
    })  # fmt: skip


def _ratio(value: Decimal | None) -> str:
    return "—" if value is None else f"{value}\N{MULTIPLICATION SIGN}"


def _percent(value: Decimal | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


@login_required
@permission_required((VIEW_SPEND, ADD_SPEND), raise_exception=True)
@require_POST
def spend_new(request: HttpRequest) -> HttpResponse:
    _unscoped(request)
    try:
        upload = request.FILES.get("file")
        if isinstance(upload, UploadedFile):
            if upload.size and upload.size > 2 * 1024 * 1024:
                raise SpendInvalid([("file", "at most 2 MB")])
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError as error:
                raise SpendInvalid([("file", "UTF-8 text")]) from error
            created = spend_upload(text=text, by=request_staff(request))
        else:
            line = spend_line_check(request.POST, default_currency=settings.CDP_CURRENCY)
            created = spend_add(lines=[line], by=request_staff(request))
    except SpendInvalid as error:
        messages.error(request, "Spend not recorded: " + "; ".join(f"{f}: {r}" for f, r in error.errors))
    else:
        messages.success(request, f"{len(created)} spend line(s) recorded.")
    return redirect("console:insights-attribution")


@login_required
@permission_required((VIEW_SPEND, DELETE_SPEND), raise_exception=True)
@require_POST
def spend_delete(request: HttpRequest, spend_id: int) -> HttpResponse:
    _unscoped(request)
    get_object_or_404(CampaignSpend, pk=spend_id).delete()
    messages.success(request, "Spend line deleted.")
    return redirect("console:insights-attribution")


# --- cohorts ------------------------------------------------------------------------------------


def _heat(share: float | None) -> str:
    """A cell's background: from white (0%) to the accent blue (100%)."""
    if share is None:
        return ""
    light = round(97 - 52 * min(share, 1.0))
    return f"background: hsl(219 84% {light}%);" + (" color: #fff;" if light < 62 else "")


@login_required
@permission_required(VIEW_FUNNELS, raise_exception=True)
@replica_reads()
def cohorts(request: HttpRequest) -> HttpResponse:
    _unscoped(request)
    problems: list[str] = []
    try:
        spec = cohorts_parse(
            basis=request.GET.get("basis", "purchase"), period=request.GET.get("period", "month")
        )
    except CohortsInvalid as error:
        problems += [f"{field}: {reason}" for field, reason in error.errors]
        spec = cohorts_parse(basis="purchase", period="month")
    if "start" in request.GET:
        dates, more = _dates(request)
        problems += more
    else:  # six months of cohorts by default
        try:
            dates = date_range_parse(None, request.GET.get("end"), default_days=182)
        except InsightRefused:
            dates = date_range_parse(None, None, default_days=182)
    metric = "repurchased" if request.GET.get("metric") == "repurchased" else "active"
    found = cohorts_results(spec=spec, dates=dates)
    channel = request.GET.get("channel", "")
    if channel:
        found = [c for c in found if c.channel == channel]
    # All channels together unless one is picked: one row per cohort period.
    merged: dict[date, dict[str, Any]] = {}
    for c in found:
        row = merged.setdefault(c.cohort, {"cohort": c.cohort, "members": 0, "cells": {}})
        row["members"] += c.members
        for k, cell in c.cells.items():
            row["cells"][k] = row["cells"].get(k, 0) + getattr(cell, metric)
    today = timezone.localdate()
    width = max((max(r["cells"], default=0) for r in merged.values()), default=0) + 1
    table = []
    for row in sorted(merged.values(), key=lambda r: r["cohort"]):
        cells = []
        for k in range(width):
            count = row["cells"].get(k, 0)
            share = count / row["members"] if row["members"] else None
            future = _period_after(row["cohort"], k, spec.period) > today
            cells.append({"count": None if future else count, "share": None if future else share,
                          "style": "" if future else _heat(share)})  # fmt: skip
        table.append({"cohort": row["cohort"], "members": row["members"], "cells": cells})
    return render(request, "insights/cohorts.html", {
        "spec": spec, "dates": dates, "problems": problems, "table": table, "periods": range(width),
        "metric": metric, "bases": BASES, "period_names": PERIODS, "channels": CHANNELS, "channel": channel,
    })  # fmt: skip


def _period_after(cohort: date, k: int, period: str) -> date:
    if period == "week":
        return date.fromordinal(cohort.toordinal() + 7 * k)
    months = cohort.year * 12 + cohort.month - 1 + k
    return date(months // 12, months % 12 + 1, 1)


#: Added to the console's URLs (namespace ``console``) by ``config.urls``.
urlpatterns = [
    path("insights/funnels/", funnels, name="insights-funnels"),
    path("insights/funnels/<int:funnel_id>/", funnel, name="insights-funnel"),
    path("insights/funnels/<int:funnel_id>/edit/", funnel_edit, name="insights-funnel-edit"),
    path("insights/funnels/<int:funnel_id>/delete/", funnel_delete, name="insights-funnel-delete"),
    path("insights/funnels/<int:funnel_id>/segment/", funnel_segment, name="insights-funnel-segment"),
    path("insights/attribution/", attribution, name="insights-attribution"),
    path("insights/spend/", spend_new, name="insights-spend-new"),
    path("insights/spend/<int:spend_id>/delete/", spend_delete, name="insights-spend-delete"),
    path("insights/cohorts/", cohorts, name="insights-cohorts"),
]
