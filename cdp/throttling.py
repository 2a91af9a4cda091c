"""DRF throttles over ``cdp.ratelimits``: one limit per credential, answered ``429`` with
``Retry-After`` in the one error shape (``cdp.errors``).

``CredentialThrottle`` is the frame: a subclass says which credential a request carries (its
key and the subject its override is named by) and whether to fail open when Redis cannot be
reached. The staff API's (``StaffTokenThrottle``, every staff view by
``DEFAULT_THROTTLE_CLASSES``) fails closed: ``503`` with ``Retry-After``. Ingestion's (in
``events.api.throttling``) fails open. A request without the credential (no token: the
permission check has already refused it) is not limited here.
"""

from typing import TYPE_CHECKING, Any

from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from cdp.models import ApiToken
from cdp.ratelimits import Limit, RateLimitUnavailable, rate_for, rate_limit_hit

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views is loading
    from rest_framework.views import APIView


class RateLimited(exceptions.APIException):
    """``429 rate_limited``; ``wait`` becomes ``Retry-After`` (DRF's handler sets it from the
    attribute). Plain DRF exceptions, not ``cdp.errors.ApiError``: DRF loads this module while
    ``rest_framework.views`` is loading, which ``cdp.errors`` imports; its handler gives them the
    one shape all the same."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "rate_limited"

    def __init__(self, *, message: str, wait: int) -> None:
        super().__init__(detail=message, code=self.default_code)
        self.wait = wait


class RateLimitsUnavailable(exceptions.APIException):
    """``503 service_unavailable``: the limit cannot be counted (Redis unreachable), so the
    request is not served."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"

    def __init__(self, *, wait: int) -> None:
        super().__init__(
            detail="Request limits cannot be checked right now; nothing was done. Try again shortly.",
            code=self.default_code,
        )
        self.wait = wait


class CredentialThrottle(BaseThrottle):
    #: The limit's name: its setting is ``RATE_LIMIT_<NAME>``, its overrides ``"<name>:<subject>"``.
    name = ""
    #: What the limit counts, for the 429's message ("this write key").
    counted = ""
    #: Serve the request when Redis cannot be reached (else 503).
    fail_open = False

    def credential(self, request: Request) -> tuple[str, str] | None:
        """The request's credential: (its key in Redis, the subject overrides name), or None."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: "APIView") -> bool:
        credential = self.credential(request)
        if credential is None:
            return True
        key, subject = credential
        rate = rate_for(self.name, subject)
        if rate is None:
            return True
        try:
            verdict = rate_limit_hit([Limit(key=f"{self.name}:{key}", rate=rate)])
        except RateLimitUnavailable as unavailable:
            if self.fail_open:
                return True
            raise RateLimitsUnavailable(wait=unavailable.retry_after) from unavailable
        if not verdict.allowed:
            raise RateLimited(
                message=f"Too many requests for {self.counted}: at most {rate.count} in {rate.seconds} s. "
                f"Retry after {verdict.retry_after} s.",
                wait=verdict.retry_after,
            )
        return True

    def wait(self) -> float | None:  # never consulted: a refusal raises its own answer
        return None


class StaffTokenThrottle(CredentialThrottle):
    """Per staff API token (``RATE_LIMIT_STAFF``; overrides by user name, ``"staff:<username>"``)."""

    name = "staff"
    counted = "this token"
    fail_open = False

    def credential(self, request: Request) -> tuple[str, str] | None:
        token: Any = request.auth
        if not isinstance(token, ApiToken):
            return None
        return f"token:{token.pk}", request.user.get_username()
