"""The staff API's interactive docs, Swagger UI at ``/api/docs/`` and ReDoc at ``/api/redoc/``,
served wholly by the app: their scripts and styles come from drf-spectacular-sidecar's static
files (``SWAGGER_UI_DIST`` / ``REDOC_DIST`` = ``SIDECAR``), ReDoc's page is ours without the
web fonts drf-spectacular links to, and a Content-Security-Policy keeps the browser from
fetching anything from another host (ReDoc's footer links a logo on a CDN: it is not loaded).
The docs work on a closed network and tell no third party who reads them."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView

#: Only this host; inline styles (both UIs set them from script), blob workers (ReDoc's
#: search) and data: images (Swagger UI's icons).
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)


class _SameHostOnly:
    @extend_schema(exclude=True)
    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)  # type: ignore[misc]
        response["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
        return response


class SwaggerView(_SameHostOnly, SpectacularSwaggerSplitView):
    """Swagger UI; its start-up script is a file of its own (``?script``), not inline, so that
    the policy need not allow inline scripts."""


class RedocView(_SameHostOnly, SpectacularRedocView):
    template_name = "api/redoc.html"
