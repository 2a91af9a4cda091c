"""Faults with figures (``make chaos``): the Celery worker, as the Procfile runs it, is killed
with SIGKILL in the middle of pipeline batches while orders stream in over HTTP, and started
again. Nothing accepted may be lost and nothing may take effect twice. Prints one line:
sent / stored / processed / lost / doubled (recorded in docs/benchmarks.md)."""

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from django.db import connection

from tests.chaos.figures import drained, pipeline_figures
from tests.chaos.stages import IN_FLIGHT
from tests.events.test_worker_integration import Stream, broker, seen_table
from tests.factories import SourceFactory
from tests.processes import CeleryProcess, CeleryWorker, wait_for

__all__ = ["broker", "seen_table"]  # fixtures, used by name

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

KILLS = 3


def children(pid: int) -> list[int]:
    """The worker's pool processes (its direct children), which run the tasks."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def kill_hard(worker: CeleryProcess) -> int:
    """SIGKILL the worker and its pool processes (by their ids: nothing else), as the OOM
    killer or a lost host would; returns how many processes were killed."""
    assert worker.process is not None
    pids = [*children(worker.process.pid), worker.process.pid]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    worker.process = None
    worker.log.close()
    return len(pids)


def test_a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing(
    live_server, broker, tmp_path, seen_table
):
    celery = CeleryWorker(
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=tmp_path,
        extra_env={
            "EVENT_PIPELINE_STAGES": (
                "identity.services.identity_resolve_events,tests.events.stages.record_in_table,"
                "tests.chaos.stages.linger"
            ),
            "EVENT_PIPELINE_BATCH_SIZE": "25",
            "TEST_STAGE_REDIS_URL": broker.url,
        },
    )
    worker = celery.worker
    stream = Stream(live_server.url, SourceFactory().write_key)
    marks = redis.Redis.from_url(broker.url)
    killed = 0
    celery.start()
    try:
        assert wait_for(lambda: "ready." in worker.output(), timeout=30), worker.output()
        stream.start()
        for _ in range(KILLS):
            marks.delete(IN_FLIGHT)
            # A batch is in flight: claimed, resolved and recorded in its transaction, not committed.
            assert wait_for(lambda: bool(marks.exists(IN_FLIGHT)), timeout=20, interval=0.02), worker.output()
            killed += kill_hard(worker)
            time.sleep(1.0)  # dead for a moment while orders keep arriving
            worker.start()
            assert wait_for(lambda: "ready." in worker.output(), timeout=30), worker.output()
        time.sleep(1.0)
        stream.stop()

        assert wait_for(lambda: drained(connection), timeout=90, interval=0.5), worker.output()
    finally:
        stream.stop()
        celery.stop()

    with connection.cursor() as cursor:
        figures = pipeline_figures(
            cursor,
            fault="worker-killed",
            sent=stream.batches * 5,
            accepted=stream.accepted,
            seen_table=seen_table,
        )
    figures.report(f"kills {KILLS} ({killed} processes)")
    assert not stream.failures, stream.failures[:3]
    assert figures.stored == figures.accepted == figures.sent
    assert figures.lost == 0
    assert figures.doubled == 0
