"""Segment group calls: a group's traits are the group's, never the person's; groups and
memberships are derived from events, exact after late events, merges, splits and rebuilds."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from rest_framework.test import APIClient

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from events.pipeline import events_process_pending
from identity.models import EventResolution
from identity.models import Identifier as IdentifierRow
from identity.services import member_split
from members.models import Group, GroupMembership, MemberTrait
from members.services import members_rebuild, members_refresh
from tests.factories import EventFactory, SourceFactory
from tests.factories.sealed import opened, stored

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
ACME = {"name": "ACME Ltd", "email": "office@acme.example", "industry": "retail"}


def member_of(event) -> int:
    return EventResolution.objects.get(event=event).member_id


def traits_of(member_id: int) -> dict:
    return {
        k: opened(k, v)
        for k, v in MemberTrait.objects.filter(member_id=member_id).values_list("key", "value")
    }


def memberships() -> set[tuple[int, str]]:
    return set(GroupMembership.objects.values_list("member_id", "group__group_id"))


def group_call(user_id: str, group_id: str, traits: dict, at: datetime, **fields):
    return EventFactory(type="group", event="", user_id=user_id, group_id=group_id, traits=traits, timestamp=at,
                        **fields)  # fmt: skip


def test_a_group_call_does_not_rename_the_person_or_give_them_the_groups_email():
    li = EventFactory(type="identify", event="", user_id="u-li", timestamp=T0,
                      traits={"name": "Li Lei", "email": "li@example.com"})  # fmt: skip
    group_call("u-li", "acme", ACME, T0 + timedelta(days=1))
    events_process_pending()

    member = member_of(li)
    assert traits_of(member) == {"name": "Li Lei", "email": "li@example.com"}
    held = set(IdentifierRow.objects.filter(member_id=member).values_list("type", "value"))
    assert held == {("user_id", "u-li"), ("email", stored("email", "li@example.com"))}
    assert Group.objects.get(group_id="acme").traits == ACME
    assert memberships() == {(member, "acme")}


def test_a_groups_traits_are_the_latest_by_event_time_from_any_member_whatever_the_arrival():
    group_call("u-1", "acme", {"name": "ACME Ltd", "plan": "gold"}, T0 + timedelta(days=2))
    events_process_pending()
    # Arrives later, happened earlier, from another member: the plan is still gold.
    group_call("u-2", "acme", {"name": "ACME Old", "plan": "basic", "city": "SH"}, T0)
    events_process_pending()

    assert Group.objects.get(group_id="acme").traits == {"name": "ACME Ltd", "plan": "gold", "city": "SH"}
    assert Group.objects.get(group_id="acme").calls == 2
    assert {group for _, group in memberships()} == {"acme"}
    assert len(memberships()) == 2


def test_memberships_follow_merges_and_splits():
    app = SourceFactory(kind="app")
    browsing = group_call("", "club-7", {"name": "Runners"}, T0, anonymous_id="anon-1", source=app)
    login = EventFactory(type="identify", event="", user_id="u-1", anonymous_id="", timestamp=T0 + timedelta(hours=1),
                         traits={"phone": "13800138000"})  # fmt: skip
    events_process_pending()
    anonymous, known = member_of(browsing), member_of(login)
    assert memberships() == {(anonymous, "club-7")}

    EventFactory(type="identify", event="", user_id="u-1", anonymous_id="anon-1", timestamp=T0 + timedelta(hours=2),
                 source=app)  # fmt: skip
    events_process_pending()
    survivor = member_of(browsing)
    assert survivor == member_of(login)
    assert memberships() == {(survivor, "club-7")}

    member_split(member_id=survivor, identifiers=["anonymous_id:anon-1"], reason="two people")
    members_refresh()
    assert member_of(browsing) != member_of(login)
    assert memberships() == {(member_of(browsing), "club-7")}
    assert known != anonymous


def test_rebuild_gives_the_same_groups_and_memberships():
    group_call("u-1", "acme", ACME, T0)
    group_call("u-2", "acme", {"plan": "gold"}, T0 + timedelta(days=1))
    group_call("u-2", "club", {"name": "Runners"}, T0 + timedelta(days=2))
    events_process_pending()
    before_groups = list(
        Group.objects.order_by("group_id").values_list("group_id", "traits", "calls", "last_call_at")
    )
    assert before_groups[0][1] == {**ACME, "plan": "gold"}
    before = set(
        GroupMembership.objects.values_list("member_id", "group__group_id", "first_call_at", "last_call_at")
    )
    GroupMembership.objects.all().delete()
    Group.objects.update(traits={}, calls=0)

    members_rebuild()

    assert (
        list(Group.objects.order_by("group_id").values_list("group_id", "traits", "calls", "last_call_at"))
        == before_groups
    )
    assert (
        set(
            GroupMembership.objects.values_list(
                "member_id", "group__group_id", "first_call_at", "last_call_at"
            )
        )
        == before
    )


def test_the_360_view_shows_the_groups_masked_for_an_agent():
    li = EventFactory(type="identify", event="", user_id="u-li", timestamp=T0, traits={"name": "Li Lei"})
    group_call("u-li", "acme", ACME, T0 + timedelta(days=1))
    events_process_pending()
    agent = APIClient()
    agent.credentials(HTTP_AUTHORIZATION="Token " + token_issue(
        user=staff_user_ensure(username="agent", role=Role.CRM_AGENT), name="t").secret)  # fmt: skip

    profile = agent.get(f"/api/v1/members/{member_of(li)}/").json()

    assert profile["traits"]["name"]["value"] == "L***"  # a person's name is personal
    [group] = profile["groups"]
    assert (group["group_id"], group["name"]) == ("acme", "ACME Ltd")  # a company's is not
    assert group["traits"]["industry"] == "retail"
    assert group["traits"]["email"] != ACME["email"]  # masked as contact details are for agents
    assert group["first_call_at"] == group["last_call_at"] == "2026-09-02T10:00:00Z"


def test_the_member_page_has_a_groups_card():
    li = EventFactory(type="identify", event="", user_id="u-li", timestamp=T0, traits={"name": "Li Lei"})
    group_call("u-li", "acme", ACME, T0 + timedelta(days=1))
    events_process_pending()
    client = Client()
    client.force_login(staff_user_ensure(username="manager", role=Role.CRM_MANAGER))

    page = client.get(f"/console/members/{member_of(li)}/").content.decode()

    card = page[page.index('data-testid="groups"') :]
    assert "ACME Ltd" in card
    assert "industry: retail" in card
    assert "office@acme.example" in card  # a manager sees contact details in full
    assert 'data-testid="member-name">Li Lei<' in page
