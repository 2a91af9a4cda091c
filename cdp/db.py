"""Database helpers for set-based hot paths."""

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from psycopg.pq import Format

#: The largest value of a ``bigint`` column (every primary key, DEFAULT_AUTO_FIELD): an id
#: beyond it names no row, a number beyond it cannot be stored.
MAX_BIGINT = 2**63 - 1

#: psycopg's own timestamptz loader (its C implementation). Django registers a subclass
#: written in Python on every connection, to set the time zone of what it reads: a few
#: microseconds per value, which made parsing timestamps a tenth of a member refresh.
_loader = psycopg.adapters.get_loader(psycopg.adapters.types["timestamptz"].oid, Format.TEXT)
assert _loader is not None  # psycopg registers one for every built-in type
_TIMESTAMPTZ_LOADER = _loader


def binary_parameters_cursor() -> CursorWrapper:
    """A cursor on Django's connection (same transaction) that sends parameters in binary.

    Django's psycopg cursors bind client-side: every array element is quoted into the SQL
    text in Python, which for batch statements over ``unnest`` arrays costs more than the
    rest of the work (measured: 2x the ingestion rate, docs/benchmarks.md). Use ``%b``
    placeholders. Django's wrapper is kept, so query logging and query counts still see it.

    Timestamps are read by psycopg's own loader: aware datetimes in the session's time zone,
    which Django sets to UTC (``USE_TZ``), as Django's loader would give them.
    """
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    raw.adapters.register_loader("timestamptz", _TIMESTAMPTZ_LOADER)
    # django-stubs types the argument as Django's CursorWrapper; Django wraps a DB-API cursor.
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)  # type: ignore[arg-type]
    return connection.make_cursor(raw)  # type: ignore[arg-type]


def statement_run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one idempotent statement on Django's connection (same transaction, if any), prepared
    once per connection and bound in binary (``%b``); its rows.

    For the hottest single-row paths (one ingested event per request), where the fixed costs
    are the work: PostgreSQL plans the statement once per connection (psycopg names and keeps
    it), and no health check precedes it. Django checks a connection with a ``SELECT 1`` on
    the first query of every request (``CONN_HEALTH_CHECKS``), a round trip as long as the
    statement itself; here a connection that died meanwhile (PostgreSQL restarted) is
    noticed by the statement failing on it, and, outside a transaction, the statement is
    sent once more on a new connection: it must be idempotent (``ON CONFLICT DO NOTHING``).
    Errors are Django's (``wrap_database_errors``), so an outage answers 503 as anywhere.
    While queries are logged (DEBUG, ``assertNumQueries``) it runs through Django's cursor
    wrapper, unprepared, and is counted.
    """
    # Django's connection looked up once: each use of ``django.db.connection`` finds it again
    # (a context-local lookup), a few microseconds each on the hottest path.
    database = connections[DEFAULT_DB_ALIAS]
    if database.queries_logged:
        with binary_parameters_cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    for attempt in (1, 2):
        database.ensure_connection()
        raw = database.connection
        try:
            with database.wrap_database_errors:
                return psycopg.Cursor(raw).execute(sql, params, prepare=True).fetchall()
        except (OperationalError, InterfaceError):
            if attempt == 2 or database.in_atomic_block or not (raw.broken or raw.closed):
                raise
            database.close()  # the next attempt connects afresh
    raise AssertionError("unreachable")


def rows_delete(model: type[Model], *, column: str, keys: Iterable[int]) -> int:
    """``DELETE FROM <model's table> WHERE <column> IN keys``, walked by index key by key;
    returns how many rows went.

    An ``IN`` list of a few hundred keys on a column without planner statistics (a fresh bulk
    import, a late autovacuum) is estimated to match the whole table and scanned, and so is a
    plain join against ``unnest`` of the keys (hashed against a scan of the table). Here each
    key's rows are found by a lateral index walk and deleted by their row address (a TID
    scan), a plan whose cost follows the rows deleted, not the table. Only model metadata is
    interpolated.
    """
    key_field = model._meta.get_field(column)
    if not isinstance(key_field, Field):  # a reverse relation: no column of this table
        raise ValueError(f"{model.__name__}.{column} is not a column")
    table, field = model._meta.db_table, key_field.column
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT r.ctid FROM unnest(%b::bigint[]) AS k(id) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT ctid FROM {table} WHERE {field} = k.id OFFSET 0) AS r))",
            [sorted(set(keys))],
        )
        return cursor.rowcount
