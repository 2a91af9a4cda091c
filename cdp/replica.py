"""Reads that may lag, from a streaming replica: the scope a view opts in with, and the router.

Switched on by a setting: with ``DATABASE_REPLICA_URL`` the settings add a database alias
``replica`` (config/settings/base.py); without it there is no such alias and everything here
answers the primary, ``default``. Two things must hold for a read to go to the replica:

- the code runs inside ``replica_reads()`` (a context manager and a decorator), which only the
  views of docs/scaling.md's replica-safe reads use: the insights board and KPI API (rollups),
  funnels, attribution, ROI and cohorts (passes over the event log). Never what gives out
  personal data under consent (a segment's members page, its exports): a replica's consent is as
  old as its lag, and a withdrawal binds at once. The flag is a context variable, so it is per request (and per thread), and never
  set in a worker: the pipeline and every task claim work, lock and write, which a replica
  refuses;
- the read is one of those paths' own: their raw SQL takes its cursor from ``read_connection()``,
  and of ORM reads only those of ``REPLICA_READ_MODELS`` are routed. Anything else read in scope
  (the staff account and token, a segment's or a funnel's definition just saved, the audit log)
  stays on the primary, so a definition created a moment ago is found.

Every write goes to the primary (``db_for_write``), in scope or not: the audit entries, above
all. Nothing is migrated on the replica (it replays the primary's WAL).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model

#: The database alias of the streaming replica (present only with DATABASE_REPLICA_URL).
REPLICA = "replica"

#: The models whose ORM reads go to the replica in scope (``app_label.ModelName``): the rollups
#: the board reads. Definitions (segments,
#: funnels, spend lines) are not here: they are read right after they are written.
REPLICA_READ_MODELS = frozenset({"insights.DailyRollup", "insights.PointsRollup", "insights.CouponRollup"})

_replica_reads: ContextVar[bool] = ContextVar("replica_reads", default=False)


def replica_configured() -> bool:
    """Whether there is a replica alias (``DATABASE_REPLICA_URL`` was set)."""
    return REPLICA in connections.settings


@contextmanager
def replica_reads() -> Iterator[None]:
    """Inside it (a ``with`` block, or a decorated view or method), the replica-safe reads go to
    the replica when there is one. Nests; leaves the flag as it found it."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


def read_alias() -> str:
    """The alias the replica-safe reads use here and now: the replica inside ``replica_reads``
    when there is one, else the primary."""
    return REPLICA if _replica_reads.get() and replica_configured() else DEFAULT_DB_ALIAS


def read_connection() -> BaseDatabaseWrapper:
    """The connection a replica-safe read's raw SQL runs on (``read_alias``)."""
    return connections[read_alias()]


class ReplicaRouter:
    """Django's database router (``DATABASE_ROUTERS``): reads of ``REPLICA_READ_MODELS`` in
    ``replica_reads`` to the replica, every other read and every write to the primary."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        if model._meta.label in REPLICA_READ_MODELS:
            return read_alias()
        return DEFAULT_DB_ALIAS

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, first: Model, second: Model, **hints: Any) -> bool:
        # The same data on both sides: a row read from the replica may be related to one from
        # the primary (and saved there).
        return {first._state.db, second._state.db} <= {DEFAULT_DB_ALIAS, REPLICA, None}

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db != REPLICA
