"""Faults with figures (``make chaos``): Redis, the broker and the rate limits' store of the
web server and the worker, is shut down while orders stream in over HTTP, and started again
(empty: it runs without persistence, as deployed). Ingestion keeps accepting (events are
durable in PostgreSQL; the rate limit fails open; a nudge that cannot be published is left to
the sweep), and the backlog drains by itself once Redis is back: beat's sweep finds it."""

import os
import signal
import time
from collections.abc import Callable
from functools import partial

import pytest
from django.db import connection

from tests.chaos.figures import backlog, drained, pipeline_figures
from tests.chaos.harness import Service
from tests.events.test_worker_integration import Stream, seen_table
from tests.factories import SourceFactory
from tests.processes import RedisServer, wait_for

__all__ = ["seen_table"]  # a fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOWN_SECONDS = 8.0


def take_away(server: RedisServer, how: str) -> Callable[[], None]:
    """Take Redis away ``how`` (shut down: connections refused; frozen with SIGSTOP: connections
    accepted by the kernel and never answered, as a hung server or a partition looks); returns
    what brings it back."""
    if how == "frozen":
        assert server.process is not None
        pid = server.process.pid
        os.kill(pid, signal.SIGSTOP)
        return partial(os.kill, pid, signal.SIGCONT)
    server.stop()
    return server.start


@pytest.mark.parametrize("how", ["shut-down", "frozen"])
def test_redis_stopped_while_orders_stream_in_loses_nothing_and_the_backlog_drains_by_itself(
    tmp_path, seen_table, how
):
    redis_server = RedisServer()
    redis_server.start()
    service = Service(
        redis_url=redis_server.url,
        database_url=f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
        workdir=tmp_path,
    )
    stream = Stream(service.web.base_url, SourceFactory().write_key)
    service.start()
    try:
        assert wait_for(lambda: "ready." in service.celery.output(), timeout=30), service.output()
        stream.start()
        time.sleep(2.0)
        bring_back = take_away(redis_server, how)
        accepted_before = len(stream.accepted)
        time.sleep(DOWN_SECONDS)
        accepted_while_down = len(stream.accepted) - accepted_before
        with connection.cursor() as cursor:
            backlog_at_return = backlog(cursor)
        bring_back()
        returned = time.monotonic()
        time.sleep(2.0)
        stream.stop()
        assert wait_for(lambda: drained(connection), timeout=90, interval=0.5), service.output()
        drained_after = time.monotonic() - returned
    finally:
        stream.stop()
        service.stop()
        if redis_server.process is not None:
            os.kill(redis_server.process.pid, signal.SIGCONT)  # a frozen server cannot stop
        redis_server.stop()

    with connection.cursor() as cursor:
        figures = pipeline_figures(
            cursor,
            fault=f"redis-{how}",
            sent=stream.batches * 5,
            accepted=stream.accepted,
            seen_table=seen_table,
        )
    figures.report(
        f"down {DOWN_SECONDS:.0f} s, accepted while down {accepted_while_down}, backlog at its return "
        f"{backlog_at_return}, drained {drained_after:.1f} s after it"
    )
    assert not stream.failures, stream.failures[:3]  # never refused: accepted with Redis down
    assert accepted_while_down > 0
    assert figures.stored == figures.accepted == figures.sent
    assert figures.lost == 0
    assert figures.doubled == 0
    assert "Traceback" not in service.web.output(), service.web.output()[-3000:]
