"""Health, the start-up service check, and the API schema."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection

from cdp.errors import RETRY_AFTER_SECONDS


@pytest.mark.django_db
def test_health_reports_database_and_broker(client):
    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "database": "ok", "broker": "ok", "parked": {"events": 0, "members": 0}
    }  # fmt: skip


@pytest.mark.django_db
def test_health_is_degraded_not_down_without_the_broker(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json()["status"] == "degraded"


def test_health_is_down_with_retry_after_without_the_database(client, monkeypatch):
    def refused() -> None:
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    monkeypatch.setattr(connection, "cursor", refused)

    response = client.get("/health/")

    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.json()["status"] == "down"


def test_ensure_services_passes_when_both_are_up():
    out = StringIO()

    call_command("ensure_services", stdout=out)

    assert "reachable" in out.getvalue()


def test_ensure_services_names_a_missing_database_unless_only_the_server_is_checked(monkeypatch):
    from django.conf import settings

    monkeypatch.setitem(settings.DATABASES["default"], "NAME", "cdp_never_created")

    with pytest.raises(CommandError, match="Database 'cdp_never_created' does not exist"):
        call_command("ensure_services", stdout=StringIO())
    out = StringIO()
    call_command("ensure_services", "--server-only", stdout=out)  # what `make test` runs

    assert "reachable" in out.getvalue()


def test_ensure_services_says_what_to_start_when_postgres_is_down(monkeypatch):
    from django.conf import settings

    monkeypatch.setitem(settings.DATABASES["default"], "PORT", 1)

    with pytest.raises(CommandError) as failure:
        call_command("ensure_services", stdout=StringIO())

    assert "PostgreSQL is not reachable at 127.0.0.1:1" in str(failure.value)
    assert "pg_ctlcluster" in str(failure.value)


def test_ensure_services_says_what_to_start_when_redis_is_down(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    with pytest.raises(CommandError) as failure:
        call_command("ensure_services", stdout=StringIO())

    assert "Redis is not reachable at 127.0.0.1:1" in str(failure.value)
    assert "redis-server" in str(failure.value)


@pytest.mark.django_db
def test_openapi_schema_documents_ingestion_and_staff_api(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/v1/track", "/v1/batch", "/api/v1/sources/", "/api/v1/rejected-events/", "/api/v1/members/",
        "/api/v1/members/{id}/", "/api/v1/members/{id}/events/", "/api/v1/members/{id}/split/",
    } <= set(paths)  # fmt: skip
    assert client.get("/api/docs/").status_code == 200


def test_the_openapi_schema_is_valid_and_complete(tmp_path):
    # --fail-on-warn: every view's parameters, responses and authentication are described
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
