"""Profile traits: the latest value by event time, whatever the arrival order."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.models import DirtyMark, MemberTrait
from members.traits import TraitObservation, latest_traits, traits_of_event
from tests.factories import EventFactory, SourceFactory
from tests.factories.sealed import opened

T0 = datetime(2026, 10, 1, tzinfo=UTC)

observations = st.builds(
    TraitObservation,
    key=st.sampled_from(["email", "name", "city"]),
    value=st.integers(),
    observed_at=st.sampled_from([T0, T0 + timedelta(hours=1), T0 + timedelta(days=1)]),
    channel=st.sampled_from(["pos", "app", "web", "mini_program"]),
    message_id=st.text(alphabet="abc", min_size=1, max_size=3),
    source_id=st.integers(1, 3),
    event_id=st.integers(1, 10),
)


# An event states a key once: no two observations share (key, event).
@given(st.lists(observations, max_size=12, unique_by=lambda o: (o.key, o.event_id)), st.randoms())
def test_latest_traits_do_not_depend_on_order(found, random):
    shuffled = random.sample(found, len(found))

    assert latest_traits(shuffled) == latest_traits(found)


def test_ties_go_to_the_channel_with_precedence():
    pos = TraitObservation("name", "Li Lei", T0, "pos", "m1", 1, 1)
    web = TraitObservation("name", "lilei88", T0, "web", "m2", 2, 2)

    assert latest_traits([web, pos])["name"] is pos
    assert latest_traits([web, pos], precedence=["web", "pos"])["name"] is web


def test_identify_traits_win_over_context_traits_of_the_same_event():
    assert traits_of_event({"name": "A"}, {"traits": {"name": "B", "city": "SH"}}) == {
        "name": "A",
        "city": "SH",
    }


def profile(member_id: int) -> dict:
    return {
        k: opened(k, v)
        for k, v in MemberTrait.objects.filter(member_id=member_id).values_list("key", "value")
    }


@pytest.mark.django_db
def test_a_late_pos_upload_does_not_overwrite_a_newer_value():
    app, pos = SourceFactory(kind="app"), SourceFactory(pos=True)
    EventFactory(source=app, type="identify", user_id="u1", traits={"email": "new@example.com", "name": "Li"},
                 timestamp=T0 + timedelta(days=2))  # fmt: skip
    events_process_pending()
    late = EventFactory(source=pos, type="identify", user_id="u1", traits={"email": "old@example.com", "city": "SH"},
                        timestamp=T0)  # fmt: skip
    events_process_pending()

    member = EventResolution.objects.get(event=late).member_id
    assert profile(member) == {"email": "new@example.com", "name": "Li", "city": "SH"}
    assert MemberTrait.objects.get(member_id=member, key="city").channel == "pos"
    assert not DirtyMark.objects.exists()


@pytest.mark.django_db
def test_traits_follow_a_merge_to_the_survivor():
    first = EventFactory(type="identify", user_id="", anonymous_id="a1", traits={"name": "Han"}, timestamp=T0)
    second = EventFactory(type="identify", user_id="u9", anonymous_id="", traits={"city": "HZ"}, timestamp=T0)
    events_process_pending()
    absorbed = EventResolution.objects.get(event=second).member_id

    EventFactory(type="identify", user_id="u9", anonymous_id="a1", timestamp=T0 + timedelta(hours=1))
    events_process_pending()

    survivor = EventResolution.objects.get(event=first).member_id
    assert survivor != absorbed
    assert profile(survivor) == {"name": "Han", "city": "HZ"}
    assert profile(absorbed) == {}
