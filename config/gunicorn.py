"""gunicorn's settings: ``gunicorn -c python:config.gunicorn config.wsgi`` (the Dockerfile's command).

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
