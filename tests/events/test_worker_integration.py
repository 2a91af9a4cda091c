"""End to end with real processes: HTTP in, Redis as broker, a real Celery worker out —
including a broker outage during which ingestion keeps accepting events."""

import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest
import redis
from django.db import connection

from config.celery import app as celery_app
from events import tasks
from events.models import PendingEvent
from tests.conftest import basic_auth
from tests.factories import SourceFactory, TrackMessageFactory
from tests.processes import CeleryWorker, RedisServer, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker(settings) -> Iterator[RedisServer]:
    """A private Redis as this process's broker, publishing for real (not eagerly)."""
    server = RedisServer()
    server.start()
    saved = (celery_app.conf.broker_url, celery_app.conf.task_always_eager)
    celery_app.conf.broker_url, celery_app.conf.task_always_eager = server.url, False
    celery_app.close()  # drop pooled connections to any other broker
    tasks._broker_retry_at = 0.0
    yield server
    celery_app.conf.broker_url, celery_app.conf.task_always_eager = saved
    celery_app.close()
    server.stop()


@pytest.fixture
def worker(broker: RedisServer, tmp_path) -> Iterator[CeleryWorker]:
    process = CeleryWorker(
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=tmp_path,
        extra_env={
            "EVENT_PIPELINE_STAGES": "tests.events.stages.record_in_redis",
            "TEST_STAGE_REDIS_URL": broker.url,
        },
    )
    process.start()
    yield process
    process.stop()


def post_batch(server_url: str, write_key: str, messages: list[dict]) -> tuple[int, dict]:
    parts = urlsplit(server_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(
        "POST",
        "/v1/batch",
        orjson.dumps({"batch": messages}),
        {"Content-Type": "application/json", "Authorization": basic_auth(write_key)},
    )
    response = conn.getresponse()
    return response.status, orjson.loads(response.read())


def unprocessed() -> int:
    return PendingEvent.objects.count()


def stage_saw(broker: RedisServer) -> list[str]:
    try:
        return [value.decode() for value in redis.Redis.from_url(broker.url).lrange("stage-seen", 0, -1)]
    except redis.RedisError:
        return []


def test_event_posted_over_http_is_processed_by_a_real_worker(live_server, broker, worker):
    source = SourceFactory()
    messages = [TrackMessageFactory() for _ in range(3)]

    status, body = post_batch(live_server.url, source.write_key, messages)

    assert (status, body["accepted"]) == (200, 3)
    assert wait_for(lambda: unprocessed() == 0, timeout=30), worker.output()
    assert sorted(stage_saw(broker)) == sorted(m["messageId"] for m in messages)


def test_events_accepted_while_the_broker_is_down_are_processed_when_it_returns(live_server, broker, worker):
    source = SourceFactory()
    before = [TrackMessageFactory() for _ in range(2)]
    during = [TrackMessageFactory() for _ in range(5)]
    assert post_batch(live_server.url, source.write_key, before)[0] == 200
    assert wait_for(lambda: unprocessed() == 0, timeout=30), worker.output()

    broker.stop()
    status, body = post_batch(live_server.url, source.write_key, during)

    assert (status, body["accepted"]) == (200, 5)  # accepted and durable with no broker at all
    assert unprocessed() == 5

    broker.start()  # an empty Redis: the nudge for these events was lost with the outage
    assert wait_for(lambda: unprocessed() == 0, timeout=60), worker.output()
    assert sorted(stage_saw(broker)) == sorted(m["messageId"] for m in during)
