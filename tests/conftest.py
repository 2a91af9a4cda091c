import base64
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from rest_framework.test import APIClient

from cdp import ratelimits, staff_tokens, tasks
from tests.factories import SourceFactory


@pytest.fixture(autouse=True)
def _broker_not_backed_off() -> None:
    """Each test starts with the broker taken for up: a test that takes it away leaves
    ``cdp.tasks`` skipping publishes for a few seconds, which must not leak into the next."""
    tasks._broker_retry_at = 0.0


@pytest.fixture(autouse=True)
def _rate_limits_of_its_own(settings: Any) -> None:
    """Each test counts against limits of its own (a key prefix of its own: the counters of an
    account name or an id another test used are not its), and starts with the rate limits'
    Redis taken for up (a test that took it away leaves ``cdp.ratelimits`` skipping it a while)."""
    settings.RATE_LIMIT_KEY_PREFIX = f"{settings.RATE_LIMIT_KEY_PREFIX}:{uuid.uuid4().hex[:12]}"
    ratelimits._down_until = 0.0
    ratelimits._outage_logged_at = None


@pytest.fixture(autouse=True)
def _staff_tokens_read_afresh() -> None:
    """Each test starts with no staff token kept by this process (``cdp.staff_tokens``) and its
    Redis taken for up: what an earlier test's rolled-back rows stood for is not this one's."""
    staff_tokens._entries.clear()
    staff_tokens._down_until = 0.0


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def source(db: None):
    return SourceFactory()


@pytest.fixture
def pos_source(db: None):
    return SourceFactory(pos=True, store_code="S001")


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


@pytest.fixture
def ingest(api_client: APIClient, source: Any) -> Callable[..., Any]:
    """POST a JSON body to /v1/<call> as ``source`` (or another ``write_key``)."""

    def post(
        call: str, body: Any, *, write_key: str | None = None, raw: bytes | None = None, **headers: Any
    ) -> Any:
        key = source.write_key if write_key is None else write_key
        if key:
            headers.setdefault("HTTP_AUTHORIZATION", basic_auth(key))
        data = raw if raw is not None else orjson.dumps(body)
        # Django's test client sends bytes as they are (DRF's stubs type the body as str).
        return api_client.generic("POST", f"/v1/{call}", data, content_type="application/json", **headers)  # type: ignore[arg-type]

    return post
