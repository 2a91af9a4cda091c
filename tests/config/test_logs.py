"""No credential and no looked-up personal data reaches the logs: the web server run as the
Dockerfile runs it (granian, ``config/granian.py``) and gunicorn with its configuration
(``config/gunicorn.py``), production settings, answers ingestion with write keys (as the
Basic user name, in the body, unknown, rate-limited, refused) and the staff API with a token and
a lookup by phone, and its whole output (access log and Django's own log) holds none of them."""

import base64
import importlib
import json
import secrets
from datetime import timedelta

import pytest
import requests
from django.conf import settings
from django.db import connection
from gunicorn.config import Config

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from config import gunicorn as gunicorn_settings
from config.gunicorn import RedactingLogger
from tests.config.test_production import clean
from tests.factories import SourceFactory
from tests.processes import ROOT, WebServer

PHONE = "13800138000"


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server_name", ["granian", "gunicorn"])
def test_write_keys_tokens_and_looked_up_phones_never_reach_the_logs(tmp_path, server_name):
    source, body_source = SourceFactory.create(), SourceFactory.create()
    token = token_issue(user=staff_user_ensure(username="logs-admin", role=Role.ADMIN), name="logs").secret
    unknown_key = "wk_" + secrets.token_urlsafe(32)
    database = connection.settings_dict
    env = clean({
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "PRIVACY_FINGERPRINT_KEY": secrets.token_urlsafe(32),  # required in production (erasure)
        # Required too, and the test's own: the server seals into the test's database.
        "PRIVACY_SEALING_KEYS": settings.PRIVACY_SEALING_KEYS,
        "PRIVACY_BLIND_INDEX_KEY": settings.PRIVACY_BLIND_INDEX_KEY,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "RATE_LIMIT_REDIS_URL": settings.RATE_LIMIT_REDIS_URL,
        "RATE_LIMIT_KEY_PREFIX": settings.RATE_LIMIT_KEY_PREFIX,
        "RATE_LIMIT_OVERRIDES": json.dumps({f"ingestion:{source.name}": "3/min"}),
        "LOG_LEVEL": "INFO",
    })  # fmt: skip
    server = WebServer(env=env, workdir=tmp_path, server=server_name)  # no DJANGO_SETTINGS_MODULE: production
    server.start()
    track = {"userId": "u-1", "event": "Product Viewed"}
    try:
        with requests.Session() as client:
            client.headers["X-Forwarded-Proto"] = "https"  # behind the TLS proxy production expects
            url = server.base_url

            def post(body: dict, key: str | None = None) -> int:
                headers = {"Authorization": basic(key)} if key else {}
                return client.post(f"{url}/v1/track", json=body, headers=headers, timeout=30).status_code

            statuses = [post(track, source.write_key) for _ in range(4)]
            in_body = post({**track, "writeKey": body_source.write_key})
            unknown = post(track, unknown_key)
            invalid = post({"event": "No one"}, body_source.write_key)
            lookup = client.get(f"{url}/api/v1/members/", params={"phone": PHONE},
                                headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    finally:
        server.stop()
    log = server.output()

    assert statuses == [200, 200, 200, 429]
    assert (in_body, unknown, invalid) == (200, 401, 400)
    assert lookup.status_code in (200, 404), lookup.text
    # The access log is on, and says what happened...
    for status in (200, 429, 401, 400):
        assert f'"POST /v1/track HTTP/1.1" {status} ' in log, log
    assert '"GET /api/v1/members/ HTTP/1.1" ' in log
    assert "Too Many Requests: /v1/track" in log  # Django's own log too
    # ... without the credentials, in any form, or the phone looked up.
    for secret in (source.write_key, body_source.write_key, unknown_key, token, PHONE):
        assert secret not in log
        assert base64.b64encode(f"{secret}:".encode()).decode() not in log
    assert "Traceback" not in log


def test_the_access_log_blanks_credentials_whatever_the_format():
    """An operator's own ``--access-logformat`` with the user name, the query, the full request
    line, the Authorization and Cookie headers or the referrer still logs none of them."""
    logger = RedactingLogger(Config())
    environ = {
        "REQUEST_METHOD": "GET", "RAW_URI": f"/api/v1/members/?phone={PHONE}", "PATH_INFO": "/api/v1/members/",
        "QUERY_STRING": f"phone={PHONE}", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "203.0.113.9",
        "HTTP_AUTHORIZATION": basic("wk_secret"), "HTTP_COOKIE": "sessionid=s3cr3t",
        "HTTP_REFERER": f"https://cdp.example.com/console/?phone={PHONE}",
    }  # fmt: skip

    class Answer:
        status = "200 OK"
        sent = 10
        headers = [("Set-Cookie", "sessionid=s3cr3t")]

    headers = [("AUTHORIZATION", environ["HTTP_AUTHORIZATION"]), ("COOKIE", "sessionid=s3cr3t"),
               ("X-API-KEY", "k3y"), ("USER-AGENT", "curl")]  # fmt: skip
    atoms = logger.atoms(Answer(), headers, environ, timedelta(milliseconds=5))
    line = json.dumps(atoms)

    for secret in ("wk_secret", basic("wk_secret"), "s3cr3t", "k3y", PHONE):
        assert secret not in line
    assert atoms["r"] == "GET /api/v1/members/ HTTP/1.1"
    assert atoms["f"] == "https://cdp.example.com/console/"
    assert atoms["{user-agent}i"] == "curl"


def test_the_dockerfile_runs_granian_with_its_configuration():
    dockerfile = (ROOT / "Dockerfile").read_text()
    command = dockerfile.split("\nCMD", 1)[1]

    assert '"-m", "config.granian"' in command
    # The model and the log are the module's (the log test above runs it), not overridden.
    assert "--access-log" not in command
    assert "granian " not in command


def test_the_server_keeps_connections_alive_with_threaded_workers(monkeypatch):
    """gunicorn's model, kept as the fallback: gthread (sync workers close every connection)."""
    monkeypatch.setenv("GUNICORN_THREADS", "6")
    config = Config()
    for name, value in vars(importlib.reload(gunicorn_settings)).items():
        if name in config.settings:
            config.set(name, value)

    assert config.worker_class_str == "gthread"
    assert config.threads == 6
    assert config.keepalive == 30
    assert config.workers >= 1
