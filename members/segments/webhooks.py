"""Segment webhooks: a segment's entries and exits pushed to a marketing tool, signed, in
order, retried with backoff, logged.

A webhook is a cursor into the segment's changes feed (``SegmentChange``, whose id only
grows). A delivery claims the webhook (a lease on its row, so two workers never send the same
batch), reads the next changes after the cursor (one query), POSTs them as JSON signed with
the webhook's secret and, on a 2xx, moves the cursor past them. Nothing newer is sent before a
failed batch goes through: a failure leaves the cursor where it was and sets the next attempt
after an exponential backoff with jitter; ``WEBHOOK_MAX_FAILURES`` failures in a row (or a
``410 Gone``) disable the webhook until staff turn it on again. Every attempt is one
``WebhookDelivery`` row. No database transaction is open while the receiver is called.

Delivery is at least once: a worker that stalls past its lease can see its batch sent again by
another. Each change carries its cursor, so a receiver that remembers the highest it applied
drops a repeat.

A change committed after one with a higher id must not be overtaken: the cursor would move
past it for good. So a delivery only sends changes up to the highest id committed when it
claimed, after every transaction that was writing the feed then has ended (they hold a lock
on its table from before they take an id until they commit).

The member refresh nudges the webhooks of the segments whose membership it changed
(``webhooks_nudge``, on commit); beat sweeps every ``WEBHOOK_SWEEP_INTERVAL_SECONDS`` for
retries that fell due and nudges that were lost.
"""

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cdp.credentials import credential_new
from members.segments.models import Segment, SegmentChange, SegmentWebhook, WebhookDelivery
from members.segments.selectors import FEED_WRITERS, feed_writers_finished

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CDP-Signature"
DELIVERY_HEADER = "X-CDP-Delivery"
USER_AGENT = "CDP-Webhooks/1.0"
SECRET_KIND = "whsec"  # noqa: S105 - the prefix of a secret, not one
#: More would only multiply the calls one change costs; a tool fans out on its side.
MAX_WEBHOOKS_PER_SEGMENT = 10
#: How long a delivery waits for the transactions that were writing the feed when it claimed.
SETTLE_WAIT_SECONDS = 5.0
#: Batches one run delivers before handing the rest to a fresh task (fair to other webhooks).
BATCHES_PER_RUN = 20
_RESPONSE_EXCERPT_BYTES = 500
_TLS = ssl.create_default_context()


# --- signing, backoff, addresses (pure) ---------------------------------------------------------


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-CDP-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
    ``"<t>." + body`` under the secret (as Stripe does: the time is signed, so a captured
    delivery cannot be replayed later than the receiver's tolerance)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def webhook_backoff_seconds(*, failures: int, base: float, cap: float, jitter: float) -> float:
    """How long to wait after the ``failures``-th failure in a row: doubling from ``base`` up to
    ``cap``, less up to half of it (``jitter`` in [0, 1)), so receivers that fail together are
    not retried together."""
    nominal = min(cap, base * 2 ** min(failures - 1, 62))
    return nominal * (1 - jitter / 2)


class WebhookRefused(Exception):
    """A webhook that cannot be made as asked: which field, why, and the HTTP status to say it."""

    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.status = status


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def webhook_url_check(url: str) -> str:
    """The URL as given if a webhook may post to it: http or https, a host, no credentials (the
    signature authenticates us) and, unless ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES``, no private,
    loopback or reserved address. Names are resolved, and checked again, at each delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused("url", "must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("url", "must not hold credentials; receivers check the signature instead")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as error:
        raise WebhookRefused("url", f"bad port: {error}") from error
    host = parts.hostname or ""
    if not host:
        raise WebhookRefused("url", "has no host")
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        try:
            private = not _public(host)
        except ValueError:  # a name, not an address
            private = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
        if private:
            raise WebhookRefused("url", "must be a public address (private and loopback ones are refused)")
    return url


def _addresses_for(host: str, port: int) -> list[str]:
    """The addresses to connect to, resolved once and vetted (a second lookup at connect time
    could answer differently: DNS rebinding)."""
    found = list(
        dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    )
    if not found:
        raise OSError(f"{host} has no address")
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        inside = [address for address in found if not _public(address)]
        if inside:
            raise WebhookRefused("url", f"{host} resolves to a non-public address ({inside[0]})")
    return found


# --- HTTP ------------------------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address vetted beforehand, whatever the name resolves to now."""

    def __init__(self, host: str, port: int, *, addresses: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses
        self.aborted = False

    def connect(self) -> None:
        """The first of the vetted addresses that answers (an IPv6 one may not)."""
        refused: OSError | None = None
        for address in self._addresses:
            try:
                self.sock = socket.create_connection((address, self.port), self.timeout)
            except OSError as error:
                refused = error
                continue
            return
        raise refused or OSError("no address")

    def abort(self) -> None:
        """Cut the connection from another thread: a receiver trickling its answer byte by byte
        would otherwise outlast every per-read timeout."""
        self.aborted = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        super().connect()
        self.sock = _TLS.wrap_socket(self.sock, server_hostname=self.host)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a receiver said: its status and the start of its body, or why there was no answer."""

    status_code: int | None
    response: str = ""
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else self.error


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    """POST once, within ``timeout`` seconds in all; never follows a redirect (its target was
    never checked) and never raises."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (http.client.HTTPS_PORT if secure else http.client.HTTP_PORT)
    try:
        addresses = _addresses_for(host, port)
    except WebhookRefused as refused:
        return Answer(None, error=f"refused: {refused.reason}")
    except (OSError, UnicodeError) as error:
        return Answer(None, error=f"cannot resolve {host}: {error}")
    kind = _PinnedHTTPSConnection if secure else _PinnedHTTPConnection
    conn = kind(host, port, addresses=addresses, timeout=timeout)
    watchdog = threading.Timer(timeout, conn.abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers)
        answer = conn.getresponse()
        excerpt = answer.read(_RESPONSE_EXCERPT_BYTES).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException, ValueError) as error:
        if conn.aborted or isinstance(error, TimeoutError):
            return Answer(None, error=f"timed out after {timeout:g} s")
        return Answer(None, error=f"{type(error).__name__}: {error}"[:500])
    finally:
        watchdog.cancel()
        conn.close()
    if 300 <= answer.status < 400:
        return Answer(answer.status, excerpt, error="redirects are not followed")
    return Answer(answer.status, excerpt)


# --- subscriptions --------------------------------------------------------------------------


def webhook_create(
    *,
    segment: Segment,
    url: str,
    changes: str = SegmentWebhook.Changes.BOTH,
    since: int | None = None,
    created_by: AbstractBaseUser | None = None,
) -> SegmentWebhook:
    """Subscribe ``url`` to the segment's changes, from after cursor ``since`` (default: the
    segment's latest change, so only what happens from now on). The secret is generated here;
    the caller shows it once."""
    webhook_url_check(url)
    latest = SegmentChange.objects.order_by("-id").values_list("id", flat=True).first() or 0
    if since is not None and since > latest:
        raise WebhookRefused("since", f"beyond the latest change ({latest})")
    with transaction.atomic():
        # Serializes creations on one segment, so two at once cannot both pass the limit.
        Segment.objects.select_for_update().filter(pk=segment.pk).first()
        if SegmentWebhook.objects.filter(segment=segment).count() >= MAX_WEBHOOKS_PER_SEGMENT:
            raise WebhookRefused(
                "segment", f"a segment has at most {MAX_WEBHOOKS_PER_SEGMENT} webhooks", status=409
            )
        taken = SegmentWebhook.objects.filter(segment=segment, url=url).values_list("pk", flat=True).first()
        if taken is not None:
            raise WebhookRefused(
                "url", f"this segment already posts to this URL (webhook {taken})", status=409
            )
        if since is None:
            since = (
                SegmentChange.objects.filter(segment=segment)
                .order_by("-id")
                .values_list("id", flat=True)
                .first()
                or 0
            )
        try:
            with transaction.atomic():
                webhook = SegmentWebhook.objects.create(
                    segment=segment,
                    url=url,
                    changes=changes,
                    cursor=since,
                    secret=credential_new(kind=SECRET_KIND),
                    created_by=created_by if created_by is not None and created_by.is_authenticated else None,
                )
        except IntegrityError as error:  # the same URL added at the same moment
            raise WebhookRefused("url", "this segment already posts to this URL", status=409) from error
        webhooks_nudge([segment.pk])
    return webhook


def webhook_update(
    *, webhook: SegmentWebhook, active: bool | None = None, url: str | None = None, changes: str | None = None
) -> SegmentWebhook:
    """Turn a webhook on or off, or point it elsewhere. Turning it on starts afresh (failures
    and reason forgotten, the backlog from its cursor delivered at once); so does a new URL (a
    new receiver owes nothing for the old one's failures)."""
    if url is not None:
        webhook_url_check(url)
    with transaction.atomic():
        current = SegmentWebhook.objects.select_for_update().get(pk=webhook.pk)
        if url is not None and url != current.url:
            if SegmentWebhook.objects.filter(segment_id=current.segment_id, url=url).exists():
                raise WebhookRefused("url", "this segment already posts to this URL", status=409)
            current.url = url
            current.failures = 0
            current.next_attempt_at = None
        if changes is not None:
            current.changes = changes
        if active is False and current.active:
            current.active = False
            current.disabled_reason = "turned off by staff"
        elif active is True and not current.active:
            current.active = True
            current.failures = 0
            current.next_attempt_at = None
            current.disabled_reason = ""
        current.save(update_fields=["url", "changes", "active", "disabled_reason", "failures",
                                    "next_attempt_at", "updated_at"])  # fmt: skip
        if current.active:
            webhooks_nudge([current.segment_id])
    return current


def webhook_delete(*, webhook: SegmentWebhook) -> None:
    """Unsubscribe; its delivery log goes with it. A delivery in flight finishes unrecorded."""
    SegmentWebhook.objects.filter(pk=webhook.pk).delete()


def webhook_deliveries(*, webhook: SegmentWebhook, before: int | None, size: int) -> list[WebhookDelivery]:
    """The webhook's delivery attempts, newest first, with ids below ``before``."""
    rows = WebhookDelivery.objects.filter(webhook=webhook)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    return list(rows.order_by("-pk")[:size])


# --- delivery -------------------------------------------------------------------------------

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
    w.url, w.secret, w.changes, w.cursor, w.failures,
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
        .values_list("id", "member_id", "change", "at")[: settings.WEBHOOK_BATCH_SIZE]
    )
    # A short batch holds everything of this webhook up to the horizon, so the cursor may skip
    # to it (past other segments' changes and unwanted kinds, which later reads need not walk).
    next_cursor = rows[-1][0] if len(rows) == settings.WEBHOOK_BATCH_SIZE else claim.horizon
    if not rows:  # gone since the claim (a member erased)
        _finish(claim, now, next_cursor=next_cursor, delivery=None, answer=None)
        return Outcome.IDLE
    delivery_id = uuid.uuid4()
    body = orjson.dumps({
        "delivery_id": str(delivery_id),
        "webhook_id": claim.webhook_id,
        "segment": claim.segment_key,
        "changes": [{"cursor": pk, "member_id": member, "change": change, "at": at}
                    for pk, member, change, at in rows],
        "next_cursor": next_cursor,
    })  # fmt: skip
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: str(delivery_id),
        SIGNATURE_HEADER: webhook_signature(secret=claim.secret, timestamp=int(now.timestamp()), body=body),
    }
    began = time.monotonic()
    answer = _post(claim.url, body, headers, timeout)
    delivery = WebhookDelivery(
        delivery_id=delivery_id,
        first_cursor=rows[0][0],
        last_cursor=rows[-1][0],
        count=len(rows),
        attempt=claim.failures + 1,
        status_code=answer.status_code,
        response=answer.response,
        error=answer.error[:500],
        duration_ms=round((time.monotonic() - began) * 1000),
        at=now,
        succeeded=answer.succeeded,
    )
    _finish(claim, now, next_cursor=next_cursor, delivery=delivery, answer=answer)
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
    segment_id, key, url, secret, changes, cursor_at, failures, horizon, writers = row
    return _Claim(webhook_id, lease, segment_id, key, url, secret, changes, cursor_at, failures, horizon or 0,
                  tuple(writers))  # fmt: skip


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


# --- nudges and the sweep ---------------------------------------------------------------------


def webhooks_nudge(segment_ids: Iterable[int]) -> None:
    """Deliver the changes just appended to these segments' feeds once the caller's
    transaction commits: one indexed query, nothing enqueued when no webhook listens (or all
    wait out a backoff). Call it in the transaction that appended the changes."""
    ids = sorted(set(segment_ids))
    if not ids:
        return
    now = timezone.now()
    webhook_ids = list(
        SegmentWebhook.objects.filter(segment_id__in=ids, active=True)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .values_list("pk", flat=True)
    )
    if webhook_ids:
        from members.segments.tasks import webhooks_deliver_enqueue  # (a cycle: tasks import this module)

        transaction.on_commit(lambda: webhooks_deliver_enqueue(webhook_ids))


def webhooks_due(*, now: datetime | None = None) -> list[int]:
    """Ids of the webhooks that have changes to deliver now (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(_DUE_IDS, {"now": now or timezone.now()})
        return [pk for (pk,) in cursor.fetchall()]


def webhook_deliveries_prune(*, now: datetime | None = None, limit: int = 10_000) -> int:
    """Forget delivery attempts older than ``WEBHOOK_DELIVERY_LOG_DAYS``, ``limit`` at a time."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_DELIVERY_LOG_DAYS)
    old = list(WebhookDelivery.objects.filter(at__lt=cutoff).values_list("pk", flat=True)[:limit])
    if old:
        WebhookDelivery.objects.filter(pk__in=old).delete()
    return len(old)
