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
import os
import threading
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


class CoalescedEnqueue:
    """A nudge that many requests raise and one thread publishes: at most one publish of
    ``task`` per ``interval`` seconds per process, and never a raised nudge left unsent.

    Publishing a Celery message costs a request about as much as storing its event (a Redis
    round trip and kombu's message building: measured in docs/benchmarks.md), and a worker
    woken by one nudge processes every waiting event, so a request posting one event only
    raises a flag here. A daemon thread of the process waits for the flag, lowers it, publishes
    (``enqueue``: never raises) and sleeps ``interval``: whatever is raised meanwhile is
    published right after, so an event waits for its nudge ``interval`` at most. A flag lost
    with its process (killed before the thread ran) is late work, not lost work: the sweep of
    unprocessed events covers it, as for any lost nudge. With tasks run eagerly (the tests'
    settings) the task runs at once in the caller, as ``enqueue`` does.
    """

    def __init__(self, task: Task, *, fallback: str, interval: float) -> None:
        self.task = task
        self.fallback = fallback
        self.interval = interval
        self._lock = threading.Lock()
        self._pid = 0  # the process whose thread is running (a forked child starts its own)
        self._raised = threading.Event()

    def __call__(self) -> None:
        # Read on every call, not only until a thread runs: a process whose tasks turned eager
        # after one (a test suite, where a real worker's test ran before) runs them at once.
        if self.task.app.conf.task_always_eager:
            enqueue(self.task, fallback=self.fallback)
            return
        if self._pid != os.getpid():
            self._start()
        if not self._raised.is_set():  # is_set takes no lock: most calls find it raised already
            self._raised.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._raised = threading.Event()  # not the parent's, whose lock a fork may have copied held
            threading.Thread(
                target=self._publish_forever, name=f"nudge {self.task.name}", daemon=True
            ).start()
            self._pid = os.getpid()

    def _publish_forever(self) -> None:
        raised = self._raised
        while True:
            raised.wait()
            raised.clear()
            enqueue(self.task, fallback=self.fallback)
            time.sleep(self.interval)
