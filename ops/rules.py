"""Checks on what staff write (admin, API, console): a rule names a registered condition with
parameters that are a JSON object; a webhook target's URL is one a webhook may post to (the
segment webhooks' vetting: no private or reserved address unless allowed)."""

from django.core.exceptions import ValidationError

from members.segments.webhooks.transport import WebhookRefused, webhook_url_check
from ops.conditions import conditions
from ops.models import NotifyTarget


def rule_check(*, condition: str, params: object) -> None:
    """Raises ``ValidationError`` naming the field."""
    known = conditions()
    if condition not in known:
        raise ValidationError({"condition": f"one of {', '.join(sorted(known))}"})
    if not isinstance(params, dict):
        raise ValidationError({"params": "a JSON object of the condition's parameters"})


def target_check(*, kind: str, url: str, email: str) -> None:
    if kind == NotifyTarget.Kind.WEBHOOK:
        if not url:
            raise ValidationError({"url": "a webhook target needs its URL"})
        try:
            webhook_url_check(url)
        except WebhookRefused as refused:
            raise ValidationError({"url": refused.reason}) from refused
    elif kind == NotifyTarget.Kind.EMAIL and not email:
        raise ValidationError({"email": "an email target needs its address"})
