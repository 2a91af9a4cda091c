"""Best-effort publishing (``cdp.tasks``): sent when the broker takes it, never raised when it
does not, and not tried again while the broker is known to be down; a coalesced nudge sends one
message for many callers and never drops one raised meanwhile."""

import logging
import time

import pytest
from celery import shared_task
from celery.exceptions import CeleryError
from django.db import transaction
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from cdp import tasks
from cdp.tasks import enqueue, enqueue_on_commit
from tests.processes import RedisServer, publishing_to, wait_for

ran: list[tuple] = []


@shared_task(name="tests.cdp.record")
def record(*args: object) -> None:
    ran.append(args)


@pytest.fixture(autouse=True)
def _nothing_ran():
    ran.clear()
    yield
    ran.clear()


def broker_down(error: BaseException):
    attempts = []

    def publish(*args, **kwargs):
        attempts.append(args)
        raise error

    return attempts, publish


def test_a_task_is_sent_with_its_arguments():
    assert enqueue(record, 7, "x", fallback="nothing") is True

    assert ran == [(7, "x")]  # (tests run tasks eagerly)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        RedisConnectionError("Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        CeleryError("cannot publish"),
    ],
    ids=["kombu", "redis", "socket", "celery"],
)
def test_a_broker_that_cannot_take_it_is_logged_not_raised(error, monkeypatch, caplog):
    attempts, publish = broker_down(error)
    monkeypatch.setattr(record, "apply_async", publish)

    with caplog.at_level(logging.WARNING, logger="cdp.tasks"):
        sent = enqueue(record, 1, fallback="the nightly run")

    assert (sent, attempts) == (False, [((1,),)])
    assert "tests.cdp.record" in caplog.text
    assert "the nightly run" in caplog.text


def test_while_the_broker_is_down_nothing_is_tried_until_the_back_off_ends(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(tasks.time, "monotonic", lambda: clock[0])
    attempts, publish = broker_down(OperationalError("refused"))
    monkeypatch.setattr(record, "apply_async", publish)

    first = enqueue(record, 1, fallback="the sweep")
    clock[0] += tasks.BROKER_BACKOFF_SECONDS - 0.1
    second = enqueue(record, 2, fallback="the sweep")
    clock[0] += 0.2
    monkeypatch.undo()
    monkeypatch.setattr(tasks.time, "monotonic", lambda: clock[0])
    third = enqueue(record, 3, fallback="the sweep")

    assert (first, second, third) == (False, False, True)
    assert attempts == [((1,),)]  # the second was not even tried
    assert ran == [(3,)]  # the broker is back once the back-off ends


def test_an_error_of_the_task_itself_is_not_swallowed(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug, not a broker")

    monkeypatch.setattr(record, "apply_async", broken)

    with pytest.raises(ValueError, match="a bug"):
        enqueue(record, fallback="the sweep")


@pytest.mark.django_db(transaction=True)
def test_on_commit_it_is_sent_after_the_commit_and_never_after_a_rollback():
    with transaction.atomic():
        enqueue_on_commit(record, "kept", fallback="the sweep")
        assert ran == []  # not before the commit
    with transaction.atomic():
        enqueue_on_commit(record, "rolled back", fallback="the sweep")
        transaction.set_rollback(True)

    assert ran == [("kept",)]


@pytest.mark.integration
def test_a_real_broker_that_is_gone_makes_it_return_false_at_once(caplog):
    """Against a Redis that went away: the publish fails fast (no retries) with an error of
    the set the helper catches, and goes through again once it is back."""
    server = RedisServer()
    try:
        with publishing_to(server.url):
            with caplog.at_level(logging.WARNING, logger="cdp.tasks"):
                assert enqueue(record, "down", fallback="the sweep") is False
            assert "Broker unreachable" in caplog.text
            server.start()
            tasks._broker_retry_at = 0.0  # (rather than wait out the back-off)
            assert enqueue(record, "up", fallback="the sweep") is True
    finally:
        server.stop()


def _publishing(monkeypatch) -> list[float]:
    """Tasks published, not run: when each was (time.monotonic())."""
    published: list[float] = []
    monkeypatch.setitem(record.app.conf, "task_always_eager", False)
    monkeypatch.setattr(record, "apply_async", lambda *args, **kwargs: published.append(time.monotonic()))
    return published


def test_a_coalesced_nudge_publishes_once_for_many_callers(monkeypatch):
    published = _publishing(monkeypatch)
    nudge = tasks.CoalescedEnqueue(record, fallback="the sweep", interval=0.3)

    for _ in range(500):
        nudge()

    assert wait_for(lambda: len(published) == 1, timeout=5)
    time.sleep(0.5)
    assert len(published) == 1  # nothing raised since: nothing more sent


def test_a_nudge_raised_while_one_is_sent_is_sent_after_the_interval(monkeypatch):
    published = _publishing(monkeypatch)
    nudge = tasks.CoalescedEnqueue(record, fallback="the sweep", interval=0.3)

    nudge()
    assert wait_for(lambda: len(published) == 1, timeout=5)
    raised_at = time.monotonic()
    nudge()  # within the interval: held, not lost

    assert wait_for(lambda: len(published) == 2, timeout=5)
    assert published[1] - published[0] >= 0.3
    assert published[1] - raised_at < 0.3 + 1


def test_a_coalesced_nudge_runs_at_once_where_tasks_are_eager():
    nudge = tasks.CoalescedEnqueue(record, fallback="the sweep", interval=60)

    nudge()
    nudge()

    assert ran == [(), ()]


def test_a_coalesced_nudge_runs_at_once_once_tasks_are_eager_again(monkeypatch):
    """A process whose nudge thread already runs (a real worker's test before, in a test
    suite) runs the task at once as soon as tasks are eager again: not left to the thread."""
    nudge = tasks.CoalescedEnqueue(record, fallback="the sweep", interval=60)
    with monkeypatch.context() as publishing:
        published = _publishing(publishing)
        nudge()
        assert wait_for(lambda: len(published) == 1, timeout=5)

    nudge()

    assert ran == [()]
