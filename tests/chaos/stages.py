"""A pipeline stage for the fault tests: it says in Redis that a batch is in flight (not yet
committed) and lingers a moment, so a test can kill the worker in the middle of one."""

import os
import time
from collections.abc import Sequence

import redis

from events.pipeline import ClaimedEvent

IN_FLIGHT = "chaos:batch-in-flight"


def linger(events: Sequence[ClaimedEvent]) -> None:
    client = redis.Redis.from_url(os.environ["TEST_STAGE_REDIS_URL"])
    client.set(IN_FLIGHT, f"{os.getpid()}:{events[0].id}..{events[-1].id}", ex=5)
    time.sleep(float(os.environ.get("CHAOS_LINGER_SECONDS", "0.3")))


#: The message id prefix of the events ``refuse_poison`` fails on (a worker process sees the
#: message id, not a set kept in the test's process).
POISON_PREFIX = "poison-"


def refuse_poison(events: Sequence[ClaimedEvent]) -> None:
    """Fail (a Python error, as bad data gives) when the batch holds a poisoned event."""
    bad = sorted(event.id for event in events if event.message_id.startswith(POISON_PREFIX))
    if bad:
        raise ValueError(f"cannot process events {bad}")
