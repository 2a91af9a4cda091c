"""Events of a known member (``DatabaseResolver.resolve_known``): a batch's events whose
identifiers all belong to one stored member are resolved set-based, and what they write is
exactly what the engine alone writes, row for row; everything else goes to the engine."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp.metrics import RESOLVED_EVENTS
from events.models import Event
from identity.models import EventIdentifier, EventResolution, Member, MemberChange, MergeRecord
from identity.models import Identifier as IdentifierRow
from identity.resolution import ResolvableEvent
from identity.services import identity_resolve_events
from identity.store import DatabaseResolver
from tests.factories import EventFactory, SourceFactory
from tests.identity.partitions import reference_partition, stored_partition
from tests.identity.streams import create_event, raw_events

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def resolved(path: str) -> float:
    return RESOLVED_EVENTS.labels(path=path)._value.get()


def engine_only(self: DatabaseResolver, events: list[ResolvableEvent]) -> list[ResolvableEvent]:
    """``resolve_known`` resolving nothing: every event to the engine, as before it existed."""
    events = list(events)
    self.load_graph({i for event in events for i in event.identifiers})
    return events


def graph_state() -> dict:
    """Everything resolution stored, with members named by their founding event (ids come from
    a sequence, which a rolled-back run does not give back)."""
    founding = {
        pk: (at, message_id, source_id)
        for pk, at, message_id, source_id in Member.objects.values_list(
            "pk", "first_event_at", "first_event_message_id", "first_event_source_id"
        )
    }
    return {
        "members": sorted(
            (
                founding[pk],
                status,
                last_at,
                last_message_id,
                last_source,
                merged_into and founding[merged_into],
            )
            for pk, status, last_at, last_message_id, last_source, merged_into in Member.objects.values_list(
                "pk",
                "status",
                "last_event_at",
                "last_event_message_id",
                "last_event_source_id",
                "merged_into",
            )
        ),
        "identifiers": sorted(
            (
                type_,
                value,
                founding.get(member),
                seen_at,
                seen_message_id,
                seen_source,
                alias_class,
                bool(sealed),
            )
            for type_, value, member, seen_at, seen_message_id, seen_source, alias_class, sealed in (
                IdentifierRow.objects.values_list(
                    "type",
                    "value",
                    "member",
                    "last_seen_at",
                    "last_seen_message_id",
                    "last_seen_source_id",
                    "alias_class",
                    "sealed",
                )
            )
        ),
        "mentions": sorted(
            EventIdentifier.objects.values_list(
                "event_id", "identifier__type", "identifier__value", "dropped"
            )
        ),
        "resolutions": sorted(
            (event, founding[member], str(problems))
            for event, member, problems in EventResolution.objects.values_list(
                "event_id", "member", "problems"
            )
        ),
        # Per batch, which members were marked changed (the outbox rows, in order of id, by batch).
        "changed": sorted(founding[pk] for pk in MemberChange.objects.values_list("member_id", flat=True)),
        "merges": sorted(
            (founding[survivor], founding[absorbed], event, tuple(identifiers), cause)
            for survivor, absorbed, event, identifiers, cause in MergeRecord.objects.values_list(
                "survivor", "absorbed", "event", "identifiers", "cause"
            )
        ),
    }


def _resolve_batches(batches: list[list[Event]]) -> dict:
    for batch in batches:
        identity_resolve_events(batch)
    return graph_state()


@pytest.fixture
def limits(settings):
    settings.IDENTITY_RULES = {"phone": {"limit": 1}, "device_id": {"limit": 2}}


@st.composite
def customers_events(draw) -> list[dict]:
    """A few customers, each with a user id, a browser, a phone, a device and a card, coming
    back again and again with some of them (a known customer's orders and visits: the events
    the known path takes), sometimes late, sometimes on a shared device or with another's
    phone, sometimes an alias; with ``raw_events``' tangles before them."""
    raws = draw(st.lists(raw_events(), max_size=1))
    events = raws[0] if raws else []
    people = draw(st.integers(1, 4))
    for _ in range(draw(st.integers(1, 24))):
        person = draw(st.integers(1, people))
        chosen = {
            "user_id": f"p{person}",
            "anonymous_id": f"p{person}-web",
            "phone": f"1380013810{person}",
            "device": f"p{person}-app",
            "card": f"P{person}",
        }
        chosen = {k: chosen[k] for k in draw(st.sets(st.sampled_from(sorted(chosen)), min_size=1))}
        if "user_id" not in chosen:  # the person's browser (``create_event`` would make a new one)
            chosen["anonymous_id"] = f"p{person}-web"
        mixed = draw(st.integers(0, 9))
        if mixed == 0:
            chosen["device"] = "ipad-shared"
        elif mixed == 1:
            chosen["phone"] = f"1380013810{draw(st.integers(1, people))}"
        elif mixed == 2:
            chosen["previous_id"], chosen["user_id"] = f"p{person}-web", f"p{person}"
        events.append(
            {
                "index": len(events),
                "minute": draw(st.integers(0, 40)),
                "source": draw(st.integers(0, 1)),
                **chosen,
            }
        )
    return events


@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), raws=customers_events())
def test_known_members_events_write_what_the_engine_writes(data, raws, limits, monkeypatch):
    with transaction.atomic():  # each example starts from, and leaves, an empty graph
        sources = [SourceFactory(), SourceFactory()]
        events = [create_event(raw, sources) for raw in raws]
        if data.draw(st.booleans()):
            arrival = data.draw(st.permutations(events))
        else:  # mostly in event time, as live events come, a few late
            lateness = {
                e.pk: data.draw(st.integers(0, 15)) if data.draw(st.integers(0, 4)) == 0 else 0
                for e in events
            }
            arrival = sorted(events, key=lambda e: (e.timestamp + timedelta(minutes=lateness[e.pk]), e.pk))
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrival) - 1)), max_size=12)))
        batches = [arrival[start:end] for start, end in zip([0, *cuts], [*cuts, len(arrival)], strict=True)]

        with transaction.atomic():
            with monkeypatch.context() as patch:
                patch.setattr(DatabaseResolver, "resolve_known", engine_only)
                by_engine = _resolve_batches(batches)
            transaction.set_rollback(True)
        with_known = _resolve_batches(batches)

        assert with_known == by_engine
        assert stored_partition() == reference_partition(events)
        transaction.set_rollback(True)


def _event(message_id: str, minute: int, source, **fields) -> Event:
    return EventFactory.create(
        source=source,
        message_id=message_id,
        type=fields.pop("type", "track"),
        previous_id=fields.pop("previous_id", ""),
        user_id=fields.pop("user_id", ""),
        anonymous_id=fields.pop("anonymous_id", ""),
        traits=fields.pop("traits", {}),
        context=fields.pop("context", {}),
        timestamp=T0 + timedelta(minutes=minute),
    )


def member_of(event: Event) -> int:
    return EventResolution.objects.get(event=event).member_id


@pytest.mark.django_db
def test_which_events_are_resolved_as_a_known_members(settings):
    settings.IDENTITY_RULES = {"terminal": {"merges": False}}
    source = SourceFactory()
    alice = _event("alice", 0, source, user_id="alice", anonymous_id="a-web", traits={"phone": "13800138001"})
    bob = _event("bob", 0, source, user_id="bob", anonymous_id="b-web")
    carol = _event("carol", 0, source, user_id="carol", anonymous_id="c-web")
    dave = _event("dave", 20, source, user_id="dave")
    erin = _event("erin", 0, source, user_id="erin", anonymous_id="e-web")
    erin_app = _event("erin-app", 20, source, user_id="erin", anonymous_id="e-app")
    frank = _event("frank", 0, source, user_id="frank", anonymous_id="frank")
    identity_resolve_events([alice, bob, carol, dave, erin, erin_app, frank])
    known, engine, overlap = resolved("known"), resolved("engine"), resolved("known_overlap")

    orders = [
        _event("order-1", 10, source, user_id="alice"),  # one identifier of alice's
        _event("order-2", 11, source, user_id="alice", traits={"phone": "13800138001"}),  # two of hers
        _event("view", 12, source, anonymous_id="b-web"),  # bob's browser
    ]
    others = [
        _event("new-device", 13, source, user_id="carol", anonymous_id="c-app"),  # a new identifier
        _event("late", 10, source, user_id="dave"),  # before dave's latest: the engine replays
        _event("nobody", 14, source, anonymous_id="fresh"),  # an identifier nobody holds
        _event("two", 15, source, user_id="bob", anonymous_id="a-web"),  # bob's and alice's
        _event("alias", 16, source, type="alias", previous_id="b-web", user_id="bob"),  # an alias
        _event(
            "till", 17, source, user_id="alice", context={"externalIds": [{"id": "T-1", "type": "terminal"}]}
        ),
        # erin's browser, seen last before it, but erin's latest event is later: the engine replays
        _event("erin-late", 10, source, anonymous_id="e-web"),
        # an alias naming only frank's identifiers (its previous id is his user and anonymous id)
        _event("frank-alias", 10, source, type="alias", previous_id="frank", user_id="frank"),
    ]
    identity_resolve_events(orders + others)

    # "two" names alice's browser: alice's orders are the engine's too, as is bob's view.
    assert (resolved("known") - known, resolved("engine") - engine) == (0, 11)
    assert resolved("known_overlap") == overlap
    assert member_of(orders[0]) == member_of(orders[1]) == member_of(alice)

    known, engine = resolved("known"), resolved("engine")
    more = [
        _event("order-3", 30, source, user_id="alice", traits={"phone": "13800138001"}),
        _event("view-2", 31, source, anonymous_id="b-web"),
        _event("view-3", 32, source, user_id="bob", anonymous_id="b-web"),
        _event("repeat", 33, source, anonymous_id="c-app"),
    ]
    identity_resolve_events(more)
    assert (resolved("known") - known, resolved("engine") - engine) == (4, 0)
    assert [member_of(e) for e in more] == [
        member_of(alice),
        member_of(bob),
        member_of(bob),
        member_of(carol),
    ]
    alice_member = Member.objects.get(pk=member_of(alice))
    assert (alice_member.last_event_at, alice_member.last_event_message_id) == (
        T0 + timedelta(minutes=30),
        "order-3",
    )
    phone = IdentifierRow.objects.get(type="phone", member=alice_member)
    assert (phone.last_seen_at, phone.last_seen_message_id) == (T0 + timedelta(minutes=30), "order-3")
    assert set(MemberChange.objects.values_list("member_id", flat=True)) >= {
        member_of(alice),
        member_of(bob),
        member_of(carol),
    }
    assert not EventIdentifier.objects.filter(event__in=more, dropped=True).exists()
    assert EventIdentifier.objects.filter(event__in=more).count() == 6


@pytest.mark.django_db
def test_a_member_over_a_tightened_limit_is_left_to_the_engine(settings):
    source = SourceFactory()
    first = _event("first", 0, source, user_id="erin", traits={"phone": "13800138001"})
    second = _event("second", 1, source, user_id="erin", traits={"phone": "13800138002"})  # phone limit 2
    identity_resolve_events([first, second])
    settings.IDENTITY_RULES = {"phone": {"limit": 1}}  # erin now holds more phones than allowed
    known, engine = resolved("known"), resolved("engine")
    order = _event("order", 5, source, traits={"phone": "13800138001"})
    identity_resolve_events([order])
    assert (resolved("known") - known, resolved("engine") - engine) == (0, 1)
    # The engine refuses the phone: joining erin would break the limit, so the order founds a member.
    assert member_of(order) != member_of(first)


@pytest.mark.django_db
def test_a_replay_reaching_a_known_member_resolves_the_batch_by_the_engine(settings):
    """A late event's walk can reach a member through a mention its event dropped: the batch is
    then resolved by the engine alone."""
    source = SourceFactory()
    nina = _event("nina", 0, source, user_id="nina", anonymous_id="shared")
    mark = _event("mark", 1, source, user_id="mark", anonymous_id="mark-web")
    # mark's event names nina's browser, dropped (two user ids in one member): it stays mark's.
    mark_on_nina_browser = _event("mark-2", 2, source, user_id="mark", anonymous_id="shared")
    identity_resolve_events([nina, mark, mark_on_nina_browser])
    assert EventIdentifier.objects.get(event=mark_on_nina_browser, identifier__type="anonymous_id").dropped
    overlap, engine = resolved("known_overlap"), resolved("engine")

    mark_order = _event("mark-order", 10, source, user_id="mark")  # known: mark's alone
    late_on_shared = _event("late", 1, source, anonymous_id="shared")  # late: its walk reaches mark
    with transaction.atomic():
        with transaction.atomic():
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(DatabaseResolver, "resolve_known", engine_only)
                identity_resolve_events([mark_order, late_on_shared])
                by_engine = graph_state()
            transaction.set_rollback(True)
        identity_resolve_events([mark_order, late_on_shared])
    assert resolved("known_overlap") - overlap == 1
    assert resolved("engine") - engine == 4
    assert graph_state() == by_engine
    assert member_of(mark_order) == member_of(mark)
