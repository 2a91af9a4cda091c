"""Root URLs: ingestion (Segment paths), the staff API, its schema and docs, the staff
console, admin, health."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from cdp import audit_console
from cdp.api_docs import RedocView, SwaggerView
from cdp.health import health
from cdp.login import ConsoleLoginView
from cdp.metrics_view import metrics
from members import console
from members.consent import console as consent_console
from members.imports import console as imports_console
from members.insights import console as insights_console
from members.insights import console_funnels as insights_funnels_console
from members.privacy import console as privacy_console
from members.segments import console as segments_console
from ops import console as ops_console

console_urls = (
    [
        path("", console.search, name="search"),
        path("members/<int:member_id>/", console.member, name="member"),
        path("members/<int:member_id>/export/", privacy_console.member_export, name="member-export"),
        path("login/", ConsoleLoginView.as_view(), name="login"),
        path("logout/", auth_views.LogoutView.as_view(), name="logout"),
        *segments_console.urlpatterns,
        *consent_console.urlpatterns,
        *audit_console.urlpatterns,
        *insights_console.urlpatterns,
        *ops_console.urlpatterns,
        *insights_funnels_console.urlpatterns,
        *imports_console.urlpatterns,
    ],
    "console",
)

# On the API paths these answer JSON in the one error shape (cdp.errors); elsewhere Django's pages.
handler404 = "cdp.errors.not_found"
handler500 = "cdp.errors.server_error"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console:search"), name="home"),
    path("v1/", include("events.urls.ingestion")),
    path("api/v1/", include("events.urls.staff")),
    path("api/v1/", include("members.urls")),
    path("api/v1/", include("members.privacy.urls")),
    path("api/v1/", include("members.insights.urls")),
    path("api/v1/", include("members.imports.urls")),
    path("api/v1/", include("cdp.urls")),
    path("api/v1/", include("ops.urls")),
    path("api/v1/insights/", include("members.insights.urls_funnels")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", RedocView.as_view(url_name="schema"), name="api-redoc"),
    path("console/", include(console_urls)),
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
]
