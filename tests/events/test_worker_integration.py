"""End to end with real processes: HTTP in, Redis as broker, a real Celery worker out —
including a broker outage during which ingestion keeps accepting events."""

import http.client
import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest
import redis
from django.db import connection
from django.db.models import Sum

from config import queues
from events.models import Event, PendingEvent
from identity.models import EventResolution, MemberChange
from members.loyalty.models import PointsAccount, PointsEntry
from members.loyalty.points import Kind
from members.models import DirtyMark, MemberOrder
from tests.conftest import basic_auth
from tests.events import stages
from tests.factories import SourceFactory, TrackMessageFactory
from tests.processes import CeleryProcess, CeleryWorker, RedisServer, publishing_to, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


#: The worker's pipeline: a stage that records what it saw in the private Redis.
RECORD_IN_REDIS = "tests.events.stages.record_in_redis"


@pytest.fixture
def broker(settings) -> Iterator[RedisServer]:
    """A private Redis: where this process publishes (for real, not eagerly) and the workers a
    test starts consume. The shared Redis is never used."""
    server = RedisServer()
    server.start()
    settings.CELERY_BROKER_URL = server.url  # what /health/ looks at
    try:
        with publishing_to(server.url):
            yield server
    finally:
        server.stop()


def stage_env(broker: RedisServer) -> dict[str, str]:
    return {"EVENT_PIPELINE_STAGES": RECORD_IN_REDIS, "TEST_STAGE_REDIS_URL": broker.url}


@pytest.fixture
def worker(broker: RedisServer, tmp_path) -> Iterator[CeleryWorker]:
    process = CeleryWorker(
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=tmp_path,
        extra_env=stage_env(broker),
    )
    process.start()
    yield process
    process.stop()


def post_batch(server_url: str, write_key: str, messages: list[dict]) -> tuple[int, dict]:
    parts = urlsplit(server_url)
    assert parts.hostname, server_url
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
        return [
            str(value)
            for value in redis.Redis.from_url(broker.url, decode_responses=True).lrange("stage-seen", 0, -1)
        ]
    except redis.RedisError:
        return []


def tasks_waiting(broker: RedisServer, queue_name: str = queues.PIPELINE) -> list[str]:
    """The tasks of the messages waiting in one of the private broker's queues (kombu's Redis
    transport keeps a queue as a list of JSON messages named after it)."""
    queue = redis.Redis.from_url(broker.url).lrange(queue_name, 0, -1)
    return [orjson.loads(message)["headers"]["task"] for message in queue]


def test_event_posted_over_http_nudges_a_real_worker_through_the_private_broker(
    live_server, broker, tmp_path
):
    source = SourceFactory()
    messages = [TrackMessageFactory() for _ in range(3)]

    status, body = post_batch(live_server.url, source.write_key, messages)

    assert (status, body["accepted"]) == (200, 3)
    # The nudge waits in the Redis the worker consumes (published by the web process's nudge
    # thread within EVENT_NUDGE_INTERVAL_SECONDS of the commit, events.tasks.process_pending_nudge)...
    assert wait_for(lambda: tasks_waiting(broker) == ["events.process_pending"], timeout=5)
    # ... and a worker alone, with no beat to sweep, processes the events through it.
    worker = CeleryProcess(
        "worker",
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=tmp_path,
        extra_env=stage_env(broker),
    )
    worker.start()
    try:
        assert wait_for(lambda: unprocessed() == 0, timeout=30), worker.output()
    finally:
        worker.stop()
    assert sorted(stage_saw(broker)) == sorted(m["messageId"] for m in messages)
    assert tasks_waiting(broker) == []


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


@pytest.fixture
def seen_table() -> Iterator[str]:
    """The table ``tests.events.stages.record_in_table`` writes to, in the test database."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {stages.SEEN_TABLE}")  # left by an interrupted run
        cursor.execute(f"CREATE TABLE {stages.SEEN_TABLE} (event_id bigint NOT NULL)")
    yield stages.SEEN_TABLE
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {stages.SEEN_TABLE}")


class Stream(threading.Thread):
    """Posts small batches of orders over HTTP, one after the other, until stopped; keeps the
    message ids the server accepted (200), whether the broker was up or not."""

    def __init__(self, server_url: str, write_key: str) -> None:
        super().__init__(daemon=True)
        self.server_url, self.write_key = server_url, write_key
        self.accepted: list[str] = []
        self.failures: list[str] = []
        self.batches = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.post_orders()
            time.sleep(0.02)

    def orders(self) -> list[dict]:
        """The next batch's five orders."""
        return [
            TrackMessageFactory.create(
                event="Order Completed",
                userId=f"u-{(self.batches * 5 + n) % 40}",  # few members: busy refreshes
                properties={"order_id": f"o-{self.batches}-{n}", "total": 100, "currency": "CNY"},
            )
            for n in range(5)
        ]

    def post_orders(self) -> None:
        self.batches += 1
        messages = self.orders()
        try:
            status, body = post_batch(self.server_url, self.write_key, messages)
        except OSError as exc:
            self.failures.append(repr(exc))
            return
        if status == 200 and body["accepted"] == len(messages):
            self.accepted.extend(m["messageId"] for m in messages)
        else:
            self.failures.append(f"{status} {body}")

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=15)


TASK_LOG = re.compile(r"Task [\w.]+\[([0-9a-f-]+)\] (received|succeeded|raised|failed)")


def a_task_is_running(worker_output: str) -> bool:
    """Whether the worker, connected, has received a task since it last connected that has
    not ended yet (by its log): the task's message is unacknowledged."""
    _, connected, since = worker_output.rpartition("Connected to redis")
    if not connected or "Connection to broker lost" in since:
        return False
    outcomes: dict[str, str] = {}
    for task_id, outcome in TASK_LOG.findall(since):
        outcomes[task_id] = outcome
    return "received" in outcomes.values()


def test_the_worker_as_deployed_survives_broker_outages_under_load(live_server, broker, tmp_path, seen_table):
    """The Procfile's worker (prefork, two processes) and beat while orders stream in and the
    broker goes away five times (shut down, or killed outright) with tasks in flight: the
    worker keeps consuming, and every accepted order was resolved and refreshed once."""
    celery = CeleryWorker(
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=tmp_path,
        extra_env={
            "EVENT_PIPELINE_STAGES": "identity.services.identity_resolve_events,tests.events.stages.record_in_table",
            "EVENT_PIPELINE_BATCH_SIZE": "20",  # small batches: outages fall between and amid commits
        },
    )
    worker, beat = celery.worker, celery.beat
    stream = Stream(live_server.url, SourceFactory().write_key)
    celery.start()
    try:
        assert wait_for(lambda: "ready." in worker.output(), timeout=30), worker.output()
        stream.start()
        # Shut down or killed, each time once the worker is back and runs a task (whose
        # message is unacknowledged), if it comes to that within a few seconds; once back
        # within a moment.
        for crash, away in ((False, 1.5), (True, 1.5), (False, 0.3), (True, 1.5), (False, 1.5)):
            wait_for(lambda: a_task_is_running(worker.output()), timeout=8, interval=0.05)
            broker.stop(crash=crash)
            time.sleep(away)
            broker.start()
        time.sleep(1.5)
        stream.stop()

        def drained() -> bool:
            return not (
                PendingEvent.objects.exists() or MemberChange.objects.exists() or DirtyMark.objects.exists()
            )

        assert wait_for(drained, timeout=40, interval=0.5), worker.output()
        # A task that was running when the worker failed goes on to the end, and can drain the
        # queue alone: the worker must still be consuming once it has nothing left to do.
        time.sleep(2)
        stream.post_orders()
        assert wait_for(drained, timeout=20, interval=0.5), worker.output()
        assert worker.is_alive(), worker.output()
        assert "Unrecoverable error" not in worker.output()
        assert beat.is_alive(), beat.output()
    finally:
        stream.stop()
        celery.stop()

    assert not stream.failures
    assert len(stream.accepted) > 100
    events = dict(Event.objects.values_list("message_id", "id"))
    assert set(events) == set(stream.accepted)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT event_id, count(*) FROM {seen_table} GROUP BY event_id")
        seen = dict(cursor.fetchall())
    assert set(seen) == set(events.values())  # every accepted event processed...
    assert set(seen.values()) == {1}  # ... in exactly one committed batch
    resolved = set(EventResolution.objects.values_list("event_id", flat=True))
    assert resolved == set(events.values())
    # The refresh ran for every member: each order once, its points earned once, and every
    # balance is its ledger's sum.
    assert MemberOrder.objects.count() == len(stream.accepted)
    earned = PointsEntry.objects.filter(kind=Kind.EARN).values_list("order_id", "points")
    assert sorted(order for order, _ in earned) == sorted(
        order.order_id for order in MemberOrder.objects.all()
    )
    assert len({points for _, points in earned}) == 1
    balances = dict(PointsAccount.objects.values_list("member_id", "balance"))
    ledger = dict(
        PointsEntry.objects.values("member_id").annotate(sum=Sum("points")).values_list("member_id", "sum")
    )
    assert balances == ledger


def pool(name: str, queue_names: str, *, broker: RedisServer, workdir, env: dict[str, str]) -> CeleryProcess:
    """A worker of one pool, as docs/scaling.md splits them: the Procfile's worker on the
    pool's queues only, one process, its own node name."""
    return CeleryProcess(
        "worker",
        broker_url=broker.url,
        database=connection.settings_dict["NAME"],
        workdir=workdir,
        extra_env=env,
        overrides={"--concurrency": "1"},
        arguments=["-Q", queue_names, "-n", f"{name}@%h"],
        log_name=f"worker-{name}",
    )


def waiting_on_an_advisory_lock() -> int:
    """Backends of the test database blocked on an advisory lock (the nightly run, below)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        return int(cursor.fetchone()[0])


def test_a_nightly_recompute_holding_the_bulk_pool_does_not_delay_the_pipeline(live_server, broker, tmp_path):
    """The stage queues by default (config/queues.py): the nightly insights recompute, sent as
    beat sends it, occupies the one process of the bulk pool (held for as long as the test
    likes: it waits on the insights lock, which the test holds), and events posted meanwhile
    are processed by the pipeline pool all the same. Routed to one queue, or the pools
    consuming the wrong queues, the events would wait behind the recompute."""
    from members.insights.services import _LOCK as INSIGHTS_LOCK
    from members.insights.tasks import recompute_all

    env = stage_env(broker)
    bulk = pool("bulk", queues.BULK, broker=broker, workdir=tmp_path, env=env)
    pipeline = pool("pipeline", queues.PIPELINE, broker=broker, workdir=tmp_path, env=env)
    database = connection.settings_dict
    holder = psycopg.connect(
        host=database["HOST"],
        port=database["PORT"],
        user=database["USER"],
        dbname=database["NAME"],
        autocommit=True,
    )
    holder.execute("SELECT pg_advisory_lock(%s)", [INSIGHTS_LOCK])
    bulk.start()
    pipeline.start()
    try:
        recompute_all.apply_async(retry=False)
        assert wait_for(lambda: waiting_on_an_advisory_lock() == 1, timeout=30), bulk.output()
        assert tasks_waiting(broker, queues.BULK) == []  # taken by the bulk pool, which is busy

        messages = [TrackMessageFactory() for _ in range(4)]
        assert post_batch(live_server.url, SourceFactory().write_key, messages)[0] == 200

        assert wait_for(lambda: unprocessed() == 0, timeout=30), pipeline.output()
        assert sorted(stage_saw(broker)) == sorted(m["messageId"] for m in messages)
        assert waiting_on_an_advisory_lock() == 1  # the recompute is still holding its pool
        # (by the log: "Task <name>[<id>] received"; the banner lists every task)
        assert "Task members.insights.recompute_all[" not in pipeline.output()
        assert "Task events.process_pending[" not in bulk.output()
    finally:
        holder.close()  # the lock goes with the session: the recompute runs and ends
        pipeline.stop()
        bulk.stop()
    assert "Task members.insights.recompute_all[" in bulk.output()
