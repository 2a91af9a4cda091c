"""Imports API, mounted at /api/v1/."""

from django.urls import path

from members.imports import api

urlpatterns = [
    path("imports/", api.ImportJobsView.as_view(), name="import-jobs"),
    path("imports/<int:job_id>/", api.ImportJobView.as_view(), name="import-job"),
    path("imports/<int:job_id>/problems/", api.ImportProblemsView.as_view(), name="import-problems"),
]
