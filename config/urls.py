"""Root URLs: ingestion (Segment paths), the staff API, its schema and docs, admin, health."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cdp.health import health

urlpatterns = [
    path("v1/", include("events.urls.ingestion")),
    path("api/v1/", include("events.urls.staff")),
    path("api/v1/", include("members.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("health/", health, name="health"),
]
