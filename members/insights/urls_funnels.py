"""Staff API of funnels, attribution, ROI, spend and cohorts, mounted at /api/v1/insights/."""

from django.urls import path

from members.insights import api_funnels as api

urlpatterns = [
    path("funnels/", api.FunnelsView.as_view(), name="insights-funnels"),
    path("funnels/preview/", api.FunnelPreviewView.as_view(), name="insights-funnel-preview"),
    path("funnels/<int:funnel_id>/", api.FunnelView.as_view(), name="insights-funnel"),
    path("funnels/<int:funnel_id>/results/", api.FunnelResultsView.as_view(), name="insights-funnel-results"),
    path(
        "funnels/<int:funnel_id>/segments/", api.FunnelSegmentView.as_view(), name="insights-funnel-segment"
    ),
    path("attribution/", api.AttributionView.as_view(), name="insights-attribution"),
    path("roi/", api.RoiView.as_view(), name="insights-roi"),
    path("spend/", api.SpendView.as_view(), name="insights-spend"),
    path("spend/upload/", api.SpendUploadView.as_view(), name="insights-spend-upload"),
    path("spend/<int:spend_id>/", api.SpendItemView.as_view(), name="insights-spend-item"),
    path("cohorts/", api.CohortsView.as_view(), name="insights-cohorts"),
]
