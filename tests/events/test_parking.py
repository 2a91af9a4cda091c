"""A failing event is parked, never blocks: the batch is bisected down to the event a stage
fails on, the others go on in order, staff see the parked ones, and a replay after the fix
processes them once, reaching what a clean run of the same events computes."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from cdp import retries
from cdp.models import AuditEntry
from cdp.roles import Role
from events import pipeline
from events.models import Event, ParkedEvent, PendingEvent
from events.pipeline import CLAIM_STAGE, events_process_pending
from identity.models import EventResolution
from identity.services import identity_rebuild
from members.services import members_rebuild
from tests.events import stages
from tests.factories import EventFactory
from tests.members.computed import computed_state
from tests.members.test_api import staff_client  # a client holding a role's token

pytestmark = pytest.mark.django_db

POISON = "tests.events.stages.poison"
STAGES = [POISON, "tests.events.stages.record", "identity.services.identity_resolve_events"]
BATCH = 50


@pytest.fixture(autouse=True)
def _clean_stages():
    stages.seen_batches.clear()
    stages.poisoned.clear()
    yield
    stages.seen_batches.clear()
    stages.poisoned.clear()


def seen() -> list[int]:
    return [event_id for batch in stages.seen_batches for event_id in batch]


def test_a_failing_event_is_parked_the_rest_go_on_and_its_replay_equals_a_clean_run(client):
    # The demo's history: identities across channels, merges, orders, refunds, points, tiers.
    call_command("demo", "--members", "25", "--seed", "7", "--welcome-file", "/dev/null", stdout=StringIO())
    events = list(Event.objects.order_by("id").values_list("id", "message_id", "event", "type"))
    assert len(events) >= 200
    # Three events in three batches: two orders and an identify that links identities.
    chosen = [
        next(e for e in events[10:] if e[2] == "Order Completed"),
        next(e for e in events[len(events) // 2 :] if e[3] == "identify"),
        next(e for e in reversed(events) if e[2] == "Order Completed"),
    ]
    bad = sorted(e[0] for e in chosen)
    everything = [e[0] for e in events]
    assert len({everything.index(event_id) // BATCH for event_id in bad}) == 3
    stages.poisoned.update(e[1] for e in chosen)

    with override_settings(EVENT_PIPELINE_STAGES=STAGES):
        processed, more = events_process_pending(batch_size=BATCH)

    # Everything else went on, each event once, oldest first; the bad ones are parked.
    assert (processed, more) == (len(events), False)
    assert not PendingEvent.objects.exists()
    assert seen() == [event_id for event_id in everything if event_id not in bad]
    assert set(EventResolution.objects.values_list("event_id", flat=True)) == set(everything) - set(bad)
    parked = list(ParkedEvent.objects.order_by("event_id"))
    assert [(p.event_id, p.stage, p.attempts, p.replayed_at) for p in parked] == [
        (event_id, POISON, 1, None) for event_id in bad
    ]
    assert parked[0].error == f"ValueError: cannot process events [{bad[0]}]"
    assert "in poison" in parked[0].traceback
    assert parked[0].first_failed_at == parked[0].last_failed_at

    # Listed for admins (cursor-paginated, newest first), refused to other roles; counted in health.
    admin = staff_client(Role.ADMIN)
    listed = admin.get("/api/v1/parked-events/")
    assert listed.status_code == 200
    assert [row["event_id"] for row in listed.json()["results"]] == bad[::-1]
    first = listed.json()["results"][-1]
    assert (first["message_id"], first["stage"], first["attempts"]) == (chosen[0][1], POISON, 1)
    assert admin.get("/api/v1/parked-events/?page_size=2").json()["next_cursor"]
    manager = staff_client(Role.CRM_MANAGER)
    assert manager.get("/api/v1/parked-events/").status_code == 403
    assert manager.post(f"/api/v1/parked-events/{parked[0].pk}/replay/").status_code == 403
    health = client.get("/health/")
    assert (health.status_code, health.json()["status"]) == (200, "degraded")
    assert health.json()["parked"] == {"events": 3, "members": 0}

    # Replayed before the fix: it fails again, and is parked again with its attempts counted.
    replay = admin.post(f"/api/v1/parked-events/{parked[0].pk}/replay/")
    assert replay.status_code == 200
    assert replay.json() == {"replayed": 1, "event_ids": [bad[0]]}
    audit = AuditEntry.objects.get(action="replay_parked")
    assert (audit.channel, audit.detail) == ("api", f"events {bad[0]}")
    with override_settings(EVENT_PIPELINE_STAGES=STAGES):
        assert events_process_pending(batch_size=BATCH) == (1, False)
    parked[0].refresh_from_db()
    assert (parked[0].attempts, parked[0].replayed_at) == (2, None)
    assert parked[0].last_failed_at > parked[0].first_failed_at

    # Fixed: the command replays all three, each exactly once.
    stages.poisoned.clear()
    stages.seen_batches.clear()
    out = StringIO()
    call_command("replay_failed", "events", stdout=out)
    assert "Replayed 3 events and 0 members" in out.getvalue()
    assert admin.post(f"/api/v1/parked-events/{parked[1].pk}/replay/").status_code == 404  # replayed already
    call_command("replay_failed", stdout=StringIO())  # nothing left to replay
    assert PendingEvent.objects.count() == 3
    with override_settings(EVENT_PIPELINE_STAGES=STAGES):
        assert events_process_pending(batch_size=BATCH) == (3, False)
    assert seen() == bad  # once each
    assert set(EventResolution.objects.values_list("event_id", flat=True)) == set(everything)
    assert not ParkedEvent.objects.filter(replayed_at__isnull=True).exists()
    assert admin.get("/api/v1/parked-events/").json()["results"] == []
    assert client.get("/health/").json()["parked"] == {"events": 0, "members": 0}

    # What the late events left equals a clean run: identity and members rebuilt from the log.
    incremental = computed_state()
    assert all(incremental[part] for part in ("orders", "points", "segments"))
    identity_rebuild()
    members_rebuild()
    assert computed_state() == incremental


def test_an_event_that_cannot_be_read_back_is_parked_at_the_claim():
    """An event stored with a timestamp past year 9999 fails the claim itself (Python's
    datetime cannot hold it): it is parked and the events around it are resolved."""
    events = EventFactory.create_batch(7)
    unreadable = events[3].pk
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE events_event SET timestamp = '10000-01-01T00:00:00Z' WHERE id = %s", [unreadable]
        )

    assert events_process_pending(batch_size=5) == (7, False)

    parked = ParkedEvent.objects.get()
    assert (parked.event_id, parked.stage) == (unreadable, CLAIM_STAGE)
    assert "DataError" in parked.error
    resolved = set(EventResolution.objects.values_list("event_id", flat=True))
    assert resolved == {e.pk for e in events} - {unreadable}
    listed = staff_client(Role.ADMIN).get("/api/v1/parked-events/")
    assert [row["event_id"] for row in listed.json()["results"]] == [unreadable]


def test_a_transient_database_error_is_retried_and_parks_nothing(monkeypatch):
    monkeypatch.setattr(retries, "_BACKOFF_BASE_SECONDS", 0.001)
    events = EventFactory.create_batch(4)

    stages_ = ["tests.events.stages.deadlock_once", "identity.services.identity_resolve_events"]
    with override_settings(EVENT_PIPELINE_STAGES=stages_):
        assert events_process_pending(batch_size=10) == (4, False)

    ids = [e.pk for e in events]
    assert stages.seen_batches == [ids, ids]  # the deadlock victim's batch, run again whole
    assert not ParkedEvent.objects.exists()
    assert EventResolution.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_lost_connection_is_retried_on_a_new_one_and_parks_nothing(monkeypatch):
    monkeypatch.setattr(retries, "_BACKOFF_BASE_SECONDS", 0.001)
    events = EventFactory.create_batch(3)
    lost_backend = connection.cursor().connection.info.backend_pid

    stages_ = ["tests.events.stages.lose_connection_once", "identity.services.identity_resolve_events"]
    with override_settings(EVENT_PIPELINE_STAGES=stages_):
        assert events_process_pending(batch_size=10) == (3, False)

    assert connection.cursor().connection.info.backend_pid != lost_backend
    assert stages.seen_batches == [[e.pk for e in events]] * 2
    assert not ParkedEvent.objects.exists()
    assert EventResolution.objects.count() == 3


def test_the_admin_lists_parked_events_and_replays_them(admin_client):
    events = EventFactory.create_batch(3)
    stages.poisoned.add(events[1].message_id)
    with override_settings(EVENT_PIPELINE_STAGES=[POISON]):
        events_process_pending(batch_size=10)
    parked = ParkedEvent.objects.get()

    listed = admin_client.get("/admin/events/parkedevent/")
    assert listed.status_code == 200
    assert POISON in listed.content.decode()
    assert admin_client.get(f"/admin/events/parkedevent/{parked.pk}/change/").status_code == 200

    admin_client.post("/admin/events/parkedevent/", {"action": "replay", "_selected_action": [parked.pk]})

    assert list(PendingEvent.objects.values_list("event_id", flat=True)) == [events[1].pk]
    assert not ParkedEvent.objects.filter(replayed_at__isnull=True).exists()
    assert AuditEntry.objects.get().channel == "console"


@pytest.mark.django_db(transaction=True)
@override_settings(EVENT_PIPELINE_STAGES=["tests.events.stages.hold"])
def test_a_bisection_leaves_what_another_worker_claimed_meanwhile_to_it():
    events = EventFactory.create_batch(4)
    ids = [e.pk for e in events]
    stages.claimed.clear()
    stages.gate.clear()
    results: dict[str, int] = {}

    def worker_a() -> None:
        results["a"] = pipeline.events_process_batch(batch_size=2)
        connection.close()

    thread = threading.Thread(target=worker_a)
    thread.start()
    assert stages.claimed.wait(timeout=10)  # A holds the two oldest

    # B bisects a failed batch of all four: the half A holds is A's, the other half is B's.
    results["b"] = pipeline._bisect(ids, ("tests.events.stages.hold", ValueError("failed as a whole")))
    stages.gate.set()
    thread.join(timeout=10)

    assert results == {"a": 2, "b": 2}
    assert sorted(seen()) == ids  # each once
    assert not ParkedEvent.objects.exists()
    assert not PendingEvent.objects.exists()
