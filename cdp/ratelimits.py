"""Rate limits kept in Redis: how many hits a key (a write key, a staff token, a login account or
address) may make in a window, counted atomically across every web process.

**Sliding window counter.** Each limit keeps one counter per fixed window (``<prefix>:<key>:<n>``
for the n-th window of its length since the epoch), and a hit is allowed while

    previous window's count * (the part of the previous window still inside the sliding window)
    + current window's count + 1  <=  limit

This is the estimate Cloudflare's limiter uses: two integers per key, yet no burst of twice the
limit across a window boundary, which a fixed window allows (``limit`` hits at 11:59:59 and
``limit`` more at 12:00:00). An exact sliding log would store a timestamp per hit: at 60,000
hits a minute on one write key, too much memory for what it buys. The estimate assumes the
previous window's hits were spread evenly; it errs by at most the previous window's unevenness.

**One round trip.** A hit is one ``EVALSHA`` of a Lua script (Redis runs a script atomically):
it reads the counters of every limit given, and counts the hit in all of them only when all
allow it, so a refused hit costs nothing and two limits (a login's account and address) never
disagree on whether it was counted. Refused hits are not counted: a client that waits out
``Retry-After`` gets in, however hard it knocked meanwhile. Clocks: the window is chosen from
this process's clock (hosts kept in step by NTP; a skew of a second moves a minute's window by
a second).

**Leases, for the hottest limit.** ``rate_limit_take`` counts a hit against one limit as
``rate_limit_hit`` does, but takes up to ``lease`` hits from Redis at once (as many as the
limit has room for, counted in the window at once) and spends the rest in this process without
asking again, until they run out or the window they were taken in ends (the rest are then
dropped: counted, never used). One round trip serves ``lease`` requests; the price is that a
process may hold up to ``lease - 1`` hits another process is refused, so the limit may refuse
up to processes x (lease - 1) hits early in a window, never allow one too many. With a lease of
one it is exactly ``rate_limit_hit``. Ingestion takes a thousandth of its limit at once
(``lease_for``): at the default 60,000 a minute, 60 hits per round trip, and 3 a minute is
counted hit by hit.

**When Redis cannot be reached** ``rate_limit_hit`` raises ``RateLimitUnavailable``, at once for
``RATE_LIMIT_RETRY_SECONDS`` after a failure (so requests do not each wait on a dead server),
and logs it once per ``RATE_LIMIT_OUTAGE_LOG_SECONDS``. The caller decides: ingestion accepts
(fail open: Redis is never needed to keep an event), the staff API and the console's log-in
refuse (fail closed: ``503`` with ``Retry-After``).
"""

import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400,
          "day": 86400}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
#: A limit written as this turns the limit off (an override for one trusted source, say).
OFF = "off"


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` hits in any ``seconds`` (sliding)."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}s"


@cache
def rate_parse(text: str) -> Rate | None:
    """``"600/min"``, ``"100/10s"``, ``"5/15min"``, ``"1000/h"``, ``"50000/day"``; ``"off"`` is no
    limit (None). Anything else is a configuration error, named."""
    if text.strip().lower() == OFF:
        return None
    match = _RATE.match(text.lower())
    unit = _UNITS.get(match.group(3).rstrip("s") or "s") if match else None
    if match is None or unit is None or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ImproperlyConfigured(
            f"Rate limit {text!r}: write COUNT/PERIOD, e.g. '600/min', '100/10s', '5/15min' or 'off'."
        )
    return Rate(count=int(match.group(1)), seconds=int(match.group(2) or 1) * unit)


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to count a hit against: its key (say ``ingest:source:12``) and its rate."""

    key: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    #: Whole seconds until a hit would be allowed again (0 when allowed).
    retry_after: int = 0
    #: The limit that refused the hit (the one with the longest wait).
    refused_by: Limit | None = None


class RateLimitUnavailable(Exception):
    """Redis cannot be reached: nothing was counted. ``retry_after``: when it is tried again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limits unavailable for {retry_after} s")
        self.retry_after = retry_after


# KEYS: for each limit, its current window's counter then its previous window's. ARGV: for each
# limit, its count, its window and how much of the current window is gone, in milliseconds:
# integers, so the estimate (times the window) is exact, and Retry-After with it. Counts the hit
# in every current window if every estimate allows it, else in none. Returns {allowed,
# current_1, previous_1, current_2, previous_2, ...}, the counts before the hit.
_HIT_SCRIPT = """
local counts = {0}
local allowed = 1
for i = 1, #KEYS / 2 do
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local limit, window, gone = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if previous * (window - gone) + (current + 1) * window > limit * window then
    allowed = 0
  end
  counts[2 * i] = current
  counts[2 * i + 1] = previous
end
if allowed == 1 then
  for i = 1, #KEYS / 2 do
    redis.call('INCR', KEYS[2 * i - 1])
    redis.call('PEXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[3 * i - 1]))
  end
end
counts[1] = allowed
return counts
"""


# KEYS: the limit's current window's counter, then its previous window's. ARGV: its count, its
# window and how much of the window is gone (milliseconds), and how many hits are wanted. Takes
# as many as fit (the most k with previous * (window - gone) + (current + k) * window <= count *
# window; k = 1 is the hit script's test) up to the wanted number, and counts them. Returns
# {taken, current, previous}, the counts before.
_TAKE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit, window, gone = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local room = math.floor((limit * window - previous * (window - gone)) / window) - current
local taken = math.min(tonumber(ARGV[4]), math.max(room, 0))
if taken > 0 then
  redis.call('INCRBY', KEYS[1], taken)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
end
return {taken, current, previous}
"""


@dataclass
class _Connection:
    url: str
    client: redis.Redis
    hit: redis.commands.core.Script
    take: redis.commands.core.Script


_connection: _Connection | None = None
_down_until = 0.0  # time.monotonic() before which Redis is taken for down
_outage_logged_at: float | None = None  # when the current outage was last logged


def _redis() -> _Connection:
    """This process's client for ``RATE_LIMIT_REDIS_URL`` (made again if the setting changed)."""
    global _connection
    url = settings.RATE_LIMIT_REDIS_URL
    if _connection is None or _connection.url != url:
        timeout = settings.RATE_LIMIT_REDIS_TIMEOUT_SECONDS
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        _connection = _Connection(
            url=url,
            client=client,
            hit=client.register_script(_HIT_SCRIPT),
            take=client.register_script(_TAKE_SCRIPT),
        )
    return _connection


def _window_keys(limit: Limit, now: float) -> tuple[str, str, int]:
    """The counters of ``limit``'s current and previous windows, and how much of the current
    window is gone at ``now``, in milliseconds."""
    index, gone = divmod(int(now * 1000), limit.rate.seconds * 1000)
    base = f"{settings.RATE_LIMIT_KEY_PREFIX}:{limit.key}:"
    return f"{base}{index}", f"{base}{index - 1}", gone


def _wait_ms(rate: Rate, gone: int, current: int, previous: int) -> int:
    """Milliseconds until a hit fits under ``rate`` if nothing else is counted meanwhile: the
    first ``g`` (part of a window gone) where ``previous * (window - g) + (current + 1) *
    window <= count * window``, in whole milliseconds."""
    window = rate.seconds * 1000
    if previous * (window - gone) + (current + 1) * window <= rate.count * window:
        return 0  # fits now (another limit refused the hit)
    if current + 1 <= rate.count:  # within this window, once enough of the previous one slid out
        return max(0, window - (rate.count - current - 1) * window // previous - gone)
    # Only in the next window (this one's hits become the previous), once enough slid out.
    return (window - gone) + max(0, window - (rate.count - 1) * window // current)


def _unavailable(error: Exception) -> RateLimitUnavailable:
    global _down_until, _outage_logged_at
    retry = settings.RATE_LIMIT_RETRY_SECONDS
    now = time.monotonic()
    _down_until = now + retry
    if _outage_logged_at is None or now - _outage_logged_at >= settings.RATE_LIMIT_OUTAGE_LOG_SECONDS:
        _outage_logged_at = now
        logger.warning(
            "Rate limits cannot reach Redis (%s): ingestion accepts without limits, the staff API "
            "and console log-in answer 503, until it is back (said once per %s s).",
            error,
            settings.RATE_LIMIT_OUTAGE_LOG_SECONDS,
        )
    return RateLimitUnavailable(max(1, math.ceil(retry)))


def _reachable() -> None:
    global _outage_logged_at
    if _outage_logged_at is not None:
        _outage_logged_at = None
        logger.warning("Rate limits reach Redis again: limits apply again.")


def rate_limit_hit(limits: Sequence[Limit], *, now: float | None = None) -> Verdict:
    """Count one hit against every limit in ``limits``, atomically and only if all allow it (one
    Redis round trip). ``RateLimitUnavailable`` when Redis cannot be reached."""
    if not limits:
        return Verdict(allowed=True)
    if time.monotonic() < _down_until:
        raise RateLimitUnavailable(max(1, math.ceil(_down_until - time.monotonic())))
    at = time.time() if now is None else now
    keys: list[str] = []
    args: list[int] = []
    gones: list[int] = []
    for limit in limits:
        current, previous, gone = _window_keys(limit, at)
        keys += [current, previous]
        args += [limit.rate.count, limit.rate.seconds * 1000, gone]
        gones.append(gone)
    try:
        answer = _redis().hit(keys=keys, args=args)
    except (redis.RedisError, OSError) as error:
        raise _unavailable(error) from error
    _reachable()
    if answer[0] == 1:
        return Verdict(allowed=True)
    waits = [
        (_wait_ms(limit.rate, gone, int(answer[2 * i + 1]), int(answer[2 * i + 2])), limit)
        for i, (limit, gone) in enumerate(zip(limits, gones, strict=True))
    ]
    wait, refused_by = max(waits, key=lambda pair: pair[0])
    return Verdict(allowed=False, retry_after=max(1, -(-wait // 1000)), refused_by=refused_by)


#: Hits taken and not yet spent, per (Redis URL, counter of the window they were taken in, rate).
_leases: dict[tuple[str, str, Rate], int] = {}
_leases_lock = threading.Lock()


def lease_for(rate: Rate) -> int:
    """How many hits ``rate_limit_take`` takes at once for ``rate``: a thousandth of it."""
    return max(1, rate.count // 1000)


def rate_limit_take(limit: Limit, *, lease: int, now: float | None = None) -> Verdict:
    """Count one hit against ``limit``, taking up to ``lease`` hits from Redis when this process
    holds none for the current window (see "Leases" above). ``RateLimitUnavailable`` when Redis
    cannot be reached."""
    at = time.time() if now is None else now
    current, previous, gone = _window_keys(limit, at)
    held = (settings.RATE_LIMIT_REDIS_URL, current, limit.rate)
    with _leases_lock:
        if _leases.get(held, 0) > 0:
            _leases[held] -= 1
            return Verdict(allowed=True)
    if time.monotonic() < _down_until:
        raise RateLimitUnavailable(max(1, math.ceil(_down_until - time.monotonic())))
    window = limit.rate.seconds * 1000
    try:
        answer = _redis().take(keys=[current, previous], args=[limit.rate.count, window, gone, lease])
    except (redis.RedisError, OSError) as error:
        raise _unavailable(error) from error
    _reachable()
    taken = int(answer[0])
    if taken > 0:
        if taken > 1:
            with _leases_lock:
                for key in [key for key in _leases if key[1] != current]:  # earlier windows': dropped
                    del _leases[key]
                _leases[held] = _leases.get(held, 0) + taken - 1
        return Verdict(allowed=True)
    wait = _wait_ms(limit.rate, gone, int(answer[1]), int(answer[2]))
    return Verdict(allowed=False, retry_after=max(1, -(-wait // 1000)), refused_by=limit)


def rate_limit_reset(limit: Limit, *, now: float | None = None) -> None:
    """Forget the hits counted against ``limit`` (a log-in that succeeded clears its account's
    failures). Quietly nothing when Redis cannot be reached."""
    current, previous, _ = _window_keys(limit, time.time() if now is None else now)
    try:
        _redis().client.delete(current, previous)
    except (redis.RedisError, OSError) as error:
        _unavailable(error)


def rate_for(name: str, subject: str) -> Rate | None:
    """The rate of limit ``name`` (a setting, ``RATE_LIMIT_<NAME>``) for ``subject``, with its
    override in ``RATE_LIMIT_OVERRIDES`` (``"<name>:<subject>"``) if any; None: no limit."""
    override = settings.RATE_LIMIT_OVERRIDES.get(f"{name}:{subject}")
    return rate_parse(override if override is not None else getattr(settings, f"RATE_LIMIT_{name.upper()}"))
