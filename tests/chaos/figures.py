"""The figures every fault test prints (docs/benchmarks.md, "Faults"), computed in SQL so that
they can be read from the test database or from a private cluster the test started.

*Lost*: accepted (200) but not stored, or stored but never processed or resolved (nor parked,
for a test that poisons events). *Doubled*: an event in two committed pipeline batches, an
order's points earned twice, an order counted twice (each order event is one order); an order
never counted is lost."""

from dataclasses import dataclass
from typing import Any, Protocol

from events.models import Event, ParkedEvent, PendingEvent
from identity.models import EventResolution, MemberChange
from members.loyalty.models import PointsEntry
from members.loyalty.points import Kind
from members.models import DirtyMark, MemberOrder


class Cursor(Protocol):
    """What the figures need of a cursor: Django's, or psycopg's on a private cluster."""

    def execute(self, query: str, params: Any = ...) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Figures:
    fault: str
    sent: int
    accepted: int
    stored: int
    processed: int
    lost: int
    doubled: int
    parked: int = 0

    def report(self, detail: str = "") -> None:
        """One line on the test's output (``-s``), the row of its table in the benchmarks."""
        print(
            f"\nchaos {self.fault}: {detail + ', ' if detail else ''}sent {self.sent}, accepted {self.accepted}, "
            f"stored {self.stored}, processed {self.processed}, parked {self.parked}, lost {self.lost}, "
            f"doubled {self.doubled}"
        )


def _rows(cursor: Cursor, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    cursor.execute(query, params)
    return cursor.fetchall()


def backlog(cursor: Cursor) -> int:
    """What the pipeline still owes: queued events, members to refresh, marks to fold in."""
    tables = [model._meta.db_table for model in (PendingEvent, MemberChange, DirtyMark)]
    return sum(_rows(cursor, f"SELECT count(*) FROM {table}")[0][0] for table in tables)


class Connection(Protocol):
    def cursor(self) -> Any: ...


def drained(connection: Connection) -> bool:
    """Whether the pipeline owes nothing any more (``connection``: Django's, or psycopg's)."""
    with connection.cursor() as cursor:
        return backlog(cursor) == 0


def pipeline_figures(
    cursor: Cursor, *, fault: str, sent: int, accepted: list[str], seen_table: str
) -> Figures:
    """The figures of a run whose pipeline recorded each committed batch's events in
    ``seen_table`` (``tests.events.stages.record_in_table``), once the backlog drained."""
    stored = dict(_rows(cursor, f"SELECT message_id, id FROM {Event._meta.db_table}"))
    seen = dict(_rows(cursor, f"SELECT event_id, count(*) FROM {seen_table} GROUP BY event_id"))
    resolved = {row[0] for row in _rows(cursor, f"SELECT event_id FROM {EventResolution._meta.db_table}")}
    parked = {row[0] for row in _rows(cursor, f"SELECT event_id FROM {ParkedEvent._meta.db_table}")}
    stored_ids = set(stored.values())
    processed = (set(seen) & stored_ids) - parked
    orders = _rows(cursor, f"SELECT count(*) FROM {MemberOrder._meta.db_table}")[0][0]
    orders_over = orders - len(stored_ids - parked)  # each order event that went through is one order
    lost = (
        len(set(accepted) - set(stored))
        + len(stored_ids - processed - parked)
        + len(stored_ids - resolved - parked)
        + max(0, -orders_over)  # an order never counted
    )
    earned = [
        row[0]
        for row in _rows(
            cursor,
            f"SELECT order_id FROM {PointsEntry._meta.db_table} WHERE kind = %s",
            (Kind.EARN.value,),
        )
    ]
    doubled = (
        sum(count - 1 for count in seen.values())  # an event in two committed batches
        + (len(earned) - len(set(earned)))  # an order's points earned twice
        + max(0, orders_over)  # an order counted twice
    )
    return Figures(
        fault=fault,
        sent=sent,
        accepted=len(accepted),
        stored=len(stored),
        processed=len(processed),
        lost=lost,
        doubled=doubled,
        parked=len(parked),
    )
