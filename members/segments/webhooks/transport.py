"""Where a webhook may post, and posting there: URLs and the addresses their names resolve to
are vetted (``addresses``: no private, loopback or reserved address, nor an IPv6 form
carrying one, unless ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES``) when a webhook is made or changed
and again at each delivery, and the connection goes to the vetted address whatever
the name resolves to by then (no DNS rebinding), within one overall timeout, never following a
redirect."""

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from members.segments.webhooks.addresses import address_refusal

_RESPONSE_EXCERPT_BYTES = 500
_TLS = ssl.create_default_context()


class WebhookRefused(Exception):
    """A webhook that cannot be made as asked: which field, why, and the HTTP status to say it."""

    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.status = status


def _refusal(host: str, addresses: list[str]) -> str | None:
    """Why ``host`` may not be reached at one of ``addresses`` (what it resolves to), or None."""
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            try:
                ipaddress.ip_address(host)
            except ValueError:  # a name: say what it resolved to
                return f"{host} resolves to {refusal}"
            return refusal
    return None


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, each once, in the resolver's order."""
    found = list(
        dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    )
    if not found:
        raise OSError(f"{host} has no address")
    return found


def webhook_url_check(url: str) -> str:
    """The URL as given if a webhook may post to it: http or https, a host, no credentials (the
    signature authenticates us) and, unless ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES``, a host that is,
    or resolves only to, public addresses (``addresses``: no private, loopback or reserved one,
    nor an IPv6 form carrying one). A name is resolved now, and again at each delivery (what it
    resolves to may change)."""
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed [IPv6 literal, say
        raise WebhookRefused("url", f"is not a URL: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused("url", "must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("url", "must not hold credentials; receivers check the signature instead")
    try:
        port = parts.port or (http.client.HTTPS_PORT if parts.scheme == "https" else http.client.HTTP_PORT)
    except ValueError as error:
        raise WebhookRefused("url", f"bad port: {error}") from error
    host = parts.hostname or ""
    if not host:
        raise WebhookRefused("url", "has no host")
    if settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return url
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise WebhookRefused("url", f"must be a public address: {host} is a local name")
    try:
        refusal = address_refusal(host)
    except ValueError:  # a name, not an address
        try:
            refusal = _refusal(host, _resolve(host, port))
        except (OSError, UnicodeError, ValueError) as error:
            raise WebhookRefused("url", f"{host} cannot be resolved ({error})") from error
    if refusal is not None:
        raise WebhookRefused("url", f"must be a public address: {refusal}")
    return url


def _addresses_for(host: str, port: int) -> list[str]:
    """The addresses to connect to, resolved once and vetted (a second lookup at connect time
    could answer differently: DNS rebinding)."""
    found = _resolve(host, port)
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        refusal = _refusal(host, found)
        if refusal is not None:
            raise WebhookRefused("url", refusal)
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


def webhook_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
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
    except (OSError, UnicodeError, ValueError) as error:
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
