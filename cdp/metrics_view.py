"""``GET /metrics``: the Prometheus text of every process's metrics and the scrape-time states.

Protected, since the figures tell how the business runs: a scraper sends
``Authorization: Bearer <METRICS_TOKEN>``, or comes from an address in
``METRICS_ALLOWED_NETWORKS`` (CIDRs; the client's address as ``cdp.middleware.client_address``
reads it, behind ``TRUSTED_PROXY_COUNT`` proxies). Neither set: nobody may scrape (403).

The states (backlog, parked, dirty members, disabled webhooks) come from the apps' collectors,
``METRICS_COLLECTORS``: dotted paths to ``callable() -> Iterable[Metric]``, each one cheap
query, so the kernel imports no app. A collector that fails (the database away) is reported
in ``cdp_scrape_collector_up`` as 0, and the rest of the page still answers.
"""

import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cdp.errors import is_database_outage
from cdp.metrics import DATABASE_CONNECTION_ERRORS, multiprocess_dir
from cdp.middleware import client_address

logger = logging.getLogger(__name__)


class AppCollectors(Collector):
    """The apps' scrape-time collectors (``METRICS_COLLECTORS``), each guarded."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = list(paths)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "cdp_scrape_collector_up",
            "Whether a scrape-time collector answered (1) or failed (0).",
            labels=["collector"],
        )
        for path in self.paths:
            collector: Callable[[], Iterable[Metric]] = import_string(path)
            try:
                metrics = list(collector())
            except Exception as exc:  # one failing reader must not hide every other figure
                if is_database_outage(exc):
                    DATABASE_CONNECTION_ERRORS.labels("web").inc()
                logger.warning("Metrics collector %s failed: %s", path, exc)
                up.add_metric([path], 0)
                continue
            up.add_metric([path], 1)
            yield from metrics
        yield up


def scrape_registry() -> CollectorRegistry:
    """What one scrape reads: every process's values (multiprocess mode) or this process's,
    and the apps' states."""
    registry = CollectorRegistry(auto_describe=False)
    if path := multiprocess_dir():
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ProcessValues())
    registry.register(AppCollectors(settings.METRICS_COLLECTORS))
    return registry


class _ProcessValues(Collector):
    """This process's own metrics (outside multiprocess mode), as the default registry has them."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_allowed(request: HttpRequest) -> bool:
    token: str = settings.METRICS_TOKEN
    given = request.META.get("HTTP_AUTHORIZATION", "")
    if (
        token
        and given.startswith("Bearer ")
        and hmac.compare_digest(given[7:].strip().encode(), token.encode())
    ):
        return True
    address = client_address(request)
    if address is None:
        return False
    ip = ipaddress.ip_address(address)
    return any(
        ip in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not scrape_allowed(request):
        return HttpResponse(
            "Metrics are for the scraper: send its token or scrape from an allowed address.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
