"""Retention: each class of data is kept for its period (settings, in days; 0: until erased),
then deleted or stripped, in batches, by the app that owns it.

| data class | setting | past its period |
|---|---|---|
| raw event payloads | ``RETENTION_EVENT_PAYLOAD_DAYS`` | stripped: context and personal properties go; ids and traits stay (the profile is rebuilt from them) |
| refused events | ``RETENTION_REJECTED_EVENT_DAYS`` | deleted |
| webhook delivery logs | ``WEBHOOK_DELIVERY_LOG_DAYS`` | deleted |
| audit entries | ``RETENTION_AUDIT_DAYS`` | deleted |
| anonymous-only members with no activity | ``RETENTION_ANONYMOUS_MEMBER_DAYS`` | erased (as a person's request, without blocking their ids) |

``retention_apply`` runs every class in batches of ``RETENTION_BATCH_SIZE``, each batch its own
transaction, logging its progress (the log and the counts are kept in ``RetentionRun``).
``dry_run`` counts what is due and changes nothing (``manage.py apply_retention --dry-run``).
Beat runs it nightly (``config.celery``). Each batch is idempotent: a run stopped half-way is
finished by the next one.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cdp.services import audit_entries_expire
from events.erasure import event_payloads_expire, rejected_events_expire
from identity.selectors import anonymous_members_inactive
from members.privacy.models import PrivacyRequest, RetentionCursor, RetentionRun
from members.privacy.services import member_erase
from members.segments.webhooks.delivery import webhook_deliveries_expire

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataClass:
    """A class of data with a retention period (days; 0 keeps it) and how to expire one batch:
    ``expire(cutoff, limit, dry_run, after)`` returns (rows done, the id to go on after; None:
    nothing more is due)."""

    name: str
    label: str
    days: Callable[[], int]
    expire: Callable[[datetime, int, bool, int], tuple[int, int | None]]


def _payloads(cutoff: datetime, limit: int, dry_run: bool, after: int) -> tuple[int, int | None]:
    return event_payloads_expire(received_before=cutoff, after_id=after, limit=limit, dry_run=dry_run)


def _rejected(cutoff: datetime, limit: int, dry_run: bool, after: int) -> tuple[int, int | None]:
    done = rejected_events_expire(received_before=cutoff, limit=limit, dry_run=dry_run)
    return done, None if done < limit or dry_run else 0


def _deliveries(cutoff: datetime, limit: int, dry_run: bool, after: int) -> tuple[int, int | None]:
    done = webhook_deliveries_expire(before=cutoff, limit=limit, dry_run=dry_run)
    return done, None if done < limit or dry_run else 0


def _audit(cutoff: datetime, limit: int, dry_run: bool, after: int) -> tuple[int, int | None]:
    done = audit_entries_expire(before=cutoff, limit=limit, dry_run=dry_run)
    return done, None if done < limit or dry_run else 0


#: Anonymous members erased per transaction: one, so that each takes its locks (the identity
#: lock, then its members and those whose events mentioned it, by id) in the platform's one
#: order, as a person's erasure does.
ANONYMOUS_BATCH = 1


def _anonymous(cutoff: datetime, limit: int, dry_run: bool, after: int) -> tuple[int, int | None]:
    members = anonymous_members_inactive(
        last_event_before=cutoff,
        types=settings.RETENTION_ANONYMOUS_TYPES,
        after_id=after,
        limit=limit if dry_run else min(limit, ANONYMOUS_BATCH),
    )
    if not members:
        return 0, None
    if not dry_run:
        for member_id in members:
            request = PrivacyRequest.objects.create(
                kind=PrivacyRequest.Kind.RETENTION,
                member_id=member_id,
                reference=f"no activity since {cutoff:%Y-%m-%d}",
            )
            counts = member_erase(member_id=member_id, erasure_id=request.pk, block=False)
            request.status = (
                PrivacyRequest.Status.DONE if counts is not None else PrivacyRequest.Status.FAILED
            )
            request.counts, request.done_at = counts or {}, timezone.now()
            request.save(update_fields=["status", "counts", "done_at"])
    return len(members), members[-1]


DATA_CLASSES: tuple[DataClass, ...] = (
    DataClass("event_payloads", "raw event payloads (stripped)", lambda: settings.RETENTION_EVENT_PAYLOAD_DAYS, _payloads),
    DataClass("rejected_events", "refused events (deleted)", lambda: settings.RETENTION_REJECTED_EVENT_DAYS, _rejected),
    DataClass("webhook_deliveries", "webhook delivery logs (deleted)", lambda: settings.WEBHOOK_DELIVERY_LOG_DAYS, _deliveries),
    DataClass("audit_entries", "audit entries (deleted)", lambda: settings.RETENTION_AUDIT_DAYS, _audit),
    DataClass(
        "anonymous_members", "anonymous-only members with no activity (erased)",
        lambda: settings.RETENTION_ANONYMOUS_MEMBER_DAYS, _anonymous,
    ),
)  # fmt: skip
#: The progress log says how far a class got at its first batch and every this many rows.
PROGRESS_EVERY = 100
#: Classes whose walk goes on from where the last run stopped (by id): the others delete what
#: they did, so they start from the oldest every time.
_RESUMED = frozenset({"event_payloads"})


def retention_apply(
    *, dry_run: bool = False, now: datetime | None = None, batch_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> RetentionRun:  # fmt: skip
    """Apply every class's period (see the module's docstring); returns the run, with its counts
    and progress log."""
    now = now or timezone.now()
    size = batch_size or settings.RETENTION_BATCH_SIZE
    run = RetentionRun.objects.create(dry_run=dry_run)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(f"{timezone.now():%H:%M:%S} {line}")
        logger.info("Retention%s: %s", " (dry run)" if dry_run else "", line)
        if log is not None:
            log(line)

    for data_class in DATA_CLASSES:
        days = data_class.days()
        if days <= 0:
            say(f"{data_class.label}: kept (no period set)")
            continue
        cutoff = now - timedelta(days=days)
        total = _class_apply(data_class, cutoff, size, dry_run, say)
        run.counts[data_class.name] = total
        say(
            f"{data_class.label}: {total:,} {'due' if dry_run else 'done'} (older than {cutoff:%Y-%m-%d %H:%M} UTC)"
        )
        run.log = "\n".join(lines)
        run.save(update_fields=["counts", "log"])
    run.finished_at = timezone.now()
    run.log = "\n".join(lines)
    run.save(update_fields=["counts", "log", "finished_at"])
    return run


def _class_apply(
    data_class: DataClass, cutoff: datetime, size: int, dry_run: bool, say: Callable[[str], None]
) -> int:
    resumed = data_class.name in _RESUMED
    after = (
        RetentionCursor.objects.filter(data_class=data_class.name).values_list("last_id", flat=True).first() or 0
        if resumed else 0
    )  # fmt: skip
    total = 0
    while True:
        with transaction.atomic():
            done, last = data_class.expire(cutoff, size, dry_run, after)
            if resumed and last is not None and not dry_run:
                RetentionCursor.objects.update_or_create(
                    data_class=data_class.name, defaults={"last_id": last}
                )
        if done and (total == 0 or (total + done) // PROGRESS_EVERY > total // PROGRESS_EVERY):
            say(f"{data_class.label}: {total + done:,} so far")
        total += done
        if last is None or not done:
            return total
        after = last
