"""The API keeps to its OpenAPI schema (drf-spectacular, ``/api/schema/``): schemathesis generates
requests from the schema for every operation, valid ones and invalid ones, a bounded number per
operation and the same ones each run, and sends them with every role's token (ingestion: with a
write key, and with a staff token, which must not work there). No answer is a 500, and every
answer is one the schema declares: its status, media type, headers and body.

Every role is sent an operation's first request; the rest go each to one of the roles the
operation served there (chosen by the request's content, so a replay chooses alike): a role
refused there (403) is refused whatever the input, since roles are checked before anything is
read. The
database holds one of everything a path can name (a member with points, a segment, a tag, a
webhook, a campaign and its coupon, a source, parked and rejected events), and half the requests
name those instead of the generated ids, so that operations run on something that exists."""

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdp.credentials import credential_new
from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from events.models import ParkedEvent, RejectedEvent
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.models import ParkedMember
from tests.conftest import basic_auth
from tests.factories import EventFactory, SourceFactory

#: Generated requests per operation (valid and invalid together): enough to reach each parameter
#: and the usual bad values, few enough for the whole file to run in under a minute.
EXAMPLES = 5

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
schema.config.generation.update(
    max_examples=EXAMPLES,
    deterministic=True,
    with_security_parameters=False,
    modes=list(schemathesis.GenerationMode),
)
schema.config.phases.update(phases=["examples", "fuzzing"])

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)


@dataclass(frozen=True)
class World:
    tokens: dict[Role, str]
    write_key: str
    #: (first path segment, path parameter) -> a value naming a seeded object.
    known: dict[tuple[str, str], object]


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    """A token per role, a write key, and one of everything a path names: ``(first path
    segment, parameter)`` → its value. Made once for the module, in a transaction rolled back
    after its last test; each test's own transaction (``db``) is a savepoint inside it."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield _seed()
        transaction.set_rollback(True)


def _seed() -> World:
    tokens = {
        role: token_issue(user=staff_user_ensure(username=f"fuzz-{role}", role=role), name="fuzz").secret
        for role in Role
    }
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[Role.ADMIN]}")
    write_key = credential_new(kind="wk")
    source = SourceFactory.create(write_key=write_key)
    event = EventFactory.create(
        source=source, user_id="fuzz-1", traits={"phone": "+8613800138000"}, timestamp=T0,
        type="track", event="Order Completed",
        properties={"order_id": "F-1", "total": 300, "currency": "CNY"},
    )  # fmt: skip
    broken = EventFactory.create(source=source, user_id="fuzz-2", timestamp=T0)
    events_process_pending()
    member_id = EventResolution.objects.get(event=event).member_id
    now = timezone.now()
    parked_event = ParkedEvent.objects.create(
        event=broken, stage="identity.services.identity_resolve_events", error="boom", traceback="...",
        first_failed_at=now, last_failed_at=now,
    )  # fmt: skip
    parked_member = ParkedMember.objects.create(
        member_id=member_id, error="boom", traceback="...", first_failed_at=now, last_failed_at=now
    )
    rejected = RejectedEvent.objects.create(
        source=source, received_at=now, endpoint="track", code="invalid_event", reason="no userId"
    )

    def made(response: object) -> dict:
        assert response.status_code in (200, 201), response.content  # type: ignore[attr-defined]
        return response.json()  # type: ignore[attr-defined]

    made(admin.post("/api/v1/segments/", {"key": "vip", "name": "VIP", "kind": "static"}, format="json"))
    made(admin.put("/api/v1/segments/vip/members/", {"member_ids": [member_id]}, format="json"))
    made(admin.post("/api/v1/tags/", {"key": "loyal", "name": "Loyal", "kind": "manual"}, format="json"))
    made(admin.post(f"/api/v1/members/{member_id}/tags/", {"tag": "loyal"}, format="json"))
    webhook = made(
        admin.post("/api/v1/segments/vip/webhooks/", {"url": "http://127.0.0.1:9/hook"}, format="json")
    )
    campaign = made(admin.post("/api/v1/campaigns/", {
        "name": "Fuzz", "benefit": "amount", "value": "10", "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2036-01-01T00:00:00Z"}, format="json"))  # fmt: skip
    made(admin.post(f"/api/v1/campaigns/{campaign['id']}/issue/", {"member_ids": [member_id]}, format="json"))
    coupon = made(admin.get(f"/api/v1/members/{member_id}/points/"))["coupons"][0]["code"]
    return World(
        tokens=tokens,
        write_key=write_key,
        known={
            ("members", "id"): member_id,
            ("members", "member_id"): member_id,
            ("members", "key"): "loyal",
            ("sources", "id"): source.pk,
            ("rejected-events", "id"): rejected.pk,
            ("parked-events", "id"): parked_event.pk,
            ("parked-members", "id"): parked_member.pk,
            ("segments", "key"): "vip",
            ("segments", "webhook_id"): webhook["id"],
            ("tags", "key"): "loyal",
            ("campaigns", "campaign_id"): campaign["id"],
            ("coupons", "code"): coupon,
        },
    )


@pytest.fixture
def kept_connection(world: World, db: None) -> Iterator[None]:
    """The test's database connection (and its transaction) survives each request, as Django's
    test client arranges: at the end of a request Django closes connections it deems old. (After
    ``world``, whose test client puts the closing back when it is done.)"""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


class Served:
    """The roles the operation under test served (did not refuse with 403) on its first request."""

    def __init__(self) -> None:
        self.learned = False
        self.roles: list[Role] = []


@pytest.fixture
def served() -> Served:
    return Served()


def fingerprint(case: schemathesis.Case) -> int:
    """A number that depends only on what was generated for the request."""
    return zlib.crc32(repr((case.path_parameters, case.query, case.headers, case.body)).encode())


def name_what_exists(case: schemathesis.Case, known: dict[tuple[str, str], object], chosen: int) -> None:
    """For half the requests (``chosen``), the path names the seeded objects instead of what
    was generated."""
    parameters = case.path_parameters or {}
    if not parameters or chosen % 2:
        return
    first = case.operation.path.split("/")[3]
    for name in parameters:
        if (first, name) in known:
            parameters[name] = known[(first, name)]


@schema.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_every_answer_is_one_the_schema_declares_and_none_is_a_500(case, world, served, kept_connection):
    chosen = fingerprint(case)  # so that a replay of this request chooses alike
    bearer = {role: f"Bearer {token}" for role, token in world.tokens.items()}
    callers: list[tuple[Role | None, str]]
    if case.operation.path.startswith("/v1/"):  # ingestion: a write key (and once, a staff token)
        callers = [(None, basic_auth(world.write_key))]
        if not served.learned:
            callers.append((Role.ADMIN, bearer[Role.ADMIN]))
    elif not served.learned:
        callers = [(role, bearer[role]) for role in Role]
    elif served.roles:
        role = served.roles[chosen % len(served.roles)]
        callers = [(role, bearer[role])]
    else:
        callers = []
    if not case.operation.path.startswith("/v1/"):
        name_what_exists(case, world.known, chosen)
    for role, authorization in callers:
        response = case.call(headers={"Authorization": authorization})
        case.validate_response(response, checks=CHECKS)
        if not served.learned and role is not None and response.status_code != 403:
            served.roles.append(role)
    served.learned = True
