"""Log-in attempts are limited per account and per client address (console and admin alike), a
successful log-in clears its account's count, a refused attempt checks no password, and with
Redis unreachable nobody logs in. CSRF: every console form posted without its token is a 403."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from cdp.roles import Role
from cdp.services import staff_user_ensure
from members.segments.models import Segment
from tests.factories.members import MemberFactory
from tests.processes import free_port

PASSWORD = "correct horse battery staple"


@pytest.fixture
def agent(db):
    user = staff_user_ensure(username="agent-li", role=Role.CRM_AGENT)
    user.set_password(PASSWORD)
    user.save()
    return user


def log_in(
    username: str, password: str, *, address: str = "203.0.113.7", client: Client | None = None, **headers
):
    return (client or Client()).post(
        "/console/login/", {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/console/"


@pytest.mark.django_db
def test_an_account_is_locked_after_its_attempts_even_with_the_right_password(agent, settings):
    settings.RATE_LIMIT_LOGIN_ACCOUNT = "3/15min"

    wrong = [log_in("agent-li", "guess").status_code for _ in range(3)]
    refused = log_in("agent-li", PASSWORD)

    assert wrong == [200, 200, 200]
    assert refused.status_code == 429
    # Sliding window: the 3 attempts weigh on the next 15 minutes too, fading; 4/3 windows at most.
    assert 0 < int(refused["Retry-After"]) <= 15 * 60 * 4 // 3
    assert "Too many log-in attempts. Try again in" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session
    # From anywhere, and through the admin's form too.
    assert log_in("agent-li", PASSWORD, address="198.51.100.9").status_code == 429
    admin = Client().post("/admin/login/", {"username": "agent-li", "password": PASSWORD})
    assert admin.status_code == 200
    assert "_auth_user_id" not in admin.wsgi_request.session
    # Another account is not affected.
    staff_user_ensure(username="agent-wu", role=Role.CRM_AGENT).set_password(PASSWORD)
    get_user_model().objects.filter(username="agent-wu").update(password=agent.password)
    assert logged_in(log_in("agent-wu", PASSWORD))


@pytest.mark.django_db
def test_a_successful_log_in_clears_its_accounts_count(agent, settings):
    settings.RATE_LIMIT_LOGIN_ACCOUNT = "3/15min"

    for _ in range(3):
        assert log_in("agent-li", "typo").status_code == 200
        assert log_in("agent-li", "typo").status_code == 200
        assert logged_in(log_in("agent-li", PASSWORD))


@pytest.mark.django_db
def test_an_address_is_limited_across_accounts(agent, settings):
    settings.RATE_LIMIT_LOGIN_ADDRESS = "4/15min"

    sprayed = [log_in(f"user-{i}", "123456").status_code for i in range(4)]

    assert sprayed == [200] * 4
    assert log_in("agent-li", PASSWORD).status_code == 429
    assert logged_in(log_in("agent-li", PASSWORD, address="198.51.100.9"))


@pytest.mark.django_db
def test_behind_a_proxy_the_address_is_the_one_it_appended(agent, settings):
    settings.RATE_LIMIT_LOGIN_ADDRESS = "2/15min"
    settings.RATE_LIMIT_CLIENT_ADDRESS_HEADER = "HTTP_X_FORWARDED_FOR"
    proxy = "10.0.0.2"

    for spoofed in ("1.1.1.1", "2.2.2.2"):  # what the client claims comes first; the proxy appends
        assert (
            log_in("x", "y", address=proxy, HTTP_X_FORWARDED_FOR=f"{spoofed}, 203.0.113.50").status_code
            == 200
        )

    assert log_in("agent-li", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.50").status_code == 429
    assert logged_in(log_in("agent-li", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.51"))


@pytest.mark.django_db
def test_with_redis_unreachable_nobody_logs_in(agent, settings):
    settings.RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    refused = log_in("agent-li", PASSWORD)

    assert refused.status_code == 503
    assert int(refused["Retry-After"]) >= 1
    assert "Log-in is unavailable right now" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session


# --- CSRF ------------------------------------------------------------------------------------


def csrf_client(user=None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_log_in_form_without_its_csrf_token_is_refused(agent):
    client = csrf_client()
    page = client.get("/console/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)

    without = client.post("/console/login/", {"username": "agent-li", "password": PASSWORD})
    with_token = client.post(
        "/console/login/", {"username": "agent-li", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )

    assert without.status_code == 403
    assert logged_in(with_token)


@pytest.mark.django_db
def test_every_console_form_without_its_csrf_token_is_refused():
    admin = staff_user_ensure(username="csrf-admin", role=Role.ADMIN)
    member = MemberFactory()
    Segment.objects.create(key="vip", name="VIP", kind="static")
    client = csrf_client(admin)
    page = client.get("/console/segments/vip/").content.decode()  # sets the CSRF cookie
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    posts = {
        "/console/new-segment/": {"key": "new", "name": "New", "kind": "static"},
        "/console/segments/vip/edit/": {"name": "VIP list"},
        "/console/segments/vip/copy/": {"key": "vip-2", "name": "VIP 2"},
        "/console/segments/vip/delete/": {},
        "/console/tags/": {"key": "loyal", "name": "Loyal"},
        f"/console/members/{member.pk}/tags/": {"tag": "loyal"},
        "/console/logout/": {},
    }

    answers = {path: client.post(path, body).status_code for path, body in posts.items()}

    assert answers == dict.fromkeys(posts, 403)
    assert Segment.objects.get(key="vip").name == "VIP"
    assert not Segment.objects.filter(key__in=["new", "vip-2"]).exists()
    assert client.get("/console/segments/").status_code == 200  # still logged in
    # The same form with its token goes through.
    copied = client.post(
        "/console/segments/vip/copy/", {"key": "vip-2", "name": "VIP 2", "csrfmiddlewaretoken": token}
    )
    assert copied.status_code == 302
    assert Segment.objects.filter(key="vip-2").exists()
