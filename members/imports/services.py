"""Writes of imports: a job per file, run batch by batch, each batch's rows written through the
owning apps' services together with the job's checkpoint, in one transaction.

Events (members, orders, refunds) are checked by the ingestion contract (``events.contract``)
exactly as if a sender had posted them and stored by ``events.services.events_ingest`` under
the import's sources, so the pipeline resolves and refreshes them as live events: identifier
normalization and the identity rules, figures, RFM, points, segments. Opening balances, tiers
and coupons need their members: the pipeline is drained first, then each row's member is found
by its identifiers (``identity.selectors``) and loyalty's services write them.

Locks: a batch takes what the services it calls take (members' refresh locks, then their
points accounts, in member-id order), then updates its job row last; a second process running
the same job finds the checkpoint moved and stops (``ImportConflict``), never writing twice.
"""

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from cdp.models import AuditEntry
from cdp.services import audit_record
from cdp.workers import process_objects_frozen
from events.contract import Message, Rejection, TimestampWindow, message_parse
from events.models import Channel, Source
from events.pipeline import (
    events_backlog_alone_share,
    events_process_backlog_by_person,
    events_process_backlog_in_event_time,
    events_process_batch,
    pipeline_drain_beside,
    pipeline_follow_ups_drain,
)
from events.services import events_ingest, source_create
from identity.policy import normalization_policy
from identity.selectors import identifier_holders
from members.imports.mapping import ColumnMapping, mapping_parse
from members.imports.models import ImportJob, ImportProblem
from members.imports.reading import FileUnreadable, Record, RecordReader, lines_count
from members.imports.rows import EVENT_KINDS, MemberRef, Plan, RowContext, row_plan
from members.loyalty.coupons import CouponCarried, coupons_carry_over
from members.loyalty.selectors import program_load
from members.loyalty.services import OpeningBalance, TierReached, points_open, tiers_grant

logger = logging.getLogger(__name__)

#: Rows per transaction. Measured (bench/imports.py, 2026-12-05): an order row costs ~0.1 ms of
#: CPU to check and write (the process and PostgreSQL), so 5,000 rows are ~0.6 s of work, which a
#: killed job redoes at most; each batch also pays a commit, the checkpoint and the pipeline's
#: nudge, a few ms that 5,000 rows make negligible.
BATCH_SIZE = 5000
#: Problems kept per job (all are counted): a file where every row is wrong tells enough with these.
MAX_PROBLEMS_KEPT = 10_000
#: Events per pipeline batch when a history's backlog is resolved (``imported_resolve``): each
#: batch pays the identity lock, the graph's loading and its flush; measured (4,000 members and
#: 20,000 orders, three runs each, 2026-12-05), 2,000 took 10 to 15% less CPU per event than
#: the live 500, while holding the identity lock about a second on this machine, which live
#: events arriving meanwhile wait for.
BACKLOG_BATCH_SIZE = 2000
#: Above this share of waiting events alone under their anonymous id (an order named by phone
#: only gets an anonymous id of its own), the backlog is resolved in event time, not a member
#: at a time: such an event may come after later events of its member, and a late event
#: re-resolves its member's component. Measured (``bench/import_stages.py --members 5000
#: --by-phone 0.3``, 2026-12-05, under load): with 22% of the events alone, a member at a time
#: took 256 µs of CPU per row, event time 195; with none alone, 118 against 157: some 540 µs
#: more per event alone against 40 less per grouped one, even near 7% alone (5%: a margin).
BY_PERSON_MAX_ALONE = 0.05
ENDPOINT = "import"


class ImportConflict(RuntimeError):
    """Another process moved this job's checkpoint: it is running the job."""


@dataclass(frozen=True, slots=True)
class Reported:
    record: int
    line: int
    field: str
    reason: str
    skipped: bool


@dataclass(slots=True)
class Report:
    """A run's outcome, as the command prints it (a saved job also keeps it in its row)."""

    imported: int = 0
    duplicate: int = 0
    skipped: int = 0
    warnings: int = 0
    problems: list[Reported] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def import_job_create(
    *,
    kind: str,
    name: str,
    path: Path,
    file_name: str = "",
    mapping: dict[str, Any] | None = None,
    dry_run: bool = False,
    user: User | None = None,
    channel: str = "cli",
    operator: str = "",
    save: bool = True,
) -> tuple[ImportJob, bool]:
    """The job for this file: the one already made for the same kind, name and file contents
    (False), or a new one (True). A dry run always gets a new job; ``save=False`` keeps it out
    of the database (the command's dry run writes nothing).

    A new saved job is audited (``start_import``, in the caller's transaction): an import
    writes every store's and channel's data at once and reads a file of personal data, so
    who started which file is kept with the other privileged actions. ``user`` is the staff
    user (API, console); a command has none, and names the shell's ``operator`` instead."""
    if kind not in ImportJob.Kind.values:
        raise ValueError(f"kind: one of {', '.join(ImportJob.Kind.values)}")
    mapping_parse(mapping or {})  # refused now, not when the job runs
    sha256 = file_sha256(path)
    if not dry_run:
        existing = ImportJob.objects.filter(kind=kind, name=name, sha256=sha256, dry_run=False).first()
        if existing is not None:
            return existing, False
    job = ImportJob(
        kind=kind,
        name=name,
        file_name=file_name or path.name,
        path=str(path),
        sha256=sha256,
        size=path.stat().st_size,
        lines_total=lines_count(path),
        mapping=mapping or {},
        dry_run=dry_run,
        created_by=user,
    )
    if save:
        job.full_clean(exclude=["created_by"], validate_constraints=False)
        job.save()
        _start_audit(job, user=user, channel=channel, operator=operator)
    return job, True


def _start_audit(job: ImportJob, *, user: User | None, channel: str, operator: str) -> None:
    by = f"; shell user {operator}" if operator and user is None else ""
    audit_record(
        user=user,
        action=AuditEntry.Action.START_IMPORT,
        member_ids=(),
        channel=channel,
        # The file's name is the caller's text: kept last, so the limit cuts it, not the facts.
        detail=f"import job {job.pk}: {job.kind} of {job.name}{' (dry run)' if job.dry_run else ''}, "
        f"{job.lines_total} lines, sha256 {job.sha256[:16]}{by}; file {job.file_name}",
    )


@process_objects_frozen()
def import_run(
    *,
    job: ImportJob,
    progress: Callable[[ImportJob], None] = lambda job: None,
    batch_size: int = BATCH_SIZE,
    report: Report | None = None,
) -> Report:
    """Run (or resume, from its checkpoint) an import job to the end of its file.

    A dry run checks every row as the import would (the contract, the members, the programme's
    tiers) and writes none of the data. A row with a problem is reported (record, line, field,
    reason) and skipped; the rest go on. A file that cannot be read at all fails the job.

    The process's own objects are frozen meanwhile (``cdp.workers.process_objects_frozen``):
    the collector's full collections, which the job's garbage triggers, do not walk them again
    and again."""
    report = report if report is not None else Report()
    saved = job.pk is not None
    if job.status == ImportJob.Status.SUCCEEDED:
        return report
    if saved:
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.RUNNING,
            started_at=job.started_at or timezone.now(),
            error="",
            updated_at=timezone.now(),
        )
        job.refresh_from_db()
    runner = _Runner(job=job, mapping=mapping_parse(job.mapping), report=report, saved=saved)
    try:
        if job.kind not in EVENT_KINDS and not job.dry_run:
            runner.drain_pipeline()
        with RecordReader(
            Path(job.path),
            fmt=runner.mapping.format,
            encoding=runner.mapping.encoding,
            delimiter=runner.mapping.delimiter,
        ) as reader:
            batch: list[Record] = []
            for record in reader:
                if record.number <= job.checkpoint:
                    continue  # committed by an earlier run of this job
                batch.append(record)
                if len(batch) >= batch_size:
                    runner.commit(batch)
                    progress(job)
                    batch = []
            if batch:
                runner.commit(batch)
    except FileUnreadable as exc:
        _finish(job, saved, ImportJob.Status.FAILED, error=str(exc))
        raise
    except ImportConflict:
        raise
    except Exception as exc:
        _finish(
            job, saved, ImportJob.Status.FAILED, error=f"{type(exc).__name__} (see the logs); rerun to resume"
        )
        raise
    _finish(job, saved, ImportJob.Status.SUCCEEDED)
    progress(job)
    return report


def _finish(job: ImportJob, saved: bool, status: str, *, error: str = "") -> None:
    job.status, job.error, job.finished_at = status, error, timezone.now()
    if saved:
        ImportJob.objects.filter(pk=job.pk).update(status=status, error=error, finished_at=job.finished_at)


@dataclass
class _Runner:
    job: ImportJob
    mapping: ColumnMapping
    report: Report
    saved: bool
    sources: dict[tuple[str, str], Source] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.now = timezone.now()
        self.ctx = RowContext(
            name=self.job.name, zone=self.mapping.zone, now=self.now, policy=normalization_policy()
        )
        self.window = TimestampWindow(
            earliest=settings.EVENT_TIMESTAMP_EARLIEST, days_ahead=settings.EVENT_TIMESTAMP_DAYS_AHEAD
        )
        self.tiers = {tier.key for tier in program_load().tiers}

    def drain_pipeline(self) -> None:
        """Resolve and refresh every event waiting, so the members the rows name exist. In this
        process: a job may be running in a Celery worker, which is not to fork workers of its own."""
        imported_resolve(processes=1)

    # one batch, one transaction

    def commit(self, records: Sequence[Record]) -> None:
        found: list[Reported] = []
        plans: list[tuple[Record, Plan]] = []
        for record in records:
            if record.fields is None:
                found.append(Reported(record.number, record.line, "", record.problem, True))
                continue
            plan = row_plan(self.job.kind, self.mapping.apply(record.fields), self.ctx)
            found += [Reported(record.number, record.line, p.field, p.reason, False) for p in plan.warnings]
            if plan.problems:
                found += [
                    Reported(record.number, record.line, p.field, p.reason, True) for p in plan.problems
                ]
                continue
            plans.append((record, plan))
        with transaction.atomic():
            if self.job.kind in EVENT_KINDS:
                imported, duplicate = self._events(plans, found)
            else:
                imported, duplicate = self._loyalty(plans, found)
            skipped = len({r.record for r in found if r.skipped})
            warnings = sum(1 for r in found if not r.skipped)
            last = records[-1]
            self._record(found, imported, duplicate, skipped, warnings, last)

    def _record(
        self, found: list[Reported], imported: int, duplicate: int, skipped: int, warnings: int, last: Record
    ) -> None:
        report, job = self.report, self.job
        room = MAX_PROBLEMS_KEPT - len(report.problems)
        report.problems += found[: max(room, 0)]
        report.imported += imported
        report.duplicate += duplicate
        report.skipped += skipped
        report.warnings += warnings
        if self.saved:
            kept = max(0, MAX_PROBLEMS_KEPT - job.problems.count()) if found else 0
            ImportProblem.objects.bulk_create(
                ImportProblem(
                    job=job,
                    record=r.record,
                    line=r.line,
                    field=r.field[:255],
                    reason=r.reason,
                    skipped=r.skipped,
                )
                for r in found[:kept]
            )
            moved = ImportJob.objects.filter(pk=job.pk, checkpoint=job.checkpoint).update(
                checkpoint=last.number,
                line=last.line,
                rows_imported=F("rows_imported") + imported,
                rows_duplicate=F("rows_duplicate") + duplicate,
                rows_skipped=F("rows_skipped") + skipped,
                warnings=F("warnings") + warnings,
                updated_at=timezone.now(),
            )
            if not moved:
                raise ImportConflict(f"import job {job.pk} is being run by another process")
        job.checkpoint, job.line = last.number, last.line
        job.rows_imported += imported
        job.rows_duplicate += duplicate
        job.rows_skipped += skipped
        job.warnings += warnings

    # events: members, orders, refunds

    def _source(self, channel: str, store: str) -> Source:
        key = (channel, store)
        if (source := self.sources.get(key)) is None:
            name = f"import:{self.job.name}:{channel}" + (f":{store}" if store else "")
            source = Source.objects.filter(name=name).first()
            if source is None:
                source = source_create(name=name, kind=Channel(channel), store_code=store).source
            self.sources[key] = source
        return source

    def _events(self, plans: list[tuple[Record, Plan]], found: list[Reported]) -> tuple[int, int]:
        by_source: dict[tuple[str, str], list[Message]] = defaultdict(list)
        rows: list[tuple[Record, list[str]]] = []
        for record, plan in plans:
            parsed: list[tuple[tuple[str, str], Message]] = []
            refused: Rejection | None = None
            for outgoing in plan.outgoing:
                result = message_parse(
                    outgoing.message,
                    received_at=self.now,
                    window=self.window,
                    default_currency=settings.CDP_CURRENCY,
                )
                if isinstance(result, Rejection):
                    refused = result
                    break
                parsed.append(((outgoing.channel, outgoing.store), result))
            if refused is not None:
                errors = refused.errors or ()
                found += [Reported(record.number, record.line, e.field, e.reason, True) for e in errors] or [
                    Reported(record.number, record.line, "", refused.message, True)
                ]
                continue
            for key, message in parsed:
                by_source[key].append(message)
            rows.append((record, [message.message_id for _, message in parsed]))
        if self.job.dry_run:
            return len(rows), 0
        accepted: set[str] = set()
        for (channel, store), messages in sorted(by_source.items()):
            source = self._source(channel, store)
            outcome = events_ingest(source=source, endpoint=ENDPOINT, received_at=self.now, messages=messages)
            accepted |= outcome.accepted_ids
        imported = sum(1 for _, ids in rows if accepted.intersection(ids))
        return imported, len(rows) - imported

    # loyalty: balances, tiers, coupons

    def _members(self, refs: list[MemberRef]) -> dict[tuple[str, str], set[int]]:
        wanted: dict[str, set[str]] = defaultdict(set)
        for ref in refs:
            for type_, value in ref.identifiers:
                wanted[type_].add(value)
        held: dict[tuple[str, str], set[int]] = {}
        for type_, values in wanted.items():
            for value, members in identifier_holders(type_=type_, values=values).items():
                held[(type_, value)] = members
        return held

    def _member_of(self, ref: MemberRef, held: dict[tuple[str, str], set[int]]) -> tuple[int | None, str]:
        for type_, value in ref.identifiers:
            members = held.get((type_, value))
            if not members:
                continue
            if len(members) > 1:
                return (
                    None,
                    f"{type_} {value} is held by several members ({', '.join(map(str, sorted(members)))})",
                )
            return next(iter(members)), ""
        return None, f"no member holds {ref}: import the members first"

    def _loyalty(self, plans: list[tuple[Record, Plan]], found: list[Reported]) -> tuple[int, int]:
        refs = [ref for _, plan in plans for ref in (_ref_of(plan),) if ref is not None]
        held = self._members(refs)
        resolved: list[tuple[Record, Plan, int | None]] = []
        for record, plan in plans:
            ref = _ref_of(plan)
            member_id: int | None = None
            if ref is not None:
                member_id, why = self._member_of(ref, held)
                if member_id is None:
                    found.append(Reported(record.number, record.line, "member_id", why, True))
                    continue
            if plan.tier is not None and plan.tier.tier not in self.tiers:
                known = ", ".join(sorted(self.tiers)) or "none"
                found.append(
                    Reported(
                        record.number,
                        record.line,
                        "tier",
                        f"{plan.tier.tier!r} is not a tier of the programme ({known})",
                        True,
                    )
                )
                continue
            resolved.append((record, plan, member_id))
        if self.job.dry_run:
            return len(resolved), 0
        kind = self.job.kind
        if kind == ImportJob.Kind.BALANCES:
            balances = [
                OpeningBalance(
                    member_id=m,
                    points=p.opening.points,
                    at=p.opening.at,
                    key=p.opening.key,
                    reason=p.opening.reason,
                )
                for _, p, m in resolved
                if p.opening is not None and m is not None
            ]
            written = points_open(balances=balances)
            return len(written), len(balances) - len(written)
        if kind == ImportJob.Kind.TIERS:
            grants = [
                TierReached(
                    member_id=m,
                    tier=p.tier.tier,
                    at=p.tier.at,
                    key=p.tier.key,
                    reason=f"reached in {self.job.name}",
                )
                for _, p, m in resolved
                if p.tier is not None and m is not None
            ]
            recorded = tiers_grant(grants=grants)
            return len(recorded), len(grants) - len(recorded)
        carried = []
        line_of = {}
        for record, plan, member_id in resolved:
            coupon = plan.coupon
            assert coupon is not None  # a coupon row without problems has its coupon
            line_of[coupon.code] = record
            carried.append(
                CouponCarried(
                    code=coupon.code,
                    campaign=coupon.campaign,
                    member_id=member_id,
                    benefit=coupon.benefit,
                    value=coupon.value,
                    currency=coupon.currency,
                    minimum_spend=coupon.minimum_spend,
                    valid_from=coupon.valid_from,
                    valid_until=coupon.valid_until,
                    redeemed_at=coupon.redeemed_at if coupon.state == "redeemed" else None,
                    order_id=coupon.order_id,
                    channel=coupon.channel,
                    order_total=coupon.order_total,
                )
            )
        outcome = coupons_carry_over(coupons=carried)
        duplicate = 0
        for code, why in outcome.items():
            if why == "duplicate":
                duplicate += 1
                continue
            record = line_of[code]
            field_name, _, reason = why.partition(": ")
            found.append(Reported(record.number, record.line, field_name, reason, True))
        return len(carried) - len(outcome), duplicate


def _ref_of(plan: Plan) -> MemberRef | None:
    if plan.opening is not None:
        return plan.opening.member
    if plan.tier is not None:
        return plan.tier.member
    if plan.coupon is not None:
        return plan.coupon.member
    return None


@process_objects_frozen()
def imported_resolve(*, batch_size: int | None = None, processes: int | None = None) -> tuple[int, int]:
    """Run the pipeline over everything waiting, as for a bulk of history: identity resolution
    of every batch first (``imported_identities_resolve``), then the follow-ups (the member
    refresh) once. The stages and their rules are the live ones; only their order over the
    backlog differs: live, each batch is followed by a refresh of its members, which over a
    history refreshes a member once per batch holding one of their events (five orders spread
    over a file: five refreshes, each reading all the member's events), here once. Returns
    (events resolved, refresh work done).

    The refresh runs in ``processes`` (default ``IMPORT_REFRESH_PROCESSES``) forked processes,
    as that many workers would: the refresh of one member is independent of the others' (its own
    locks, its own marks, claimed ``SKIP LOCKED``). Resolution runs in one: it resolves one
    batch at a time under the identity lock, which a batch holds for all but a few percent of
    its time (measured: 94%), so a second process preparing the next batch meanwhile gained
    nothing measurable. With the backlog taken a member at a time, the other processes refresh
    meanwhile the members whose batches committed (``pipeline_drain_beside``): a member's events
    are all in one batch (or two, at a batch's edge), so each member is still refreshed about
    once, and the second core works while resolution holds the first, instead of waiting for
    it. In event time a member's events are spread over the whole backlog: the refresh waits
    for all of it, as before. The process's own objects are frozen meanwhile, as in
    ``import_run``."""
    processes = processes or settings.IMPORT_REFRESH_PROCESSES
    by_person = events_backlog_alone_share() <= BY_PERSON_MAX_ALONE
    if by_person:
        return pipeline_drain_beside(
            partial(imported_identities_resolve, batch_size=batch_size, by_person=True), processes=processes
        )
    resolved = imported_identities_resolve(batch_size=batch_size, by_person=False)
    return resolved, pipeline_follow_ups_drain(processes=processes)


def imported_identities_resolve(*, batch_size: int | None = None, by_person: bool | None = None) -> int:
    """The pipeline's stages (identity resolution) over every event waiting, the backlog taken
    a legacy member at a time (``events_process_backlog_by_person``: each anonymous id's events
    together, the import's member key, in event time within it). The files of a history are
    stored one after the other, each in its own order (members, then orders by order number):
    taken in that order nearly every order would be older than events already resolved for its
    member, re-resolving the member's whole history each time. In event time none is, but a
    member's events (a registration, orders over years) each fall in a batch of their own, and
    identity writes the member, its identifiers' sightings and its change (which the refresh
    marks) once per batch: taken a member at a time, once or twice. Measured (``bench/
    import_stages.py --members 20000``, under load): 157 µs of CPU per row in event time, 118 a
    member at a time. An event outside its member's group (an order named by phone only, two
    legacy members sharing a phone) may come after later events of its member: late, it
    re-resolves that member's component; the members are the same either way. A backlog with
    more than ``BY_PERSON_MAX_ALONE`` of such events is taken in event time instead, where none
    is late. Then whatever arrived meanwhile, in the ordinary order. Returns the events taken
    out of the queue. ``by_person``: the choice made already (None: made here)."""
    size = batch_size or BACKLOG_BATCH_SIZE
    if by_person is None:
        by_person = events_backlog_alone_share() <= BY_PERSON_MAX_ALONE
    if by_person:
        resolved = events_process_backlog_by_person(batch_size=size)
    else:
        resolved = events_process_backlog_in_event_time(batch_size=size)
    while done := events_process_batch(batch_size=size):
        resolved += done
    return resolved


def import_job_run(*, job_id: int) -> None:
    """Run a job by id (the worker's task): nothing for a finished or missing job; a conflict
    (another worker has it) is left to that worker; any other failure is on the job's row."""
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None or job.status in (ImportJob.Status.SUCCEEDED, ImportJob.Status.FAILED):
        return
    try:
        import_run(job=job)
        _upload_forget(job)
    except ImportConflict:
        logger.info("import job %s is run by another worker", job_id)
    except FileUnreadable:
        pass  # on the job's row: the file itself is wrong, running it again cannot help
    except Exception:
        logger.exception("import job %s failed; it resumes at its checkpoint when run again", job_id)


def _upload_forget(job: ImportJob) -> None:
    """An uploaded file (kept under ``IMPORT_DIR``) is deleted once its job is done: it holds
    personal data the platform now holds where it belongs. A file named on the command line is
    the caller's and stays."""
    path = Path(job.path)
    if path.parent.resolve() == Path(settings.IMPORT_DIR).resolve():
        path.unlink(missing_ok=True)


def import_jobs_resume_stalled(*, now: datetime | None = None) -> list[int]:
    """Jobs to send to a worker again: queued ones not started within a minute (their nudge
    was lost), running ones that committed nothing for ``IMPORT_STALLED_SECONDS`` (their
    worker died; they resume at their checkpoint)."""
    now = now or timezone.now()
    queued = ImportJob.objects.filter(
        status=ImportJob.Status.QUEUED, created_at__lt=now - timedelta(seconds=60)
    ).values_list("pk", flat=True)
    stalled = ImportJob.objects.filter(
        status=ImportJob.Status.RUNNING,
        updated_at__lt=now - timedelta(seconds=settings.IMPORT_STALLED_SECONDS),
    ).values_list("pk", flat=True)
    return sorted({*queued, *stalled})
