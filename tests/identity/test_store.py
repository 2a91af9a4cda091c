"""Identity resolution against PostgreSQL: the pipeline stage, its history, and that it
gives the reference answer whatever the arrival order, batching and concurrency."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import Event
from events.pipeline import events_process_batch
from identity import services
from identity.models import EventIdentifier, EventResolution, MergeRecord
from identity.models import Identifier as IdentifierRow
from identity.services import identity_resolve_events
from identity.store import DatabaseResolver
from members.models import Member
from tests.factories import EventFactory, SourceFactory
from tests.factories.sealed import stored
from tests.identity.partitions import (
    reference_alias_classes,
    reference_dropped,
    reference_holdings,
    reference_partition,
    stored_alias_classes,
    stored_dropped,
    stored_holdings,
    stored_partition,
)
from tests.identity.streams import create_event, raw_events

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def member_of(event: Event) -> int:
    return EventResolution.objects.get(event=event).member_id


def active_members() -> int:
    return Member.objects.filter(status=Member.Status.ACTIVE).count()


@pytest.mark.django_db
def test_the_same_customer_across_channels_is_one_member(ingest, source):
    pos, app = SourceFactory(pos=True), SourceFactory(kind="app")
    ingest("track", {"anonymousId": "anon-1", "event": "Product Viewed", "context": {"device": {"id": "dev-1"}},
                     "timestamp": "2026-10-01T10:00:00Z"}, write_key=app.write_key)  # fmt: skip
    ingest("identify", {"anonymousId": "anon-1", "traits": {"phone": "138 0013 8000"},
                        "timestamp": "2026-10-01T10:05:00Z"}, write_key=app.write_key)  # fmt: skip
    ingest("identify", {"userId": "C-7", "traits": {"phone": "+86 13800138000"},
                        "context": {"externalIds": [{"id": "C-7", "type": "member_card"}]},
                        "timestamp": "2026-10-02T15:00:00Z"}, write_key=pos.write_key)  # fmt: skip

    from events.pipeline import events_process_pending

    events_process_pending()

    members = {member_of(event) for event in Event.objects.all()}
    assert len(members) == 1
    held = set(IdentifierRow.objects.filter(member_id__in=members).values_list("type", "value"))
    assert held == {("anonymous_id", "anon-1"), ("device_id", "dev-1"), ("phone", stored("phone", "+8613800138000")),
                    ("user_id", "C-7"), ("member_card", "C-7")}  # fmt: skip


@pytest.mark.django_db
def test_junk_values_are_reported_on_the_event_and_merge_nobody():
    first = EventFactory(user_id="0", anonymous_id="a-1", traits={"phone": "12345"})
    second = EventFactory(user_id="0", anonymous_id="a-2")

    identity_resolve_events([first, second])

    assert member_of(first) != member_of(second)
    problems = EventResolution.objects.get(event=first).problems
    assert {(p["type"], p["reason"]) for p in problems} == {("user_id", "blocked"), ("phone", "invalid")}


@pytest.mark.django_db
def test_a_merge_is_recorded_and_the_absorbed_id_leads_to_the_survivor():
    app = EventFactory(anonymous_id="a-1", user_id="", timestamp=T0)
    pos = EventFactory(
        anonymous_id="", user_id="", traits={"phone": "13800138000"}, timestamp=T0 + timedelta(hours=1)
    )
    identity_resolve_events([app])
    identity_resolve_events([pos])
    older, newer = member_of(app), member_of(pos)
    assert older != newer

    link = EventFactory(
        anonymous_id="a-1", user_id="", traits={"phone": "+8613800138000"}, timestamp=T0 + timedelta(days=1)
    )
    identity_resolve_events([link])

    assert member_of(app) == member_of(pos) == member_of(link) == older
    absorbed = Member.objects.get(pk=newer)
    assert (absorbed.status, absorbed.merged_into_id) == (Member.Status.MERGED, older)
    record = MergeRecord.objects.get()
    assert (record.survivor_id, record.absorbed_id, record.event_id) == (older, newer, link.id)
    assert record.identifiers == ["anonymous_id:a-1", f"phone:{stored('phone', '+8613800138000')}"]
    assert record.rule["phone"]["limit"] == 2
    assert record.cause == MergeRecord.Cause.EVENT


@pytest.mark.django_db
def test_phones_and_emails_are_hashed_before_the_identity_lock(monkeypatch):
    """The lock's holder keeps every other worker's batch waiting: hashing values (pure work)
    happens before it is taken, and the graph stores the same blind indexes."""
    steps: list[str] = []
    lock, index = services._identity_lock, services.identifier_index
    monkeypatch.setattr(services, "_identity_lock", lambda: (steps.append("lock"), lock())[1])
    monkeypatch.setattr(services, "identifier_index", lambda *a: (steps.append("hash"), index(*a))[1])
    event = EventFactory(
        anonymous_id="a-1", user_id="", traits={"phone": "13800138000", "email": "a@example.com"}
    )

    identity_resolve_events([event])

    assert steps == ["hash", "hash", "lock"]
    assert set(IdentifierRow.objects.values_list("type", "value")) == {
        ("anonymous_id", "a-1"),
        ("phone", stored("phone", "+8613800138000")),
        ("email", stored("email", "a@example.com")),
    }


@pytest.mark.django_db
def test_a_late_event_re_resolves_the_members_it_touches(settings):
    settings.IDENTITY_RULES = {"phone": {"limit": 1}}
    early = EventFactory(user_id="", anonymous_id="", context={"device": {"id": "d1"}}, traits={"phone": "13800138001"},
                         timestamp=T0, message_id="early")  # fmt: skip
    later = EventFactory(user_id="", anonymous_id="", context={"device": {"id": "d1"}}, traits={"phone": "13800138002"},
                         timestamp=T0 + timedelta(hours=1), message_id="later")  # fmt: skip
    identity_resolve_events([later])
    assert EventIdentifier.objects.filter(event=later, dropped=False).count() == 2

    identity_resolve_events([early])  # arrives last, happened first

    assert member_of(early) != member_of(later)
    device = IdentifierRow.objects.get(type="device_id", value="d1")
    assert device.member_id == member_of(early)
    assert set(
        EventIdentifier.objects.filter(event=later, dropped=True).values_list("identifier__type", flat=True)
    ) == {"device_id"}


@pytest.mark.django_db
def test_a_late_checkout_re_decides_its_customer_not_everyone_on_the_shared_ipad(monkeypatch):
    def checkout(customer: int, minute: int) -> Event:
        return EventFactory.create(
            user_id=f"C-{customer}",
            anonymous_id="",
            context={"device": {"id": "ipad"}},
            timestamp=T0 + timedelta(minutes=minute),
            message_id=f"c{customer}-{minute}",
        )

    checkouts = [checkout(customer, minute=customer) for customer in range(8)]
    for one in checkouts:
        identity_resolve_events([one])  # the iPad is C-0's; the others' checkouts drop it
    late = EventFactory(user_id="C-5", anonymous_id="", traits={"phone": "13800138005"},
                        timestamp=T0 + timedelta(minutes=30), message_id="late")  # fmt: skip
    after = checkout(5, minute=40)
    identity_resolve_events([after])
    replayed: list[set] = []
    original = DatabaseResolver._replay

    def spy(self, keys, refused=frozenset()):
        replayed.append({key.message_id for key in keys})
        original(self, keys, refused)

    monkeypatch.setattr(DatabaseResolver, "_replay", spy)
    identity_resolve_events([late])  # arrives after C-5's later checkout

    assert replayed == [{"c5-5", "late", "c5-40"}]
    assert stored_partition() == reference_partition([*checkouts, after, late])
    assert stored_dropped() == reference_dropped([*checkouts, after, late])
    assert IdentifierRow.objects.get(type="device_id", value="ipad").member_id == member_of(checkouts[0])


# --- the database engine gives the reference answer ----------------------------------------


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), raws=raw_events())
def test_database_engine_matches_the_reference_for_any_arrival_and_batching(
    data, raws, django_settings_limits
):
    with transaction.atomic():  # each example starts from, and leaves, an empty graph
        _check_against_reference(data, raws)
        transaction.set_rollback(True)


def _check_against_reference(data, raws) -> None:
    sources = [SourceFactory(), SourceFactory()]
    events = [create_event(raw, sources) for raw in raws]

    arrival = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=4)))
    for start, end in zip([0, *cuts], [*cuts, len(arrival)], strict=True):
        identity_resolve_events(arrival[start:end])

    assert stored_partition() == reference_partition(events)
    assert stored_dropped() == reference_dropped(events)  # replays update exactly the flags that flip
    assert stored_alias_classes() == reference_alias_classes(events)
    # owners and last sightings, as rewritten batch after batch, are the event-time order's
    expected = reference_holdings(events)
    assert stored_holdings({text.partition(":")[0] for text in expected}) == expected
    assert active_members() == len(reference_partition(events))
    # every identifier's owner is active, and every merged member points at an active one
    assert not IdentifierRow.objects.filter(member__status=Member.Status.MERGED).exists()
    assert not Member.objects.filter(merged_into__status=Member.Status.MERGED).exists()


@pytest.fixture
def django_settings_limits(settings):
    settings.IDENTITY_RULES = {"phone": {"limit": 1}, "device_id": {"limit": 2}}


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_resolving_the_same_people_make_no_duplicates():
    source = SourceFactory()
    # 4 people, each seen 10 times with their phone and one of two shared devices.
    events = [
        EventFactory(
            source=source,
            user_id="",
            anonymous_id=f"anon-{person}-{visit}",
            traits={"phone": f"1380013800{person}"},
            context={"device": {"id": f"dev-{visit % 2}"}},
            timestamp=T0 + timedelta(minutes=visit * 4 + person),
        )
        for person in range(4)
        for visit in range(10)
    ]
    start, errors = threading.Barrier(2), []

    def worker():
        try:
            start.wait()
            while events_process_batch(batch_size=5):
                pass
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert EventResolution.objects.count() == 40
    assert stored_partition() == reference_partition(events)
    assert IdentifierRow.objects.filter(type="phone").values("member").distinct().count() == active_members()
