"""Ingestion's rate limit: per write key (``RATE_LIMIT_INGESTION``; overrides by source name,
``"ingestion:<name>"``), counted by source, so no key ever reaches Redis. It fails open: with
Redis unreachable events are still accepted (and kept), without a limit, and the outage is
logged once a minute. One Redis round trip per request; a batch counts as one request (its
size is bounded by the batch limit)."""

from rest_framework.request import Request

from cdp.throttling import CredentialThrottle
from events.models import Source


class WriteKeyThrottle(CredentialThrottle):
    name = "ingestion"
    counted = "this write key"
    fail_open = True

    def credential(self, request: Request) -> tuple[str, str] | None:
        source = request.auth
        if not isinstance(source, Source):
            return None
        return f"source:{source.pk}", source.name
