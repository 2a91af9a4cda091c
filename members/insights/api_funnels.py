"""Staff API of funnels, attribution with channel ROI, spend and cohorts, mounted at
``/api/v1/insights/``. Thin views over ``members.insights.funnel_services``; every answer is
counts and sums, as JSON or (``?format=csv`` / ``Accept: text/csv``) CSV.

Permissions: reading funnels and cohorts ``insights.view_funnel``; attribution, ROI and spend
``insights.view_campaignspend``; writing them the model's add/change/delete permissions; a
funnel step's static segment also ``segments.add_segment``. These answers cover every store, so
they are open to unscoped staff only (``cdp.permissions.Unscoped``).
"""

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.api import CsvRenderer
from cdp.errors import ApiError, FieldError
from cdp.parsers import BoundedJSONParser
from cdp.permissions import Unscoped, permissions_required, request_staff
from cdp.replica import replica_reads
from members.insights.attribution import MODELS, AttributionInvalid, AttributionSpec, attribution_parse
from members.insights.cohorts import MAX_OFFSETS, CohortsInvalid, cohorts_parse
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
from members.insights.funnels import STEP_BREAKDOWNS, FunnelInvalid, FunnelRow, FunnelSpec, funnel_parse
from members.insights.models import CampaignSpend, Funnel
from members.insights.spend import SpendInvalid, spend_line_check
from members.segments.definitions.writes import DefinitionRefused

VIEW_FUNNELS = "insights.view_funnel"
ADD_FUNNELS = "insights.add_funnel"
CHANGE_FUNNELS = "insights.change_funnel"
DELETE_FUNNELS = "insights.delete_funnel"
VIEW_SPEND = "insights.view_campaignspend"
ADD_SPEND = "insights.add_campaignspend"
DELETE_SPEND = "insights.delete_campaignspend"
ADD_SEGMENTS = "segments.add_segment"
DEFAULT_WINDOW_HOURS = 7 * 24
#: The largest CSV of spend accepted in one upload.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024

_RANGE = [
    OpenApiParameter("start", OpenApiTypes.DATE, description="First day (platform time zone); default 30 days before end."),
    OpenApiParameter("end", OpenApiTypes.DATE, description="Last day, included; default today."),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
]  # fmt: skip
_ATTRIBUTION = [
    OpenApiParameter("lookback_days", OpenApiTypes.INT, description="Touches up to this many days before a conversion (default 30)."),
    OpenApiParameter("half_life_hours", OpenApiTypes.INT, description="Time decay's half-life (default 168: a week)."),
]  # fmt: skip


def _invalid(
    error: FunnelInvalid | AttributionInvalid | CohortsInvalid | SpendInvalid | InsightRefused,
) -> ApiError:
    message = str(error) if isinstance(error, InsightRefused) else "Invalid input."
    return ApiError(code="invalid", message=message, errors=[FieldError(f, r) for f, r in error.errors])


def _dates(request: Request) -> DateRange:
    try:
        return date_range_parse(request.query_params.get("start"), request.query_params.get("end"))
    except InsightRefused as error:
        raise _invalid(error) from error


def _int_param(request: Request, name: str, default: int) -> object:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        return raw  # the parser names it


def _csv(name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> HttpResponse:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


class _InsightView(APIView):
    """JSON or CSV; an unknown ``?format=`` is a 400 naming it; errors always JSON."""

    renderer_classes = (JSONRenderer, CsvRenderer)
    parser_classes: tuple[type[BaseParser], ...] = (BoundedJSONParser,)
    required: dict[str, tuple[str, ...]] = {}

    def get_permissions(self) -> list[Any]:
        wanted = self.required.get(self.request.method or "GET", ())
        return [permissions_required(*wanted)(), Unscoped()]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        wanted = request.query_params.get("format")
        if wanted and not force and wanted not in {renderer.format for renderer in self.get_renderers()}:
            raise ApiError(
                code="invalid", message=f"Bad format {wanted!r}.", errors=[FieldError("format", "json, csv")]
            )
        return super().perform_content_negotiation(request, force)

    def finalize_response(self, request: Request, response: Any, *args: object, **kwargs: object) -> Any:
        renderer = getattr(request, "accepted_renderer", None)
        if (
            isinstance(response, Response) and renderer is not None and renderer.format == "csv"
        ):  # an error: JSON
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def wants_csv(self, request: Request) -> bool:
        return request.accepted_renderer.format == "csv"


# --- funnels ------------------------------------------------------------------------------------


class StepSerializer(serializers.Serializer):
    event = serializers.CharField()
    where = serializers.DictField(required=False, help_text="The rule language's where (docs/rules.md).")


class FunnelInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    steps = serializers.JSONField(help_text="2 to 8 steps: {event, where}.")
    window_hours = serializers.JSONField(
        required=False, help_text="Conversion window, 1 to 2160 hours (168)."
    )
    breakdown = serializers.JSONField(required=False, help_text="'', channel, store, tier or segment.")
    segments = serializers.JSONField(required=False, help_text="Segment keys, for a segment breakdown.")


class FunnelOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    steps = StepSerializer(many=True)
    window_hours = serializers.IntegerField()
    breakdown = serializers.CharField()
    segments = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class FunnelRowOutput(serializers.Serializer):
    step = serializers.IntegerField()
    event = serializers.CharField()
    group = serializers.CharField(help_text="The breakdown group ('' without one).")
    entered = serializers.IntegerField(help_text="Members who reached this step.")
    converted = serializers.IntegerField(help_text="Of them, reached the next step.")
    dropped = serializers.IntegerField(help_text="Of them, went no further.")
    conversion_from_start = serializers.FloatField(allow_null=True)
    conversion_from_previous = serializers.FloatField(allow_null=True)
    median_seconds_to_next = serializers.FloatField(allow_null=True)


def funnel_rows_json(spec: FunnelSpec, rows: Sequence[FunnelRow]) -> list[dict[str, Any]]:
    """The answer with its rates: from the first step and from the previous one, within the same
    group for a member's own breakdown; against the whole step for a per-step one (a member's
    channel may change from step to step)."""
    per_step = spec.breakdown in STEP_BREAKDOWNS
    totals: dict[tuple[int, str], int] = {}
    for row in rows:
        key = (row.step, "" if per_step else row.group)
        totals[key] = (totals.get(key, 0) + row.entered) if per_step else row.entered
    out = []
    for row in rows:
        group = "" if per_step else row.group
        first = totals.get((1, group), 0)
        previous = totals.get((row.step - 1, group), 0) if row.step > 1 else None
        out.append({
            "step": row.step,
            "event": spec.steps[row.step - 1].name,
            "group": row.group,
            "entered": row.entered,
            "converted": row.converted,
            "dropped": row.entered - row.converted if row.step < len(spec.steps) else 0,
            "conversion_from_start": round(row.entered / first, 4) if first else None,
            "conversion_from_previous": round(row.entered / previous, 4) if previous else None,
            "median_seconds_to_next": row.median_seconds,
        })  # fmt: skip
    return out


FUNNEL_CSV = ("step", "event", "group", "entered", "converted", "dropped", "conversion_from_start",
              "conversion_from_previous", "median_seconds_to_next")  # fmt: skip


def _funnel_json(funnel: Funnel) -> dict[str, Any]:
    return FunnelOutput(funnel).data


def _funnel_write(request: Request, funnel: Funnel | None) -> Funnel:
    data = FunnelInput(data=request.data)
    data.is_valid(raise_exception=True)
    values = data.validated_data
    try:
        return funnel_save(
            funnel=funnel, name=values["name"], description=values["description"], steps=values["steps"],
            window_hours=values.get("window_hours", DEFAULT_WINDOW_HOURS), breakdown=values.get("breakdown", ""),
            segments=values.get("segments", []),
            by=request_staff(request),
        )  # fmt: skip
    except (FunnelInvalid, InsightRefused) as error:
        raise _invalid(error) from error


class FunnelsView(_InsightView):
    required = {"GET": (VIEW_FUNNELS,), "POST": (VIEW_FUNNELS, ADD_FUNNELS)}

    @extend_schema(responses={200: FunnelOutput(many=True)}, tags=["insights"])
    def get(self, request: Request) -> Response:
        """The saved funnels, by name."""
        return Response([_funnel_json(f) for f in Funnel.objects.all()])

    @extend_schema(request=FunnelInput, responses={201: FunnelOutput}, tags=["insights"])
    def post(self, request: Request) -> Response:
        """Save a funnel; its steps are checked as the rule language checks a ``where``, errors
        named by path (``steps[1].where.channel``)."""
        return Response(_funnel_json(_funnel_write(request, None)), status=status.HTTP_201_CREATED)


class FunnelView(_InsightView):
    required = {
        "GET": (VIEW_FUNNELS,), "PUT": (VIEW_FUNNELS, CHANGE_FUNNELS), "DELETE": (VIEW_FUNNELS, DELETE_FUNNELS),
    }  # fmt: skip

    @extend_schema(responses={200: FunnelOutput}, tags=["insights"])
    def get(self, request: Request, funnel_id: int) -> Response:
        return Response(_funnel_json(get_object_or_404(Funnel, pk=funnel_id)))

    @extend_schema(request=FunnelInput, responses={200: FunnelOutput}, tags=["insights"])
    def put(self, request: Request, funnel_id: int) -> Response:
        """Replace a saved funnel's definition."""
        return Response(_funnel_json(_funnel_write(request, get_object_or_404(Funnel, pk=funnel_id))))

    @extend_schema(responses={204: None}, tags=["insights"])
    def delete(self, request: Request, funnel_id: int) -> Response:
        get_object_or_404(Funnel, pk=funnel_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


def _funnel_answer(view: _InsightView, request: Request, spec: FunnelSpec, name: str) -> Any:
    dates = _dates(request)
    rows = funnel_rows_json(spec, funnel_results(spec=spec, dates=dates))
    if view.wants_csv(request):
        return _csv(name, FUNNEL_CSV, ([row[c] for c in FUNNEL_CSV] for row in rows))
    return Response({"start": dates.first, "end": dates.last, "breakdown": spec.breakdown, "rows": rows})


class FunnelResultsView(_InsightView):
    required = {"GET": (VIEW_FUNNELS,)}

    @extend_schema(parameters=_RANGE, responses={200: FunnelRowOutput(many=True)}, tags=["insights"])
    @replica_reads()
    def get(self, request: Request, funnel_id: int) -> Any:
        """A saved funnel computed over members whose first step falls in the date range:
        per step (and breakdown group) members entering, converting, dropping, the rates and the
        median time to the next step. Counts only."""
        funnel = get_object_or_404(Funnel, pk=funnel_id)
        return _funnel_answer(self, request, funnel_spec(funnel), f"funnel-{funnel.pk}")


class FunnelPreviewInput(serializers.Serializer):
    steps = serializers.JSONField()
    window_hours = serializers.JSONField(required=False)
    breakdown = serializers.JSONField(required=False)
    segments = serializers.JSONField(required=False)


class FunnelPreviewView(_InsightView):
    required = {"POST": (VIEW_FUNNELS,)}

    @extend_schema(request=FunnelPreviewInput, parameters=_RANGE, responses={200: FunnelRowOutput(many=True)},
                   tags=["insights"])  # fmt: skip
    @replica_reads()
    def post(self, request: Request) -> Any:
        """An unsaved funnel computed as a saved one is (to try a definition before saving it)."""
        data = FunnelPreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            values = data.validated_data
            spec = funnel_parse(
                steps=values["steps"], window_hours=values.get("window_hours", DEFAULT_WINDOW_HOURS),
                breakdown=values.get("breakdown", ""), segments=values.get("segments", []),
            )  # fmt: skip
        except FunnelInvalid as error:
            raise _invalid(error) from error
        return _funnel_answer(self, request, spec, "funnel")


class FunnelSegmentInput(serializers.Serializer):
    step = serializers.IntegerField(min_value=1)
    dropped = serializers.BooleanField(default=False, help_text="Only those who went no further.")
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200)
    start = serializers.DateField(required=False)
    end = serializers.DateField(required=False)


class FunnelSegmentView(_InsightView):
    required = {"POST": (VIEW_FUNNELS, ADD_SEGMENTS)}

    @extend_schema(request=FunnelSegmentInput, responses={201: None}, tags=["insights"])
    def post(self, request: Request, funnel_id: int) -> Response:
        """A new static segment of the members at a step (over the date range): the one way a
        funnel names members, under the segment rules and consent from then on."""
        funnel = get_object_or_404(Funnel, pk=funnel_id)
        data = FunnelSegmentInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            dates = date_range_parse(values.get("start"), values.get("end"))
            segment = funnel_step_segment(
                spec=funnel_spec(funnel), dates=dates, step=values["step"], dropped=values["dropped"],
                key=values["key"], name=values["name"], by=request_staff(request), channel="api",
            )  # fmt: skip
        except InsightRefused as error:
            raise _invalid(error) from error
        except DefinitionRefused as error:
            raise ApiError(
                code="conflict" if error.status == 409 else "invalid", message=error.message,
                errors=[FieldError(f, r) for f, r in error.errors], status_code=error.status,
            ) from error  # fmt: skip
        return Response({"key": segment.key, "size": segment.size}, status=status.HTTP_201_CREATED)


# --- attribution and ROI ------------------------------------------------------------------------


def _attribution_spec(request: Request, *, dimension: str) -> AttributionSpec:
    try:
        return attribution_parse(
            lookback_days=_int_param(request, "lookback_days", 30),
            half_life_hours=_int_param(request, "half_life_hours", 7 * 24),
            dimension=dimension,
        )
    except AttributionInvalid as error:
        raise _invalid(error) from error


ATTRIBUTION_CSV = ("group", *(f"value_{m}" for m in MODELS), *(f"conversions_{m}" for m in MODELS))


class AttributionView(_InsightView):
    required = {"GET": (VIEW_SPEND,)}

    @extend_schema(
        parameters=[*_RANGE, *_ATTRIBUTION, OpenApiParameter("by", OpenApiTypes.STR, enum=["channel", "source", "campaign", "store"])],
        responses={200: OpenApiTypes.OBJECT}, tags=["insights"],
    )  # fmt: skip
    @replica_reads()
    def get(self, request: Request) -> Any:
        """Orders of the range (net of refunds, in the platform's currency) credited to the
        touches before them under first, last, linear, time-decay and position-based models,
        side by side, by channel, source, campaign or store. Every model's credits add up to
        the orders' value (conversions without a touch: ``(no touch)``)."""
        spec = _attribution_spec(request, dimension=request.query_params.get("by", "channel"))
        dates = _dates(request)
        credits = attribution_results(spec=spec, dates=dates)
        if self.wants_csv(request):
            return _csv("attribution", ATTRIBUTION_CSV, (
                [c.group, *(c.value[m] for m in MODELS), *(round(c.conversions[m], 4) for m in MODELS)] for c in credits
            ))  # fmt: skip
        return Response({
            "start": dates.first, "end": dates.last, "by": spec.dimension, "currency": settings.CDP_CURRENCY,
            "models": list(MODELS), "lookback_days": spec.lookback.days,
            "half_life_hours": int(spec.half_life.total_seconds() // 3600),
            "rows": [{"group": c.group, "value": {m: str(c.value[m]) for m in MODELS},
                      "conversions": {m: round(c.conversions[m], 4) for m in MODELS}} for c in credits],
        })  # fmt: skip


ROI_CSV = ("group", "spend", *(f"{k}_{m}" for m in MODELS for k in ("revenue", "roas", "roi")))


class RoiView(_InsightView):
    required = {"GET": (VIEW_SPEND,)}

    @extend_schema(
        parameters=[*_RANGE, *_ATTRIBUTION, OpenApiParameter("by", OpenApiTypes.STR, enum=["channel", "campaign"])],
        responses={200: OpenApiTypes.OBJECT}, tags=["insights"],
    )  # fmt: skip
    @replica_reads()
    def get(self, request: Request) -> Any:
        """Spend in the range (prorated by day) beside the revenue each model credits, with ROAS
        (revenue / spend) and ROI ((revenue - spend) / spend), per channel or campaign."""
        dimension = request.query_params.get("by", "channel")
        spec = _attribution_spec(request, dimension="channel")
        dates = _dates(request)
        try:
            rows = roi_results(spec=spec, dates=dates, dimension=dimension)
        except InsightRefused as error:
            raise _invalid(error) from error
        if self.wants_csv(request):
            return _csv("roi", ROI_CSV, (
                [r.group, r.spend, *(x for m in MODELS for x in (r.revenue[m], r.roas[m], r.roi[m]))] for r in rows
            ))  # fmt: skip
        return Response({
            "start": dates.first, "end": dates.last, "by": dimension, "currency": settings.CDP_CURRENCY,
            "models": list(MODELS),
            "rows": [{"group": r.group, "spend": str(r.spend),
                      "revenue": {m: str(r.revenue[m]) for m in MODELS},
                      "roas": {m: None if r.roas[m] is None else str(r.roas[m]) for m in MODELS},
                      "roi": {m: None if r.roi[m] is None else str(r.roi[m]) for m in MODELS}} for r in rows],
        })  # fmt: skip


# --- spend --------------------------------------------------------------------------------------


class SpendInput(serializers.Serializer):
    channel = serializers.CharField()
    campaign = serializers.CharField(required=False, allow_blank=True, default="")
    period_start = serializers.CharField()
    period_end = serializers.CharField()
    amount = serializers.CharField(help_text="A decimal amount, e.g. 12000.00")
    currency = serializers.CharField(required=False, allow_blank=True, default="")


class SpendOutput(serializers.Serializer):
    id = serializers.IntegerField()
    channel = serializers.CharField()
    campaign = serializers.CharField()
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()


SPEND_CSV = ("channel", "campaign", "period_start", "period_end", "amount", "currency")


class SpendView(_InsightView):
    required = {"GET": (VIEW_SPEND,), "POST": (VIEW_SPEND, ADD_SPEND)}

    @extend_schema(parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"])],
                   responses={200: SpendOutput(many=True)}, tags=["insights"])  # fmt: skip
    def get(self, request: Request) -> Any:
        """Every spend line, newest period first (the CSV is what the upload takes)."""
        rows = CampaignSpend.objects.all()
        if self.wants_csv(request):
            return _csv("spend", SPEND_CSV, ([getattr(r, c) for c in SPEND_CSV] for r in rows))
        return Response(SpendOutput(rows, many=True).data)

    @extend_schema(request=SpendInput(many=True), responses={201: SpendOutput(many=True)}, tags=["insights"])
    def post(self, request: Request) -> Response:
        """Record spend lines: one object or a list; all are kept or none (errors by index)."""
        items = request.data if isinstance(request.data, list) else [request.data]
        if not items or len(items) > 1000:
            raise ApiError(
                code="invalid", message="1 to 1000 spend lines.", errors=[FieldError("", "1 to 1000")]
            )
        lines, errors = [], []
        for index, item in enumerate(items):
            path = f"[{index}]" if isinstance(request.data, list) else ""
            if not isinstance(item, dict):
                errors.append((path, "expected an object"))
                continue
            try:
                lines.append(spend_line_check(item, path=path, default_currency=settings.CDP_CURRENCY))
            except SpendInvalid as error:
                errors.extend(error.errors)
        if errors:
            raise _invalid(SpendInvalid(errors))
        created = spend_add(lines=lines, by=request_staff(request))
        return Response(SpendOutput(created, many=True).data, status=status.HTTP_201_CREATED)


class SpendItemView(_InsightView):
    required = {"DELETE": (VIEW_SPEND, DELETE_SPEND)}

    @extend_schema(responses={204: None}, tags=["insights"])
    def delete(self, request: Request, spend_id: int) -> Response:
        get_object_or_404(CampaignSpend, pk=spend_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class SpendUploadView(_InsightView):
    required = {"POST": (VIEW_SPEND, ADD_SPEND)}
    parser_classes = (MultiPartParser,)

    @extend_schema(
        request={"multipart/form-data": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
        responses={201: SpendOutput(many=True)}, tags=["insights"],
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        """A CSV of spend lines (header: channel, campaign, period_start, period_end, amount,
        currency); a bad line refuses the file, every bad line named by its number."""
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError(
                code="invalid", message="No file.", errors=[FieldError("file", "a CSV file is required")]
            )
        if upload.size and upload.size > MAX_UPLOAD_BYTES:
            raise ApiError(
                code="invalid", message="File too large.", errors=[FieldError("file", "at most 2 MB")]
            )
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ApiError(
                code="invalid", message="Not UTF-8.", errors=[FieldError("file", "UTF-8 text")]
            ) from error
        try:
            created = spend_upload(text=text, by=request_staff(request))
        except SpendInvalid as error:
            raise _invalid(error) from error
        return Response(SpendOutput(created, many=True).data, status=status.HTTP_201_CREATED)


# --- cohorts ------------------------------------------------------------------------------------

COHORTS_CSV = ("cohort", "channel", "members", "period", "active", "repurchased")


class CohortsView(_InsightView):
    required = {"GET": (VIEW_FUNNELS,)}

    @extend_schema(
        parameters=[*_RANGE, OpenApiParameter("basis", OpenApiTypes.STR, enum=["purchase", "signup"]),
                    OpenApiParameter("period", OpenApiTypes.STR, enum=["week", "month"])],
        responses={200: OpenApiTypes.OBJECT}, tags=["insights"],
    )  # fmt: skip
    @replica_reads()
    def get(self, request: Request) -> Any:
        """Members by the week or month of their first purchase (or first event) in the range
        and their acquisition channel; per period after, how many were active and how many
        bought again. Counts only."""
        try:
            spec = cohorts_parse(
                basis=request.query_params.get("basis", "purchase"),
                period=request.query_params.get("period", "month"),
            )
        except CohortsInvalid as error:
            raise _invalid(error) from error
        dates = _dates(request)
        cohorts = cohorts_results(spec=spec, dates=dates)
        if self.wants_csv(request):
            return _csv("cohorts", COHORTS_CSV, (
                [c.cohort, c.channel, c.members, k, cell.active, cell.repurchased]
                for c in cohorts for k, cell in sorted(c.cells.items())
            ))  # fmt: skip
        return Response({
            "start": dates.first, "end": dates.last, "basis": spec.basis, "period": spec.period,
            "max_periods": MAX_OFFSETS,
            "cohorts": [{"cohort": c.cohort, "channel": c.channel, "members": c.members,
                         "periods": [{"period": k, "active": cell.active, "repurchased": cell.repurchased}
                                     for k, cell in sorted(c.cells.items())]} for c in cohorts],
        })  # fmt: skip
