"""Ingestion's rate limit: per write key (``RATE_LIMIT_INGESTION``; overrides by source name,
``"ingestion:<name>"``), counted by source, so no key ever reaches Redis. It fails open: with
Redis unreachable events are still accepted (and kept), without a limit, and the outage is
logged once a minute. One Redis round trip per request; a batch counts as one request (its
size is bounded by the batch limit). The DRF views count through ``WriteKeyThrottle``, the
single-call path (``events.api.single``) through ``write_key_allows``: the same counter."""

from rest_framework.request import Request

from cdp.ratelimits import Limit, RateLimitUnavailable, lease_for, rate_for, rate_limit_take
from cdp.throttling import CredentialThrottle
from events.models import Source


def _counter(source_pk: int) -> str:
    return f"source:{source_pk}"


class WriteKeyThrottle(CredentialThrottle):
    name = "ingestion"
    counted = "this write key"
    fail_open = True

    def credential(self, request: Request) -> tuple[str, str] | None:
        source = request.auth
        if not isinstance(source, Source):
            return None
        return _counter(source.pk), source.name


def write_key_allows(*, source_pk: int, source_name: str) -> bool:
    """Count one request against the source's limit, on the counter ``WriteKeyThrottle`` uses;
    whether it is allowed (also when Redis cannot be reached: fail open). Hits are taken a
    thousandth of the limit at a time (``cdp.ratelimits.rate_limit_take``): one Redis round
    trip per many requests. A refused request is not counted, so the caller may leave its
    answer (429, Retry-After) to the throttle."""
    rate = rate_for(WriteKeyThrottle.name, source_name)
    if rate is None:
        return True
    limit = Limit(key=f"{WriteKeyThrottle.name}:{_counter(source_pk)}", rate=rate)
    try:
        verdict = rate_limit_take(limit, lease=lease_for(rate))
    except RateLimitUnavailable:
        return True
    return verdict.allowed
