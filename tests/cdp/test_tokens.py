"""Staff users, roles and API tokens."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from cdp.roles import Role, user_roles
from cdp.services import staff_user_ensure, token_issue, tokens_revoke

pytestmark = pytest.mark.django_db


def test_create_token_creates_the_user_and_prints_the_token_last(api_client):
    out = StringIO()

    call_command("create_token", "li.na", "--role", "crm_agent", stdout=out)

    token = out.getvalue().strip().splitlines()[-1]
    user = get_user_model().objects.get(username="li.na")
    assert user_roles(user) == {"crm_agent"}
    assert token.startswith("cdp_")
    assert not user.api_tokens.filter(key_hash__contains=token).exists()
    for scheme in ("Token", "Bearer"):
        api_client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
        # crm_agent is authenticated (not 401) but may not administer sources (403)
        assert api_client.get("/api/v1/sources/").status_code == 403


def test_create_token_changes_the_role_of_an_existing_user():
    call_command("create_token", "wang", "--role", "crm_agent", stdout=StringIO())
    call_command("create_token", "wang", "--role", "admin", stdout=StringIO())

    assert user_roles(get_user_model().objects.get(username="wang")) == {"admin"}


def test_giving_a_role_makes_an_existing_user_staff(django_user_model):
    django_user_model.objects.create_user("zhao", password="pw")

    assert staff_user_ensure(username="zhao", role=Role.CRM_AGENT).is_staff


def test_create_token_refuses_an_unknown_role():
    with pytest.raises(CommandError):
        call_command("create_token", "x", "--role", "janitor", stdout=StringIO())


@pytest.mark.parametrize(
    "header",
    ["Token", "Token a b", "Bearer cdp_not-a-real-token", "Bearer \xff"],
    ids=["no-token", "extra-parts", "unknown", "undecodable"],
)
def test_bad_tokens_are_401(api_client, header):
    api_client.credentials(HTTP_AUTHORIZATION=header)

    response = api_client.get("/api/v1/sources/")

    assert response.status_code == 401
    assert set(response.json()) == {"code", "message", "errors"}


def test_revoked_tokens_and_inactive_users_are_refused(api_client):
    user = staff_user_ensure(username="ops", role=Role.ADMIN)
    first, second = token_issue(user=user, name="laptop"), token_issue(user=user, name="script")

    assert tokens_revoke(user=user, name="laptop") == 1
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {first.secret}")
    assert api_client.get("/api/v1/sources/").status_code == 401

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {second.secret}")
    assert api_client.get("/api/v1/sources/").status_code == 200
    user.is_active = False
    user.save()
    assert api_client.get("/api/v1/sources/").status_code == 401


def test_superusers_hold_every_role(django_user_model):
    root = django_user_model.objects.create_superuser("root", "r@example.com", "pw")

    assert user_roles(root) == set(Role.values)
    assert user_roles(None) == frozenset()
