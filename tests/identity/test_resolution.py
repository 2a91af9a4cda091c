"""The resolution engine: concrete cases, and order independence over generated streams."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from identity.identifiers import Identifier
from identity.resolution import (
    EventKey,
    InMemoryResolver,
    ResolvableEvent,
    Separation,
    resolve_in_event_order,
)
from identity.rules import Rules, TypeRule

T0 = datetime(2026, 11, 1, tzinfo=UTC)
RULES = Rules().with_overrides({"terminal": {"merges": False}})


def event(minute: int, *identifiers: str, message: str | None = None, source: int = 1) -> ResolvableEvent:
    parsed = frozenset(Identifier(*text.split(":", 1)) for text in identifiers)
    key = EventKey(T0 + timedelta(minutes=minute), message or f"m{minute}-{'-'.join(identifiers)}", source)
    return ResolvableEvent(key, parsed)


def members(events, rules=RULES):
    return {
        frozenset(key.message_id for key in group)
        for group in resolve_in_event_order(events, rules).partition()
    }


def test_anonymous_activity_joins_the_member_who_identifies_later():
    browse = event(1, "anonymous_id:a1", "device_id:d1", message="browse")
    identify = event(5, "anonymous_id:a1", "user_id:u1", "phone:+8613800138000", message="identify")
    pos = event(9, "phone:+8613800138000", "member_card:C1", message="pos")

    assert members([browse, identify, pos]) == {frozenset({"browse", "identify", "pos"})}


def test_an_event_that_links_two_members_merges_them_into_the_older():
    resolver = InMemoryResolver(RULES)
    app = event(1, "device_id:d1", message="app")
    pos = event(2, "phone:+8613800138000", message="pos")
    link = event(3, "device_id:d1", "phone:+8613800138000", message="link")
    for e in (app, pos, link):
        resolver.add(e)

    survivor = resolver.member_of[link.key]
    assert survivor == app.key  # the member founded by the earliest event survives
    assert resolver.member_of[pos.key] == survivor
    assert resolver.graph.members[survivor].identifiers == {"device_id": {"d1"}, "phone": {"+8613800138000"}}


def test_a_shared_store_ipad_does_not_fuse_its_customers():
    ipad_checkouts = [event(i, "device_id:ipad", f"user_id:u{i}", message=f"c{i}") for i in range(20)]

    assert members(ipad_checkouts) == {frozenset({f"c{i}"}) for i in range(20)}


def test_the_lowest_priority_conflicting_identifier_is_dropped():
    resolver = InMemoryResolver(RULES)
    first = event(1, "user_id:u1", "phone:+8613800138001", message="first")
    second = event(2, "user_id:u2", "phone:+8613800138002", message="second")
    # Carries u1 (priority 100) and u2's phone (70): joining u2's member would give one member
    # two user ids, so the phone is dropped for matching and the event stays with u1.
    bridge = event(3, "user_id:u1", "phone:+8613800138002", message="bridge")
    for e in (first, second, bridge):
        resolver.add(e)

    assert resolver.member_of[bridge.key] == resolver.member_of[first.key] != resolver.member_of[second.key]
    assert resolver.graph.owner[Identifier("phone", "+8613800138002")] == resolver.member_of[second.key]


def test_a_type_that_never_merges_is_kept_but_joins_nobody():
    one = event(1, "user_id:u1", "terminal:T9", message="one")
    two = event(2, "user_id:u2", "terminal:T9", message="two")
    resolver = resolve_in_event_order([one, two], RULES)

    assert len(resolver.partition()) == 2
    for key in (one.key, two.key):
        assert resolver.graph.members[resolver.member_of[key]].identifiers["terminal"] == {"T9"}


def test_limits_are_per_type_and_configurable():
    strict = Rules().with_overrides({"phone": {"limit": 1}})
    events = [
        event(1, "device_id:d1", "phone:+8613800138001"),
        event(2, "device_id:d1", "phone:+8613800138002"),
    ]

    assert len(members(events, Rules())) == 1  # two phones are allowed by default
    assert len(members(events, strict)) == 2


def test_a_late_event_re_resolves_what_it_touches():
    # In event time, d1's first phone claims the device, so the second phone can't join it
    # under a one-phone limit. If the first arrives last, the others must be re-resolved.
    strict = Rules().with_overrides({"phone": {"limit": 1}})
    early = event(1, "device_id:d1", "phone:+8613800138001", message="early")
    later = event(2, "device_id:d1", "phone:+8613800138002", message="later")
    resolver = InMemoryResolver(strict)
    resolver.add(later)
    resolver.add(early)

    assert resolver.replays == 1
    assert resolver.partition() == resolve_in_event_order([early, later], strict).partition()
    assert resolver.graph.owner[Identifier("device_id", "d1")] == early.key


def test_a_separation_keeps_two_people_apart_whatever_links_them():
    split = Separation(
        frozenset({Identifier("phone", "+8613800138002")}), frozenset({Identifier("phone", "+8613800138001")})
    )
    events = [
        event(1, "device_id:ipad", "phone:+8613800138001", message="a"),
        event(2, "device_id:ipad", "phone:+8613800138002", message="b"),
    ]

    assert members(events) == {frozenset({"a", "b"})}  # two phones are allowed: one member
    resolver = resolve_in_event_order(events, RULES, [split])
    assert {frozenset(k.message_id for k in group) for group in resolver.partition()} == {
        frozenset({"a"}),
        frozenset({"b"}),
    }


def test_resolving_an_event_twice_changes_nothing():
    resolver = InMemoryResolver(RULES)
    e = event(1, "user_id:u1")
    resolver.add(e)
    before = resolver.partition()
    resolver.add(e)

    assert resolver.partition() == before


# --- order independence -----------------------------------------------------------------

PROPERTY_RULES = Rules(
    by_type={
        "user_id": TypeRule(priority=100, limit=1),
        "member_card": TypeRule(priority=80, limit=2),
        "phone": TypeRule(priority=70, limit=1),
        "device_id": TypeRule(priority=30, limit=2),
        "anonymous_id": TypeRule(priority=20, limit=None),
        "terminal": TypeRule(priority=5, limit=None, merges=False),
    }
)
POOLS = {
    "user_id": [f"u{i}" for i in range(5)],
    "member_card": [f"c{i}" for i in range(4)],
    "phone": [f"+86138001380{i:02d}" for i in range(5)],
    "device_id": ["ipad-shared", "d1", "d2", "d3"],
    "anonymous_id": [f"a{i}" for i in range(6)],
    "terminal": ["T1", "T2"],
}
identifier_strategy = st.sampled_from(sorted(POOLS)).flatmap(
    lambda type_: st.sampled_from(POOLS[type_]).map(lambda value: Identifier(type_, value))
)


@st.composite
def event_streams(draw) -> list[ResolvableEvent]:
    count = draw(st.integers(min_value=1, max_value=18))
    events = []
    for index in range(count):
        minute = draw(st.integers(min_value=0, max_value=12))  # few minutes: many ties, broken by messageId
        identifiers = draw(st.frozensets(identifier_strategy, min_size=0, max_size=4))
        source = draw(st.sampled_from([1, 2]))
        events.append(
            ResolvableEvent(EventKey(T0 + timedelta(minutes=minute), f"m{index:02d}", source), identifiers)
        )
    return events


mergeable = identifier_strategy.filter(lambda i: PROPERTY_RULES.of(i.type).merges)
separations = st.lists(
    st.builds(
        Separation,
        one=st.frozensets(mergeable, min_size=1, max_size=2),
        other=st.frozensets(mergeable, min_size=1, max_size=2),
    ).filter(lambda s: not s.one & s.other),
    max_size=2,
)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), events=event_streams(), splits=separations)
def test_every_arrival_order_gives_the_partition_of_event_time_order(data, events, splits):
    expected = resolve_in_event_order(events, PROPERTY_RULES, splits)
    arrival = data.draw(st.permutations(events))

    resolver = InMemoryResolver(PROPERTY_RULES, splits)
    for e in arrival:
        resolver.add(e)

    assert resolver.partition() == expected.partition()
    assert resolver.graph.owner == expected.graph.owner
    assert set(resolver.member_of) == {e.key for e in events}  # every event belongs to exactly one member
    for state in resolver.graph.members.values():
        for type_, values in state.identifiers.items():
            limit = PROPERTY_RULES.of(type_).limit
            assert limit is None or len(values) <= limit
        held = set(state.holds())
        for split in splits:
            assert not (held & split.one and held & split.other)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), events=event_streams(), splits=separations)
def test_arrival_in_batches_gives_the_partition_of_event_time_order(data, events, splits):
    """As the pipeline feeds it: arrival order cut into batches, each with one replay."""
    expected = resolve_in_event_order(events, PROPERTY_RULES, splits)
    arrival = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(arrival) - 1, 1)), max_size=4)))

    resolver = InMemoryResolver(PROPERTY_RULES, splits)
    for start, end in zip([0, *cuts], [*cuts, len(arrival)], strict=True):
        resolver.add_batch(arrival[start:end])

    assert resolver.partition() == expected.partition()
    assert resolver.graph.owner == expected.graph.owner
    assert set(resolver.member_of) == {e.key for e in events}
