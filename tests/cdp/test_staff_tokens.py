"""What a staff token stands for, kept per process (``cdp.staff_tokens``): read once, and every
change (a revocation, a deactivated user, a role, a group's permissions, a scope) refused or
applied at the next request, in this process and in every other.

"Another process" is this one with its copies as they were before the change: the change's
signal cleared this process's copies, never another's, which learns of it through Redis only.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cdp import staff_tokens
from cdp.models import Region
from cdp.roles import Role
from cdp.scopes import staff_scope
from cdp.services import staff_roles_set, staff_scope_set, staff_user_ensure, token_issue, tokens_revoke
from cdp.staff_tokens import staff_token_find

pytestmark = pytest.mark.django_db

VIEW_MEMBERS = "members.view_member"


@pytest.fixture
def agent() -> User:
    return staff_user_ensure(username="agent-li", role=Role.CRM_AGENT)


@pytest.fixture
def secret(agent: User) -> str:
    return token_issue(user=agent, name="desk").secret


@contextmanager
def in_another_process() -> Iterator[None]:
    """Changes made inside, as another process sees them: its copies are left as they were."""
    kept = dict(staff_tokens._entries)
    yield
    staff_tokens._entries.clear()
    staff_tokens._entries.update(kept)


def found_user(secret: str) -> User:
    found = staff_token_find(secret)
    assert found is not None
    return found[0]


def test_a_token_is_read_from_the_database_once(secret):
    with CaptureQueriesContext(connection) as first:
        user = found_user(secret)
        assert user.has_perm(VIEW_MEMBERS)
        assert staff_scope(user, staff_token_find(secret)[1]).unrestricted
    with CaptureQueriesContext(connection) as again:
        user = found_user(secret)
        assert user.has_perm(VIEW_MEMBERS)
        assert not user.has_perm("members.view_contact_details")
        assert staff_scope(user, staff_token_find(secret)[1]).unrestricted

    assert len(first) >= 2
    assert len(again) == 0


def test_each_request_gets_its_own_user(secret):
    first = found_user(secret)
    first.some_attribute = "set by a view"

    assert not hasattr(found_user(secret), "some_attribute")


def test_a_revoked_token_is_refused_at_once_in_every_process(agent, secret):
    assert staff_token_find(secret) is not None

    with in_another_process():
        assert tokens_revoke(user=agent, name="desk") == 1

    assert staff_token_find(secret) is None


def test_a_token_revoked_in_the_admin_is_refused_at_once(agent, secret):
    assert staff_token_find(secret) is not None
    token = agent.api_tokens.get()

    with in_another_process():
        token.delete()

    assert staff_token_find(secret) is None


def test_a_deactivated_user_is_refused_at_once_in_every_process(agent, secret):
    assert staff_token_find(secret) is not None

    with in_another_process():
        agent.is_active = False
        agent.save()

    assert staff_token_find(secret) is None


def test_a_changed_role_takes_effect_at_once_in_every_process(agent, secret):
    assert found_user(secret).has_perm(VIEW_MEMBERS)

    with in_another_process():
        staff_roles_set(user=agent, roles=[Role.MARKETING], by=None, channel="cli")

    user = found_user(secret)
    assert not user.has_perm(VIEW_MEMBERS)
    assert user.has_perm("segments.view_segment")


def test_a_permission_taken_from_a_group_takes_effect_at_once(secret):
    assert found_user(secret).has_perm(VIEW_MEMBERS)

    with in_another_process():
        Group.objects.get(name=Role.CRM_AGENT).permissions.remove(
            Permission.objects.get(content_type__app_label="members", codename="view_member")
        )

    assert not found_user(secret).has_perm(VIEW_MEMBERS)


def test_a_permission_given_to_the_user_takes_effect_at_once(agent, secret):
    assert not found_user(secret).has_perm("members.split_member")

    with in_another_process():
        agent.user_permissions.add(
            Permission.objects.get(content_type__app_label="members", codename="split_member")
        )

    assert found_user(secret).has_perm("members.split_member")


def test_a_changed_scope_takes_effect_at_once_in_every_process(agent, secret):
    def scope() -> str:
        found = staff_token_find(secret)
        assert found is not None
        return str(staff_scope(*found))

    assert scope() == "unscoped"

    with in_another_process():
        staff_scope_set(user=agent, stores=["SH01"], by=None, channel="cli")
    assert scope() == "stores SH01"

    east = Region.objects.create(key="east", name="East", stores=["HZ01"])
    with in_another_process():
        staff_scope_set(user=agent, stores=["SH01"], regions=["east"], by=None, channel="cli")
    assert scope() == "stores HZ01, SH01"

    with in_another_process():
        east.stores = ["HZ01", "NJ01"]
        east.save()
    assert scope() == "stores HZ01, NJ01, SH01"

    with in_another_process():
        staff_scope_set(user=agent, by=None, channel="cli")
    assert scope() == "unscoped"


def test_a_change_no_signal_announces_lasts_no_longer_than_the_cache_seconds(
    agent, secret, settings, monkeypatch
):
    assert staff_token_find(secret) is not None
    User.objects.filter(pk=agent.pk).update(is_active=False)  # SQL by hand: no signal, no bump

    assert staff_token_find(secret) is not None  # within STAFF_TOKEN_CACHE_SECONDS
    later = staff_tokens.time.monotonic() + settings.STAFF_TOKEN_CACHE_SECONDS + 1
    monkeypatch.setattr(staff_tokens.time, "monotonic", lambda: later)
    assert staff_token_find(secret) is None


def test_with_redis_unreachable_every_request_reads_the_database(agent, secret, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert staff_token_find(secret) is not None
    User.objects.filter(pk=agent.pk).update(is_active=False)  # no signal: only the database tells

    with CaptureQueriesContext(connection) as queries:
        assert staff_token_find(secret) is None
    assert len(queries) == 1


def test_a_console_log_in_keeps_the_copies(agent, secret):
    from django.contrib.auth.models import update_last_login

    assert staff_token_find(secret) is not None
    update_last_login(None, agent)

    assert staff_tokens._entries


def test_with_redis_unreachable_a_change_still_takes_effect_in_this_process(agent, secret, settings):
    assert staff_token_find(secret) is not None
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    tokens_revoke(user=agent, name="desk")  # the bump fails: this process's copies go all the same

    assert staff_token_find(secret) is None
