"""``GET /health/``: is the database reachable (required) and the broker (degraded if not)."""

import redis
from django.conf import settings
from django.db import connection
from django.db.utils import Error as DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


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


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    database, broker = _database_ok(), _broker_ok()
    state = "ok" if database and broker else ("degraded" if database else "down")
    body = {
        "status": state,
        "database": "ok" if database else "unreachable",
        "broker": "ok" if broker else "unreachable (events are kept and processed when it returns)",
    }
    return JsonResponse(body, status=200 if database else 503)
