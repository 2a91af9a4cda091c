"""Staff API of the members app, mounted at /api/v1/.

Ids in paths are ``<int:>`` (a router's, ``lookup_value_regex``): anything else matches no
route and is a JSON 404 (``cdp.errors.not_found``); a number past any id is a 404 as well.
"""

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from members.api import MemberViewSet
from members.api_parking import ParkedMemberViewSet
from members.consent import api as consent
from members.loyalty import api as loyalty
from members.segments.api import definitions as segment_definitions
from members.segments.api import exports as segment_exports
from members.segments.api import read as segments
from members.segments.api import webhooks as segment_webhooks

router = SimpleRouter()
router.register("members", MemberViewSet, basename="member")
router.register("parked-members", ParkedMemberViewSet, basename="parked-member")

urlpatterns = [
    *router.urls,
    path("members/<int:member_id>/consent/", consent.MemberConsentView.as_view(), name="member-consent"),
    path(
        "members/<int:member_id>/consent/history/",
        consent.MemberConsentHistoryView.as_view(),
        name="member-consent-history",
    ),
    path("members/<int:member_id>/points/", loyalty.PointsView.as_view(), name="member-points"),
    path(
        "members/<int:member_id>/points/adjust/",
        loyalty.PointsAdjustView.as_view(),
        name="member-points-adjust",
    ),
    path(
        "members/<int:member_id>/points/redeem/",
        loyalty.PointsRedeemView.as_view(),
        name="member-points-redeem",
    ),
    path("points/expiring/", loyalty.ExpiringView.as_view(), name="points-expiring"),
    # Tills post to /coupons/{code}/redeem with or without the trailing slash.
    re_path(r"^coupons/(?P<code>[^/]+)/redeem/?$", loyalty.CouponRedeemView.as_view(), name="coupon-redeem"),
    re_path(
        r"^coupons/(?P<code>[^/]+)/release/?$", loyalty.CouponReleaseView.as_view(), name="coupon-release"
    ),
    path("coupons/<str:code>/", loyalty.CouponView.as_view(), name="coupon"),
    path("campaigns/", loyalty.CampaignsView.as_view(), name="campaigns"),
    path("campaigns/<int:campaign_id>/issue/", loyalty.CampaignIssueView.as_view(), name="campaign-issue"),
    path("segments/", segment_definitions.SegmentsView.as_view(), name="segments"),
    path("segments/<slug:key>/", segment_definitions.SegmentView.as_view(), name="segment"),
    path("segments/<slug:key>/copy/", segment_definitions.SegmentCopyView.as_view(), name="segment-copy"),
    path(
        "segments/<slug:key>/members/",
        segment_definitions.SegmentMembersView.as_view(),
        name="segment-members",
    ),
    path("segments/<slug:key>/changes/", segments.SegmentChangesView.as_view(), name="segment-changes"),
    path("tags/", segment_definitions.TagsView.as_view(), name="tags"),
    path("tags/<slug:key>/", segment_definitions.TagView.as_view(), name="tag"),
    path("members/<int:member_id>/tags/", segment_definitions.MemberTagsView.as_view(), name="member-tags"),
    path(
        "members/<int:member_id>/tags/history/",
        segment_definitions.MemberTagHistoryView.as_view(),
        name="member-tag-history",
    ),
    path(
        "members/<int:member_id>/tags/<slug:key>/",
        segment_definitions.MemberTagView.as_view(),
        name="member-tag",
    ),
    path("segments/<slug:key>/export/", segment_exports.SegmentExportView.as_view(), name="segment-export"),
    path(
        "segments/<slug:key>/webhooks/",
        segment_webhooks.SegmentWebhooksView.as_view(),
        name="segment-webhooks",
    ),
    path(
        "segments/<slug:key>/webhooks/<int:webhook_id>/",
        segment_webhooks.SegmentWebhookView.as_view(),
        name="segment-webhook",
    ),
    path(
        "segments/<slug:key>/webhooks/<int:webhook_id>/deliveries/",
        segment_webhooks.WebhookDeliveriesView.as_view(),
        name="segment-webhook-deliveries",
    ),
]
