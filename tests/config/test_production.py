"""Production defaults: the WSGI/ASGI entry points run the production settings unless told
otherwise, those settings pass Django's deployment checks as they stand, and they refuse to
start without their secrets."""

import os
import secrets
import subprocess
import sys

import pytest

from tests.processes import ROOT

#: What production requires and nothing else: everything else keeps its default.
REQUIRED = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "cdp.example.com",
    "DATABASE_URL": "postgres://cdp@db.internal:5432/cdp",
}


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # A clean environment: the settings of this test run (its DJANGO_*, database, broker and
    # webhook variables) must not leak into the process under test.
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
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


def test_the_dockerfile_runs_the_production_settings():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "ENV DJANGO_SETTINGS_MODULE=config.settings.production" in dockerfile
