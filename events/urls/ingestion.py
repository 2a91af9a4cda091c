"""Segment HTTP Tracking API paths, mounted at /v1/."""

from django.urls import path

from events.api import ingestion

urlpatterns = [
    path("identify", ingestion.IdentifyView.as_view(), name="ingest-identify"),
    path("track", ingestion.TrackView.as_view(), name="ingest-track"),
    path("page", ingestion.PageView.as_view(), name="ingest-page"),
    path("screen", ingestion.ScreenView.as_view(), name="ingest-screen"),
    path("alias", ingestion.AliasView.as_view(), name="ingest-alias"),
    path("group", ingestion.GroupView.as_view(), name="ingest-group"),
    path("batch", ingestion.BatchView.as_view(), name="ingest-batch"),
    # Segment's mobile libraries post their batches to /v1/b.
    path("b", ingestion.BatchView.as_view(), name="ingest-batch-mobile"),
]
