"""The staff console's member pages: one search box, and the member 360 page an agent reads
while the customer waits. Server-rendered; the same selectors, masking and audit as the API.
"""

from datetime import datetime

from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from cdp.console import landing_url
from cdp.db import MAX_BIGINT
from cdp.privacy import Masking
from cdp.scopes import request_scope
from events.models import Channel
from events.selectors import source_names
from members.consent.console import consent_panel
from members.loyalty.presentation import points_json
from members.loyalty.selectors import ledger_page, points_summary
from members.presentation import profile_json, summary_json, timeline_details, timeline_json
from members.segments.models import Tag
from members.selectors import (
    TagHeld,
    member_profile,
    member_summaries,
    member_timeline,
    members_search_any,
)
from members.spend_chart import spend_chart

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
TAG_MEMBERS = "segments.add_membertag"


def _masking(request: HttpRequest) -> Masking:
    return Masking(request.user, channel="console", detail=request.get_full_path())


@login_required
def search(request: HttpRequest) -> HttpResponse:
    """The member search, and the console's home: a role that may not look members up is
    sent to the first console page it may open (marketing: the segments)."""
    if not request.user.has_perm(VIEW_MEMBERS):
        landing = landing_url(request.user)
        if landing is None:
            raise PermissionDenied
        return redirect(landing)
    text = request.GET.get("q", "").strip()
    scope = request_scope(request)
    found = members_search_any(text=text, scope=scope) if text else []
    if len(found) == 1:
        return redirect("console:member", member_id=found[0])
    masking = _masking(request)
    results = summary_json(member_summaries(found, scope), masking)
    masking.audit(found)
    return render(request, "members/search.html", {"q": text, "searched": bool(text), "results": results})


@login_required
@permission_required(VIEW_MEMBERS, raise_exception=True)
def member(request: HttpRequest, member_id: int) -> HttpResponse:
    scope = request_scope(request)
    profile = member_profile(member_id=member_id, scope=scope)
    if profile is None:
        raise Http404(f"No member {member_id}.")
    if profile.resolved_from is not None:
        return redirect(f"{reverse('console:member', args=[profile.member.pk])}?from={member_id}")
    masking = _masking(request)
    channel = request.GET.get("channel", "")
    channel = channel if channel in Channel.values else ""
    events = member_timeline(member_id=profile.member.pk, channel=channel, scope=scope)
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
        entry["details"] = timeline_details(entry)
    shown = profile_json(profile, masking)
    masking.audit([profile.member.pk])
    return render(
        request,
        "members/member.html",
        {
            "profile": shown,
            "merged_from": request.GET.get("from", ""),
            "timeline": timeline,
            "older": f"{older.timestamp.isoformat()}|{older.id}" if older else "",
            "channel": channel,
            "channels": [(channel.value, CHANNEL_LABELS[channel]) for channel in Channel],
            "chart": spend_chart(
                {m.month: m.by_channel for m in profile.spend_by_month},
                last_month=f"{timezone.now():%Y-%m}",  # months in UTC, as spend_by_month counts them
                count=CHART_MONTHS,
                channels=tuple((channel.value, CHANNEL_LABELS[channel]) for channel in Channel),
                currency=profile.aggregate.currency if profile.aggregate else "",
            ),
            "masked": not masking.full,
            "scope": scope,
            "manual_tags": _manual_tags_to_add(request, profile.tags),
            "consent": consent_panel(request, profile.member.pk),
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
    try:
        moment = parse_datetime(at) if at else None
    except ValueError:  # well formed yet no time (month 13): no position, as for any other junk
        return None
    # ASCII digits within 64 bits: "²".isdigit() is true, yet int() refuses it.
    if moment is None or not (event_id.isascii() and event_id.isdigit() and len(event_id) <= 19):
        return None
    return (moment, int(event_id)) if int(event_id) <= MAX_BIGINT else None
