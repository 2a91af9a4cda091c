"""A real streaming replica (cdp.replica): a private primary and a standby following it
(initdb, then pg_basebackup, each on its own port under a temporary directory; the shared
server is never touched), and an insights request answered from the standby."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from cdp.replica import REPLICA
from cdp.roles import Role
from members.insights.models import DailyRollup
from tests.members.test_api import staff_client
from tests.processes import ROOT, PostgresServer, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.django_db]

PRIMARY = "private_primary"  # the private primary, for the test's own writes
DAY = date(2026, 3, 2)


@contextlib.contextmanager
def aliases(servers: dict[str, tuple[PostgresServer, str]]) -> Iterator[None]:
    """Database aliases on the private clusters (alias -> server, database), as
    DATABASE_REPLICA_URL adds ``replica``; connected outright (Django's test case opens no
    connection of an alias it was not told of at its start)."""
    for alias, (server, name) in servers.items():
        connections.settings[alias] = {
            **connections[DEFAULT_DB_ALIAS].settings_dict, "HOST": "127.0.0.1", "PORT": server.port, "NAME": name,
        }  # fmt: skip
        connections[alias].connect()
    try:
        yield
    finally:
        for alias in servers:
            connections[alias].close()
            del connections[alias]
            del connections.settings[alias]


def test_an_insights_request_is_answered_by_the_streaming_replica(tmp_path):
    if why := PostgresServer.available():
        pytest.skip(why)
    primary, standby = PostgresServer(), PostgresServer()
    try:
        primary.init()
        primary.start()
        url = primary.create_database("cdp")
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True, timeout=900,
            env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        )  # fmt: skip
        standby.replicate(primary)
        standby.start()
        with aliases({PRIMARY: (primary, "cdp"), REPLICA: (standby, "cdp")}):
            DailyRollup.objects.using(PRIMARY).create(
                day=DAY, channel="*", store_code="*", sales=300, orders=3
            )
            assert wait_for(lambda: DailyRollup.objects.using(REPLICA).filter(day=DAY).exists(), timeout=60)
            with connections[REPLICA].cursor() as cursor:
                cursor.execute("SELECT pg_is_in_recovery()")
                assert cursor.fetchone() == (True,)  # a standby: it refuses every write
                # Replay held, so that the primary and the replica differ from here on.
                cursor.execute("SELECT pg_wal_replay_pause()")
            DailyRollup.objects.using(PRIMARY).filter(day=DAY).update(sales=900)

            answer = staff_client(Role.ANALYST).get(
                "/api/v1/insights/kpis/aov/", {"start": DAY.isoformat(), "end": DAY.isoformat()}
            )

            assert answer.status_code == 200, answer.content
            # The replica's figure (300 / 3), not the primary's (900 / 3); the request's own
            # reads of the staff account and token were on the test database, the primary.
            assert [point["value"] for point in answer.json()["points"]] == ["100"]
            assert DailyRollup.objects.using(PRIMARY).get(day=DAY).sales == 900
    finally:
        standby.destroy()
        primary.destroy()
