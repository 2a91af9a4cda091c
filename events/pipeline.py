"""The processing pipeline's consumer side: claim accepted events, run the stages on them.

Accepted events wait in the outbox queue (``PendingEvent``, filled by a trigger on every
insert). A worker claims a batch by deleting its queue rows, picked ``FOR UPDATE SKIP
LOCKED`` (so workers never wait on, or double-process, each other's rows), and runs every
configured stage on the batch in the same transaction. A worker that dies mid-batch rolls
back, putting the rows back in the queue for the next claim; a batch that commits never runs
again. Stages therefore see each event exactly once per commit.

The claim is one statement: it takes the batch out of the queue and returns what the stages
read of each event as a ``ClaimedEvent``, not a model instance: building ``Event`` objects
and decoding their properties and integrations cost more than resolving them.

The queue is emptied from its oldest end, so every claim walks the index entries of all the
rows claimed before it until a vacuum removes them: a cost that grew with the number of
events processed (a backlog of a million events: thousands of dead index pages per claim by
its end). Autovacuum is told to come early (events 0008), and a worker also vacuums the queue
itself after every ``EVENT_PIPELINE_QUEUE_VACUUM_EVERY`` events it claimed
(``cdp.db.queue_vacuum_due``), so the cost stays flat where autovacuum is late or off.

Follow-ups (``EVENT_PIPELINE_FOLLOW_UPS``: refreshing the members resolution marked dirty)
run after each committed batch in their own transactions, draining their own queues. Two
workers thus overlap: one resolves while the other computes.

A failing event never blocks the queue. A transient database error (deadlock, serialization
failure, lost connection: ``cdp.retries``) is retried with backoff and parks nothing. Any
other failure, of the claim (an event that cannot be read back) or of a stage, rolls the batch
back and bisects it: its events are claimed again by id, half by half, oldest first, each half
in its own transaction, down to the single events that fail, which are parked
(``events.parking``) and taken out of the queue. The happy path pays nothing for this (one
claim, then the stages); a batch with one bad event in 500 costs about twenty transactions.
"""

import logging
import multiprocessing
import multiprocessing.queues
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar

import orjson
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils.module_loading import import_string

from cdp.db import binary_parameters_cursor, queue_vacuum_due
from cdp.metrics import BATCH_EVENTS, BATCH_SECONDS
from cdp.retries import database_error_is_transient, transient_retry
from events.models import Event, PendingEvent
from events.parking import event_park


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """What the pipeline stages read of an event (the same names as on ``Event``)."""

    id: int
    source_id: int
    message_id: str
    timestamp: datetime
    type: str
    user_id: str
    anonymous_id: str
    previous_id: str
    traits: dict
    context: dict
    event: str = ""  # a track call's event name (a sign-up is told by it: identity.erasure)


logger = logging.getLogger(__name__)

Stage = Callable[[Sequence[ClaimedEvent]], None]
FollowUp = Callable[[], int]
_Outcome = TypeVar("_Outcome")

_EVENTS, _PENDING = Event._meta.db_table, PendingEvent._meta.db_table
# The queue rows are picked in id order and deleted by key (``= ANY(ARRAY(...))``: an index
# scan however stale the planner's statistics are); each event is then read by its key.
_CLAIM_PICKING = f"""
WITH claimed AS (
    DELETE FROM {_PENDING} WHERE event_id = ANY(ARRAY(
        SELECT event_id FROM {_PENDING} {{pick}} FOR UPDATE SKIP LOCKED))
    RETURNING event_id
)
SELECT e.id, e.source_id, e.message_id, e.timestamp, e.type, e.user_id, e.anonymous_id, e.previous_id,
       e.traits, e.context, e.event
FROM claimed AS c
CROSS JOIN LATERAL (SELECT * FROM {_EVENTS} WHERE id = c.event_id OFFSET 0) AS e
"""  # noqa: S608 - model tables only
_CLAIM = _CLAIM_PICKING.format(pick="ORDER BY event_id LIMIT %b")
_CLAIM_OF = _CLAIM_PICKING.format(pick="WHERE event_id = ANY(%b::bigint[]) ORDER BY event_id")
# The waiting events in event time (``identity.resolution.EventKey``: timestamp, messageId in
# code point order as Python compares it, source), read through a server-side cursor.
_QUEUE_IN_EVENT_TIME = f"""
SELECT p.event_id FROM {_PENDING} AS p JOIN {_EVENTS} AS e ON e.id = p.event_id
ORDER BY e.timestamp, e.message_id COLLATE "C", e.source_id
"""  # noqa: S608 - model tables only
# The waiting events a person at a time: each anonymous id's events together (an import gives
# every event of a legacy member its key as anonymous id), in event time within it; the events
# without one after them, in event time.
_QUEUE_BY_PERSON = f"""
SELECT p.event_id FROM {_PENDING} AS p JOIN {_EVENTS} AS e ON e.id = p.event_id
ORDER BY e.anonymous_id = '', e.anonymous_id COLLATE "C", e.timestamp, e.message_id COLLATE "C", e.source_id
"""  # noqa: S608 - model tables only
# How many waiting events have no anonymous id, or one no other waiting event has; and how many wait.
_QUEUE_ALONE = f"""
SELECT coalesce(sum(n) FILTER (WHERE n = 1 OR anonymous_id = ''), 0), coalesce(sum(n), 0) FROM (
    SELECT e.anonymous_id, count(*) AS n FROM {_PENDING} AS p JOIN {_EVENTS} AS e ON e.id = p.event_id
    GROUP BY e.anonymous_id
) AS a
"""  # noqa: S608 - model tables only
_QUEUE_HEAD = f"SELECT event_id FROM {_PENDING} ORDER BY event_id LIMIT %b FOR UPDATE SKIP LOCKED"  # noqa: S608
#: The name a failure of the claim itself is parked under (an event that cannot be read back).
CLAIM_STAGE = "events.pipeline.events_claim"


def pipeline_stages() -> list[Stage]:
    return [import_string(path) for path in settings.EVENT_PIPELINE_STAGES]


def pipeline_follow_ups() -> list[FollowUp]:
    return [import_string(path) for path in settings.EVENT_PIPELINE_FOLLOW_UPS]


def pipeline_follow_ups_drain(*, processes: int = 1) -> int:
    """Run the follow-ups until none finds work; returns how much they did. For a command that
    changed resolved events outside the pipeline (a rebuild, a split, an import) and shows the
    result at once, without knowing the apps that hang off the pipeline.

    ``processes`` > 1: that many processes, forked from this one, drain them side by side, as
    that many workers would (the follow-ups claim their work ``SKIP LOCKED`` and lock what they
    write, as they do for live traffic): a backlog's refresh on every core. Inside a
    transaction the children could not see its writes, so there it runs here, alone."""
    if processes > 1 and not connection.in_atomic_block:
        return sum(_in_forked_processes(lambda _worker: _follow_ups_drain_here(), processes))
    return _follow_ups_drain_here()


#: How long a follow-up process beside a backlog's stages waits when it found no work, before
#: it looks again (``pipeline_drain_beside``): a look is a claim that finds nothing, a few
#: milliseconds, and a batch of the backlog takes about a second.
BESIDE_IDLE_SECONDS = 0.1


def pipeline_drain_beside(stages: Callable[[], int], *, processes: int) -> tuple[int, int]:
    """Run ``stages`` (the pipeline's stages over a backlog, e.g. a history's resolution) in one
    process while ``processes`` - 1 others drain the follow-ups as its batches commit, as that
    many workers would beside the pipeline's; once ``stages`` is done its process drains them
    too. Returns (what ``stages`` returned, the follow-up work done).

    For a backlog whose stages run in one process (resolution holds the identity lock batch
    after batch) and whose follow-ups would otherwise wait for all of it: the member refresh
    then keeps the second core busy meanwhile, instead of both cores refreshing after it. The
    work is the live pipeline's: the follow-ups claim what committed batches marked, ``SKIP
    LOCKED``. Inside a transaction (the forked processes could not see its writes) or with
    one process: ``stages``, then the follow-ups, here."""
    if processes < 2 or connection.in_atomic_block:
        return stages(), _follow_ups_drain_here()
    staged = multiprocessing.get_context("fork").Event()

    def drain() -> int:
        # Until ``stages`` is done and two looks apart find nothing: a look that finds nothing
        # while the other process is taking identity's changes into the refresh queue (not yet
        # committed) is not the end.
        follow_ups = pipeline_follow_ups()
        total, idle = 0, 0
        while idle < 2:
            found = sum(follow_up() for follow_up in follow_ups)
            total += found
            if found:
                idle = 0
            elif not staged.is_set():
                staged.wait(BESIDE_IDLE_SECONDS)
            else:
                idle += 1
                if idle < 2:
                    time.sleep(BESIDE_IDLE_SECONDS)
        return total

    def work(worker: int) -> tuple[int, int]:
        if worker:
            return 0, drain()
        try:
            done = stages()
        finally:
            staged.set()  # the others drain to the end whatever happened here
        return done, drain()

    outcomes = _in_forked_processes(work, processes)
    return sum(done for done, _ in outcomes), sum(followed for _, followed in outcomes)


def _follow_ups_drain_here() -> int:
    follow_ups = pipeline_follow_ups()
    total = 0
    while done := sum(follow_up() for follow_up in follow_ups):
        total += done
    return total


def _in_forked_processes(work: Callable[[int], _Outcome], processes: int) -> list[_Outcome]:
    """``work(worker)`` for each worker 0 .. ``processes`` - 1, each in a child forked from this
    process; what they return, by worker. Outside a transaction (the children could not see
    its writes, and a child must never use its parent's connection: this process's are closed
    first, each child opens its own).

    A child's failure is raised here once every child has ended (the first, by worker), as the
    child raised it; what the child had not committed is rolled back, as for a worker that
    died (the pipeline's queues give it to the next claim)."""
    if connection.in_atomic_block:
        raise RuntimeError("forked workers cannot see this transaction's writes")
    connections.close_all()
    context = multiprocessing.get_context("fork")
    outcomes = context.SimpleQueue()
    children = [
        context.Process(target=_forked_child, args=(work, worker, outcomes), daemon=True)
        for worker in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join()
    results: dict[int, _Outcome | BaseException] = {}
    while not outcomes.empty():
        worker, outcome = outcomes.get()
        results[worker] = outcome
    found: list[_Outcome] = []
    for worker, child in enumerate(children):
        outcome = results.get(worker)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:
            raise RuntimeError(f"forked worker {worker} ended without a result (exit code {child.exitcode})")
        found.append(outcome)
    return found


def _forked_child(
    work: Callable[[int], object], worker: int, outcomes: "multiprocessing.queues.SimpleQueue"
) -> None:
    try:
        outcomes.put((worker, work(worker)))
    except BaseException as exc:  # handed to the parent, which raises it
        outcomes.put((worker, exc))
    finally:
        connections.close_all()


def events_process_backlog_in_event_time(*, batch_size: int) -> int:
    """Process every event waiting now in batches taken in event time, not arrival order;
    returns how many left the queue (processed, or parked when they failed).

    For a backlog of history (an import): identity resolves an event that arrives in event
    time incrementally, while one older than events already resolved for its member is *late*
    and re-resolves its whole component (``identity.resolution``). A history stored file by
    file (members, then orders in the file's order) is mostly late events in arrival order;
    in event time none is. The outcome is the same either way (arrival order does not
    matter); only the work differs.

    The waiting ids are read once, sorted by the database (8 bytes each in memory: 48 MB
    for six million), then claimed batch by batch by id like a bisected batch's halves (``SKIP
    LOCKED``: an event another worker took meanwhile is its to process), with the same
    retries and bisection on failure as ``events_process_batch``. Events stored after the
    read wait for the ordinary claims."""
    return _backlog_process(_QUEUE_IN_EVENT_TIME, batch_size)


def events_process_backlog_by_person(*, batch_size: int) -> int:
    """As ``events_process_backlog_in_event_time``, a person at a time: each anonymous id's
    events together, in event time within it, then the events without one, in event time.

    For an import, which gives every event of a legacy member the member's key as anonymous
    id: a member's events then share a batch or two, where in event time each falls in a batch
    of its own (a history's orders are spread over years), and identity writes the member, its
    identifiers' sightings and its change once per batch it appears in. An event reached after
    a later one of its member (a member's order named by phone only, under an anonymous id of
    its own; two legacy members sharing a phone) is late and re-resolves its component: the
    same members either way, only that event costs more."""
    return _backlog_process(_QUEUE_BY_PERSON, batch_size)


def events_backlog_alone_share() -> float:
    """The share of the waiting events that share their anonymous id with no other waiting
    event, or have none (0.0 when none wait): in a backlog taken by person
    (``events_process_backlog_by_person``), those are the events that may come after later
    events of their member. One aggregate over the queue."""
    with connection.cursor() as cursor:
        cursor.execute(_QUEUE_ALONE)
        alone, waiting = cursor.fetchone()
    return int(alone) / int(waiting) if waiting else 0.0  # sums of counts arrive as Decimal


def _backlog_process(query: str, batch_size: int) -> int:
    """Read the waiting ids in ``query``'s order, then claim and process them batch by batch."""
    waiting = array("q")
    with connection.chunked_cursor() as cursor:
        cursor.execute(query)
        while rows := cursor.fetchmany(10_000):
            waiting.extend(row[0] for row in rows)
    done = 0
    for start in range(0, len(waiting), batch_size):
        done += _process_ids(waiting[start : start + batch_size].tolist())
    return done


def _process_ids(event_ids: list[int]) -> int:
    """Claim and process these events in one batch, bisecting it on failure."""
    run = _Run()
    try:
        return transient_retry(partial(_claim_and_run, run, partial(_claim_of, event_ids)))
    except Exception as exc:
        if database_error_is_transient(exc):
            raise
        return _bisect(event_ids, run.failure(exc))


def events_process_batch(*, batch_size: int) -> int:
    """Claim and process one batch; returns how many events it took out of the queue
    (processed, or parked when they failed; 0: none waiting).

    A transient database error is retried (and raised when it persists: the events stay
    queued); any other failure bisects the batch (the module's docstring).

    A batch that took events is timed (``cdp_pipeline_batch_duration_seconds``) and logged
    with its event ids, under the id of the request whose nudge runs it (``cdp.tracing``).
    """
    began = time.perf_counter()
    run = _Run()
    try:
        done = transient_retry(partial(_claim_and_run, run, partial(events_claim, batch_size=batch_size)))
    except Exception as exc:
        if database_error_is_transient(exc):
            raise
        failure = run.failure(exc)
        # The claim itself failed: which events it took went back unread; take the queue's head.
        run.event_ids = run.event_ids or _queue_head(batch_size)
        done = _bisect(run.event_ids, failure)
    if done:
        elapsed = time.perf_counter() - began
        BATCH_SECONDS.observe(elapsed)
        BATCH_EVENTS.inc(done)
        logger.info(
            "pipeline batch: %d events (ids %d..%d) in %.3f s",
            done,
            run.event_ids[0],
            run.event_ids[-1],
            elapsed,
            extra={"event_ids": [run.event_ids[0], run.event_ids[-1]], "events": done},
        )
    return done


@dataclass
class _Run:
    """How far one claim-and-run got: what it claimed, and the stage running."""

    event_ids: list[int] = field(default_factory=list)
    stage: str = CLAIM_STAGE

    def failure(self, exc: Exception) -> tuple[str, Exception]:
        return self.stage, exc


def _claim_and_run(run: _Run, claim: Callable[[], list[ClaimedEvent]]) -> int:
    """One transaction: claim, then every stage; returns how many events it processed."""
    with transaction.atomic():
        batch = claim()
        if not batch:
            return 0
        run.event_ids = [event.id for event in batch]
        for path, stage in zip(settings.EVENT_PIPELINE_STAGES, pipeline_stages(), strict=True):
            run.stage = path
            stage(batch)
    return len(batch)


def _bisect(event_ids: list[int], failure: tuple[str, Exception]) -> int:
    """Process these events (whose batch failed with ``failure``) in halves, oldest first,
    down to the single events that fail, and park those; returns how many left the queue.

    Each part is claimed again by id, ``SKIP LOCKED``: an event another worker claimed
    meanwhile is simply its to process.
    """
    done = 0
    parts: list[tuple[list[int], tuple[str, Exception] | None]] = [(event_ids, failure)]  # a stack
    while parts:
        ids, known = parts.pop()
        if known is None:
            run = _Run()
            try:
                done += transient_retry(partial(_claim_and_run, run, partial(_claim_of, ids)))
                continue
            except Exception as exc:
                if database_error_is_transient(exc):
                    raise
                known = run.failure(exc)
        if len(ids) == 1:
            stage, error = known
            done += transient_retry(partial(event_park, event_id=ids[0], stage=stage, error=error))
            continue
        middle = len(ids) // 2
        parts += [(ids[middle:], None), (ids[:middle], None)]  # the older half on top
    return done


def _claim_of(event_ids: list[int]) -> list[ClaimedEvent]:
    with binary_parameters_cursor() as cursor:
        cursor.execute(_CLAIM_OF, [event_ids])
        return _claimed(cursor.fetchall())


def _queue_head(batch_size: int) -> list[int]:
    """The ids of the oldest events no other worker holds (not claimed: nothing is read)."""
    with transaction.atomic(), binary_parameters_cursor() as cursor:
        cursor.execute(_QUEUE_HEAD, [batch_size])
        return [row[0] for row in cursor.fetchall()]


def events_claim(*, batch_size: int) -> list[ClaimedEvent]:
    """Take up to ``batch_size`` events no other worker holds out of the queue, in the
    caller's transaction; oldest first."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(_CLAIM, [batch_size])
        return _claimed(cursor.fetchall())


def _claimed(
    rows: list[tuple[int, int, str, datetime, str, str, str, str, str, str, str]],
) -> list[ClaimedEvent]:
    # jsonb arrives as text (Django's adapters); orjson decodes it several times faster.
    return sorted(
        (ClaimedEvent(*row[:8], orjson.loads(row[8]), orjson.loads(row[9]), row[10]) for row in rows),
        key=lambda event: event.id,
    )


def events_process_pending(*, batch_size: int | None = None, time_budget: float = 30.0) -> tuple[int, bool]:
    """Process batches, and the follow-ups after each, until nothing is waiting or the time
    budget is spent.

    Returns (events taken from the queue: processed, or parked when they failed; whether work
    may remain).
    """
    size = batch_size or settings.EVENT_PIPELINE_BATCH_SIZE
    follow_ups = pipeline_follow_ups()
    deadline = time.monotonic() + time_budget
    total = 0
    while True:
        processed = events_process_batch(batch_size=size)
        total += processed
        queue_vacuum_due(_PENDING, taken=processed, every=settings.EVENT_PIPELINE_QUEUE_VACUUM_EVERY)
        followed = sum(follow_up() for follow_up in follow_ups)
        if processed < size and not followed:
            return total, False
        if time.monotonic() >= deadline:
            return total, True
