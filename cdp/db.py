"""Database helpers for set-based hot paths."""

import functools
import hashlib
import itertools
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from psycopg import errors as psycopg_errors
from psycopg import postgres, pq
from psycopg.adapt import Dumper, PyFormat, Transformer

#: The largest value of a ``bigint`` column (every primary key, DEFAULT_AUTO_FIELD): an id
#: beyond it names no row, a number beyond it cannot be stored.
MAX_BIGINT = 2**63 - 1

#: psycopg's own timestamptz loader (its C implementation). Django registers a subclass
#: written in Python on every connection, to set the time zone of what it reads: a few
#: microseconds per value, which made parsing timestamps a tenth of a member refresh.
_loader = psycopg.adapters.get_loader(psycopg.adapters.types["timestamptz"].oid, pq.Format.TEXT)
assert _loader is not None  # psycopg registers one for every built-in type
_TIMESTAMPTZ_LOADER = _loader


class BinaryTextArray(bytes):
    """A ``text[]`` parameter already in PostgreSQL's binary array format (``text_array``); a
    ``binary_parameters_cursor`` sends it as it is."""


class _BinaryTextArrayDumper(Dumper):
    format = pq.Format.BINARY
    oid = postgres.types["text"].array_oid

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


_TEXT_OID = postgres.types["text"].oid
#: Dimensions (1), whether any element is NULL (none), the element type, the length, the lower bound (1).
_ARRAY_HEADER = struct.Struct("!iiIii")
_EMPTY_ARRAY = struct.pack("!iiI", 0, 0, _TEXT_OID)
_LENGTH = struct.Struct("!i")


def text_array(values: Sequence[bytes]) -> BinaryTextArray:
    """A ``text[]`` of UTF-8 ``values`` (none NULL), for a ``%b`` parameter.

    psycopg dumps a list element by element in Python (its list dumper): for a batch of events,
    a dozen columns of a hundred values each, 12 µs of CPU per event, a tenth of what a
    batch request costs (bench/ingest_cpu.py). Here the lengths are packed and the whole array
    joined in C, with no Python frame per element; the elements are encoded by the caller,
    where JSON is encoded anyway (orjson gives UTF-8 bytes).
    """
    if not values:
        return BinaryTextArray(_EMPTY_ARRAY)
    parts: list[bytes] = [b""] * (2 * len(values) + 1)
    parts[0] = _ARRAY_HEADER.pack(1, 0, _TEXT_OID, len(values), 1)
    parts[1::2] = map(_LENGTH.pack, map(len, values))
    parts[2::2] = values
    return BinaryTextArray(b"".join(parts))


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
    raw.adapters.register_dumper(BinaryTextArray, _BinaryTextArrayDumper)
    # django-stubs types the argument as Django's CursorWrapper; Django wraps a DB-API cursor.
    if connection.queries_logged:
        return connection.make_debug_cursor(raw)  # type: ignore[arg-type]
    return connection.make_cursor(raw)  # type: ignore[arg-type]


def statement_run(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one idempotent statement on Django's connection (same transaction, if any), prepared
    once per connection and bound in binary (``%b``); its rows.

    For the hottest single-row paths (one ingested event per request), where the fixed costs
    are the work: PostgreSQL plans the statement once per connection (named and kept per
    connection: outside a transaction on libpq directly, ``_prepared_run``; inside one through
    psycopg's cursor, which also begins the transaction), and no health check precedes it. Django checks a connection with a ``SELECT 1`` on
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
                if raw.autocommit and not database.in_atomic_block:
                    return _prepared_run(raw, sql, params)
                return psycopg.Cursor(raw).execute(sql, params, prepare=True).fetchall()
        except (OperationalError, InterfaceError):
            if attempt == 2 or database.in_atomic_block or not (raw.broken or raw.closed):
                raise
            database.close()  # the next attempt connects afresh
    raise AssertionError("unreachable")


_PLACEHOLDER = re.compile(r"%.")


@functools.lru_cache(maxsize=64)
def _numbered(sql: str) -> bytes:
    """``sql`` with its ``%b`` placeholders numbered as PostgreSQL's ($1, $2, ...)."""
    numbers = itertools.count(1)

    def number(match: re.Match[str]) -> str:
        if match[0] != "%b":
            raise ValueError(f"statement_run takes %b placeholders only, not {match[0]!r}")
        return f"${next(numbers)}"

    return _PLACEHOLDER.sub(number, sql).encode()


def _prepared_run(raw: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The statement on libpq directly, outside a transaction: prepared once per connection (and
    per parameter types), parameters dumped and rows loaded by psycopg's own adapters (Django's
    timestamptz loader included), the wait in libpq with the GIL released.

    What psycopg's cursor does around the same round trip (its generators, its prepared
    statement cache, the result's checks) cost 80 microseconds of CPU per statement more when
    the statement waits for a commit's flush (measured: 111-120 against 32-35 per durable
    single-row insert, whatever the wait): on a single event per request, a sixth of the
    application's CPU. Errors are psycopg's own exceptions, as from a cursor."""
    transformer = Transformer(raw)
    dumped = transformer.dump_sequence(params, [PyFormat.BINARY] * len(params))
    types, formats = transformer.types, transformer.formats
    name = b"cdp_" + hashlib.blake2b(repr((sql, types)).encode(), digest_size=10).hexdigest().encode()
    pgconn = raw.pgconn
    prepared: set[bytes] = raw.__dict__.setdefault("_cdp_prepared", set())
    for attempt in (1, 2):
        if name not in prepared:
            _result_checked(raw, pgconn.prepare(name, _numbered(sql), types))
            prepared.add(name)
        try:
            # A None parameter is a NULL (psycopg's cursor passes the same list); the stub says bytes only.
            result = _result_checked(raw, pgconn.exec_prepared(name, dumped, formats))  # type: ignore[arg-type]
            break
        except psycopg_errors.InvalidSqlStatementName:
            # Gone from the session though prepared on it (DISCARD ALL, a pooler's reset): again.
            prepared.discard(name)
            if attempt == 2:
                raise
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)


def _result_checked(raw: psycopg.Connection[Any], result: pq.abc.PGresult) -> pq.abc.PGresult:
    if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        return result
    if raw.pgconn.status == pq.ConnStatus.BAD:  # the connection died: Django reconnects
        raise psycopg.OperationalError(raw.pgconn.get_error_message() or "the connection was lost")
    raise psycopg_errors.error_from_result(result, encoding=raw.info.encoding)


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


#: Rows this process took out of each queue table since it last vacuumed it (``queue_vacuum_due``).
_taken_since_vacuum: Counter[str] = Counter()


def queue_vacuum_due(table: str, *, taken: int, every: int) -> bool:
    """Count ``taken`` rows out of the queue ``table``, and vacuum it when this process has
    taken ``every`` since it last did (0: never, leaving it to autovacuum); whether it vacuumed.

    A queue is emptied from its oldest end, so every take walks the index entries of all the
    rows taken before it until a vacuum removes them: a cost that grows with the rows taken
    (a backlog of a million events: thousands of dead index pages per take by its end).
    Autovacuum, where it runs, is told to come early for the queues (their migrations); this
    keeps the cost flat where it is late or off. Not inside a transaction (VACUUM cannot run
    there): the count waits for the next call outside one. A VACUUM of a queue touches only the
    pages changed since the last one (and the index), and takes no lock the takes or inserts
    wait for. Only a model's table name is interpolated.
    """
    _taken_since_vacuum[table] += taken
    if not every or _taken_since_vacuum[table] < every or connection.in_atomic_block:
        return False
    _taken_since_vacuum[table] = 0
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {table}")
    return True
