"""Transient database errors: which ones are worth trying again, and trying again.

The pipeline's rule (``events.pipeline``, ``members.services``): a failure that says nothing
about the data — a deadlock, a serialization failure, a lost or refused connection, a server
shutting down — is retried with backoff and never parks anything; every other failure (a
``DataError``, an ``IntegrityError`` of a bad value, any Python exception) is about what was
being processed, and parks it.
"""

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from django.db import connection
from django.db.utils import InterfaceError, OperationalError

#: SQLSTATE classes and codes that say "try again": 40 transaction rollback (40001
#: serialization failure, 40P01 deadlock), 08 connection exception, 53 insufficient resources
#: (too many connections), 55P03 a lock not granted in time, 57P01-57P03 the server is
#: shutting down or starting up.
_TRANSIENT_CLASSES = ("40", "08", "53")
_TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "55P03"})

#: Tries of one unit of work (the first included) and the backoff between them: 50 ms
#: doubling, at most 2 s, with jitter so that two workers that deadlocked do not meet again.
TRANSIENT_TRIES = 5
_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_CAP_SECONDS = 2.0

T = TypeVar("T")


def database_error_is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (Django's wrapper or psycopg's own error, anywhere in its cause chain)
    is a database failure that may pass on its own."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(seen, psycopg.Error) and sqlstate:
            return sqlstate[:2] in _TRANSIENT_CLASSES or sqlstate in _TRANSIENT_CODES
        if isinstance(seen, psycopg.OperationalError | psycopg.InterfaceError):
            return True  # no SQLSTATE: the client lost (or never had) its connection
        seen = seen.__cause__
    # Django's wrapper without a psycopg cause: raised by Django itself about the connection.
    return isinstance(exc, OperationalError | InterfaceError) and not isinstance(exc.__cause__, psycopg.Error)


def transient_retry(work: Callable[[], T], *, tries: int = TRANSIENT_TRIES) -> T:
    """Run ``work`` (one whole transaction), again after a transient database error, up to
    ``tries`` times with backoff; any other error, or the last transient one, is raised.

    Outside a transaction block a broken connection is closed before the next try, so that
    Django opens a fresh one.
    """
    for attempt in range(1, tries + 1):
        try:
            return work()
        except Exception as exc:
            if attempt == tries or not database_error_is_transient(exc):
                raise
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()
            delay = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
            time.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret
    raise AssertionError("unreachable")  # pragma: no cover
