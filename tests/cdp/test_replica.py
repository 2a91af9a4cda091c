"""The replica router's decisions (cdp.replica): which reads may go to the replica, and that
nothing else ever does."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from hypothesis import given
from hypothesis import strategies as st

from cdp.replica import REPLICA, REPLICA_READ_MODELS, ReplicaRouter, read_alias, replica_reads

router = ReplicaRouter()
MODELS: list[type[Model]] = sorted(apps.get_models(), key=lambda model: model._meta.label)


@pytest.fixture
def replica_alias() -> Iterator[None]:
    """A replica alias as DATABASE_REPLICA_URL adds (no connection is opened here)."""
    connections.settings[REPLICA] = dict(connections.settings[DEFAULT_DB_ALIAS])
    yield
    del connections.settings[REPLICA]


def test_every_model_the_replica_may_serve_exists():
    assert {model._meta.label for model in MODELS} >= REPLICA_READ_MODELS


@pytest.mark.usefixtures("replica_alias")
@given(model=st.sampled_from(MODELS), in_scope=st.booleans())
def test_only_the_listed_reads_in_scope_go_to_the_replica_and_every_write_to_the_primary(model, in_scope):
    if in_scope:
        with replica_reads():
            read = router.db_for_read(model)
    else:
        read = router.db_for_read(model)

    expected = REPLICA if in_scope and model._meta.label in REPLICA_READ_MODELS else DEFAULT_DB_ALIAS
    assert read == expected
    with replica_reads():
        assert router.db_for_write(model) == DEFAULT_DB_ALIAS  # audit entries included


def test_without_a_replica_alias_the_scope_reads_the_primary():
    assert REPLICA not in connections.settings  # the tests run without DATABASE_REPLICA_URL
    with replica_reads():
        assert read_alias() == DEFAULT_DB_ALIAS
        assert router.db_for_read(apps.get_model("insights", "DailyRollup")) == DEFAULT_DB_ALIAS


@pytest.mark.usefixtures("replica_alias")
def test_the_scope_nests_ends_with_its_block_and_belongs_to_its_thread():
    seen_elsewhere: list[str] = []
    with replica_reads():
        with replica_reads():
            assert read_alias() == REPLICA
        assert read_alias() == REPLICA  # the inner block left the outer one's flag
        other = threading.Thread(target=lambda: seen_elsewhere.append(read_alias()))
        other.start()
        other.join()
    assert read_alias() == DEFAULT_DB_ALIAS
    assert seen_elsewhere == [DEFAULT_DB_ALIAS]  # another request's thread is not in scope


@pytest.mark.usefixtures("replica_alias")
def test_the_decorated_view_is_in_scope_only_while_it_runs():
    @replica_reads()
    def view() -> str:
        return read_alias()

    assert (view(), read_alias()) == (REPLICA, DEFAULT_DB_ALIAS)


def test_nothing_is_migrated_on_the_replica():
    assert router.allow_migrate(REPLICA, "insights") is False
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "insights") is True


def test_database_replica_url_adds_the_alias_with_the_primarys_connection_settings():
    program = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps({a: settings.DATABASES[a] for a in settings.DATABASES}, default=str))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}

    without = json.loads(subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                                        text=True, check=True).stdout)  # fmt: skip
    env["DATABASE_REPLICA_URL"] = "postgres://reader@replica.internal:5433/cdp?sslmode=require"
    with_replica = json.loads(subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                                             text=True, check=True).stdout)  # fmt: skip

    assert set(without) == {DEFAULT_DB_ALIAS}
    replica = with_replica[REPLICA]
    assert (replica["HOST"], replica["PORT"], replica["USER"], replica["NAME"]) == (
        "replica.internal",
        5433,
        "reader",
        "cdp",
    )
    primary_options = with_replica[DEFAULT_DB_ALIAS]["OPTIONS"]
    assert replica["OPTIONS"] == {**primary_options, "sslmode": "require"}  # JIT off, connect timeout
    assert replica["TEST"]["MIRROR"] == DEFAULT_DB_ALIAS  # a test run never creates a database there
