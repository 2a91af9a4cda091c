"""/metrics: who may scrape, what it says (counters by source and reason, request latency by
endpoint, the pipeline's and members' states at scrape time), multiprocess mode across real
processes, and the request id that follows a request into its log lines and tasks."""

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from cdp import metrics as cdp_metrics
from cdp.tracing import RequestIdFilter, current_request_id, request_id_clear
from events.tasks import process_pending

pytestmark = pytest.mark.django_db


def scrape(client: Client, **headers: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_only_the_token_or_an_allowed_network_may_scrape(client: Client, settings: Any) -> None:
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = "scrape-secret-123"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-123").status_code == 200
    settings.METRICS_TOKEN = ""
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    )  # no token set: none matches
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.1").status_code == 403


def test_events_are_counted_by_source_outcome_and_reason(client: Client, ingest: Any, source: Any) -> None:
    before = scrape(client)
    key = str(source.pk)
    assert ingest("track", {"userId": "u1", "event": "A", "messageId": "m-1"}).status_code == 200
    assert ingest("track", {"userId": "u1", "event": "A", "messageId": "m-1"}).status_code == 200  # duplicate
    assert ingest("track", {"userId": "u1", "messageId": "m-2"}).status_code == 400  # no event name
    batch = {"batch": [{"type": "track", "userId": "u2", "event": "B", "messageId": "m-3"}, {"type": "nope"}]}
    assert ingest("batch", batch).status_code == 200
    after = scrape(client)

    def delta(outcome: str, reason: str = "") -> float:
        labels = {"source": key, "outcome": outcome, "reason": reason}
        return value(after, "cdp_events_total", **labels) - value(before, "cdp_events_total", **labels)

    assert delta("accepted") == 2
    assert delta("duplicate") == 1
    rejected = {
        labels: v - before.get((name, labels), 0.0)
        for (name, labels), v in after.items()
        if name == "cdp_events_total" and ("outcome", "rejected") in labels and ("source", key) in labels
    }
    assert sum(rejected.values()) == 2
    assert all(dict(labels)["reason"] for labels in rejected)  # each names its code
    # Latency by the URL pattern that answered, not the path.
    assert (
        value(
            after, "cdp_http_request_duration_seconds_count", endpoint="v1/track", method="POST", status="2xx"
        )
        >= 2
    )
    assert (
        value(
            after, "cdp_http_request_duration_seconds_count", endpoint="v1/track", method="POST", status="4xx"
        )
        >= 1
    )


def test_the_backlog_and_the_refresh_queue_are_read_at_scrape_time(client: Client, ingest: Any) -> None:
    for n in range(3):
        assert ingest("track", {"userId": f"u{n}", "event": "A", "messageId": f"b-{n}"}).status_code == 200
    # (the nudge is sent on commit, and a test's transaction never commits: they wait)
    time.sleep(0.05)
    samples = scrape(client)
    assert value(samples, "cdp_pipeline_backlog_events") == 3
    assert value(samples, "cdp_pipeline_backlog_oldest_age_seconds") > 0
    assert value(samples, "cdp_scrape_collector_up", collector="events.metrics.pipeline_collect") == 1
    process_pending()
    samples = scrape(client)
    assert value(samples, "cdp_pipeline_backlog_events") == 0
    assert value(samples, "cdp_pipeline_backlog_oldest_age_seconds") == 0
    assert value(samples, "cdp_pipeline_batch_duration_seconds_count") >= 1
    assert value(samples, "cdp_dirty_marks") == 0
    assert value(samples, "cdp_parked_events") == 0
    assert value(samples, "cdp_webhooks_inactive") == 0


def test_a_failing_collector_is_reported_and_the_rest_still_answers(client: Client, settings: Any) -> None:
    settings.METRICS_COLLECTORS = [
        "tests.cdp.test_metrics.broken_collector",
        "events.metrics.pipeline_collect",
    ]
    samples = scrape(client)
    assert value(samples, "cdp_scrape_collector_up", collector="tests.cdp.test_metrics.broken_collector") == 0
    assert value(samples, "cdp_scrape_collector_up", collector="events.metrics.pipeline_collect") == 1


def broken_collector() -> list:
    raise RuntimeError("this reader is broken")


def test_the_request_id_is_taken_or_made_and_sent_back(client: Client) -> None:
    given = client.get("/health/", HTTP_X_REQUEST_ID="lb-1234567890abcdef")
    assert given["X-Request-ID"] == "lb-1234567890abcdef"
    made = client.get("/health/", HTTP_X_REQUEST_ID="bad id with spaces\n")
    assert made["X-Request-ID"] != "bad id with spaces\n"
    assert len(made["X-Request-ID"]) == 32


@pytest.mark.django_db(transaction=True)  # the nudge is sent when ingestion commits, within the request
def test_log_lines_of_a_request_and_of_the_pipeline_run_it_nudged_carry_its_id(
    ingest: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="events.pipeline")
    for handler in [caplog.handler]:
        handler.addFilter(RequestIdFilter())
    response = ingest(
        "track", {"userId": "u1", "event": "A", "messageId": "trace-1"}, HTTP_X_REQUEST_ID="trace-abcdef12"
    )
    assert response["X-Request-ID"] == "trace-abcdef12"
    batches = [
        r for r in caplog.records if r.name == "events.pipeline" and "pipeline batch" in r.getMessage()
    ]
    assert batches
    assert all(r.request_id == "trace-abcdef12" for r in batches)  # type: ignore[attr-defined]
    assert current_request_id() == ""  # nothing leaks past the request


def test_json_log_lines(tmp_path: Path) -> None:
    """Production's format: one JSON object a line, with the request id."""
    script = textwrap.dedent(
        """
        import logging, logging.config
        from config.settings import base
        config = dict(base.LOGGING)
        config["handlers"] = {"console": {**base.LOGGING["handlers"]["console"], "formatter": "json"}}
        logging.config.dictConfig(config)
        from cdp.tracing import request_id_set
        request_id_set("req-12345678")
        logging.getLogger("events.pipeline").warning("pipeline batch: %d events", 3, extra={"events": 3})
        """
    )
    env = {**os.environ, "DJANGO_SECRET_KEY": "x"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    import json

    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "pipeline batch: 3 events"
    assert line["request_id"] == "req-12345678"
    assert line["events"] == 3
    assert line["level"] == "WARNING"


def test_multiprocess_mode_adds_up_every_process_and_keeps_a_dead_ones_counts(tmp_path: Path) -> None:
    """Two processes count into one directory; the scrape reads both, also once one has exited
    and been marked dead (as gunicorn's child_exit and Celery's process shutdown do)."""
    script = textwrap.dedent(
        """
        import sys
        from cdp.metrics import EVENTS, REQUEST_SECONDS
        EVENTS.labels("7", "accepted", "").inc(int(sys.argv[1]))
        REQUEST_SECONDS.labels("v1/batch", "POST", "2xx").observe(0.01)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.Popen([sys.executable, "-c", script, "5"], env=env)
    first.wait()
    subprocess.run([sys.executable, "-c", script, "2"], env=env, check=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        cdp_metrics.process_exited(first.pid)
        from cdp.metrics_view import scrape_registry

        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in scrape_registry().collect()
            for s in family.samples
        }
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert samples[("cdp_events_total", (("outcome", "accepted"), ("reason", ""), ("source", "7")))] == 7
    count = (
        "cdp_http_request_duration_seconds_count",
        (("endpoint", "v1/batch"), ("method", "POST"), ("status", "2xx")),
    )
    assert samples[count] == 2


def test_the_request_middleware_costs_microseconds(rf: Any) -> None:
    """The whole middleware (id, timing, one observation) against a view that does nothing."""
    from django.http import HttpResponse

    from cdp.tracing import RequestMiddleware

    def view(request: Any) -> HttpResponse:
        return HttpResponse()

    middleware = RequestMiddleware(view)
    request = rf.get("/health/")
    rounds = 5000

    def timed(call: Any) -> float:
        began = time.perf_counter()
        for _ in range(rounds):
            call(request)
        return (time.perf_counter() - began) / rounds

    bare, wrapped = min(timed(view) for _ in range(3)), min(timed(middleware) for _ in range(3))
    request_id_clear()  # no response was closed here
    print(
        f"request middleware: {(wrapped - bare) * 1e6:.1f} µs per request (the view alone: {bare * 1e6:.1f} µs)"
    )
    assert wrapped - bare < 0.0005  # half a millisecond would be a regression by two orders of magnitude


def test_a_task_sent_by_a_request_carries_its_id_to_the_worker() -> None:
    """Through the broker (not eager): the id goes out as a message header and the worker's
    run of the task takes it for its log lines, then lets it go."""
    from types import SimpleNamespace

    from cdp.tracing import request_id_reset, request_id_set
    from config import celery as celery_config

    token = request_id_set("req-from-web-1")
    headers: dict[str, str] = {}
    try:
        celery_config._request_id_send(headers=headers)
    finally:
        request_id_reset(token)
    assert headers == {"request_id": "req-from-web-1"}
    task = SimpleNamespace(request=SimpleNamespace(request_id=headers["request_id"]))
    celery_config._request_id_take(task_id="t-1", task=task)
    assert current_request_id() == "req-from-web-1"
    celery_config._request_id_drop(task_id="t-1")
    assert current_request_id() == ""


def test_celery_task_failures_and_retries_are_counted():
    from celery.signals import task_retry

    from config.celery import app

    @app.task(name="tests.metrics.fails")
    def fails():
        raise RuntimeError("broken")

    failures = cdp_metrics.TASK_FAILURES.labels("tests.metrics.fails")
    retries = cdp_metrics.TASK_RETRIES.labels("tests.metrics.fails")
    before_failures, before_retries = failures._value.get(), retries._value.get()
    # (not propagated, as a worker runs them: Celery sends its signals then)
    assert fails.apply(throw=False).state == "FAILURE"
    # An eager retry runs the task again at once, so the worker's signal is sent as it sends it.
    task_retry.send(sender=fails, request=None, reason=RuntimeError("again"), einfo=None)
    assert failures._value.get() - before_failures == 1
    assert retries._value.get() - before_retries == 1


def test_database_outages_are_counted():
    from django.db import OperationalError

    from cdp.errors import api_exception_handler

    errors = cdp_metrics.DATABASE_CONNECTION_ERRORS.labels("web")
    before = errors._value.get()
    response = api_exception_handler(OperationalError("connection refused"), {})
    assert response is not None
    assert response.status_code == 503
    assert errors._value.get() - before == 1
