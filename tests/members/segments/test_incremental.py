"""The incremental path: an event changes a member, and the member refresh that follows
re-evaluates its tags and segments (no full recompute involved); merges and splits move
membership with the member; what the refresh leaves equals what a full recompute gives."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.services import member_split
from members.models import Member
from members.segments.evaluate import _state_of
from members.segments.models import (
    MemberTag,
    RfmCutoffs,
    Segment,
    SegmentChange,
    SegmentMember,
    SegmentsRecheck,
    Tag,
    TagChange,
)
from members.segments.rules.interpret import MemberFacts
from members.segments.selectors import definitions_load
from members.segments.services import memberships_compute_all, segment_static_set
from members.services import members_rebuild, members_refresh
from tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db

POS_LAST_30_DAYS = {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30}


def members_of(key: str) -> set[int]:
    return set(SegmentMember.objects.filter(segment__key=key).values_list("member_id", flat=True))


def tags_of(member_id: int, *, computed: bool = True) -> set[str]:
    tags = MemberTag.objects.filter(member_id=member_id)
    return set((tags if computed else tags.exclude(tag__kind="computed")).values_list("tag__key", flat=True))


def history(key: str) -> list[tuple[int, str]]:
    return list(
        SegmentChange.objects.filter(segment__key=key).order_by("id").values_list("member_id", "change")
    )


def member_of(event) -> int:
    return EventResolution.objects.get(event=event).member_id


@pytest.fixture
def store():
    return SourceFactory(pos=True, store_code="SH01")


@pytest.fixture
def app():
    return SourceFactory(kind="app")


def order(source, phone: str, *, days_ago: float, total: int = 100, **properties):
    return EventFactory(
        source=source, user_id="", anonymous_id="", event="Order Completed",
        timestamp=timezone.now() - timedelta(days=days_ago), context={"traits": {"phone": phone}},
        properties={"order_id": f"O-{phone}-{days_ago}-{total}", "total": total, "currency": "CNY", **properties},
    )  # fmt: skip


def test_an_order_puts_the_member_in_its_segments_and_tags_within_the_refresh(store, app):
    Segment.objects.create(key="pos-recent", name="POS in 30 days", kind="dynamic", rule=POS_LAST_30_DAYS)
    Segment.objects.create(key="app-never", name="never in the app", kind="dynamic",
                           rule={"all": [{"segment": "pos-recent"},
                                         {"did_not": {"event": "Order Completed", "where": {"channel": "app"}}}]})  # fmt: skip
    Tag.objects.create(key="shoe-buyer", name="Shoe buyer", kind="rule",
                       rule={"event": "Order Completed", "where": {"properties.category": "shoes"}})  # fmt: skip

    first = order(store, "13800138000", days_ago=2, category="shoes")
    events_process_pending()
    member = member_of(first)

    assert member in members_of("pos-recent")
    assert member in members_of("app-never")
    assert tags_of(member) == {"shoe-buyer", "lifecycle-new", "channel-store-only"}  # rule and computed
    assert Segment.objects.get(key="pos-recent").size == 1

    order(app, "13800138000", days_ago=1)
    events_process_pending()

    assert member in members_of("pos-recent")
    assert member not in members_of("app-never")
    assert history("app-never") == [(member, "entered"), (member, "exited")]
    assert Segment.objects.get(key="app-never").size == 0
    assert tags_of(member) == {"shoe-buyer", "lifecycle-new", "channel-omnichannel"}
    assert list(TagChange.objects.filter(tag__key__startswith="channel-").order_by("id").values_list("tag__key", "action")) == [
        ("channel-store-only", "added"), ("channel-store-only", "removed"), ("channel-omnichannel", "added"),
    ]  # fmt: skip


def test_the_member_is_rechecked_when_its_window_closes(store):
    Segment.objects.create(key="pos-recent", name="POS in 30 days", kind="dynamic", rule=POS_LAST_30_DAYS)
    placed = order(store, "13800138000", days_ago=29)
    events_process_pending()
    member = member_of(placed)

    due = SegmentsRecheck.objects.get(member_id=member).due_at

    assert due == placed.timestamp + timedelta(days=30, microseconds=1)
    assert member in members_of("pos-recent")


def test_staff_choices_stay_and_a_broken_rule_keeps_its_members(store):
    manual = Tag.objects.create(key="vip", name="VIP", kind="manual")
    listed = Segment.objects.create(key="call-list", name="Call list", kind="static")
    broken = Segment.objects.create(
        key="broken", name="Broken", kind="dynamic", rule={"aggregate": "orders", "op": "gte", "value": 1}
    )
    first = order(store, "13800138000", days_ago=3)
    events_process_pending()
    member = member_of(first)
    MemberTag.objects.create(member_id=member, tag=manual, added_at=timezone.now())
    segment_static_set(segment=listed, member_ids=[member])
    broken.rule = {"aggregate": "orders", "op": "gtt", "value": 5}
    broken.save()

    order(store, "13800138000", days_ago=1)
    events_process_pending()

    assert tags_of(member, computed=False) == {"vip"}
    assert member in members_of("call-list")
    assert member in members_of("broken")


def test_a_merge_moves_membership_to_the_survivor_and_the_absorbed_id_leaves(store, app):
    Segment.objects.create(
        key="buyers", name="Buyers", kind="dynamic", rule={"aggregate": "orders", "op": "gte", "value": 1}
    )
    Segment.objects.create(key="omni", name="Both", kind="dynamic",
                                          rule={"all": [{"aggregate": "orders_pos", "op": "gte", "value": 1},
                                                        {"aggregate": "orders_app", "op": "gte", "value": 1}]})  # fmt: skip
    listed = Segment.objects.create(key="call-list", name="Call list", kind="static")
    vip = Tag.objects.create(key="vip", name="VIP", kind="manual")
    at_till = order(store, "13800138000", days_ago=5)
    in_app = EventFactory(source=app, user_id="", anonymous_id="anon-7", event="Order Completed",
                          timestamp=timezone.now() - timedelta(days=4),
                          properties={"order_id": "APP-1", "total": 50, "currency": "CNY"})  # fmt: skip
    events_process_pending()
    survivor, absorbed = sorted([member_of(at_till), member_of(in_app)])
    segment_static_set(segment=listed, member_ids=[absorbed])
    MemberTag.objects.create(member_id=absorbed, tag=vip, added_at=timezone.now())
    assert members_of("buyers") == {survivor, absorbed}

    EventFactory(
        source=app, type="identify", user_id="", anonymous_id="anon-7", traits={"phone": "13800138000"}
    )
    events_process_pending()

    assert Member.objects.get(pk=absorbed).merged_into_id == survivor
    assert members_of("buyers") == members_of("omni") == members_of("call-list") == {survivor}
    assert (absorbed, "exited") in history("buyers")
    assert history("omni") == [(survivor, "entered")]
    assert tags_of(survivor, computed=False) == {"vip"}
    assert tags_of(absorbed) == set()
    assert not SegmentsRecheck.objects.filter(member_id=absorbed).exists()
    assert Segment.objects.get(key="buyers").size == 1


def test_a_split_moves_membership_back(store, app):
    Segment.objects.create(key="app-buyers", name="App buyers", kind="dynamic",
                           rule={"aggregate": "orders_app", "op": "gte", "value": 1})  # fmt: skip
    at_till = order(store, "13800138000", days_ago=5)
    in_app = EventFactory(source=app, user_id="", anonymous_id="anon-7", event="Order Completed",
                          timestamp=timezone.now() - timedelta(days=4),
                          properties={"order_id": "APP-1", "total": 50, "currency": "CNY"})  # fmt: skip
    events_process_pending()
    EventFactory(
        source=app, type="identify", user_id="", anonymous_id="anon-7", traits={"phone": "13800138000"}
    )
    events_process_pending()
    merged = member_of(at_till)
    assert member_of(in_app) == merged
    assert members_of("app-buyers") == {merged}

    member_split(member_id=merged, identifiers=["anonymous_id:anon-7"], reason="a shared phone")
    members_refresh()

    assert member_of(at_till) == merged != member_of(in_app)
    assert members_of("app-buyers") == {member_of(in_app)}
    assert (merged, "exited") in history("app-buyers")


def test_the_refresh_looks_up_only_the_identifier_types_rules_ask_about(settings, app):
    """A member's identifiers grow with its history (devices, cookies, openids): the refresh
    asks, per type some rule names, whether the member holds one, both the types that merge
    (owned) and those that do not (held per member), and reads nothing when no rule asks."""
    settings.IDENTITY_RULES = {"terminal": {"merges": False}}
    Segment.objects.create(key="carded", name="carded", kind="dynamic",
                           rule={"all": [{"has_identifier": "member_card"}, {"not": {"has_identifier": "email"}}]})  # fmt: skip
    Tag.objects.create(key="at-till", name="at a till", kind="rule", rule={"has_identifier": "terminal"})
    event = EventFactory(
        source=app, type="identify", user_id="u1", anonymous_id="a1", traits={"phone": "13800138000"},
        context={"externalIds": [{"id": "MC-1", "type": "member_card", "collection": "users"},
                                 {"id": "T-1", "type": "terminal", "collection": "users"}]},
    )  # fmt: skip
    events_process_pending()
    member = member_of(event)
    definitions = definitions_load()

    assert definitions.identifier_types == {"member_card", "email", "terminal"}
    [(facts, _, _)] = _state_of({member: MemberFacts(member)}, definitions.identifier_types)
    assert facts.identifier_types == {"member_card", "terminal"}
    [(facts, _, _)] = _state_of({member: MemberFacts(member)}, frozenset())
    assert facts.identifier_types == frozenset()
    assert member in members_of("carded")
    assert "at-till" in tags_of(member)


# --- the incremental path equals the full recompute --------------------------------------------

RULES = {
    "pos-recent": POS_LAST_30_DAYS,
    "lapsed-app": {"stopped": {"event": "Order Completed", "where": {"channel": "app"}, "in_last_days": 10,
                               "before_days": 30}},
    "first-timers": {"first_time": {"event": "Order Completed", "in_last_days": 7}},
    "big": {"any": [{"aggregate": "spend", "op": "gte", "value": 250}, {"points": {"gte": 300}}]},
    "shanghai-shoes": {"all": [{"trait": "city", "op": "eq", "value": "Shanghai"},
                               {"event": "Order Completed", "where": {"properties.category": "shoes"}, "at_least": 2}]},
    "has-card": {"has_identifier": "member_card"},
    "tagged-big": {"all": [{"tag": "frequent"}, {"not": {"segment": "big"}}]},
}  # fmt: skip
TAG_RULES = {"frequent": {"aggregate": "orders", "op": "gte", "value": 3}}

purchases = st.lists(
    st.tuples(
        st.integers(0, 3),  # which person
        st.sampled_from(["pos", "app"]),
        st.integers(0, 60),  # days ago (whole days and a half: never on a window's edge)
        st.sampled_from([20, 100, 180]),
        st.sampled_from(["shoes", "bags"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(purchases=purchases, cities=st.lists(st.sampled_from(["Shanghai", "Beijing"]), min_size=4, max_size=4))
def test_what_the_refreshes_leave_is_what_a_full_recompute_gives(purchases, cities, store, app):
    with transaction.atomic():  # each example starts from nothing
        _refreshes_then_full_recompute(purchases, cities, store, app)
        transaction.set_rollback(True)


def _refreshes_then_full_recompute(purchases, cities, store, app) -> None:
    # Both paths score RFM against these quintile edges (the full recompute keeps them).
    ago = timezone.now() - timedelta(days=1)
    RfmCutoffs.objects.create(
        recency=[ago - timedelta(days=d) for d in (40, 20, 10, 3)], frequency=[1, 1, 2, 3],
        monetary=[Decimal(v) for v in (20, 100, 180, 300)], members=10, computed_at=ago,
    )  # fmt: skip
    for key, rule in RULES.items():
        Segment.objects.create(key=key, name=key, kind="dynamic", rule=rule)
    for key, rule in TAG_RULES.items():
        Tag.objects.create(key=key, name=key, kind="rule", rule=rule)
    sources = {"pos": store, "app": app}
    for n, city in enumerate(cities):
        EventFactory(source=app, type="identify", user_id=f"u{n}", traits={"phone": f"1380013800{n}", "city": city},
                     context={"externalIds": [{"id": f"MC-{n}", "type": "member_card", "collection": "users"}]}
                     if n % 2 else {})  # fmt: skip
    # Events arrive in several pipeline runs, as they would over a day.
    for step, (person, channel, days, total, category) in enumerate(purchases):
        order(sources[channel], f"1380013800{person}", days_ago=days + 0.5, total=total, category=category,
              order_id=f"O{step}")  # fmt: skip
        if step % 3 == 0:
            events_process_pending()
    events_process_pending()
    changes = SegmentChange.objects.count(), TagChange.objects.count()
    incremental = {key: members_of(key) for key in Segment.objects.values_list("key", flat=True)}

    tags = set(MemberTag.objects.values_list("member_id", "tag__key"))

    memberships_compute_all(rfm_cutoffs=False)

    assert set(MemberTag.objects.values_list("member_id", "tag__key")) == tags
    assert {key: members_of(key) for key in incremental} == incremental
    assert (SegmentChange.objects.count(), TagChange.objects.count()) == changes  # nothing to correct
    for segment in Segment.objects.all():
        assert segment.size == len(incremental[segment.key])
    assert any(key.startswith("rfm-") for _, key in tags)


def test_a_rebuild_gives_the_same_membership_as_the_refreshes(store, app):
    for key, rule in RULES.items():
        Segment.objects.create(key=key, name=key, kind="dynamic", rule=rule)
    Tag.objects.create(key="frequent", name="frequent", kind="rule", rule=TAG_RULES["frequent"])
    for n, (source, days) in enumerate([(store, 2), (app, 15), (store, 40), (app, 3), (store, 1)]):
        order(source, f"1380013800{n % 2}", days_ago=days + 0.5, total=90, category="shoes")
    EventFactory(
        source=app, type="identify", user_id="u0", traits={"phone": "13800138000", "city": "Shanghai"}
    )
    events_process_pending()
    before = {key: members_of(key) for key in RULES}
    SegmentMember.objects.all().delete()
    MemberTag.objects.all().delete()

    members_rebuild()

    assert {key: members_of(key) for key in RULES} == before
    assert any(before.values())
