"""The outbox consumer: claim, run stages, take out of the queue — once, in order, under concurrency."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.utils import OperationalError as DatabaseOperationalError
from django.test import override_settings
from django.utils import timezone
from kombu.exceptions import OperationalError

from cdp import db, retries
from cdp.metrics import BATCH_EVENTS
from events import tasks
from events.models import Event, ParkedEvent, PendingEvent
from events.pipeline import (
    events_backlog_alone_share,
    events_process_backlog_by_person,
    events_process_backlog_in_event_time,
    events_process_batch,
    events_process_pending,
)
from tests.events import stages
from tests.factories import EventFactory, TrackMessageFactory

RECORD = ["tests.events.stages.record"]


@pytest.fixture(autouse=True)
def _fresh_stage_log():
    stages.seen_batches.clear()
    yield
    stages.seen_batches.clear()


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD)
def test_pending_events_go_through_every_stage_once_in_batches():
    events = EventFactory.create_batch(5)
    ids = [event.id for event in events]

    processed, more = events_process_pending(batch_size=2)
    again, _ = events_process_pending(batch_size=2)

    assert (processed, more, again) == (5, False, 0)
    assert stages.seen_batches == [ids[0:2], ids[2:4], ids[4:5]]
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD)
def test_a_backlog_is_taken_in_event_time_not_in_arrival_order():
    """A history stored file by file arrives out of event time; the backlog path claims it in
    event time (timestamp, then messageId) so identity resolves it incrementally."""
    start = timezone.now() - timedelta(days=30)
    arrived = [
        EventFactory(timestamp=start + timedelta(days=days), message_id=message_id)
        for days, message_id in ((3, "c"), (1, "b"), (2, "a"), (1, "a"), (0, "z"))
    ]
    by_time = sorted(arrived, key=lambda event: (event.timestamp, event.message_id))

    assert events_process_backlog_in_event_time(batch_size=2) == 5

    assert stages.seen_batches == [
        [event.id for event in sorted(by_time[i : i + 2], key=lambda event: event.id)] for i in (0, 2, 4)
    ]
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD)
def test_a_backlog_by_person_takes_each_anonymous_ids_events_together_in_event_time():
    """An import's backlog: each legacy member's events (its key as anonymous id) together, in
    event time within them, so they share a batch; events without an anonymous id last, in
    event time."""
    start = timezone.now() - timedelta(days=30)
    arrived = [
        EventFactory(timestamp=start + timedelta(days=days), anonymous_id=anonymous_id, message_id=message_id)
        for days, anonymous_id, message_id in (
            (3, "crm:M2", "o3"), (0, "", "walk-in-b"), (1, "crm:M1", "o1"), (2, "crm:M2", "o2"),
            (0, "crm:M2", "reg-2"), (2, "crm:M1", "reg-1"), (1, "", "walk-in-a"),
        )
    ]  # fmt: skip
    ids = {event.message_id: event.id for event in arrived}

    assert events_process_backlog_by_person(batch_size=2) == 7

    order = ["o1", "reg-1", "reg-2", "o2", "o3", "walk-in-b", "walk-in-a"]
    assert stages.seen_batches == [sorted(ids[m] for m in order[i : i + 2]) for i in (0, 2, 4, 6)]
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
def test_the_share_of_waiting_events_alone_under_their_anonymous_id():
    assert events_backlog_alone_share() == 0.0  # none waiting
    for anonymous_id in ("crm:M1", "crm:M1", "crm:M2", "crm:order:O7", "", ""):
        EventFactory(anonymous_id=anonymous_id)
    # crm:M2 and crm:order:O7 alone, and the two without one; crm:M1's two together
    assert events_backlog_alone_share() == 4 / 6


@pytest.mark.django_db
def test_a_backlog_batch_that_fails_is_bisected_down_to_its_bad_event():
    good, bad = EventFactory(message_id="good"), EventFactory(message_id="bad")
    stages.poisoned.add("bad")
    try:
        with override_settings(EVENT_PIPELINE_STAGES=["tests.events.stages.poison"]):
            assert events_process_backlog_in_event_time(batch_size=10) == 2
    finally:
        stages.poisoned.clear()

    assert list(ParkedEvent.objects.values_list("event_id", flat=True)) == [bad.id]
    assert not PendingEvent.objects.filter(event_id=good.id).exists()


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD)
def test_time_budget_stops_between_batches_and_says_more_remains():
    EventFactory.create_batch(3)

    processed, more = events_process_pending(batch_size=2, time_budget=0)

    assert (processed, more) == (2, True)
    assert PendingEvent.objects.count() == 1


@pytest.mark.django_db
def test_a_stage_failing_transiently_for_good_leaves_the_batch_for_a_later_run(monkeypatch):
    """A deadlock that keeps coming back is retried, then raised: nothing is parked, the
    batch stays queued for the next run (a lasting fault of the data would park it)."""
    monkeypatch.setattr(retries, "_BACKOFF_BASE_SECONDS", 0.001)
    EventFactory.create_batch(2)

    with (
        override_settings(EVENT_PIPELINE_STAGES=["tests.events.stages.deadlock_always"]),
        pytest.raises(DatabaseOperationalError, match="deadlock detected"),
    ):
        events_process_batch(batch_size=10)
    assert len(stages.seen_batches) == retries.TRANSIENT_TRIES
    assert PendingEvent.objects.count() == 2
    assert not ParkedEvent.objects.exists()

    with override_settings(EVENT_PIPELINE_STAGES=RECORD):
        assert events_process_batch(batch_size=10) == 2


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD)
def test_task_processes_pending_events():
    EventFactory.create_batch(3)

    assert tasks.process_pending.delay().get() == 3
    assert sum(len(batch) for batch in stages.seen_batches) == 3


@pytest.mark.django_db(transaction=True)
@override_settings(EVENT_PIPELINE_STAGES=["tests.events.stages.hold"])
def test_concurrent_workers_never_share_or_wait_on_a_batch():
    events = EventFactory.create_batch(4)
    stages.claimed.clear()
    stages.gate.clear()
    results: dict[str, int] = {}

    def worker_a():
        results["a"] = events_process_batch(batch_size=2)
        connection.close()

    thread = threading.Thread(target=worker_a)
    thread.start()
    assert stages.claimed.wait(timeout=10)

    # While A holds its two rows locked, B takes the other two instead of waiting.
    results["b"] = events_process_batch(batch_size=10)
    assert thread.is_alive()  # B finished while A still held its batch
    stages.gate.set()
    thread.join(timeout=10)

    assert results == {"a": 2, "b": 2}
    seen = [event_id for batch in stages.seen_batches for event_id in batch]
    assert sorted(seen) == sorted(event.id for event in events)


@pytest.mark.django_db
def test_ingestion_nudges_the_pipeline_after_commit(ingest, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert ingest("track", TrackMessageFactory()).status_code == 200

    assert len(callbacks) == 1
    assert Event.objects.count() == 1
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
def test_a_batch_nudges_the_pipeline_through_the_coalesced_nudge(ingest, django_capture_on_commit_callbacks):
    # One publish per EVENT_NUDGE_INTERVAL_SECONDS per web process, not one per request.
    with django_capture_on_commit_callbacks() as callbacks:
        response = ingest("batch", {"batch": TrackMessageFactory.create_batch(2)})

    assert response.status_code == 200
    assert callbacks == [tasks.process_pending_nudge]


@pytest.mark.django_db
def test_rejected_only_requests_do_not_nudge(ingest, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        assert ingest("track", {"event": "no ids"}).status_code == 400

    assert callbacks == []


@pytest.mark.django_db
def test_broker_down_keeps_ingestion_up_and_the_sweep_catches_up(
    ingest, monkeypatch, django_capture_on_commit_callbacks
):
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(1)
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.process_pending, "apply_async", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        first = ingest("track", TrackMessageFactory())
    with django_capture_on_commit_callbacks(execute=True):
        second = ingest("track", TrackMessageFactory())

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(attempts) == 1  # the second request did not wait on a broker known to be down
    assert PendingEvent.objects.count() == 2

    monkeypatch.undo()
    assert tasks.process_pending() == 2  # what the beat sweep runs
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
def test_events_written_by_copy_are_queued_like_any_other():
    """The queue is filled by a trigger on the event table, not by the ingestion code: an
    import that COPYs events straight in is processed like events posted over HTTP."""
    source = EventFactory().source
    with (
        connection.cursor() as cursor,
        cursor.connection.cursor().copy(
            "COPY events_event (source_id, message_id, type, event, name, user_id, anonymous_id, previous_id, "
            "group_id, channel, store_code, timestamp, received_at, context, traits, properties, integrations) "
            "FROM STDIN"
        ) as copy,
    ):
        for n in range(3):
            copy.write_row((source.pk, f"copied-{n}", "track", "Product Viewed", "", "", f"a{n}", "", "",
                            source.kind, source.store_code, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z",
                            "{}", "{}", "{}", "{}"))  # fmt: skip

    assert PendingEvent.objects.count() == 4
    with override_settings(EVENT_PIPELINE_STAGES=RECORD):
        assert events_process_batch(batch_size=10) == 4
    assert not PendingEvent.objects.exists()


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD)
def test_the_pipeline_counts_the_events_it_took_out_of_the_queue():
    """``cdp_pipeline_events_total``: what the soak (bench/soak.py) reads as processed."""
    EventFactory.create_batch(5)
    before = BATCH_EVENTS._value.get()

    assert events_process_pending(batch_size=2) == (5, False)
    assert BATCH_EVENTS._value.get() == before + 5


def _queue_vacuums() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = %s", [PendingEvent._meta.db_table]
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@override_settings(EVENT_PIPELINE_STAGES=RECORD, EVENT_PIPELINE_QUEUE_VACUUM_EVERY=3)
def test_a_worker_vacuums_the_queue_after_every_so_many_events_it_claimed(monkeypatch):
    """Claims empty the queue from its oldest end: a worker vacuums it now and then, so a
    claim does not walk the dead index entries of every event claimed before it."""
    monkeypatch.setattr(db, "_taken_since_vacuum", Counter())
    EventFactory.create_batch(5)
    before = _queue_vacuums()

    assert events_process_pending(batch_size=2, time_budget=0) == (2, True)
    assert _queue_vacuums() == before  # 2 claimed: not yet
    assert events_process_pending(batch_size=2, time_budget=0) == (2, True)
    assert _queue_vacuums() == before + 1  # 4 claimed: vacuumed, and counting again from 0
    assert events_process_pending(batch_size=2) == (1, False)
    assert _queue_vacuums() == before + 1


@pytest.mark.django_db
@override_settings(EVENT_PIPELINE_STAGES=RECORD, EVENT_PIPELINE_QUEUE_VACUUM_EVERY=1)
def test_no_vacuum_inside_a_transaction(monkeypatch):
    """VACUUM cannot run in a transaction block: the count waits for a call outside one."""
    monkeypatch.setattr(db, "_taken_since_vacuum", Counter())
    EventFactory.create_batch(2)

    assert events_process_pending(batch_size=2) == (2, False)  # pytest-django's transaction
    assert db._taken_since_vacuum[PendingEvent._meta.db_table] == 2
