"""Delivering a webhook: claim it (a lease on its row), send the next batch of its segment's
changes after its cursor, then move the cursor past them or back off; and the sweep's
queries (what is due, the log to forget). See the package docstring for the guarantees."""

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from cdp.metrics import WEBHOOK_DELIVERIES, WEBHOOKS_DISABLED
from members.consent.selectors import purposes_declared
from members.consent.statements import NO_CONSENT
from members.segments.models import Segment, SegmentChange, SegmentWebhook, WebhookDelivery
from members.segments.selectors import FEED_WRITERS, changes_consented, feed_writers_finished
from members.segments.webhooks.signing import SIGNATURE_HEADER, webhook_signature
from members.segments.webhooks.transport import Answer, webhook_post

logger = logging.getLogger(__name__)

DELIVERY_HEADER = "X-CDP-Delivery"
USER_AGENT = "CDP-Webhooks/1.0"
#: How long a delivery waits for the transactions that were writing the feed when it claimed.
SETTLE_WAIT_SECONDS = 5.0
#: Batches one run delivers before handing the rest to a fresh task (fair to other webhooks).
BATCHES_PER_RUN = 20


def webhook_backoff_seconds(*, failures: int, base: float, cap: float, jitter: float) -> float:
    """How long to wait after the ``failures``-th failure in a row: doubling from ``base`` up to
    ``cap``, less up to half of it (``jitter`` in [0, 1)), so receivers that fail together are
    not retried together."""
    nominal = min(cap, base * 2 ** min(failures - 1, 62))
    return nominal * (1 - jitter / 2)


_FEED = SegmentChange._meta.db_table
_WEBHOOKS = SegmentWebhook._meta.db_table
#: A webhook that may be delivered now: on, not waiting out a backoff, not claimed by a
#: live worker, with a change of the kinds it wants after its cursor.
_DUE = f"""
    w.active
    AND (w.next_attempt_at IS NULL OR w.next_attempt_at <= %(now)s)
    AND (w.leased_until IS NULL OR w.leased_until <= %(now)s)
    AND EXISTS (SELECT 1 FROM {_FEED} AS c WHERE c.segment_id = w.segment_id AND c.id > w.cursor
                AND (w.changes = 'both' OR c.change = w.changes))
"""  # noqa: S608 - table names from the models
_CLAIM = f"""
UPDATE {_WEBHOOKS} AS w SET leased_until = %(until)s, lease = %(lease)s
WHERE w.id = %(id)s AND {_DUE}
RETURNING w.segment_id, (SELECT s.key FROM {Segment._meta.db_table} AS s WHERE s.id = w.segment_id),
    w.url, w.secret, w.changes, w.purpose, w.cursor, w.failures,
    (SELECT max(c.id) FROM {_FEED} AS c), ARRAY({FEED_WRITERS})
"""  # noqa: S608
_DUE_IDS = f"SELECT w.id FROM {_WEBHOOKS} AS w WHERE {_DUE} ORDER BY w.id"  # noqa: S608


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    IDLE = "idle"  # nothing to send now, or another worker is sending
    WAITING = "waiting"  # writers of the feed did not finish within SETTLE_WAIT_SECONDS


@dataclass(frozen=True, slots=True)
class _Claim:
    webhook_id: int
    lease: uuid.UUID
    segment_id: int
    segment_key: str
    url: str
    secret: str
    changes: str
    purpose: str
    cursor: int
    failures: int
    horizon: int  # the highest change id committed when claimed
    writers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    batches: int
    outcome: Outcome


def webhook_deliver(
    *, webhook_id: int, now: datetime | None = None, max_batches: int = BATCHES_PER_RUN
) -> DeliveryRun:
    """Deliver the webhook's pending changes a batch at a time until none is left, one fails,
    or ``max_batches`` went through (``outcome`` DELIVERED then: there may be more)."""
    batches = 0
    outcome = Outcome.IDLE
    while batches < max_batches:
        outcome = _deliver_batch(webhook_id, now or timezone.now())
        if outcome is not Outcome.DELIVERED:
            break
        batches += 1
    return DeliveryRun(batches, outcome)


def _deliver_batch(webhook_id: int, now: datetime) -> Outcome:
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    claim = _claim_settled(webhook_id, now, lease_seconds=timeout + SETTLE_WAIT_SECONDS + 60)
    if not isinstance(claim, _Claim):
        return claim
    rows = list(
        SegmentChange.objects.filter(segment_id=claim.segment_id, id__gt=claim.cursor, id__lte=claim.horizon)
        .filter(Q() if claim.changes == SegmentWebhook.Changes.BOTH else Q(change=claim.changes))
        .order_by("id")
        .values_list("id", "member_id", "change", "purpose", "reason", "at")[: settings.WEBHOOK_BATCH_SIZE]
    )
    # A short batch holds everything of this webhook up to the horizon, so the cursor may skip
    # to it (past other segments' changes and unwanted kinds, which later reads need not walk).
    next_cursor = rows[-1][0] if len(rows) == settings.WEBHOOK_BATCH_SIZE else claim.horizon
    if not rows:  # gone since the claim (a member erased)
        _finish(claim, now, next_cursor=next_cursor, delivery=None, answer=None)
        return Outcome.IDLE
    sent, not_consented = changes_consented(rows, purposes=purposes_declared(claim.purpose), at=now)
    if not sent and not not_consented:  # only consent changes of purposes this webhook does not declare
        _finish(claim, now, next_cursor=next_cursor, delivery=None, answer=None)
        return Outcome.DELIVERED if len(rows) == settings.WEBHOOK_BATCH_SIZE else Outcome.IDLE
    withheld = {NO_CONSENT: not_consented}
    delivery_id = uuid.uuid4()
    body = orjson.dumps({
        "delivery_id": str(delivery_id),
        "webhook_id": claim.webhook_id,
        "segment": claim.segment_key,
        "purpose": claim.purpose,
        "changes": [{"cursor": pk, "member_id": member, "change": change, "at": at,
                     **({"reason": reason} if reason else {}), **({"purpose": purpose} if purpose else {})}
                    for pk, member, change, purpose, reason, at in sent],
        "withheld": withheld,
        "next_cursor": next_cursor,
    })  # fmt: skip
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: str(delivery_id),
        SIGNATURE_HEADER: webhook_signature(secret=claim.secret, timestamp=int(now.timestamp()), body=body),
    }
    began = time.monotonic()
    answer = webhook_post(claim.url, body, headers, timeout)
    delivery = WebhookDelivery(
        delivery_id=delivery_id,
        first_cursor=rows[0][0],
        last_cursor=rows[-1][0],
        count=len(sent),
        withheld=withheld,
        attempt=claim.failures + 1,
        status_code=answer.status_code,
        response=answer.response,
        error=answer.error[:500],
        duration_ms=round((time.monotonic() - began) * 1000),
        at=now,
        succeeded=answer.succeeded,
    )
    _finish(claim, now, next_cursor=next_cursor, delivery=delivery, answer=answer)
    WEBHOOK_DELIVERIES.labels("ok" if answer.succeeded else "failed").inc()
    return Outcome.DELIVERED if answer.succeeded else Outcome.FAILED


def _claim(webhook_id: int, now: datetime, *, lease_seconds: float) -> _Claim | None:
    """Lease the webhook if it is due (one statement: a second worker finds it leased), with
    the feed's highest committed id and who is writing the feed at that moment."""
    lease = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM,
            {"id": webhook_id, "now": now, "until": now + timedelta(seconds=lease_seconds), "lease": lease},
        )
        row = cursor.fetchone()
    if row is None:
        return None
    segment_id, key, url, secret, changes, purpose, cursor_at, failures, horizon, writers = row
    return _Claim(webhook_id, lease, segment_id, key, url, secret, changes, purpose, cursor_at, failures,
                  horizon or 0, tuple(writers))  # fmt: skip


def _claim_settled(webhook_id: int, now: datetime, *, lease_seconds: float) -> _Claim | Outcome:
    """Claim the webhook once the transactions writing the feed at the claim have ended, or say
    why not (IDLE: nothing due or another worker has it; WAITING: the writers went on)."""
    for _ in range(3):
        claim = _claim(webhook_id, now, lease_seconds=lease_seconds)
        if claim is None:
            return Outcome.IDLE
        if not claim.writers or feed_writers_finished(claim.writers, wait=SETTLE_WAIT_SECONDS):
            return claim
        _release(claim)
        if not feed_writers_finished(claim.writers, wait=0):
            # Each writer nudges when it commits, and the webhook is no longer ours: it will be
            # delivered then (or by the sweep).
            break
        # They ended as we let go: nobody else may have noticed, so claim again.
    logger.info("Webhook %s waits for the writers of the feed to commit", webhook_id)
    return Outcome.WAITING


def _release(claim: _Claim) -> None:
    SegmentWebhook.objects.filter(pk=claim.webhook_id, lease=claim.lease).update(
        lease=None, leased_until=None
    )


def _finish(
    claim: _Claim, now: datetime, *, next_cursor: int, delivery: WebhookDelivery | None, answer: Answer | None
) -> None:
    """Record the attempt and move the webhook on: past the batch on success, to its next
    attempt (or off) on failure; then release it. A worker whose lease was taken over records
    its attempt and changes nothing else."""
    with transaction.atomic():
        webhook = SegmentWebhook.objects.select_for_update().filter(pk=claim.webhook_id).first()
        if webhook is None:
            return
        if delivery is not None:
            delivery.webhook = webhook
            delivery.save(force_insert=True)
        if webhook.lease != claim.lease:
            logger.warning(
                "Webhook %s: lease lost during delivery %s", webhook.pk, delivery and delivery.delivery_id
            )
            return
        webhook.lease = None
        webhook.leased_until = None
        was_active = webhook.active
        if answer is None or answer.succeeded:
            webhook.cursor = next_cursor
            webhook.failures = 0
            webhook.next_attempt_at = None
            if answer is not None:
                webhook.last_success_at = now
        elif webhook.active:  # (staff may have turned it off meanwhile: nothing to count then)
            webhook.failures += 1
            if answer.status_code == 410:
                webhook.active = False
                webhook.disabled_reason = "the receiver answered 410 Gone"
            elif webhook.failures >= settings.WEBHOOK_MAX_FAILURES:
                webhook.active = False
                webhook.disabled_reason = (
                    f"{webhook.failures} failed deliveries in a row; the last: {answer.describe()}"[:300]
                )
            else:
                delay = webhook_backoff_seconds(
                    failures=webhook.failures,
                    base=settings.WEBHOOK_RETRY_BASE_SECONDS,
                    cap=settings.WEBHOOK_RETRY_CAP_SECONDS,
                    jitter=random.random(),  # noqa: S311 - spreads retries, guards nothing
                )
                webhook.next_attempt_at = now + timedelta(seconds=delay)
        webhook.save(update_fields=["lease", "leased_until", "cursor", "failures", "next_attempt_at", "last_success_at",
                                    "active", "disabled_reason", "updated_at"])  # fmt: skip
        if was_active and not webhook.active:
            WEBHOOKS_DISABLED.inc()


def webhooks_due(*, now: datetime | None = None) -> list[int]:
    """Ids of the webhooks that have changes to deliver now (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_DUE_IDS, {"now": now or timezone.now()})
        return [pk for (pk,) in cursor.fetchall()]


def webhook_deliveries_prune(*, now: datetime | None = None, limit: int = 10_000) -> int:
    """Forget delivery attempts older than ``WEBHOOK_DELIVERY_LOG_DAYS``, ``limit`` at a time."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_DELIVERY_LOG_DAYS)
    return webhook_deliveries_expire(before=cutoff, limit=limit, dry_run=False)


def webhook_deliveries_expire(*, before: datetime, limit: int, dry_run: bool) -> int:
    """Delete up to ``limit`` delivery attempts made before ``before`` (``dry_run``: count all
    of them, delete nothing); returns how many (retention, ``members.privacy.retention``)."""
    old = WebhookDelivery.objects.filter(at__lt=before)
    if dry_run:
        return old.count()
    ids = list(old.values_list("pk", flat=True)[:limit])
    if ids:
        WebhookDelivery.objects.filter(pk__in=ids).delete()
    return len(ids)
