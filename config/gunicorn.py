"""gunicorn's settings: ``gunicorn -c python:config.gunicorn config.wsgi`` — the fallback and the
comparison; the image runs granian (``python -m config.granian``, config/granian.py, which says why).

**Server model: threaded workers with keep-alive** (``gthread``; ``GUNICORN_WORKERS``, default
one per core, and ``GUNICORN_THREADS``, default 4). Tills and SDKs post one event per request
over a connection they keep open; gunicorn's sync workers close the connection after every
response, so each request paid a TCP connect and a worker held for the whole wait on the
commit. A thread per request in flight overlaps those waits (the commit's flush, Redis) while
the other threads run, and a worker per core uses both cores in spite of the GIL. Measured
against the other models (more workers, fewer threads, sync) in docs/benchmarks.md
(bench/ingest_single.py). An ASGI server would not help: the views, the ORM and psycopg here
are synchronous (Django would run them in a thread pool all the same, behind an event loop).
Profiled under load (py-spy, docs/benchmarks.md, 2026-12-05), a single-event request spends
about a quarter of the worker's CPU in Django and our path and three quarters in gunicorn's
Python HTTP machinery (parser, poller hand-offs, heartbeat, access log). granian (a Rust HTTP
server) calling the same WSGI application was measured against this one
(``bench/ingest_single.py --server granian:2:4``, docs/benchmarks.md, 2026-12-05): about a
quarter less CPU per request and up to 1.5x the requests/s. With config/granian.py giving it
this file's access log redaction and ``child_exit`` hook, granian is what the image runs.

The access log goes to stdout (``GUNICORN_ACCESS_LOG``: a file, or empty for none) and records
no credential and no personal data: gunicorn's default format logs the HTTP Basic user name,
which on ingestion is the source's write key, and the request line with its query string, which
on the staff API holds the phone or email looked up (``/api/v1/members/?phone=…``). Ours logs
the path without the query, and ``RedactingLogger`` blanks those atoms whatever format is set
(``--access-logformat`` on the command line too): the user name, the query, the request line's
query, the referrer's query, and every request header, response header or environ value about
authorization, cookies, tokens or keys.
"""

import os
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gunicorn.glogging import Logger

from cdp.metrics import gunicorn_child_exit
from cdp.workers import web_worker_gc_tune

worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS") or os.cpu_count() or 2)
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
#: Seconds an idle client connection is kept open (SDKs reuse theirs; a load balancer's is longer).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE") or 30)

#: Client, time, request (no query), status, bytes, milliseconds, user agent.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None

_SECRET_ATOM = re.compile(r"auth|cookie|token|key|secret|password|signature|query|raw_uri|referer", re.I)
_BLANK = "-"


def _without_query(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return _BLANK
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class RedactingLogger(Logger):
    """gunicorn's logger, whose access log atoms hold no credential, query or cookie."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["u"] = _BLANK
        atoms["q"] = _BLANK
        atoms["r"] = (
            f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} {environ.get('SERVER_PROTOCOL')}"
        )
        atoms["f"] = _without_query(str(environ.get("HTTP_REFERER", _BLANK)))
        for name in atoms:
            if name.startswith("{") and _SECRET_ATOM.search(name):
                atoms[name] = _BLANK
        return atoms


logger_class = RedactingLogger

#: Multiprocess metrics: a worker that exited leaves its live values behind (cdp.metrics).
child_exit = gunicorn_child_exit


def post_worker_init(worker: Any) -> None:
    """The worker has loaded the application: freeze it, so that the requests' garbage is
    collected within seconds rather than after minutes (``cdp.workers.loaded_freeze``)."""
    web_worker_gc_tune()
