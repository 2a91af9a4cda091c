"""The permission matrix: every endpoint of the API and the console (found by walking the URL
resolver, so a new one without a line here fails) by every role (``cdp.roles``), unscoped and
scoped to a store, plus no credentials and a source's write key used as a staff token.

Each line says what an endpoint requires (permissions, a write key, nothing) and what a caller
who may use it gets for the request sent here; the expected status of every other caller
follows from the rules of ``cdp.permissions`` and ``cdp.scopes``: 401 without staff
credentials on the API (a login redirect, 302, in the console), 403 without the permissions,
and for a scoped user 404 on a member seen elsewhere and 403 on bulk pulls across stores.
Every request runs in a savepoint rolled back after it, so writes leave nothing behind.

The README's permission matrix is this test's table: ``CDP_WRITE_MATRIX=1 pytest
tests/cdp/test_permission_matrix.py`` rewrites it; otherwise the test fails when it is stale.
"""

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

from cdp.roles import Role
from cdp.services import staff_scope_set, staff_user_ensure, token_issue
from events.models import ParkedEvent, RejectedEvent
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.imports.models import ImportJob
from members.insights.models import CampaignSpend, Funnel
from members.loyalty.models import Coupon, CouponCampaign
from members.models import ParkedMember
from members.privacy.models import PrivacyRequest
from members.segments.models import Segment, SegmentWebhook, Tag
from members.segments.services import segment_static_set
from ops.models import Alert, AlertRule
from tests.conftest import basic_auth
from tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db

PUBLIC = "public"  # anyone
SOURCE = "source"  # a source's write key (ingestion)
STAFF = "staff"  # any signed-in staff user

SCOPED_STORE = "SH01"
README = Path(settings.BASE_DIR) / "README.md"
START, END = "<!-- permission-matrix:start -->", "<!-- permission-matrix:end -->"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {placeholders} for the rows made below
    allow: str | tuple[str, ...]  # PUBLIC, SOURCE, STAFF, or the permissions it requires
    ok: int  # what a caller who may use it gets for the request sent here
    body: Any = None
    member: bool = False  # names a member: out of a scoped user's scope, a 404
    unscoped_only: bool = False  # covers every store: a 403 for a scoped user
    drf: bool = False  # a public page served by DRF: refuses a credential that is no staff token
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def console(self) -> bool:
        return self.path.startswith("/console/")

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/v1/")


VIEW_MEMBERS, CONTACT = "members.view_member", "members.view_contact_details"
VIEW_SEGMENTS, VIEW_TAGS, VIEW_PARKED_EVENTS = (
    "segments.view_segment",
    "segments.view_tag",
    "events.view_parkedevent",
)
VIEW_PARKED_MEMBERS, VIEW_WEBHOOKS = "members.view_parkedmember", "segments.view_segmentwebhook"
VIEW_AUDIT = "cdp.view_auditentry"
VIEW_ALERTS, CHANGE_ALERTS = "ops.view_alert", "ops.change_alert"
VIEW_CONSENT, RECORD_CONSENT = "consent.view_consentstatement", "consent.add_consentstatement"
ERASE, EXPORT, VIEW_REQUESTS = "privacy.erase_member", "privacy.export_member", "privacy.view_privacyrequest"
VIEW_INSIGHTS = "insights.view_insights"
SOURCES = ("events.view_source", "events.add_source", "events.change_source")
IDEMPOTENT = {"HTTP_IDEMPOTENCY_KEY": "matrix"}
VIEW_FUNNELS, VIEW_SPEND = "insights.view_funnel", "insights.view_campaignspend"
VIEW_IMPORTS, RUN_IMPORT = "imports.view_importjob", "imports.run_import"

ENDPOINTS = [
    # ingestion (Segment's paths): a write key, never a staff token
    *(Endpoint("POST", f"/v1/{call}", SOURCE, 400, {}) for call in ("identify", "track", "page", "screen", "alias", "group")),
    Endpoint("POST", "/v1/batch", SOURCE, 400, {}),
    Endpoint("POST", "/v1/b", SOURCE, 400, {}),
    # sources, rejected and parked work: operations
    Endpoint("GET", "/api/v1/sources/", SOURCES, 200),
    Endpoint("POST", "/api/v1/sources/", SOURCES, 400, {}),
    Endpoint("GET", "/api/v1/sources/{source}/", SOURCES, 200),
    Endpoint("PATCH", "/api/v1/sources/{source}/", SOURCES, 400, {}),
    Endpoint("POST", "/api/v1/sources/{source}/disable/", SOURCES, 200),
    Endpoint("POST", "/api/v1/sources/{source}/enable/", SOURCES, 200),
    Endpoint("POST", "/api/v1/sources/{source}/rotate-key/", SOURCES, 200),
    Endpoint("GET", "/api/v1/rejected-events/", ("events.view_rejectedevent",), 200),
    Endpoint("GET", "/api/v1/rejected-events/{rejected}/", ("events.view_rejectedevent",), 200),
    Endpoint("GET", "/api/v1/parked-events/", (VIEW_PARKED_EVENTS,), 200),
    Endpoint("POST", "/api/v1/parked-events/replay/", (VIEW_PARKED_EVENTS, "events.replay_parkedevent"), 200, {}),
    Endpoint("GET", "/api/v1/parked-events/{parked_event}/", (VIEW_PARKED_EVENTS,), 200),
    Endpoint("POST", "/api/v1/parked-events/{parked_event}/replay/", (VIEW_PARKED_EVENTS, "events.replay_parkedevent"), 200),
    Endpoint("GET", "/api/v1/parked-members/", (VIEW_PARKED_MEMBERS,), 200),
    Endpoint("POST", "/api/v1/parked-members/replay/", (VIEW_PARKED_MEMBERS, "members.replay_parkedmember"), 200, {}),
    Endpoint("GET", "/api/v1/parked-members/{parked_member}/", (VIEW_PARKED_MEMBERS,), 200),
    Endpoint("POST", "/api/v1/parked-members/{parked_member}/replay/", (VIEW_PARKED_MEMBERS, "members.replay_parkedmember"), 200),
    # members
    Endpoint("GET", "/api/v1/members/?phone=13900139000", (VIEW_MEMBERS,), 200),
    Endpoint("GET", "/api/v1/members/{member}/", (VIEW_MEMBERS,), 200, member=True),
    Endpoint("GET", "/api/v1/members/{member}/events/", (VIEW_MEMBERS,), 200, member=True),
    Endpoint("POST", "/api/v1/members/{member}/split/", (VIEW_MEMBERS, "members.split_member"), 400, {}, member=True),
    Endpoint("GET", "/api/v1/members/{member}/points/", (VIEW_MEMBERS,), 200, member=True),
    Endpoint("POST", "/api/v1/members/{member}/points/adjust/", (VIEW_MEMBERS, "loyalty.adjust_points"), 400, {}, member=True),
    # checkout acts on whoever is at the till, wherever they were seen before: no scope
    Endpoint("POST", "/api/v1/members/{member}/points/redeem/", ("loyalty.redeem_points",), 400, {}),
    Endpoint("GET", "/api/v1/points/expiring/", (VIEW_MEMBERS,), 200),
    Endpoint("GET", "/api/v1/members/{member}/tags/", (VIEW_MEMBERS, VIEW_TAGS), 200, member=True),
    Endpoint("POST", "/api/v1/members/{member}/tags/", (VIEW_MEMBERS, "segments.add_membertag"), 400, {}, member=True),
    Endpoint("GET", "/api/v1/members/{member}/tags/history/", (VIEW_MEMBERS, VIEW_TAGS), 200, member=True),
    Endpoint("DELETE", "/api/v1/members/{member}/tags/{tag}/", (VIEW_MEMBERS, "segments.delete_membertag"), 200, member=True),
    # consent
    Endpoint("GET", "/api/v1/members/{member}/consent/", (VIEW_MEMBERS, VIEW_CONSENT), 200, member=True),
    Endpoint("POST", "/api/v1/members/{member}/consent/", (VIEW_MEMBERS, RECORD_CONSENT), 400, {}, member=True),
    Endpoint("GET", "/api/v1/members/{member}/consent/history/", (VIEW_MEMBERS, VIEW_CONSENT), 200, member=True),
    # people's requests: everything held about a person, from every store
    Endpoint("POST", "/api/v1/members/{member}/erase/", (ERASE,), 202, {}, unscoped_only=True),
    Endpoint("GET", "/api/v1/members/{member}/export/", (EXPORT,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/privacy/requests/", (VIEW_REQUESTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/privacy/requests/{privacy_request}/", (VIEW_REQUESTS,), 200, unscoped_only=True),
    # loyalty
    Endpoint("GET", "/api/v1/coupons/{coupon}/", ("loyalty.redeem_coupon",), 200),
    Endpoint("POST", "/api/v1/coupons/{coupon}/redeem/", ("loyalty.redeem_coupon",), 400, {}, headers=IDEMPOTENT),
    Endpoint("POST", "/api/v1/coupons/{coupon}/release/", ("loyalty.redeem_coupon",), 400, {}),
    Endpoint("GET", "/api/v1/campaigns/", ("loyalty.view_couponcampaign",), 200),
    Endpoint("POST", "/api/v1/campaigns/", ("loyalty.add_couponcampaign",), 400, {}),
    Endpoint("POST", "/api/v1/campaigns/{campaign}/issue/", ("loyalty.add_coupon",), 400, {}, unscoped_only=True),
    # segments and tags
    Endpoint("GET", "/api/v1/segments/", (VIEW_SEGMENTS,), 200),
    Endpoint("POST", "/api/v1/segments/", (VIEW_SEGMENTS, "segments.add_segment"), 400, {}),
    Endpoint("GET", "/api/v1/segments/{segment}/", (VIEW_SEGMENTS,), 200),
    Endpoint("PATCH", "/api/v1/segments/{segment}/", (VIEW_SEGMENTS, "segments.change_segment"), 200, {}),
    Endpoint("DELETE", "/api/v1/segments/{segment}/", (VIEW_SEGMENTS, "segments.delete_segment"), 204),
    Endpoint("POST", "/api/v1/segments/{segment}/copy/", (VIEW_SEGMENTS, "segments.add_segment"), 400, {}),
    Endpoint("GET", "/api/v1/segments/{segment}/members/", (VIEW_SEGMENTS,), 200, unscoped_only=True),
    Endpoint("PUT", "/api/v1/segments/{segment}/members/", (VIEW_SEGMENTS, "segments.change_segment"), 400, {}, unscoped_only=True),
    Endpoint("GET", "/api/v1/segments/{segment}/changes/", (VIEW_SEGMENTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/segments/{segment}/export/", (VIEW_SEGMENTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/segments/{segment}/webhooks/", (VIEW_WEBHOOKS,), 200, unscoped_only=True),
    Endpoint("POST", "/api/v1/segments/{segment}/webhooks/", ("segments.add_segmentwebhook",), 400, {}, unscoped_only=True),
    Endpoint("GET", "/api/v1/segments/{segment}/webhooks/{webhook}/", (VIEW_WEBHOOKS,), 200, unscoped_only=True),
    Endpoint("PATCH", "/api/v1/segments/{segment}/webhooks/{webhook}/", ("segments.change_segmentwebhook",), 400, {}, unscoped_only=True),
    Endpoint("DELETE", "/api/v1/segments/{segment}/webhooks/{webhook}/", ("segments.delete_segmentwebhook",), 204, unscoped_only=True),
    Endpoint("GET", "/api/v1/segments/{segment}/webhooks/{webhook}/deliveries/", (VIEW_WEBHOOKS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/tags/", (VIEW_TAGS,), 200),
    Endpoint("POST", "/api/v1/tags/", (VIEW_TAGS, "segments.add_tag"), 400, {}),
    Endpoint("GET", "/api/v1/tags/{tag}/", (VIEW_TAGS,), 200),
    Endpoint("PATCH", "/api/v1/tags/{tag}/", (VIEW_TAGS, "segments.change_tag"), 200, {}),
    Endpoint("DELETE", "/api/v1/tags/{tag}/", (VIEW_TAGS, "segments.delete_tag"), 204),
    # insights: counts and sums of every store
    Endpoint("GET", "/api/v1/insights/kpis/", (VIEW_INSIGHTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/kpis/summary/", (VIEW_INSIGHTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/kpis/sales/", (VIEW_INSIGHTS,), 200, unscoped_only=True),
    # the audit log
    # imports: an administrator starts them, an unscoped CRM manager follows them
    Endpoint("GET", "/api/v1/imports/", (VIEW_IMPORTS,), 200, unscoped_only=True),
    Endpoint("POST", "/api/v1/imports/", (RUN_IMPORT,), 400, {}, unscoped_only=True),
    Endpoint("GET", "/api/v1/imports/{import_job}/", (VIEW_IMPORTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/imports/{import_job}/problems/", (VIEW_IMPORTS,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/audit/", (VIEW_AUDIT,), 200),
    Endpoint("GET", "/api/v1/audit/export/", (VIEW_AUDIT,), 200),
    # operations: alert rules and alerts
    Endpoint("GET", "/api/v1/alert-rules/", ("ops.view_alertrule",), 200),
    Endpoint("POST", "/api/v1/alert-rules/", ("ops.add_alertrule",), 400, {}),
    Endpoint("GET", "/api/v1/alert-rules/{alert_rule}/", ("ops.view_alertrule",), 200),
    Endpoint("PATCH", "/api/v1/alert-rules/{alert_rule}/", ("ops.change_alertrule",), 200, {}),
    Endpoint("GET", "/api/v1/alerts/", (VIEW_ALERTS,), 200),
    Endpoint("GET", "/api/v1/alerts/{alert}/", (VIEW_ALERTS,), 200),
    Endpoint("POST", "/api/v1/alerts/{alert}/acknowledge/", (CHANGE_ALERTS,), 200),
    Endpoint("POST", "/api/v1/alerts/{alert}/resolve/", (CHANGE_ALERTS,), 200),
    # funnels, attribution, ROI, spend, cohorts: answers over every store
    Endpoint("GET", "/api/v1/insights/funnels/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    Endpoint("POST", "/api/v1/insights/funnels/", (VIEW_FUNNELS, "insights.add_funnel"), 400, {}, unscoped_only=True),
    Endpoint("POST", "/api/v1/insights/funnels/preview/", (VIEW_FUNNELS,), 400, {}, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/funnels/{funnel}/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    Endpoint("PUT", "/api/v1/insights/funnels/{funnel}/", (VIEW_FUNNELS, "insights.change_funnel"), 400, {}, unscoped_only=True),
    Endpoint("DELETE", "/api/v1/insights/funnels/{funnel}/", (VIEW_FUNNELS, "insights.delete_funnel"), 204, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/funnels/{funnel}/results/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    Endpoint("POST", "/api/v1/insights/funnels/{funnel}/segments/", (VIEW_FUNNELS, "segments.add_segment"), 400, {}, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/attribution/", (VIEW_SPEND,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/roi/", (VIEW_SPEND,), 200, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/spend/", (VIEW_SPEND,), 200, unscoped_only=True),
    Endpoint("POST", "/api/v1/insights/spend/", (VIEW_SPEND, "insights.add_campaignspend"), 400, {}, unscoped_only=True),
    # a CSV upload: multipart only (the matrix sends JSON)
    Endpoint("POST", "/api/v1/insights/spend/upload/", (VIEW_SPEND, "insights.add_campaignspend"), 415, {}, unscoped_only=True),
    Endpoint("DELETE", "/api/v1/insights/spend/{spend}/", (VIEW_SPEND, "insights.delete_campaignspend"), 204, unscoped_only=True),
    Endpoint("GET", "/api/v1/insights/cohorts/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    # the schema and its docs, health: public
    # (served by DRF: a credential that is no staff token is refused, as anywhere in the API)
    Endpoint("GET", "/api/schema/", PUBLIC, 200, drf=True),
    Endpoint("GET", "/api/docs/", PUBLIC, 200, drf=True),
    Endpoint("GET", "/api/redoc/", PUBLIC, 200, drf=True),
    Endpoint("GET", "/health/", PUBLIC, 200),
    # from an allowed network (the test client's 127.0.0.1), or with the scraper's token
    # (tests/cdp/test_metrics.py): no staff role matters
    Endpoint("GET", "/metrics", PUBLIC, 200),
    Endpoint("GET", "/", PUBLIC, 302),
    # the console
    Endpoint("GET", "/console/login/", PUBLIC, 200),
    Endpoint("GET", "/console/?q=nobody", (VIEW_MEMBERS,), 200),
    Endpoint("GET", "/console/members/{member}/", (VIEW_MEMBERS,), 200, member=True),
    Endpoint("POST", "/console/members/{member}/tags/", (VIEW_MEMBERS, "segments.add_membertag"), 302, {"tag": "vip"}, member=True),
    Endpoint("POST", "/console/members/{member}/tags/{tag}/remove/", (VIEW_MEMBERS, "segments.delete_membertag"), 302, member=True),
    Endpoint("POST", "/console/members/{member}/consent/", (VIEW_MEMBERS, RECORD_CONSENT), 302, {}, member=True),
    Endpoint("GET", "/console/members/{member}/export/", (EXPORT,), 200, unscoped_only=True),
    Endpoint("GET", "/console/segments/", (VIEW_SEGMENTS,), 200),
    Endpoint("GET", "/console/new-segment/", (VIEW_SEGMENTS, "segments.add_segment"), 200),
    Endpoint("GET", "/console/segments/{segment}/", (VIEW_SEGMENTS,), 200),
    Endpoint("GET", "/console/segments/{segment}/edit/", (VIEW_SEGMENTS, "segments.change_segment"), 200),
    Endpoint("POST", "/console/segments/{segment}/copy/", (VIEW_SEGMENTS, "segments.add_segment"), 400, {}),
    Endpoint("POST", "/console/segments/{segment}/delete/", (VIEW_SEGMENTS, "segments.delete_segment"), 302),
    Endpoint("POST", "/console/segments/{segment}/members/", (VIEW_SEGMENTS, "segments.change_segment"), 400, {}, unscoped_only=True),
    Endpoint("GET", "/console/tags/", (VIEW_TAGS,), 200),
    Endpoint("GET", "/console/tags/{tag}/", (VIEW_TAGS,), 200),
    Endpoint("POST", "/console/tags/{tag}/delete/", (VIEW_TAGS, "segments.delete_tag"), 302),
    Endpoint("GET", "/console/audit/", (VIEW_AUDIT,), 200),
    Endpoint("GET", "/console/insights/", (VIEW_INSIGHTS,), 200, unscoped_only=True),
    Endpoint("GET", "/console/audit/export/", (VIEW_AUDIT,), 200),
    Endpoint("GET", "/console/alerts/", (VIEW_ALERTS,), 200),
    Endpoint("POST", "/console/alerts/{alert}/acknowledge/", (CHANGE_ALERTS,), 302),
    Endpoint("POST", "/console/alerts/{alert}/resolve/", (CHANGE_ALERTS,), 302),
    Endpoint("GET", "/console/insights/funnels/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    Endpoint("POST", "/console/insights/funnels/", (VIEW_FUNNELS, "insights.add_funnel"), 200, {}, unscoped_only=True),
    Endpoint("GET", "/console/insights/funnels/{funnel}/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    Endpoint("POST", "/console/insights/funnels/{funnel}/edit/", (VIEW_FUNNELS, "insights.change_funnel"), 302, {}, unscoped_only=True),
    Endpoint("POST", "/console/insights/funnels/{funnel}/delete/", (VIEW_FUNNELS, "insights.delete_funnel"), 302, unscoped_only=True),
    Endpoint("POST", "/console/insights/funnels/{funnel}/segment/", (VIEW_FUNNELS, "segments.add_segment"), 302, {}, unscoped_only=True),
    Endpoint("GET", "/console/insights/attribution/", (VIEW_SPEND,), 200, unscoped_only=True),
    Endpoint("POST", "/console/insights/spend/", (VIEW_SPEND, "insights.add_campaignspend"), 302, {}, unscoped_only=True),
    Endpoint("POST", "/console/insights/spend/{spend}/delete/", (VIEW_SPEND, "insights.delete_campaignspend"), 302, unscoped_only=True),
    Endpoint("GET", "/console/insights/cohorts/", (VIEW_FUNNELS,), 200, unscoped_only=True),
    Endpoint("GET", "/console/imports/", (VIEW_IMPORTS,), 200, unscoped_only=True),
    Endpoint("POST", "/console/imports/", (VIEW_IMPORTS, RUN_IMPORT), 302, {}, unscoped_only=True),
    Endpoint("GET", "/console/imports/{import_job}/", (VIEW_IMPORTS,), 200, unscoped_only=True),
    Endpoint("POST", "/console/logout/", PUBLIC, 302),  # last: it ends the session
]  # fmt: skip

#: The callers: no credentials, a write key as a staff token, then each role unscoped and scoped.
ANONYMOUS, WRITE_KEY = "anonymous", "write key"
CALLERS = [ANONYMOUS, WRITE_KEY, *(f"{role}{suffix}" for role in Role for suffix in ("", "@store"))]


@dataclass
class Caller:
    name: str
    api: Client
    console: Client
    permissions: frozenset[str] | None = None  # None: not a staff user
    scoped: bool = False

    def may(self, wanted: tuple[str, ...]) -> bool:
        return self.permissions is not None and set(wanted) <= self.permissions


def expected(endpoint: Endpoint, caller: Caller) -> int:
    """What ``caller`` gets, by the platform's rules (see the module docstring)."""
    if endpoint.allow == PUBLIC:
        return 401 if endpoint.drf and caller.name == WRITE_KEY else endpoint.ok
    if endpoint.allow == SOURCE:
        return endpoint.ok if caller.name == WRITE_KEY else 401
    if caller.permissions is None:
        return 302 if endpoint.console else 401
    if endpoint.allow != STAFF and not caller.may(endpoint.allow):  # type: ignore[arg-type]
        if endpoint.path.startswith("/console/?") and caller.permissions & {
            VIEW_SEGMENTS,
            VIEW_TAGS,
            VIEW_AUDIT,
            VIEW_INSIGHTS,
        }:
            return 302  # the search is the console's home: a role that may not search lands elsewhere
        return 403
    if caller.scoped and endpoint.member:
        return 404
    if caller.scoped and endpoint.unscoped_only:
        return 403
    return endpoint.ok


@pytest.fixture
def rows() -> dict[str, object]:
    """One of every row an endpoint names: the member is seen only at the Beijing store (out of
    a Shanghai-scoped user's sight)."""
    beijing: Any = SourceFactory.create(pos=True, store_code="BJ01")
    SourceFactory(pos=True, store_code=SCOPED_STORE)
    first = EventFactory.create(source=beijing, type="identify", user_id="", anonymous_id="",
                         traits={"phone": "13900139000", "name": "Wang Fang"})  # fmt: skip
    events_process_pending()
    member = EventResolution.objects.get(event=first).member_id
    segment = segment_static_set(
        segment=Segment.objects.create(key="list", name="List", kind="static"), member_ids=[member]
    )
    Tag.objects.create(key="vip", name="VIP", kind="manual")
    now = timezone.now()
    campaign = CouponCampaign.objects.create(
        name="Autumn", benefit="amount", value=Decimal(20), valid_from=now - timedelta(days=1),
        valid_until=now + timedelta(days=30), channels=[],
    )  # fmt: skip
    Coupon.objects.create(code="AUTUMN-1", campaign=campaign, member_id=member)
    webhook = SegmentWebhook.objects.create(segment=segment, url="https://tool.example.com/hook", secret="s")
    rejected = RejectedEvent.objects.create(
        source=beijing, code="invalid", reason="bad", errors=[], received_at=now
    )
    parked = {"error": "boom", "traceback": "", "first_failed_at": now, "last_failed_at": now}
    parked_event = ParkedEvent.objects.create(event=first, stage="identity", **parked)
    parked_member = ParkedMember.objects.create(member_id=member, **parked)
    privacy_request = PrivacyRequest.objects.create(kind=PrivacyRequest.Kind.ACCESS, member_id=member)
    alert_rule = AlertRule.objects.get(key="parked-work")
    alert = Alert.objects.create(
        rule=alert_rule, level="red", subject="parked events", value=1, summary="1 events parked",
        opened_at=now, last_seen_at=now,
    )  # fmt: skip
    funnel = Funnel.objects.create(
        name="Views", steps=[{"event": "Product Viewed"}, {"event": "Order Completed"}]
    )
    spend = CampaignSpend.objects.create(channel="app", campaign="sale", period_start=now.date(),
                                         period_end=now.date(), amount=Decimal(100), currency="CNY")  # fmt: skip
    import_job = ImportJob.objects.create(
        kind="orders", name="crm", file_name="orders.csv", path="/nowhere", sha256="0" * 64
    )
    return {
        "funnel": funnel.pk, "spend": spend.pk,
        "member": member, "segment": segment.key, "tag": "vip", "coupon": "AUTUMN-1", "campaign": campaign.pk,
        "webhook": webhook.pk, "source": beijing.pk, "rejected": rejected.pk, "parked_event": parked_event.pk,
        "parked_member": parked_member.pk, "privacy_request": privacy_request.pk, "write_key": beijing.write_key,
        "alert_rule": alert_rule.pk, "alert": alert.pk,
        "import_job": import_job.pk,
    }  # fmt: skip


def callers(write_key: str) -> Iterator[Caller]:
    yield Caller(ANONYMOUS, Client(), Client())
    api = Client(HTTP_AUTHORIZATION=f"Bearer {write_key}")
    yield Caller(WRITE_KEY, api, Client(HTTP_AUTHORIZATION=f"Bearer {write_key}"))
    for role in Role:
        for scoped in (False, True):
            name = f"{role}{'@store' if scoped else ''}"
            user = staff_user_ensure(username=f"matrix-{name}", role=role)
            if scoped:
                staff_scope_set(user=user, stores=[SCOPED_STORE], by=None, channel="cli")
            token = token_issue(user=user, name="matrix").secret
            console = Client()
            console.force_login(user)
            permissions = frozenset(user.get_all_permissions())
            yield Caller(name, Client(HTTP_AUTHORIZATION=f"Token {token}"), console, permissions, scoped)


def call(endpoint: Endpoint, caller: Caller, rows: dict[str, object]) -> int:
    """The status ``caller`` gets, in a savepoint rolled back after it."""
    path = endpoint.path.format(**rows)
    client = caller.console if endpoint.console else caller.api
    headers: dict[str, Any] = dict(endpoint.headers)
    if endpoint.allow == SOURCE and caller.name == WRITE_KEY:
        headers["HTTP_AUTHORIZATION"] = basic_auth(str(rows["write_key"]))  # a write key's own use
    elif endpoint.allow == SOURCE and caller.permissions is not None:
        headers["HTTP_AUTHORIZATION"] = basic_auth(caller.api.defaults["HTTP_AUTHORIZATION"].split()[1])
    with transaction.atomic():
        if endpoint.console:
            data = endpoint.body or {}
            form = urlencode(data)
            response = client.generic(
                endpoint.method, path, form, "application/x-www-form-urlencoded", **headers
            )
        else:
            body = b"" if endpoint.body is None else orjson.dumps(endpoint.body)
            response = client.generic(endpoint.method, path, body, "application/json", **headers)
        if response.streaming:
            b"".join(response.streaming_content)  # type: ignore[attr-defined]
        transaction.set_rollback(True)
    return response.status_code


def _routes() -> Iterator[tuple[str, object]]:
    def walk(patterns: list, prefix: str) -> Iterator[tuple[str, object]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    for route, callback in walk(get_resolver().url_patterns, ""):
        if not route.startswith("admin/"):  # Django's admin site: is_staff and model permissions
            yield route, callback


def _methods(callback: object) -> set[str]:
    """The methods a DRF view answers (none known for a function view)."""
    actions = getattr(callback, "actions", None)
    if actions:  # DRF adds "head" beside "get" once a request was served: HEAD is GET
        return {method.upper() for method in actions} - {"HEAD"}
    cls = getattr(callback, "cls", None)
    if cls is None:
        return set()
    return {m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(cls, m)}


def test_every_endpoint_is_in_the_matrix():
    placeholders = dict.fromkeys(
        (
            "member",
            "campaign",
            "webhook",
            "source",
            "rejected",
            "parked_event",
            "parked_member",
            "privacy_request",
            "alert_rule",
            "alert",
            "funnel",
            "spend",
            "import_job",
        ),
        1,
    )
    placeholders |= {"segment": "list", "tag": "vip", "coupon": "C"}
    listed: dict[str, set[str]] = {}
    for endpoint in ENDPOINTS:
        match = resolve(endpoint.path.format(**placeholders).split("?")[0])
        listed.setdefault(match.route, set()).add(endpoint.method)
    routes = dict(_routes())

    def normal(route: str) -> str:
        return route.replace("^", "").replace("$", "")

    by_route = {normal(route): callback for route, callback in routes.items()}
    assert {normal(r) for r in listed} == set(by_route), "an endpoint is missing from the matrix (or gone)"
    for route, methods in listed.items():
        answered = _methods(by_route[normal(route)])
        if answered and not re.match(r"api/(schema|docs|redoc)", route) and route:
            assert answered == methods, (
                f"{route}: {sorted(answered)} answered, {sorted(methods)} in the matrix"
            )


def test_every_caller_gets_what_the_matrix_says(rows):
    table: dict[tuple[str, str], dict[str, int]] = {}
    wrong = []
    for caller in callers(str(rows["write_key"])):
        for endpoint in ENDPOINTS:
            got = call(endpoint, caller, rows)
            table.setdefault((endpoint.method, endpoint.path), {})[caller.name] = got
            if got != expected(endpoint, caller):
                wrong.append(
                    f"{caller.name:24} {endpoint.method:6} {endpoint.path}: {got}, expected {expected(endpoint, caller)}"
                )
    assert wrong == [], "\n" + "\n".join(wrong)
    _readme_check(table)


def matrix_markdown(table: dict[tuple[str, str], dict[str, int]]) -> str:
    roles = [str(role) for role in Role]
    header = ["Endpoint", "none", "write key", *roles]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, path), got in table.items():
        cells = [f"`{method} {path}`", str(got[ANONYMOUS]), str(got[WRITE_KEY])]
        for role in roles:
            unscoped, scoped = got[role], got[f"{role}@store"]
            cells.append(str(unscoped) if unscoped == scoped else f"{unscoped} / {scoped}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _readme_check(table: dict[tuple[str, str], dict[str, int]]) -> None:
    text = README.read_text()
    generated = f"{START}\n{matrix_markdown(table)}\n{END}"
    current = re.search(re.escape(START) + ".*?" + re.escape(END), text, re.S)
    if os.environ.get("CDP_WRITE_MATRIX"):
        README.write_text(
            text.replace(current.group(0), generated) if current else text + "\n" + generated + "\n"
        )
        return
    assert current is not None, "README.md has no permission matrix: run with CDP_WRITE_MATRIX=1"
    assert current.group(0) == generated, (
        "README.md's permission matrix is stale: run with CDP_WRITE_MATRIX=1"
    )
