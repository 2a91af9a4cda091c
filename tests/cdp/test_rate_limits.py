"""Rate limits (``cdp.ratelimits``) against the real Redis: the sliding window counter, its
atomicity, ``Retry-After`` that is exact to the second; per write key on ingestion and per
staff token on the staff API, answered 429 in the one error shape, with overrides; one Redis
round trip per ingestion request, or per a thousandth of the limit on the single-call path
(leases); and with Redis gone (a private server, stopped mid-test)
ingestion still accepts while the staff API answers 503."""

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from cdp import ratelimits
from cdp.ratelimits import (
    Limit,
    Rate,
    RateLimitUnavailable,
    _window_keys,
    lease_for,
    rate_limit_hit,
    rate_limit_take,
    rate_parse,
)
from cdp.roles import Role
from cdp.services import staff_user_ensure, token_issue
from events.models import Event
from tests.factories import SourceFactory
from tests.processes import RedisServer, wait_for

T = 1_800_000_000.0  # a window boundary for every window length used here (a multiple of 3600)


def fresh(rate: Rate) -> Limit:
    return Limit(key=f"test:{uuid.uuid4()}", rate=rate)


# --- the counter ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rate"), [
    ("600/min", Rate(600, 60)), ("100/10s", Rate(100, 10)), ("5/15min", Rate(5, 900)), ("1000/h", Rate(1000, 3600)),
    ("3/second", Rate(3, 1)), (" 50000 / day ", Rate(50000, 86400)), ("10/s", Rate(10, 1)), ("7/2hours", Rate(7, 7200)),
    ("off", None), ("OFF", None),
])  # fmt: skip
def test_rates_are_written_count_per_period(text, rate):
    assert rate_parse(text) == rate


@pytest.mark.parametrize(
    "text", ["", "600", "600/", "0/min", "-1/min", "10/0s", "10/fortnight", "ten/min", "10/min/s"]
)
def test_a_bad_rate_is_a_configuration_error_naming_it(text):
    with pytest.raises(ImproperlyConfigured, match="Rate limit"):
        rate_parse(text)


def test_a_window_allows_its_count_and_then_says_when_to_come_back():
    limit = fresh(Rate(3, 60))

    verdicts = [rate_limit_hit([limit], now=T + 10 + i) for i in range(4)]

    assert [v.allowed for v in verdicts] == [True, True, True, False]
    # All 3 hits are in this window: the next fits once enough of it has slid out of the
    # sliding window, 1/3 of the next window (20 s) after this one ends (47 s from now).
    assert verdicts[3].retry_after == 50 + 20 - 3
    assert verdicts[3].refused_by == limit


def test_no_burst_of_twice_the_limit_across_a_window_boundary():
    limit = fresh(Rate(10, 60))
    for i in range(10):
        assert rate_limit_hit([limit], now=T + 59 + i / 100).allowed

    # A fixed window would allow 10 more at once; the sliding one counts the previous window's.
    assert not rate_limit_hit([limit], now=T + 60).allowed
    assert [rate_limit_hit([limit], now=T + 90).allowed for _ in range(6)] == [True] * 5 + [False]


def test_refused_hits_are_not_counted():
    limit = fresh(Rate(2, 60))
    for _ in range(2):
        rate_limit_hit([limit], now=T)
    for _ in range(50):
        assert not rate_limit_hit([limit], now=T + 30).allowed

    # As if the 50 had not knocked: 2 in the previous window, at half of this one 1 counts.
    assert rate_limit_hit([limit], now=T + 90).allowed
    assert not rate_limit_hit([limit], now=T + 90).allowed


def test_a_lease_of_one_is_the_plain_hit():
    taken, hit = fresh(Rate(3, 60)), fresh(Rate(3, 60))

    taken_verdicts = [rate_limit_take(taken, lease=1, now=T + 10 + i) for i in range(4)]
    hit_verdicts = [rate_limit_hit([hit], now=T + 10 + i) for i in range(4)]

    assert [v.allowed for v in taken_verdicts] == [v.allowed for v in hit_verdicts] == [True] * 3 + [False]
    assert taken_verdicts[3].retry_after == hit_verdicts[3].retry_after
    assert taken_verdicts[3].refused_by == taken


def test_leases_never_let_processes_pass_the_limit_together():
    limit = fresh(Rate(100, 60))
    processes: list[dict] = [{} for _ in range(4)]  # each web process's own leases
    allowed = 0
    for i in range(400):  # the four take turns
        held = processes[i % 4]
        ratelimits._leases.clear()
        ratelimits._leases.update(held)
        allowed += rate_limit_take(limit, lease=8, now=T + 1).allowed
        held.clear()
        held.update(ratelimits._leases)

    client = redis.Redis.from_url(settings.RATE_LIMIT_REDIS_URL)
    counted = int(client.get(_window_keys(limit, T + 1)[0]) or 0)
    assert counted == 100  # Redis counted the whole limit, leased...
    assert 100 - 4 * 7 <= allowed <= 100  # ...and never more was allowed than it holds


def test_a_lease_is_spent_without_asking_redis_and_ends_with_its_window(monkeypatch):
    limit = fresh(Rate(600, 60))
    assert rate_limit_take(limit, lease=5, now=T + 1).allowed  # takes 5, spends one

    asked = []
    script = ratelimits._redis().take
    monkeypatch.setattr(ratelimits._redis(), "take", lambda **kw: asked.append(kw) or script(**kw))
    assert all(rate_limit_take(limit, lease=5, now=T + 2).allowed for _ in range(4))
    assert asked == []
    assert rate_limit_take(limit, lease=5, now=T + 61).allowed  # the next window: the old lease is gone
    assert len(asked) == 1
    client = redis.Redis.from_url(settings.RATE_LIMIT_REDIS_URL)
    assert [int(client.get(key) or 0) for key in _window_keys(limit, T + 61)[:2]] == [5, 5]


def test_ingestion_takes_a_thousandth_of_its_limit_at_once():
    assert [lease_for(Rate(count, 60)) for count in (3, 999, 1000, 60_000, 1_000_000)] == [1, 1, 1, 60, 1000]


def test_several_limits_count_a_hit_in_all_or_in_none():
    narrow, wide = fresh(Rate(2, 60)), fresh(Rate(100, 60))
    for _ in range(2):
        assert rate_limit_hit([narrow, wide], now=T).allowed

    refused = rate_limit_hit([narrow, wide], now=T + 1)

    assert not refused.allowed
    assert refused.refused_by == narrow
    for _ in range(98):  # the refused hit took none of the wide limit's 100
        assert rate_limit_hit([wide], now=T + 2).allowed
    assert not rate_limit_hit([wide], now=T + 2).allowed


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 20),
    seconds=st.sampled_from([1, 10, 60, 900]),
    before=st.integers(0, 40),
    during=st.integers(0, 40),
    gone=st.floats(0, 0.999),
)
def test_retry_after_is_the_first_whole_second_a_hit_fits(count, seconds, before, during, gone):
    """Hits in the previous window and this one, then a refusal: retrying after Retry-After
    succeeds, and one second earlier would not have (a client is never sent away for longer
    than needed, nor told to come back too soon)."""
    limit = fresh(Rate(count, seconds))
    for i in range(before):
        rate_limit_hit([limit], now=T - seconds + seconds * i / 41)
    now = T + gone * seconds
    for _ in range(during):
        rate_limit_hit([limit], now=now)
    verdict = rate_limit_hit([limit], now=now)
    if verdict.allowed:
        return

    if verdict.retry_after > 1:
        assert not allowed_on_a_copy(limit, now=now + verdict.retry_after - 1)
    assert rate_limit_hit([limit], now=now + verdict.retry_after).allowed


def allowed_on_a_copy(limit: Limit, *, now: float) -> bool:
    """Whether a hit at ``now`` would be allowed, tried on a copy of the limit's counters."""
    client = redis.Redis.from_url(settings.RATE_LIMIT_REDIS_URL)
    copy = fresh(limit.rate)
    for source, target in zip(_window_keys(limit, now)[:2], _window_keys(copy, now)[:2], strict=True):
        value = client.get(source)
        if value is not None:
            client.set(target, value, ex=3600)
    return rate_limit_hit([copy], now=now).allowed


def test_hits_at_once_from_many_threads_never_pass_the_limit():
    limit = fresh(Rate(50, 60))
    start = threading.Barrier(8)

    def knock(_: int) -> int:
        start.wait()
        return sum(rate_limit_hit([limit], now=T + 1).allowed for _ in range(25))

    with ThreadPoolExecutor(8) as pool:
        allowed = sum(pool.map(knock, range(8)))

    assert allowed == 50


# --- on the APIs -------------------------------------------------------------------------------


def staff_token(role: Role = Role.ADMIN, username: str = "limited-admin") -> str:
    return token_issue(user=staff_user_ensure(username=username, role=role), name="test").secret


def staff_get(token: str, path: str = "/api/v1/sources/"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(path)


def assert_limited(response, *, code: str = "rate_limited", status: int = 429) -> None:
    assert response.status_code == status, response.content
    assert int(response["Retry-After"]) >= 1
    body = response.json()
    assert set(body) == {"code", "message", "errors"}
    assert body["code"] == code


TRACK = {"userId": "u-1", "event": "Product Viewed"}


@pytest.mark.django_db
def test_ingestion_is_limited_per_write_key(ingest, source, settings):
    settings.RATE_LIMIT_INGESTION = "3/min"
    other = SourceFactory()

    answers = [ingest("track", TRACK).status_code for _ in range(3)]
    refused = ingest("track", TRACK)

    assert answers == [200, 200, 200]
    assert_limited(refused)
    assert "this write key" in refused.json()["message"]
    assert ingest("batch", {"batch": [{**TRACK, "type": "track"}]}).status_code == 429  # a batch is a request
    assert ingest("track", TRACK, write_key=other.write_key).status_code == 200
    assert Event.objects.filter(source=source).count() == 3


@pytest.mark.django_db
def test_an_override_raises_or_lifts_one_sources_limit(ingest, source, settings):
    settings.RATE_LIMIT_INGESTION = "1/min"
    trusted = SourceFactory()
    settings.RATE_LIMIT_OVERRIDES = {f"ingestion:{source.name}": "3/min", f"ingestion:{trusted.name}": "off"}

    assert [ingest("track", TRACK).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert {ingest("track", TRACK, write_key=trusted.write_key).status_code for _ in range(5)} == {200}


@pytest.mark.django_db
def test_the_staff_api_is_limited_per_token(settings):
    settings.RATE_LIMIT_STAFF = "2/min"
    token, second_token = staff_token(), staff_token()
    agent = staff_token(Role.CRM_AGENT, "limited-agent")
    settings.RATE_LIMIT_OVERRIDES = {"staff:limited-agent": "4/min"}

    answers = [staff_get(token).status_code for _ in range(2)]
    refused = staff_get(token, "/api/v1/rejected-events/")

    assert answers == [200, 200]
    assert_limited(refused)
    assert "this token" in refused.json()["message"]
    assert staff_get(second_token).status_code == 200  # per token, not per user
    assert [staff_get(agent, "/api/v1/tags/").status_code for _ in range(5)] == [200] * 4 + [429]
    assert staff_get("not-a-token").status_code == 401  # refused before any counting


def _round_trips(client: redis.Redis) -> dict[str, int]:
    # Redis counts the commands a script runs too: those are the script's, not round trips.
    sent = {
        name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()
    }
    return {
        name: calls
        for name, calls in sent.items()
        if name not in {"get", "incr", "incrby", "pexpire", "info"}
    }


@pytest.mark.django_db
def test_an_ingestion_request_costs_one_redis_round_trip_at_most(ingest, settings, private_redis):
    settings.RATE_LIMIT_REDIS_URL = private_redis.url
    settings.RATE_LIMIT_INGESTION = "3000/min"  # single calls take leases of 3
    other = SourceFactory()
    for call in ("track", "batch"):  # the scripts are loaded once per Redis server
        ingest(
            call,
            {"batch": [{**TRACK, "type": "track"}]} if call == "batch" else TRACK,
            write_key=other.write_key,
        )
    client = redis.Redis.from_url(private_redis.url)
    client.config_resetstat()

    for _ in range(5):
        assert ingest("batch", {"batch": [{**TRACK, "type": "track"}]}).status_code == 200
    batches = _round_trips(client)
    for _ in range(6):
        assert ingest("track", TRACK).status_code == 200

    assert batches == {"evalsha": 5, "config|resetstat": 1}
    assert _round_trips(client) == {"evalsha": 5 + 2, "config|resetstat": 1}


@pytest.fixture
def private_redis():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.django_db
def test_with_redis_gone_ingestion_accepts_and_the_staff_api_refuses(
    ingest, source, settings, private_redis, caplog
):
    settings.RATE_LIMIT_REDIS_URL = private_redis.url
    settings.RATE_LIMIT_INGESTION = "2/min"
    settings.RATE_LIMIT_RETRY_SECONDS = 0.2
    token = staff_token()
    assert [ingest("track", TRACK).status_code for _ in range(3)] == [200, 200, 429]
    assert staff_get(token).status_code == 200

    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="cdp.ratelimits"):
        during = [ingest("track", {**TRACK, "messageId": f"down-{i}"}).status_code for i in range(4)]
        refused = staff_get(token)
        with pytest.raises(RateLimitUnavailable):
            rate_limit_hit([fresh(Rate(1, 60))])

    assert during == [200] * 4  # fail open: accepted and kept, without a limit
    assert Event.objects.filter(source=source, message_id__startswith="down-").count() == 4
    assert_limited(refused, code="service_unavailable", status=503)  # fail closed
    outages = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    assert len(outages) == 1  # said once, not per request

    private_redis.start()  # on the same port, empty
    assert wait_for(lambda: staff_get(token).status_code == 200, timeout=5)
    assert [ingest("track", TRACK).status_code for _ in range(3)] == [200, 200, 429]  # counting again
