"""A database outage answers ``503`` with ``Retry-After`` in the one JSON error shape, on
ingestion and the staff API, and the service answers again as soon as PostgreSQL is back.

The live test runs the web server as the Dockerfile does (gunicorn, ``config.wsgi`` with its
default settings: production) against a private PostgreSQL that it stops and restarts; the
shared PostgreSQL is never touched."""

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import OperationalError
from django.test import Client, override_settings

from cdp.errors import RETRY_AFTER_SECONDS
from tests.processes import ROOT, PostgresServer, WebServer

#: Behind the TLS proxy production expects (config.settings.production).
HTTPS = {"X-Forwarded-Proto": "https"}


def assert_outage(response: requests.Response) -> None:
    assert response.status_code == 503, (response.url, response.status_code, response.text[:500])
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message", "errors"}
    assert body["code"] == "service_unavailable"


@pytest.fixture
def private_postgres():
    reason = PostgresServer.available()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def manage(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.production"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return (done.stdout.strip().splitlines() or [""])[-1]  # the key or token commands print last


@pytest.mark.integration
def test_ingestion_and_the_staff_api_answer_503_while_postgresql_is_down(private_postgres, tmp_path: Path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "PRIVACY_FINGERPRINT_KEY": secrets.token_urlsafe(32),
        "PRIVACY_SEALING_KEYS": "k1=" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "PRIVACY_BLIND_INDEX_KEY": secrets.token_urlsafe(32),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": private_postgres.create_database("cdp"),
        "DATABASE_CONNECT_TIMEOUT": "2",
        # Publishing the pipeline's nudge needs a broker; this run's own Redis database.
        "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        # The staff API's rate limit counts there too (not in the default database 0).
        "RATE_LIMIT_REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        "LOG_LEVEL": "WARNING",
    }
    manage("migrate", "--noinput", "-v", "0", env=env)
    write_key = manage("create_source", "Outage web", "--kind", "web", env=env)
    token = manage("create_token", "outage-admin", "--role", "admin", env=env)
    server = WebServer(env=env, workdir=tmp_path)  # no DJANGO_SETTINGS_MODULE: wsgi's default
    server.start()
    basic = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    track: dict[str, Any] = {"userId": "outage-1", "event": "Product Viewed", "properties": {"sku": "A-1"}}
    try:
        with requests.Session() as client:
            client.headers.update(HTTPS)

            def ingest() -> requests.Response:
                return client.post(
                    f"{server.base_url}/v1/track", json=track, headers={"Authorization": basic}, timeout=30
                )

            def staff(path: str = "/api/v1/sources/") -> requests.Response:
                return client.get(
                    f"{server.base_url}{path}", headers={"Authorization": f"Token {token}"}, timeout=30
                )

            def health() -> requests.Response:
                return client.get(f"{server.base_url}/health/", timeout=30)

            assert ingest().status_code == 200
            assert staff().status_code == 200
            assert health().status_code == 200
            assert "Retry-After" not in health().headers

            private_postgres.stop()
            for _ in range(2):  # the connection that was cut, then no server to connect to
                assert_outage(ingest())
                assert_outage(staff())
            assert_outage(staff("/api/v1/members/1/"))
            # Health says so in its own shape, and tells the prober when to look again.
            probe = health()
            assert (probe.status_code, probe.json()["status"]) == (503, "down")
            assert probe.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            # A page outside DRF (the console's login check reads the session): 503 too.
            console = client.get(
                f"{server.base_url}/console/",
                cookies={"sessionid": "s" * 32},
                allow_redirects=False,
                timeout=30,
            )
            assert console.status_code == 503
            assert console.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)

            private_postgres.start()
            assert ingest().status_code == 200
            assert staff().status_code == 200
            assert staff().json()["results"][0]["name"] == "Outage web"
            assert health().status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


# --- outside any view: a middleware, the session -------------------------------------------------


class DatabaseDownMiddleware:
    """Stands for a middleware that reads the database before any view runs."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')


@pytest.mark.parametrize(
    ("path", "json"), [("/v1/track", True), ("/api/v1/sources/", True), ("/console/", False)]
)
def test_an_outage_met_outside_any_view_is_a_503_too(settings, path, json):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.cdp.test_database_outage.DatabaseDownMiddleware"]
    client = Client(raise_request_exception=False)

    response = client.get(path)

    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    if json:
        assert response.json()["code"] == "service_unavailable"
    else:
        assert response["Content-Type"].startswith("text/plain")


class CrashMiddleware(DatabaseDownMiddleware):
    def __call__(self, request):
        raise RuntimeError("a bug")


@override_settings(MIDDLEWARE=["tests.cdp.test_database_outage.CrashMiddleware"])
def test_any_other_crash_on_an_api_path_is_a_json_500():
    response = Client(raise_request_exception=False).get("/api/v1/sources/")

    assert response.status_code == 500
    assert response.json() == {
        "code": "server_error",
        "message": "Something went wrong on our side; it has been logged.",
        "errors": [],
    }
