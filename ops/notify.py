"""Telling people: a chat robot's webhook (Slack-compatible, WeCom, DingTalk JSON) or an email.

Webhooks go out through the segment webhooks' transport (``members.segments.webhooks``): the
same vetting of where they may post (no private or reserved address unless
``WEBHOOK_ALLOW_PRIVATE_ADDRESSES``, pinned to the vetted address, no redirects, one timeout),
and, with a secret, the same ``X-CDP-Signature`` (HMAC-SHA256 of time and body). DingTalk robots
check their own signature instead, in the URL (``timestamp`` and ``sign``), which is added too.
"""

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote_plus

import orjson
from django.conf import settings
from django.core.mail import send_mail

from members.segments.webhooks.signing import SIGNATURE_HEADER, webhook_signature
from members.segments.webhooks.transport import webhook_post
from ops.models import NotifyTarget

USER_AGENT = "cdp-alerts/1"


@dataclass(frozen=True, slots=True)
class Message:
    title: str  # "[RED] Pipeline backlog: pipeline"
    text: str  # the lines under it


def webhook_body(flavor: str, message: Message) -> bytes:
    if flavor == NotifyTarget.Flavor.WECOM:
        payload: dict = {
            "msgtype": "markdown",
            "markdown": {"content": f"**{message.title}**\n{message.text}"},
        }
    elif flavor == NotifyTarget.Flavor.DINGTALK:
        payload = {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": f"### {message.title}\n{message.text}"},
        }
    else:
        payload = {"text": f"*{message.title}*\n{message.text}"}
    return orjson.dumps(payload)


def dingtalk_signed_url(url: str, secret: str, now_ms: int) -> str:
    """DingTalk's robot signature: ``timestamp`` (ms) and ``sign`` = base64 HMAC-SHA256 of
    ``"<timestamp>\\n<secret>"`` under the secret, URL-encoded."""
    mac = hmac.new(secret.encode(), f"{now_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return f"{url}{'&' if '?' in url else '?'}timestamp={now_ms}&sign={quote_plus(base64.b64encode(mac))}"


def notify(target: NotifyTarget, message: Message) -> str:
    """Send; returns '' when the target took it, else why not (never raises)."""
    if target.kind == NotifyTarget.Kind.EMAIL:
        try:
            send_mail(message.title, message.text, settings.DEFAULT_FROM_EMAIL, [target.email])
        except (OSError, ValueError) as exc:  # SMTP errors are OSErrors
            return f"{type(exc).__name__}: {exc}"[:500]
        return ""
    body = webhook_body(target.flavor, message)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    url = target.url
    if target.secret:
        headers[SIGNATURE_HEADER] = webhook_signature(
            secret=target.secret, timestamp=int(time.time()), body=body
        )
        if target.flavor == NotifyTarget.Flavor.DINGTALK:
            url = dingtalk_signed_url(url, target.secret, int(time.time() * 1000))
    answer = webhook_post(url, body, headers, float(settings.WEBHOOK_TIMEOUT_SECONDS))
    return "" if answer.succeeded else answer.describe()[:500]
