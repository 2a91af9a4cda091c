"""The web server as the image runs it: granian calling ``config.wsgi``: ``python -m config.granian``.

**Why granian, not gunicorn** (issue 16, docs/scaling.md "The web server"). A single event per
request (a till posting each sale) is all fixed cost, and gunicorn's is in Python: profiled
under load, three quarters of a gthread worker's CPU went to its HTTP parser, the poller's
hand-offs to the threads, its heartbeat and its access log, a quarter to Django and our path.
granian (a Rust HTTP server) parses, keeps connections alive and queues requests in native
code and calls the same WSGI application from a few Python threads per worker: measured side
by side (bench/ingest_single.py, docs/benchmarks.md 2026-12-05) about a quarter less CPU per
request for the server and the application together (0.63 ms against 1.06 in the quietest
run) and up to 1.5x the requests/s at a lower p99. The difference is most of what the
application costs in process (about 0.5 ms): no cut there would let gunicorn catch up.
The application is unchanged (WSGI, synchronous Django, accepted = committed before the 200).

**Model**: ``WEB_WORKERS`` processes (default one per core: the GIL), each with
``WEB_THREADS`` blocking threads (default 4) that overlap one commit's flush with another
request's Python, as gthread did. The rest is what gunicorn's configuration (config/gunicorn.py,
kept for comparison and as the fallback) gave and granian does not give by itself:

- **Metrics of a worker that exits** (crash, respawn, stop): the master calls
  ``cdp.metrics.process_exited`` with its pid, as gunicorn's ``child_exit`` did (``_Worker``).
  A crashed worker is respawned (``respawn_failed_workers``).
- **An access log with no credential or personal data**: granian's atoms hold the path without
  the query; the format (``WEB_ACCESS_LOG_FORMAT`` to change it) is redacted before granian
  sees it (``access_log_format_redacted``): the query string and every header about
  authorization, cookies, tokens, keys or the referrer are logged as ``-`` whatever is asked.
- **Timeouts and backpressure**: requests wait in granian's native queue for a blocking thread,
  never in Python; a worker admits at most ``WEB_BACKPRESSURE`` connections (granian counts
  connections, not requests: idle keep-alive connections count, so it is sized for the
  clients and the balancer's pool, 512 by default) and the kernel's backlog holds the rest.
  Headers must arrive within ``WEB_HEADER_READ_TIMEOUT`` ms (slow clients), a stop waits at
  most ``WEB_GRACEFUL_TIMEOUT`` s for requests in flight, then kills. No request is killed in
  the middle: each blocking call on the path has its own deadline (PostgreSQL's connect
  timeout, Redis's socket timeouts for the rate limit and the nudge). gunicorn's ``timeout``
  never did that for gthread either: its heartbeat is the main loop's, not the request's.
"""

import os
import re
import sys
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer, WorkerProcess

from cdp.metrics import process_exited

#: Client, time, request (no query: granian's path has none), status, milliseconds, user agent.
ACCESS_LOG_FORMAT = (
    '%(addr)s [%(time)s] "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms "%(header{user-agent})s"'
)

_SECRET = re.compile(r"auth|cookie|token|key|secret|password|signature|query|referer", re.I)
#: A ``%(atom)s`` (any conversion) of a logging format; granian's header atoms are ``header{name}``.
_ATOM = re.compile(r"%\((?P<atom>[^)]*)\)[#0 +-]*\d*(?:\.\d+)?[a-zA-Z]")


def access_log_format_redacted(log_format: str) -> str:
    """``log_format`` with every atom that could hold a credential or a looked-up phone
    (the query string, the Authorization, Cookie, API key or Referer headers) written as ``-``."""

    def redact(match: re.Match[str]) -> str:
        atom = match["atom"]
        return "-" if atom == "query_string" or _SECRET.search(atom) else match[0]

    return _ATOM.sub(redact, log_format)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


class _Worker(WorkerProcess):
    """A worker whose exit (however it comes) the master reports to the metrics."""

    def _watcher(self) -> None:
        try:
            super()._watcher()  # joins the process, then granian's own bookkeeping (respawn)
        finally:
            process_exited(self.inner.pid)


class Server(MPServer):
    """granian's multiprocess server, with ``_Worker`` workers."""

    # MPServer's own signature (granian's abstract one names a socket loader it does not take).
    def _spawn_worker(self, idx: int, target: Any, callback_loader: Any) -> WorkerProcess:  # type: ignore[override]
        worker = super()._spawn_worker(idx, target, callback_loader)
        worker.__class__ = _Worker  # the same worker, not started yet; only its watcher differs
        return worker


def _access_log_config(destination: str) -> dict[str, Any]:
    """granian's logging configuration, with the access log written to ``destination`` (a file)."""
    return {
        "handlers": {
            "console": {
                "formatter": "generic",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
            },
            "access": {"formatter": "access", "class": "logging.FileHandler", "filename": destination},
        }
    }


def server(*, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """The server as configured by the environment (``WEB_*``), serving ``config.wsgi``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    access_log = os.environ.get("WEB_ACCESS_LOG", "-")
    threads = _env_int("WEB_THREADS", 4)
    return Server(
        "config.wsgi:application",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=_env_int("WEB_WORKERS", os.cpu_count() or 2),
        blocking_threads=threads,
        backlog=_env_int("WEB_BACKLOG", 1024),
        backpressure=_env_int("WEB_BACKPRESSURE", 512),
        http1_settings=HTTP1Settings(
            keep_alive=True, header_read_timeout=_env_int("WEB_HEADER_READ_TIMEOUT", 10_000)
        ),
        log_level=LogLevels(os.environ.get("WEB_LOG_LEVEL", "info").lower()),
        log_access=bool(access_log),
        log_access_format=access_log_format_redacted(
            os.environ.get("WEB_ACCESS_LOG_FORMAT") or ACCESS_LOG_FORMAT
        ),
        log_dictconfig=_access_log_config(access_log) if access_log not in ("", "-") else None,
        respawn_failed_workers=True,
        respawn_interval=1.0,
        workers_kill_timeout=_env_int("WEB_GRACEFUL_TIMEOUT", 30),
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m config.granian [--host HOST] [--port PORT]`` (127.0.0.1 and ``PORT`` or 8000; the image binds 0.0.0.0)."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = dict(zip(args[::2], args[1::2], strict=True))
    unknown = set(options) - {"--host", "--port"}
    if unknown:
        raise SystemExit(
            f"unknown options: {', '.join(sorted(unknown))} (the rest is WEB_* in the environment)"
        )
    server(
        host=options.get("--host", "127.0.0.1"),
        port=int(options.get("--port") or os.environ.get("PORT") or 8000),
    ).serve()


if __name__ == "__main__":
    main()
