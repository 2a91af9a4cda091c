"""Staff reads against a replica alias (cdp.replica), end to end through the API: the board's
rollups and funnels read on the replica; a segment's export and members page, which give out
personal data under consent, read the primary only; other requests never touch the replica. The replica here is a
second connection to the test database (what Django's TEST MIRROR of ``default`` gives a
deployment's test run): the same rows, another session, so which one ran each statement shows."""

import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from cdp.replica import REPLICA
from cdp.roles import Role
from members.insights.services import insights_refresh
from tests.factories.consent import consent_grant
from tests.members.conftest import T0
from tests.members.segments.test_members_fields import segment_of
from tests.members.test_api import staff_client

# Committed rows: the replica's session must see what the test wrote on the primary's.
pytestmark = pytest.mark.django_db(transaction=True)


class Statements:
    """The SQL each alias ran, recorded by an execute wrapper on its connection."""

    def __init__(self) -> None:
        self.by_alias: dict[str, list[str]] = {DEFAULT_DB_ALIAS: [], REPLICA: []}

    def recorder(self, alias: str) -> Callable[..., Any]:
        def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict) -> Any:
            self.by_alias[alias].append(sql)
            return execute(sql, params, many, context)

        return record

    def on(self, alias: str, table: str) -> list[str]:
        return [sql for sql in self.by_alias[alias] if table in sql]

    def clear(self) -> None:
        for statements in self.by_alias.values():
            statements.clear()


@contextlib.contextmanager
def connections_recorded() -> Iterator[Statements]:
    """Inside it, a replica alias (a mirror of the test database) as DATABASE_REPLICA_URL adds,
    and the statements of both aliases recorded."""
    connections.settings[REPLICA] = dict(connections[DEFAULT_DB_ALIAS].settings_dict)
    # Opened here, outright: Django's test case refuses to open a connection of an alias it was
    # not told of at its start, and the alias must not exist before this block.
    connections[REPLICA].connect()
    recorded = Statements()
    try:
        with (
            connections[DEFAULT_DB_ALIAS].execute_wrapper(recorded.recorder(DEFAULT_DB_ALIAS)),
            connections[REPLICA].execute_wrapper(recorded.recorder(REPLICA)),
        ):
            yield recorded
    finally:
        connections[REPLICA].close()
        del connections[REPLICA]
        del connections.settings[REPLICA]


WRITES = ("INSERT ", "UPDATE ", "DELETE ", "TRUNCATE ", "LOCK ", "FOR UPDATE")


def test_the_board_and_funnels_read_the_replica_and_answer_as_the_primary_would(zhang):
    consent_grant([zhang["member"]], purposes=["analytics"], at=T0)
    insights_refresh()
    client = staff_client(Role.ADMIN)
    summary = {"end": (T0.date() + timedelta(days=3)).isoformat(), "period": "month"}
    on_the_primary = client.get("/api/v1/insights/kpis/summary/", summary).json()
    funnel = {"steps": [{"event": "Product Viewed"}, {"event": "Order Completed"}]}
    dates = f"?start={T0.date().isoformat()}&end={(T0.date() + timedelta(days=3)).isoformat()}"
    funnel_on_the_primary = client.post(
        f"/api/v1/insights/funnels/preview/{dates}", funnel, format="json"
    ).json()

    with connections_recorded() as statements:
        answer = client.get("/api/v1/insights/kpis/summary/", summary)
        funnel_answer = client.post(f"/api/v1/insights/funnels/preview/{dates}", funnel, format="json")

    assert answer.status_code == 200
    assert answer.json() == on_the_primary
    assert funnel_answer.status_code == 200
    assert funnel_answer.json() == funnel_on_the_primary
    assert statements.on(REPLICA, "insights_dailyrollup")
    assert statements.on(REPLICA, "events_event")  # the funnel's pass over the event log
    assert not statements.on(DEFAULT_DB_ALIAS, "insights_dailyrollup")
    assert not statements.on(DEFAULT_DB_ALIAS, "events_event")
    assert not [sql for sql in statements.by_alias[REPLICA] if any(word in sql.upper() for word in WRITES)]


def test_a_segments_export_and_page_read_consent_on_the_primary_never_on_the_replica(zhang):
    # A withdrawal binds at once: a replica's lag must never let a member's phone out.
    consent_grant([zhang["member"]])
    key = segment_of("audience", [zhang["member"]]).key
    client = staff_client(Role.ADMIN)

    with connections_recorded() as statements:
        response = client.get(f"/api/v1/segments/{key}/export/?format=ndjson&fields=phone")
        body = b"".join(response.streaming_content)  # the batches are read as it streams
        page = client.get(f"/api/v1/segments/{key}/members/?fields=phone")

    assert response.status_code == 200
    assert body.count(b"\n") == 1
    assert page.status_code == 200
    assert [row["member_id"] for row in page.json()["results"]] == [zhang["member"]]
    assert statements.on(DEFAULT_DB_ALIAS, "members_segmentmember")  # the count and every batch
    assert statements.by_alias[REPLICA] == []
    audit = statements.on(DEFAULT_DB_ALIAS, 'INSERT INTO "cdp_auditentry"')
    assert len(audit) == 3  # the export, the member whose phone it gave in full, and the page's


def test_requests_outside_the_replica_views_never_touch_the_replica(zhang):
    key = segment_of("audience", [zhang["member"]]).key
    client = staff_client(Role.ADMIN)

    with connections_recorded() as statements:
        assert client.get(f"/api/v1/segments/{key}/").status_code == 200
        assert client.get(f"/api/v1/members/{zhang['member']}/").status_code == 200

    assert statements.by_alias[REPLICA] == []
    assert statements.by_alias[DEFAULT_DB_ALIAS]
