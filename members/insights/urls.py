"""Insights API, mounted at /api/v1/insights/ (the KPI part; funnels, attribution, cohorts
and spend add their own routes)."""

from django.urls import path

from members.insights import api

urlpatterns = [
    path("insights/kpis/", api.KpiListView.as_view(), name="insights-kpis"),
    path("insights/kpis/summary/", api.KpiSummaryView.as_view(), name="insights-kpi-summary"),
    path("insights/kpis/<slug:key>/", api.KpiSeriesView.as_view(), name="insights-kpi-series"),
]
