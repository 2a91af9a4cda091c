"""The alerts API: rules written with clear errors, alerts listed with their notices,
acknowledged and resolved once (409 after), by whom."""

import orjson
import pytest
from django.test import Client
from django.utils import timezone

from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from ops.models import Alert, AlertRule, NotifyTarget

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api():
    user = staff_user_ensure(username="ops-admin", role=Role.ADMIN)
    return Client(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='t').secret}")


def send(client, method, path, body=None):
    response = client.generic(method, path, b"" if body is None else orjson.dumps(body), "application/json")
    return response.status_code, orjson.loads(response.content)


def test_a_rule_is_made_over_a_registered_condition_with_its_targets(admin_api):
    NotifyTarget.objects.create(name="oncall", kind="email", email="oncall@example.com")
    status, body = send(admin_api, "POST", "/api/v1/alert-rules/", {
        "key": "big-backlog", "name": "Backlog", "level": "red", "condition": "backlog_age",
        "params": {"minutes": 2}, "window_minutes": 5, "targets": ["oncall"],
    })  # fmt: skip
    assert status == 201, body
    assert body["targets"] == ["oncall"]
    assert body["built_in"] is False
    status, body = send(admin_api, "PATCH", f"/api/v1/alert-rules/{body['id']}/", {"level": "yellow"})
    assert (status, body["level"], body["params"]) == (200, "yellow", {"minutes": 2})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"condition": "moon_phase"}, "condition"),
        ({"params": [1, 2]}, "params"),
        ({"level": "green"}, "level"),
        ({"key": "pipeline-backlog"}, "key"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"targets": ["nobody"]}, "targets"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(admin_api, change, field):
    rule = {"key": "r", "name": "R", "level": "blue", "condition": "parked", **change}
    status, body = send(admin_api, "POST", "/api/v1/alert-rules/", rule)
    assert status == 400
    assert [e["field"] for e in body["errors"]] == [field]


def test_alerts_are_acknowledged_and_resolved_once_by_whom(admin_api):
    now = timezone.now()
    alert = Alert.objects.create(
        rule=AlertRule.objects.get(key="parked-work"), level="red", subject="parked events", value=2,
        summary="2 events parked", opened_at=now, last_seen_at=now,
    )  # fmt: skip
    status, body = send(admin_api, "GET", "/api/v1/alerts/?status=open")
    assert [a["id"] for a in body["results"]] == [alert.pk]
    status, body = send(admin_api, "POST", f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert (status, body["status"], body["acknowledged_by"]) == (200, "acknowledged", "ops-admin")
    status, body = send(admin_api, "POST", f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert (status, body["code"]) == (409, "conflict")
    status, body = send(admin_api, "POST", f"/api/v1/alerts/{alert.pk}/resolve/")
    assert (status, body["status"], body["resolved_by"]) == (200, "resolved", "ops-admin")
    status, body = send(admin_api, "POST", f"/api/v1/alerts/{alert.pk}/resolve/")
    assert status == 409
    status, body = send(admin_api, "GET", "/api/v1/alerts/?status=open")
    assert body["results"] == []


def test_a_bad_filter_is_refused_naming_it(admin_api):
    status, body = send(admin_api, "GET", "/api/v1/alerts/?level=purple")
    assert (status, body["errors"]) == (400, [{"field": "level", "reason": "one of red, yellow, blue"}])
