"""Erasure in tags and segments: the erased person leaves every tag and segment, with exits
marked ``erased`` in the changes feed and the webhooks, so the tools syncing them drop the
person too; and the webhook delivery log loses the person's values where a receiver's answer
or an error echoed them."""

from datetime import datetime

from django.db.models import Q

from cdp.redaction import Redactor
from members.segments.evaluate import memberships_erase
from members.segments.models import WebhookDelivery
from members.segments.webhooks.services import webhooks_nudge


def segments_forget(*, member_ids: set[int], now: datetime) -> dict[str, int]:
    """In the erasure's transaction: out of every tag and segment; the segments' webhooks are
    nudged once it commits. Returns counts."""
    changed, counts = memberships_erase(member_ids=member_ids, now=now)
    webhooks_nudge(changed)
    return counts


def webhook_log_redact(*, redactor: Redactor) -> int:
    """The person's values out of the delivery log (what receivers answered, errors). The
    deliveries carry member ids and changes, never personal data; a receiver may echo some.
    Returns how many attempts changed."""
    if not redactor:
        return 0
    mentioning = Q()
    for form in redactor.forms:  # the literal forms find the rows (an index-free pass, bounded by
        mentioning |= Q(response__icontains=form) | Q(error__icontains=form)  # the log's retention)
    changed = 0
    for delivery in WebhookDelivery.objects.filter(mentioning).only("pk", "response", "error"):
        response, error = redactor.text(delivery.response), redactor.text(delivery.error)
        if (response, error) != (delivery.response, delivery.error):
            WebhookDelivery.objects.filter(pk=delivery.pk).update(response=response[:500], error=error[:500])
            changed += 1
    return changed
