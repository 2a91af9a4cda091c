"""Signing a webhook delivery (pure): receivers verify the body and its time with the
webhook's secret."""

import hashlib
import hmac

SIGNATURE_HEADER = "X-CDP-Signature"
SECRET_KIND = "whsec"  # noqa: S105 - the prefix of a secret, not one


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-CDP-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
    ``"<t>." + body`` under the secret (as Stripe does: the time is signed, so a captured
    delivery cannot be replayed later than the receiver's tolerance)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
