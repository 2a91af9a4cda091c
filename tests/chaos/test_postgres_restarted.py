"""Faults with figures (``make chaos``): PostgreSQL, the system of record, is restarted while
orders stream in over HTTP (``pg_ctl stop -m fast``: every connection is cut, as in a crash or a
failover). A private cluster the test makes (``initdb``, migrated) serves the web server and the
worker; the shared PostgreSQL is never touched. While it is down clients get 503s; never a 200
for an event that was not stored; everything resumes and the backlog drains."""

import time

import psycopg
import pytest

from tests.cdp.test_database_outage import private_postgres
from tests.chaos.figures import drained, pipeline_figures
from tests.chaos.harness import Service, create_seen_table
from tests.events import stages
from tests.events.test_worker_integration import Stream
from tests.processes import RedisServer, wait_for

__all__ = ["private_postgres"]  # a fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOWN_SECONDS = 10.0


def test_postgresql_restarted_while_orders_stream_in_answers_503_stores_every_200_and_drains(
    private_postgres, tmp_path
):
    database_url = private_postgres.create_database("cdp")
    redis_server = RedisServer()
    redis_server.start()
    service = Service(redis_url=redis_server.url, database_url=database_url, workdir=tmp_path)
    service.manage("migrate", "--noinput", "-v", "0")
    write_key = service.manage("create_source", "Chaos POS", "--kind", "web")
    with psycopg.connect(database_url, autocommit=True) as connection:
        create_seen_table(connection.cursor())

    def caught_up() -> bool:
        try:
            with psycopg.connect(database_url, connect_timeout=2) as connection:
                return drained(connection)
        except psycopg.OperationalError:
            return False

    stream = Stream(service.web.base_url, write_key)
    service.start()
    try:
        assert wait_for(lambda: "ready." in service.celery.output(), timeout=30), service.output()
        stream.start()
        time.sleep(3.0)
        private_postgres.stop()
        time.sleep(DOWN_SECONDS)
        private_postgres.start()
        restarted, accepted_at_restart = time.monotonic(), len(stream.accepted)
        time.sleep(3.0)
        stream.stop()
        accepted_after = len(stream.accepted) - accepted_at_restart
        assert wait_for(caught_up, timeout=90, interval=0.5), service.output()
        drained_after = time.monotonic() - restarted
    finally:
        stream.stop()
        service.stop()
        redis_server.stop()

    with psycopg.connect(database_url) as connection:
        figures = pipeline_figures(
            connection.cursor(),
            fault="postgres-restarted",
            sent=stream.batches * 5,
            accepted=stream.accepted,
            seen_table=stages.SEEN_TABLE,
        )
    refused = [failure for failure in stream.failures if failure.startswith("503 ")]
    figures.report(
        f"down {DOWN_SECONDS:.0f} s, batches answered 503 {len(refused)}, accepted in the 3 s after "
        f"the restart {accepted_after}, drained {drained_after:.1f} s after it"
    )
    assert refused, "the outage was never seen"
    assert accepted_after > 0  # ingestion resumed by itself
    assert refused == stream.failures  # a 503 (retry later) for every batch not accepted
    assert figures.accepted == figures.sent - 5 * len(refused)
    # Every 200 stored (a refused batch may have been stored too: its commit went through as the
    # connection was cut; the client sends it again and the message ids deduplicate it).
    assert figures.lost == 0
    assert figures.doubled == 0
    assert "Traceback" not in service.web.output(), service.web.output()[-3000:]
