"""Production defaults: the WSGI/ASGI entry points run the production settings unless told
otherwise, those settings pass Django's deployment checks as they stand, they refuse to
start without their secrets, and the app serves its own static files."""

import base64
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.processes import ROOT, WebServer

#: What production requires and nothing else: everything else keeps its default.
REQUIRED = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "cdp.example.com",
    "DATABASE_URL": "postgres://cdp@db.internal:5432/cdp",
    "PRIVACY_FINGERPRINT_KEY": secrets.token_urlsafe(32),
    "PRIVACY_SEALING_KEYS": "k1=" + base64.b64encode(secrets.token_bytes(32)).decode(),
    "PRIVACY_BLIND_INDEX_KEY": secrets.token_urlsafe(32),
}


def clean(env: dict[str, str]) -> dict[str, str]:
    """``env`` alone: the settings of this test run (its DJANGO_*, database, broker and webhook
    variables) must not leak into the process under test."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **env}


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean(env), capture_output=True, text=True, timeout=120
    )


def test_check_deploy_with_the_production_settings_reports_nothing():
    done = run(
        "manage.py", "check", "--deploy", "--fail-level", "DEBUG",
        env={**REQUIRED, "DJANGO_SETTINGS_MODULE": "config.settings.production"},
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout


@pytest.mark.parametrize("entry_point", ["config.wsgi", "config.asgi"])
def test_the_server_entry_points_default_to_the_production_settings(entry_point):
    probe = (
        f"import {entry_point}; from django.conf import settings; "
        "print(settings.SETTINGS_MODULE, settings.DEBUG, settings.SECURE_SSL_REDIRECT, "
        "settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES)"
    )

    done = run("-c", probe, env=REQUIRED)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["config.settings.production", "False", "True", "False"]


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_production_refuses_to_start_without_a_required_variable(missing):
    env = {k: v for k, v in REQUIRED.items() if k != missing}

    done = run("-c", "import config.wsgi", env=env)

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert missing in done.stderr


def test_manage_py_keeps_the_local_settings_for_development():
    done = run(
        "manage.py",
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.SETTINGS_MODULE, settings.DEBUG)",
        env={},
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["config.settings.local", "True"]


def test_the_dockerfile_runs_the_production_settings_with_the_static_files_gathered():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "ENV DJANGO_SETTINGS_MODULE=config.settings.production" in dockerfile
    assert "manage.py collectstatic --noinput" in dockerfile


#: A static file's name as the manifest storage writes it: with its content's hash.
HASHED = re.compile(r"\.[0-9a-f]{12}\.(js|css|png)$")


def assets(page: str) -> list[str]:
    """The files a page loads from /static/ (scripts, styles, icons)."""
    return [url for url in re.findall(r'(?:src|href)="([^"]+)"', page) if url.startswith("/static/")]


@pytest.mark.integration
def test_the_server_with_the_production_settings_serves_the_docs_and_admin_static_files(tmp_path: Path):
    """As the image runs: collectstatic, then the web server (granian) with the production settings. The API
    docs' Swagger UI and ReDoc (drf-spectacular-sidecar) and the admin's styles load, hashed
    and compressed, from the app itself."""
    env = {
        **REQUIRED,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        # Static files and these pages need no database: a port nothing listens on.
        "DATABASE_URL": "postgres://cdp@127.0.0.1:1/cdp",
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "LOG_LEVEL": "WARNING",
    }
    gathered = run("manage.py", "collectstatic", "--noinput", "-v", "0",
                   env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.production"})  # fmt: skip
    assert gathered.returncode == 0, gathered.stdout + gathered.stderr
    server = WebServer(env=clean(env), workdir=tmp_path)  # no DJANGO_SETTINGS_MODULE: wsgi's default
    server.start()
    try:
        with requests.Session() as client:
            client.headers["X-Forwarded-Proto"] = "https"  # behind the TLS proxy production expects
            loaded: list[str] = []
            for path in ("/api/docs/", "/api/redoc/", "/admin/login/"):
                page = client.get(f"{server.base_url}{path}", timeout=30)
                assert page.status_code == 200, (path, page.text[:500])
                loaded.extend(assets(page.text))
            assert any("swagger-ui-bundle" in url for url in loaded), loaded
            assert any("redoc.standalone" in url for url in loaded), loaded
            assert any(url.startswith("/static/admin/css/") for url in loaded), loaded
            for url in loaded:
                served = client.get(
                    f"{server.base_url}{url}", headers={"Accept-Encoding": "gzip"}, timeout=30
                )
                assert served.status_code == 200, url
                assert HASHED.search(url), url
                assert "immutable" in served.headers["Cache-Control"], (url, served.headers)
                if url.endswith((".js", ".css")):
                    assert served.headers.get("Content-Encoding") == "gzip", (url, served.headers)
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


def production_settings(*names: str, **env: str) -> list[str]:
    shown = "print(*(repr(getattr(settings, name)) for name in NAMES), sep='|')".replace("NAMES", repr(names))
    probe = f"from django.conf import settings; {shown}"
    done = run("-c", f"import config.wsgi; {probe}", env={**REQUIRED, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split("|")


def test_production_cookies_are_secure_and_http_only_and_https_is_insisted_on():
    values = production_settings(
        "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE", "CSRF_COOKIE_HTTPONLY",
        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER",
    )  # fmt: skip

    assert values == ["True", "True", "True", "True", "True", "60", "('HTTP_X_FORWARDED_PROTO', 'https')"]


@pytest.mark.parametrize(("header", "expected"), [("HTTP_X_FORWARDED_SCHEME", "('HTTP_X_FORWARDED_SCHEME', 'https')"),
                                                  ("", "None")])  # fmt: skip
def test_the_proxys_https_header_is_configurable(header, expected):
    assert production_settings("SECURE_PROXY_SSL_HEADER", DJANGO_SECURE_PROXY_SSL_HEADER=header) == [expected]
