"""Sending a Celery task on a best-effort basis: the one way apps nudge a worker.

Every nudge in the platform has a reconciler behind it (the sweep of unprocessed events, the
webhook sweep, the nightly recompute), so a message that cannot be published is late work,
not lost work. Publishing therefore never raises into the caller, which is usually an
``on_commit`` callback of a request or a task whose own work is already committed. After a
failed publish the broker is taken for down for ``BROKER_BACKOFF_SECONDS``: until then
nothing is tried, so requests do not each pay for a connection attempt to a broker known to
be down. (No tasks are defined here; Celery's autodiscovery reading this module finds none.)
"""

import functools
import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import CeleryError
from django.db import transaction
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

#: After a failed publish, skip publishing for this long: the reconcilers cover the gap.
BROKER_BACKOFF_SECONDS = 5.0
#: What a publish raises when the broker cannot take the message: kombu's connection errors,
#: the Redis client's own, a socket's, and Celery's.
PUBLISH_ERRORS = (OperationalError, RedisError, OSError, CeleryError)

_broker_retry_at = 0.0  # time.monotonic() before which the broker is taken for down


def enqueue(task: Task, *args: Any, fallback: str) -> bool:
    """Send ``task(*args)`` now; whether it was sent. Never raises: when the broker cannot
    take it (or failed within the back-off), it is logged with ``fallback``, what will do
    the work instead (say, "the sweep of unprocessed events")."""
    global _broker_retry_at
    if time.monotonic() < _broker_retry_at:
        return False
    try:
        task.apply_async(args, retry=False)
    except PUBLISH_ERRORS as error:
        _broker_retry_at = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.warning("Broker unreachable, %s not sent (%s will do it): %s", task.name, fallback, error)
        return False
    return True


def enqueue_on_commit(task: Task, *args: Any, fallback: str) -> None:
    """``enqueue`` once the current transaction commits (at once outside one); nothing if it
    rolls back."""
    transaction.on_commit(functools.partial(enqueue, task, *args, fallback=fallback))
