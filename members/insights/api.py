"""Insights API (``/api/v1/insights/kpis/...``): KPI series and the board's tiles, as JSON or
CSV. Counts and sums only — no answer names a member. Open to holders of
``insights.view_insights`` (roles ``analyst``, ``marketing``, ``admin``), unscoped: the
figures cover every store."""

import csv
import io
from datetime import date
from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.api import CsvRenderer
from cdp.errors import ApiError, FieldError
from cdp.permissions import Unscoped, permissions_required
from cdp.replica import replica_reads
from members.insights import kpis
from members.insights.selectors import BREAKDOWNS, Point, default_range, kpi_series, kpi_tiles

VIEW_INSIGHTS = "insights.view_insights"
#: The longest range one series request may ask for, in days (ten years of days).
MAX_RANGE_DAYS = 3660


def _date(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            code="invalid", message=f"Bad {name}.", errors=[FieldError(name, "a date, YYYY-MM-DD")]
        ) from None


def _choice(request: Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise ApiError(
            code="invalid", message=f"Bad {name}.",
            errors=[FieldError(name, f"one of {', '.join(c or '(empty)' for c in choices)}")],
        )  # fmt: skip
    return value


def _decimal(value: Any) -> str | None:
    return None if value is None else format(value.normalize() if hasattr(value, "normalize") else value, "f")


class _CsvOrJson(APIView):
    permission_classes = (permissions_required(VIEW_INSIGHTS), Unscoped)
    renderer_classes: tuple[type[BaseRenderer], ...] = (JSONRenderer, CsvRenderer)

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        wanted = request.query_params.get("format")
        if wanted and not force and wanted not in {"json", "csv"}:
            raise ApiError(
                code="invalid",
                message=f"Bad format {wanted!r}.",
                errors=[FieldError("format", "json or csv")],
            )
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request: Request, response: Any, *args: object, **kwargs: object) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def csv(self, name: str, header: list[str], rows: list[list[Any]]) -> HttpResponse:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
        response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.localdate():%Y%m%d}.csv"'
        return response


class KpiOutput(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named as Field.label
    kind = serializers.CharField()
    percent = serializers.BooleanField()
    money = serializers.BooleanField()
    target = serializers.FloatField(allow_null=True)
    breakdowns = serializers.ListField(child=serializers.CharField())
    definition = serializers.CharField()


def _kpi_json(kpi: kpis.Kpi) -> dict[str, Any]:
    breakdowns = [b for b in BREAKDOWNS[kpi.source] if b] if (kpi.breakdown or kpi.source != "daily") else []
    return {"key": kpi.key, "label": kpi.label, "kind": kpi.kind.value, "percent": kpi.percent, "money": kpi.money,
            "target": kpi.target, "breakdowns": breakdowns, "definition": kpi.doc}  # fmt: skip


class KpiListOutput(serializers.Serializer):
    results = KpiOutput(many=True)


class KpiListView(_CsvOrJson):
    renderer_classes = (JSONRenderer,)

    @extend_schema(operation_id="api_v1_insights_kpis_list", responses=KpiListOutput, tags=["insights"])
    def get(self, request: Request) -> Response:
        """Every KPI: its key, label, kind (flow, ratio, stock), target and definition."""
        return Response({"results": [_kpi_json(k) for k in kpis.KPIS]})


class SeriesPoint(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    key = serializers.CharField(
        help_text="The breakdown's value: a channel, a store code; empty without one."
    )
    value = serializers.CharField(allow_null=True, help_text="A decimal; null when its denominator is zero.")


class SeriesOutput(serializers.Serializer):
    kpi = KpiOutput()
    start = serializers.DateField()
    end = serializers.DateField()
    interval = serializers.CharField()
    breakdown = serializers.CharField()
    points = SeriesPoint(many=True)


_SERIES_PARAMETERS = [
    OpenApiParameter("start", OpenApiTypes.DATE, description="First day (default: 89 days before end)."),
    OpenApiParameter("end", OpenApiTypes.DATE, description="Last day (default: today)."),
    OpenApiParameter("interval", OpenApiTypes.STR, enum=[p.value for p in kpis.Period], description="Bucket (default day)."),
    OpenApiParameter("breakdown", OpenApiTypes.STR, description="channel, store (sales-like KPIs); issuing_channel, redeeming_channel (coupons); channel (points)."),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
]  # fmt: skip


class KpiSeriesView(_CsvOrJson):
    @extend_schema(
        parameters=_SERIES_PARAMETERS,
        responses={200: SeriesOutput, (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
        tags=["insights"],
    )
    @replica_reads()
    def get(self, request: Request, key: str) -> Any:
        """One KPI per day, week, month or year of a date range, optionally per channel or store."""
        kpi = kpis.KPI_BY_KEY.get(key)
        if kpi is None:
            raise ApiError(code="not_found", message=f"No KPI {key!r}.", status_code=404)
        end = _date(request, "end", timezone.localdate())
        start = _date(request, "start", default_range(end)[0])
        if start > end:
            raise ApiError(
                code="invalid",
                message="start is after end.",
                errors=[FieldError("start", "on or before end")],
            )
        if (end - start).days >= MAX_RANGE_DAYS:
            raise ApiError(
                code="invalid",
                message="Range too long.",
                errors=[FieldError("start", f"at most {MAX_RANGE_DAYS} days before end")],
            )
        interval = kpis.Period(_choice(request, "interval", tuple(p.value for p in kpis.Period), "day"))
        allowed = BREAKDOWNS[kpi.source] if (kpi.breakdown or kpi.source != "daily") else ("",)
        breakdown = _choice(request, "breakdown", allowed, "")
        points = kpi_series(kpi=kpi, start=start, end=end, interval=interval, breakdown=breakdown)
        if request.accepted_renderer.format == "csv":
            return self.csv(f"kpi-{kpi.key}", ["start", "end", breakdown or "breakdown", kpi.key],
                            [[p.start, p.end, p.key, _decimal(p.value) or ""] for p in points])  # fmt: skip
        return Response({
            "kpi": _kpi_json(kpi), "start": start, "end": end, "interval": interval.value, "breakdown": breakdown,
            "points": [_point_json(p) for p in points],
        })  # fmt: skip


def _point_json(point: Point) -> dict[str, Any]:
    return {"start": point.start, "end": point.end, "key": point.key, "value": _decimal(point.value)}


class TileOutput(serializers.Serializer):
    kpi = KpiOutput()
    value = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    change = serializers.CharField(allow_null=True, help_text="Relative change against the previous period.")


class KpiSummaryOutput(serializers.Serializer):
    period = serializers.CharField()
    current = serializers.ListField(child=serializers.DateField())
    previous = serializers.ListField(child=serializers.DateField())
    tiles = TileOutput(many=True)


class KpiSummaryView(_CsvOrJson):
    @extend_schema(
        parameters=[
            OpenApiParameter("end", OpenApiTypes.DATE, description="Last day (default: today)."),
            OpenApiParameter("period", OpenApiTypes.STR, enum=[p.value for p in kpis.Period], description="default week"),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
        ],
        responses={200: KpiSummaryOutput, (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
        tags=["insights"],
    )  # fmt: skip
    @replica_reads()
    def get(self, request: Request) -> Any:
        """Every KPI over the period to date (day, week, month, year) against the previous period
        to the same point, with the change and the target."""
        end = _date(request, "end", timezone.localdate())
        period = kpis.Period(_choice(request, "period", tuple(p.value for p in kpis.Period), "week"))
        tiles = kpi_tiles(end=end, period=period)
        current, previous = (
            (tiles[0].period, tiles[0].previous_period) if tiles else kpis.period_compare(end, period)
        )
        if request.accepted_renderer.format == "csv":
            return self.csv("kpis", ["kpi", "value", "previous", "change", "target"],
                            [[t.kpi.key, _decimal(t.value) or "", _decimal(t.previous) or "", _decimal(t.change) or "",
                              "" if t.kpi.target is None else t.kpi.target] for t in tiles])  # fmt: skip
        return Response({
            "period": period.value, "current": list(current), "previous": list(previous),
            "tiles": [{"kpi": _kpi_json(t.kpi), "value": _decimal(t.value), "previous": _decimal(t.previous),
                       "change": _decimal(t.change)} for t in tiles],
        })  # fmt: skip
