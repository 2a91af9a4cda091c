"""Pipeline stages for tests: they record what they saw, so a test can tell which events
each stage run received (in this process, or in a worker process through Redis)."""

import os
import threading
from collections.abc import Sequence

import redis
from django.db import connection

from events.models import Event

seen_batches: list[list[int]] = []
claimed = threading.Event()
gate = threading.Event()


def record(events: Sequence[Event]) -> None:
    seen_batches.append([event.id for event in events])


def hold(events: Sequence[Event]) -> None:
    """Record; the first caller then keeps its rows locked until the gate opens."""
    record(events)
    if not claimed.is_set():
        claimed.set()
        gate.wait(timeout=10)


def fail(events: Sequence[Event]) -> None:
    raise RuntimeError("stage failed")


def record_in_redis(events: Sequence[Event]) -> None:
    client = redis.Redis.from_url(os.environ["TEST_STAGE_REDIS_URL"])
    client.rpush("stage-seen", *[event.message_id for event in events])


#: Message ids the ``poison`` stage fails on, as a stage fails on an event it cannot handle.
poisoned: set[str] = set()


def poison(events: Sequence[Event]) -> None:
    """Fail (a Python error, as bad data gives) when the batch holds a poisoned event."""
    bad = sorted(event.id for event in events if event.message_id in poisoned)
    if bad:
        raise ValueError(f"cannot process events {bad}")


def deadlock_once(events: Sequence[Event]) -> None:
    """Record; the first run then fails as a deadlock victim does (SQLSTATE 40P01, raised by
    PostgreSQL itself)."""
    record(events)
    if len(seen_batches) == 1:
        with connection.cursor() as cursor:
            cursor.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$")


def deadlock_always(events: Sequence[Event]) -> None:
    record(events)
    with connection.cursor() as cursor:
        cursor.execute("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$")


def lose_connection_once(events: Sequence[Event]) -> None:
    """Record; the first run then loses its database connection (its server process is
    terminated, as a restart or a network cut does)."""
    record(events)
    if len(seen_batches) == 1:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


#: A table of the test database (created by the test that uses ``record_in_table``) with one
#: row per event each committed stage run saw: written in the pipeline's transaction, it holds
#: exactly what was processed, whatever happened to the broker or the worker meanwhile.
SEEN_TABLE = "test_stage_seen"


def record_in_table(events: Sequence[Event]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SEEN_TABLE} (event_id) SELECT unnest(%s::bigint[])",
            [[event.id for event in events]],
        )
