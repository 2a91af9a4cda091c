"""The points ledger's invariants are defined in one file (``members/loyalty/sql/ledger.sql``):
a migrated database holds exactly what the file defines, and nothing the file does not."""

import hashlib
import sys

import pytest
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.migrations.loader import MigrationLoader

from members.loyalty.sql import LEDGER_SQL, ledger_sql

LEDGER_TABLES = ("members_pointsentry", "members_pointsaccount")


def _definitions(cursor: CursorWrapper) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    cursor.execute(
        "SELECT proname, pg_get_functiondef(oid) FROM pg_proc WHERE proname LIKE 'members\\_points%%' ORDER BY 1"
    )
    functions = cursor.fetchall()
    cursor.execute(
        """SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
           WHERE tgrelid IN (%s::regclass, %s::regclass) AND NOT tgisinternal ORDER BY 1""",
        LEDGER_TABLES,
    )
    return functions, cursor.fetchall()


@pytest.mark.django_db
def test_the_migrated_database_holds_exactly_the_ledger_file() -> None:
    with connection.cursor() as cursor:
        functions, triggers = _definitions(cursor)
        cursor.execute(ledger_sql())  # idempotent: applying it again changes nothing
        assert _definitions(cursor) == (functions, triggers)

    assert [name for name, _ in functions] == [
        "members_points_balance_added",
        "members_points_balance_floor",
        "members_points_balance_moved",
        "members_points_entry_append_only",
    ]
    assert [name for name, _ in triggers] == [
        "points_balance_floor",
        "points_entry_append_only",
        "points_entry_balance_added",
        "points_entry_balance_moved",
    ]


def test_the_ledger_file_is_the_version_its_latest_migration_applies() -> None:
    """An edit of ``ledger.sql`` comes with a migration that applies it again (and records the
    new version): otherwise databases migrated before the edit would keep the old triggers."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    versions = sorted(
        (name, module.APPLIES_LEDGER_SHA256)
        for (app, name), migration in loader.disk_migrations.items()
        if app == "loyalty"
        and hasattr(module := sys.modules[type(migration).__module__], "APPLIES_LEDGER_SHA256")
    )
    assert versions, "no loyalty migration applies ledger.sql"
    assert versions[-1][1] == hashlib.sha256(LEDGER_SQL.read_bytes()).hexdigest(), (
        f"ledger.sql changed after {versions[-1][0]}: add a migration that applies it again"
    )


@pytest.mark.django_db
def test_a_ledger_row_goes_into_one_index_by_its_key() -> None:
    """Ledger keys are random (an order id, an event's): each index on ``key`` costs a page from
    a random place per row written, so there is one, the unique one, and none for LIKE."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT i.indisunique, pg_get_indexdef(i.indexrelid) FROM pg_index AS i
               JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = 'members_pointsentry'::regclass AND a.attname = 'key'"""
        )
        on_key = cursor.fetchall()
    assert [unique for unique, _ in on_key] == [True], on_key
    assert "pattern_ops" not in on_key[0][1]
