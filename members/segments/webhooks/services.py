"""Writes of segment webhooks: subscriptions staff make, change and remove, their delivery
log, and the nudge that has a membership change delivered."""

from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from cdp.credentials import credential_new
from members.consent.selectors import purposes_declared
from members.consent.statements import ALL_MARKETING
from members.segments.models import Segment, SegmentChange, SegmentWebhook, WebhookDelivery
from members.segments.webhooks.signing import SECRET_KIND
from members.segments.webhooks.tasks import webhooks_deliver_enqueue
from members.segments.webhooks.transport import WebhookRefused, webhook_url_check

#: More would only multiply the calls one change costs; a tool fans out on its side.
MAX_WEBHOOKS_PER_SEGMENT = 10


def webhook_create(
    *,
    segment: Segment,
    url: str,
    changes: str = SegmentWebhook.Changes.BOTH,
    purpose: str = ALL_MARKETING,
    since: int | None = None,
    created_by: User | None = None,
) -> SegmentWebhook:
    """Subscribe ``url`` to the segment's changes, from after cursor ``since`` (default: the
    segment's latest change, so only what happens from now on), for ``purpose`` (a consent
    purpose, or ``marketing``: entries of members without consent to it are left out of
    deliveries). The secret is generated here; the caller shows it once."""
    webhook_url_check(url)
    _purpose_check(purpose)
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
                    purpose=purpose,
                    cursor=since,
                    secret=credential_new(kind=SECRET_KIND),
                    created_by=created_by if created_by is not None and created_by.is_authenticated else None,
                )
        except IntegrityError as error:  # the same URL added at the same moment
            raise WebhookRefused("url", "this segment already posts to this URL", status=409) from error
        webhooks_nudge([segment.pk])
    return webhook


def _purpose_check(purpose: str) -> None:
    if purposes_declared(purpose) is None:
        known = ", ".join([ALL_MARKETING, *settings.CONSENT_PURPOSES])
        raise WebhookRefused("purpose", f"one of {known}")


def webhook_update(
    *, webhook: SegmentWebhook, active: bool | None = None, url: str | None = None, changes: str | None = None,
    purpose: str | None = None,
) -> SegmentWebhook:  # fmt: skip
    """Turn a webhook on or off, or point it elsewhere, or change what it sends or its purpose.
    Turning it on starts afresh (failures and reason forgotten, the backlog from its cursor
    delivered at once); so does a new URL (a new receiver owes nothing for the old one's
    failures)."""
    if url is not None:
        webhook_url_check(url)
    if purpose is not None:
        _purpose_check(purpose)
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
        if purpose is not None:
            current.purpose = purpose
        if active is False and current.active:
            current.active = False
            current.disabled_reason = "turned off by staff"
        elif active is True and not current.active:
            current.active = True
            current.failures = 0
            current.next_attempt_at = None
            current.disabled_reason = ""
        current.save(update_fields=["url", "changes", "purpose", "active", "disabled_reason", "failures",
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


# --- the nudge after a membership change -------------------------------------------------------


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
        transaction.on_commit(lambda: webhooks_deliver_enqueue(webhook_ids))
