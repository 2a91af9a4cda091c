"""Autovacuum, emulated for a benchmark on a server that runs without it.

The benchmark server runs with ``autovacuum = off`` (so that nothing else works on the
machine while a run is measured), but a production server runs autovacuum, and what a
pipeline costs per event depends on it as the tables grow: without it no table has planner
statistics but those analyzed at the start, dead rows stay in the queues and in updated
tables, and no page is ever marked all-visible, so every index-only scan reads the table too.

``Autovacuum`` does what autovacuum's launcher would, from a thread with a connection of its
own: every ``autovacuum_naptime`` (the server's setting) it reads ``pg_stat_user_tables`` and
runs ``VACUUM`` on each table whose dead rows, or rows inserted since its last vacuum, pass
autovacuum's thresholds, and ``ANALYZE`` on each whose rows changed since its last analyze pass
the analyze threshold; the thresholds are the server's settings, or the table's own storage
parameters where it has them (the migrations set some for the queues and the identity graph),
as autovacuum computes them (threshold + scale factor x ``reltuples``). Unlike autovacuum it is
not throttled (``vacuum_cost_delay`` is 0 for a VACUUM that is run by hand): its backend's CPU
is the cost, and a benchmark counts it with the other backends of its database.
"""

import contextlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

#: autovacuum's parameters: (server setting, table storage parameter).
_PARAMETERS = {
    "vacuum_threshold": "autovacuum_vacuum_threshold",
    "vacuum_scale_factor": "autovacuum_vacuum_scale_factor",
    "insert_threshold": "autovacuum_vacuum_insert_threshold",
    "insert_scale_factor": "autovacuum_vacuum_insert_scale_factor",
    "analyze_threshold": "autovacuum_analyze_threshold",
    "analyze_scale_factor": "autovacuum_analyze_scale_factor",
}

_TABLES = """
SELECT s.relname, greatest(c.reltuples, 0), s.n_dead_tup, s.n_ins_since_vacuum, s.n_mod_since_analyze,
       coalesce(c.reloptions, '{}')
FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
"""


@dataclass(frozen=True)
class TableCounts:
    name: str
    reltuples: float
    dead: int
    inserted_since_vacuum: int
    modified_since_analyze: int
    options: dict[str, float]


def _due(table: TableCounts, server: dict[str, float]) -> tuple[bool, bool]:
    """(vacuum due, analyze due), as autovacuum decides them for this table."""

    def parameter(name: str) -> float:
        setting = _PARAMETERS[name]
        return table.options.get(setting, server[setting])

    def over(count: int, threshold: str, scale: str) -> bool:
        return count > parameter(threshold) + parameter(scale) * table.reltuples

    insert_threshold = parameter("insert_threshold")
    vacuum = over(table.dead, "vacuum_threshold", "vacuum_scale_factor") or (
        insert_threshold >= 0 and over(table.inserted_since_vacuum, "insert_threshold", "insert_scale_factor")
    )
    return vacuum, over(table.modified_since_analyze, "analyze_threshold", "analyze_scale_factor")


@dataclass
class Autovacuum:
    """A context manager: autovacuum's work on ``url``'s database while it is open."""

    url: str
    #: Seconds between passes (None: the server's ``autovacuum_naptime``).
    naptime: float | None = None
    vacuums: Counter[str] = field(default_factory=Counter)
    analyzes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # spent vacuuming and analyzing
    backend_cpu_s: float = 0.0  # CPU seconds of its PostgreSQL backend (Linux: /proc)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: str = ""

    def __enter__(self) -> "Autovacuum":
        self._thread = threading.Thread(target=self._run, name="autovacuum", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)

    def summary(self) -> str:
        if self.error:
            return f"autovacuum emulation failed: {self.error}"
        return (
            f"{sum(self.vacuums.values()):,} VACUUM and {sum(self.analyzes.values()):,} ANALYZE "
            f"in {self.seconds:,.1f} s ({self.backend_cpu_s:,.1f} CPU-s)"
        )

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                server = {
                    name: float(value)
                    for name, value in conn.execute(
                        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                        [list(_PARAMETERS.values())],
                    )
                }
                naptime = self.naptime
                if naptime is None:
                    row = conn.execute(
                        "SELECT setting::float FROM pg_settings WHERE name = 'autovacuum_naptime'"
                    )
                    naptime = float(row.fetchone()[0])  # type: ignore[index]
                try:
                    while not self._stop.wait(naptime):
                        self._pass(conn, server)
                finally:
                    self.backend_cpu_s = process_cpu_s(conn.info.backend_pid)
        except Exception as exc:  # reported with the run, not raised in a thread nobody joins
            self.error = repr(exc)

    def _pass(self, conn: psycopg.Connection, server: dict[str, float]) -> None:
        for name, reltuples, dead, inserted, modified, options in conn.execute(_TABLES).fetchall():
            table = TableCounts(name, reltuples, dead, inserted, modified, _options(options))
            vacuum, analyze = _due(table, server)
            if not (vacuum or analyze):
                continue
            verb = "VACUUM (ANALYZE)" if vacuum and analyze else "VACUUM" if vacuum else "ANALYZE"
            began = time.monotonic()
            with contextlib.suppress(psycopg.errors.UndefinedTable):  # dropped meanwhile
                conn.execute(sql.SQL(verb + " {}").format(sql.Identifier(name)))
            self.seconds += time.monotonic() - began
            if vacuum:
                self.vacuums[name] += 1
            if analyze:
                self.analyzes[name] += 1


def _options(reloptions: list[str]) -> dict[str, float]:
    """A table's autovacuum storage parameters (``reloptions``: 'name=value' strings)."""
    found = {}
    for option in reloptions:
        name, _, value = option.partition("=")
        if name in _PARAMETERS.values():
            found[name] = float(value)
    return found


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process on this machine (0 where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
