"""The web server as the image runs it (``config/granian.py``): what gunicorn's configuration
gave and granian does not by itself — a worker's exit reported to the metrics, an access log
with no credential or looked-up phone whatever its format — and the settings it reads."""

import logging
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from granian.log import log_request_builder

from config import granian as granian_settings
from tests.config.test_production import REQUIRED, clean
from tests.processes import WebServer, wait_for

PHONE = "13800138000"
WRITE_KEY = "wk_s3cr3t"


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.integration
def test_a_worker_that_dies_has_its_live_metrics_dropped_and_is_respawned(tmp_path: Path):
    """As gunicorn's ``child_exit`` did: the master marks the dead worker's process dead in
    multiprocess mode (its live gauges' files go; counters stay), and starts another worker."""
    metrics = tmp_path / "metrics"
    env = {
        **REQUIRED,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": "postgres://cdp@127.0.0.1:1/cdp",  # /metrics and startup need no database
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "LOG_LEVEL": "WARNING",
    }
    server = WebServer(env=clean(env), workdir=tmp_path, server="granian")
    server.start()
    try:
        assert server.process is not None
        master = server.process.pid
        assert wait_for(lambda: len(_children(master)) == 1, timeout=30), server.output()
        (worker,) = _children(master)
        live, counted = metrics / f"gauge_livesum_{worker}.db", metrics / f"counter_{worker}.db"
        live.write_bytes(b"")  # what a live gauge of the worker's would have left
        counted.write_bytes(b"")
        os.kill(worker, signal.SIGKILL)

        assert wait_for(lambda: not live.exists(), timeout=30), server.output()
        assert counted.exists()  # a rate needs the dead process's counts
        assert wait_for(lambda: _children(master) not in ([], [worker]), timeout=30)
        # The new worker answers (503 here: no database; any answer is the worker's).
        assert wait_for(lambda: _status(server.base_url + "/health/") != 0, timeout=30), server.output()
    finally:
        server.stop()
    assert "Unexpected exit from worker-1" in server.output()


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


@pytest.mark.parametrize(
    "log_format",
    [
        granian_settings.ACCESS_LOG_FORMAT,
        '%(addr)s "%(method)s %(path)s?%(query_string)s" %(header{Authorization})s %(header{cookie})s '
        "%(header{x-api-key})s %(header{referer})s %(query_string)r %(header{user-agent})s",
    ],
)
def test_the_access_log_blanks_credentials_whatever_the_format(
    caplog: pytest.LogCaptureFixture, log_format: str
):
    """granian's own access logger, given the redacted format, on a request that carries a
    write key, a cookie, an API key, and a phone in its query and its referrer."""
    headers = {
        "authorization": "Basic d2tfczNjcjN0Og==",  # the write key as the Basic user name
        "cookie": "sessionid=s3cr3t",
        "x-api-key": WRITE_KEY,
        "referer": f"https://cdp.example.com/console/?phone={PHONE}",
        "user-agent": "pos-till/2.1",
    }
    request = {
        "addr_remote": "203.0.113.9",
        "path": "/api/v1/members/",
        "qs": f"phone={PHONE}&writeKey={WRITE_KEY}",
        "method": "GET",
        "scheme": "http",
        "protocol": "HTTP/1.1",
        "headers": headers.get,
    }
    log_request = log_request_builder(granian_settings.access_log_format_redacted(log_format))
    with caplog.at_level(logging.INFO, logger="granian.access"):
        log_request(time.time(), time.perf_counter(), request, 200)

    (line,) = [record.getMessage() for record in caplog.records if record.name == "granian.access"]
    for secret in (WRITE_KEY, "d2tfczNjcjN0Og", "s3cr3t", PHONE):
        assert secret not in line
    assert '"GET /api/v1/members/' in line
    assert "pos-till/2.1" in line  # what is not secret is still logged


def test_the_server_is_configured_by_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WEB_WORKERS", "3")
    monkeypatch.setenv("WEB_THREADS", "6")
    monkeypatch.setenv("WEB_BACKPRESSURE", "64")
    monkeypatch.setenv("WEB_GRACEFUL_TIMEOUT", "20")
    monkeypatch.setenv("WEB_ACCESS_LOG_FORMAT", "%(path)s %(query_string)s")

    server = granian_settings.server(host="127.0.0.1", port=8123)

    assert (server.workers, server.blocking_threads, server.backpressure) == (3, 6, 64)
    assert server.interface == "wsgi"
    assert server.target == "config.wsgi:application"
    assert server.respawn_failed_workers
    assert server.workers_kill_timeout == 20
    assert server.http1_settings is not None
    assert server.http1_settings.keep_alive
    assert server.log_access
    assert server.log_access_format == "%(path)s -"
