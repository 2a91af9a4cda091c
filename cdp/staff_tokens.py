"""What a staff API token stands for (its user, the user's permissions, the store and channel
scope) kept per process, so that a staff request pays no query to authenticate, check its
permissions and find its scope.

Read from the database that is three to four queries a request (the token with its user and
scope, the user's and the groups' permissions, the scope's regions): 6.3 ms of a 24 ms 360 view
in a profile (docs/benchmarks.md, "Member 360").

**Changes take effect at the next request, in every process.** Every change that can alter
what a token stands for bumps a version counter in Redis: saving or deleting a token, a user,
a group, a permission, a scope or a region, and changing a user's groups or permissions, a
group's permissions or a scope's regions (``post_save``/``post_delete``/``m2m_changed``
receivers, ``cdp.apps``); ``cdp.services.tokens_revoke``, which updates without signals, bumps
it itself. Each request reads the counter (one ``GET``) and uses this process's copy only if
it was read from the database at that version; the counter is read *before* the database, so a
change committed while a copy was being read makes that copy stale at once. The counter is
bumped when the change is made and again when its transaction commits (a process that read the
old rows in between reads them again). A copy is also dropped after
``STAFF_TOKEN_CACHE_SECONDS`` whatever the counter says: the bound for a change that bypasses
the signals (SQL by hand) or a bump lost while Redis was unreachable. With Redis unreachable
nothing is taken from the copies: every request reads the database (and the staff API answers
``503`` then anyway: its rate limit fails closed).
"""

import copy
import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import prefetch_related_objects

from cdp.credentials import credential_hash
from cdp.models import ApiToken

logger = logging.getLogger(__name__)

#: The counter's key in Redis (``REDIS_URL``): shared by every process of the platform.
VERSION_KEY = "cdp:staff-tokens:version"
_MAX_ENTRIES = 4096  # tokens by the thousand: start afresh


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    loaded_at: float  # time.monotonic()
    token: ApiToken  # with its user, whose permissions and scope are loaded


_entries: dict[str, _Entry] = {}
_client: tuple[str, redis.Redis] | None = None
_down_until = 0.0  # time.monotonic() before which Redis is not asked (it just failed)


def _redis() -> redis.Redis:
    global _client
    url: str = settings.REDIS_URL
    if _client is None or _client[0] != url:
        timeout = settings.RATE_LIMIT_REDIS_TIMEOUT_SECONDS
        _client = (url, redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout))
    return _client[1]


def _version() -> int | None:
    """The counter now; None when Redis cannot tell (then no copy is trusted)."""
    global _down_until
    if time.monotonic() < _down_until:
        return None
    try:
        value = _redis().get(VERSION_KEY)
    except redis.RedisError:
        _down_until = time.monotonic() + settings.RATE_LIMIT_RETRY_SECONDS
        return None
    return int(value) if value is not None else 0


def _bump() -> None:
    global _down_until
    if time.monotonic() < _down_until:
        return  # just failed: not waited on again for every change (a migrate makes hundreds)
    try:
        _redis().incr(VERSION_KEY)
    except redis.RedisError:
        _down_until = time.monotonic() + settings.RATE_LIMIT_RETRY_SECONDS
        logger.warning(
            "Staff tokens: Redis unreachable, a change of tokens, roles or scopes reaches the other "
            "processes within STAFF_TOKEN_CACHE_SECONDS (%s s)",
            settings.STAFF_TOKEN_CACHE_SECONDS,
        )


def staff_tokens_changed(**kwargs: object) -> None:
    """Something a token may stand for changed: every process reads tokens again (a signal
    receiver, and called by services that change them without signals)."""
    if kwargs.get("update_fields") == frozenset({"last_login"}):
        return  # a console log-in: nothing a token stands for
    _entries.clear()
    _bump()
    transaction.on_commit(_bump)  # at once outside a transaction


def _token_read(digest: str) -> ApiToken | None:
    """The active token of that hash with its active user, the user's permissions (Django's
    per-user caches filled) and scope loaded; None for none."""
    token = (
        ApiToken.objects.select_related("user", "user__staff_scope")
        .filter(key_hash=digest, revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    user = token.user
    user.get_all_permissions()  # fills the backend's cache that has_perm reads (_perm_cache)
    scope = getattr(user, "staff_scope", None)  # None when the user has none (select_related)
    if scope is not None:
        prefetch_related_objects([scope], "regions")  # cdp.scopes.staff_scope reads them
    return token


def staff_token_find(secret: str) -> tuple[User, ApiToken] | None:
    """The user and the token of a staff token's secret, if the token is active and its user
    too: this process's copy when it is current, else read from the database (three to four
    queries). Each call gets its own copies of the user and the token."""
    digest = credential_hash(secret)
    version = _version()
    entry = _entries.get(digest)
    if (
        entry is None
        or version is None
        or entry.version != version
        or time.monotonic() - entry.loaded_at > settings.STAFF_TOKEN_CACHE_SECONDS
    ):
        token = _token_read(digest)
        if token is None:
            _entries.pop(digest, None)
            return None
        if version is not None:
            if len(_entries) >= _MAX_ENTRIES:
                _entries.clear()
            _entries[digest] = _Entry(version, time.monotonic(), token)
    else:
        token = entry.token
    # Copies: a view may set attributes on request.user; the permission sets are shared, read only.
    user = copy.copy(token.user)
    token = copy.copy(token)
    token.user = user
    return user, token
