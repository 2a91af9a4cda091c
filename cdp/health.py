"""``GET /health/``: is the database reachable (required), the broker (degraded if not), and
is anything parked (degraded while something is: ``HEALTH_PARKED_COUNTS``).

Without the database the answer is ``503`` with ``Retry-After``, as every other answer during
an outage (``cdp.errors``): a load balancer or orchestrator probing it waits as long as a client.
"""

import redis
from django.conf import settings
from django.db import connection
from django.db.utils import Error as DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET

from cdp.errors import RETRY_AFTER_SECONDS


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _broker_ok() -> bool:
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1)
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _parked() -> dict[str, int]:
    """How many of each kind are parked (the apps count their own: the kernel imports none)."""
    return {name: import_string(path)() for name, path in settings.HEALTH_PARKED_COUNTS.items()}


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    database, broker = _database_ok(), _broker_ok()
    parked = _parked() if database else {}
    state = "ok" if database and broker and not any(parked.values()) else ("degraded" if database else "down")
    body: dict[str, object] = {
        "status": state,
        "database": "ok" if database else "unreachable",
        "broker": "ok" if broker else "unreachable (events are kept and processed when it returns)",
    }
    if database:
        body["parked"] = parked
        return JsonResponse(body)
    response = JsonResponse(body, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
