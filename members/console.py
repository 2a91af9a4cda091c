"""The staff console's member pages: one search box, and the member 360 page an agent reads
while the customer waits. Server-rendered; the same selectors, masking and audit as the API.
"""

from datetime import datetime
from decimal import Decimal

from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime

from cdp.privacy import Masking
from events.models import Channel
from events.selectors import source_names
from members.loyalty.presentation import points_json
from members.loyalty.selectors import ledger_page, points_summary
from members.presentation import profile_json, summary_json, timeline_json
from members.segments.models import Tag
from members.selectors import (
    MonthlySpend,
    TagHeld,
    member_profile,
    member_summaries,
    member_timeline,
    members_search_any,
)

TIMELINE_PAGE = 30
CHART_MONTHS = 12
LEDGER_ROWS = 10
CHANNEL_LABELS = {
    Channel.POS: "Store",
    Channel.APP: "App",
    Channel.MINI_PROGRAM: "Mini-program",
    Channel.WEB: "Web shop",
}
VIEW_MEMBERS = "members.view_member"
TAG_MEMBERS = "members.add_membertag"


def _masking(request: HttpRequest) -> Masking:
    return Masking(request.user, channel="console", detail=request.get_full_path())


@login_required
@permission_required(VIEW_MEMBERS, raise_exception=True)
def search(request: HttpRequest) -> HttpResponse:
    text = request.GET.get("q", "").strip()
    found = members_search_any(text=text) if text else []
    if len(found) == 1:
        return redirect("console:member", member_id=found[0])
    masking = _masking(request)
    masking.audit(found)
    return render(
        request,
        "members/search.html",
        {"q": text, "searched": bool(text), "results": summary_json(member_summaries(found), masking)},
    )


@login_required
@permission_required(VIEW_MEMBERS, raise_exception=True)
def member(request: HttpRequest, member_id: int) -> HttpResponse:
    profile = member_profile(member_id=member_id)
    if profile is None:
        raise Http404(f"No member {member_id}.")
    if profile.resolved_from is not None:
        return redirect(f"{reverse('console:member', args=[profile.member.pk])}?from={member_id}")
    masking = _masking(request)
    masking.audit([profile.member.pk])
    channel = request.GET.get("channel", "")
    channel = channel if channel in Channel.values else ""
    events = member_timeline(member_id=profile.member.pk, channel=channel)
    before = _position(request.GET.get("before", ""))
    if before is not None:
        at, event_id = before
        events = events.filter(timestamp__lte=at).exclude(timestamp=at, id__gte=event_id)
    page = list(events.order_by("-timestamp", "-id")[: TIMELINE_PAGE + 1])
    older = page[TIMELINE_PAGE - 1] if len(page) > TIMELINE_PAGE else None  # the last one shown
    page = page[:TIMELINE_PAGE]
    timeline = timeline_json(page, masking, source_names(e.source_id for e in page))
    for entry in timeline:
        entry["label"] = CHANNEL_LABELS.get(entry["channel"], entry["channel"])
        properties = entry["properties"] if isinstance(entry["properties"], dict) else {}
        entry["order"] = {
            "id": properties.get("order_id"),
            "amount": properties.get("total", properties.get("revenue")),
            "currency": properties.get("currency", ""),
        }
    return render(
        request,
        "members/member.html",
        {
            "profile": profile_json(profile, masking),
            "merged_from": request.GET.get("from", ""),
            "timeline": timeline,
            "older": f"{older.timestamp.isoformat()}|{older.id}" if older else "",
            "channel": channel,
            "channels": [(value, CHANNEL_LABELS[value]) for value in Channel.values],
            "chart": spend_chart(profile.spend_by_month[-CHART_MONTHS:]),
            "masked": not masking.full,
            "manual_tags": _manual_tags_to_add(request, profile.tags),
            "points": points_json(
                profile.member.pk,
                points_summary(member_id=profile.member.pk),
                ledger_page(member_id=profile.member.pk, before=None, size=LEDGER_ROWS),
                more=False,
            ),
        },
    )


def _manual_tags_to_add(request: HttpRequest, held: list[TagHeld]) -> list[Tag]:
    """The manual tags the user may put on the member (those it lacks); one query, none for a
    role that may not tag."""
    if not request.user.has_perm(TAG_MEMBERS):
        return []
    return list(
        Tag.objects.filter(kind=Tag.Kind.MANUAL).exclude(key__in=[t.key for t in held]).order_by("name")
    )


def _position(text: str) -> tuple[datetime, int] | None:
    at, _, event_id = text.partition("|")
    moment = parse_datetime(at) if at else None
    return (moment, int(event_id)) if moment is not None and event_id.isdigit() else None


CHART_HEIGHT = 120
CHART_BAR = 28
CHART_GAP = 12


def spend_chart(months: list[MonthlySpend]) -> dict:
    """Stacked bars of net spend per month and channel, as SVG geometry for the template."""
    totals = [sum((v for v in m.by_channel.values() if v > 0), Decimal(0)) for m in months]
    top = max(totals, default=Decimal(0))
    bars = []
    for index, (month, total) in enumerate(zip(months, totals, strict=True)):
        x = index * (CHART_BAR + CHART_GAP)
        y = CHART_HEIGHT
        segments = []
        for channel in Channel.values:
            spend = month.by_channel.get(channel, Decimal(0))
            if spend <= 0 or top <= 0:
                continue
            height = float(spend / top) * CHART_HEIGHT
            y -= height
            segments.append(
                {"channel": channel, "y": round(y, 1), "height": round(height, 1), "spend": spend}
            )
        bars.append({"month": month.month, "x": x, "total": total, "segments": segments})
    return {
        "bars": bars,
        "width": max(len(bars) * (CHART_BAR + CHART_GAP), 1),
        "height": CHART_HEIGHT,
        "bar": CHART_BAR,
        "top": top,
    }
