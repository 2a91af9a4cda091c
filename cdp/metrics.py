"""The platform's Prometheus metrics, and the hooks that keep them right across processes.

Every process (each gunicorn worker, each Celery prefork child) counts into the metrics
below. In production they run in prometheus-client's **multiprocess mode**: with
``PROMETHEUS_MULTIPROC_DIR`` set in the environment of every process (web and workers, one
directory on the machine, emptied at boot: a tmpfs such as ``/run/cdp-metrics``), each
process writes its values to memory-mapped files there, and ``/metrics`` (``cdp.metrics_view``)
sums them. Without it (``runserver``, tests) the values live in the process.

Only counters and histograms are counted in processes: they add up across processes and
survive a process's death (its files stay), which is what a rate needs. What is a *state*
(backlog, parked, dirty members, disabled webhooks) is never counted by the processes that
change it, but read at scrape time by the apps' collectors (``METRICS_COLLECTORS``), each one
cheap query, so it is right whatever process died or restarted.

This module imports no Django: the web server's master process loads it (``config.granian``,
the image's; ``config.gunicorn``), and calls ``process_exited`` when a worker of its exits.
"""

import os

from prometheus_client import Counter, Histogram
from prometheus_client import multiprocess as _multiprocess

# The library writes its files there at a metric's first use, and fails if the directory is not
# there: made here, before any metric below is used (a fresh tmpfs mount is empty).
if _dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_dir, exist_ok=True)

#: Latency buckets (seconds) for requests and short jobs: ingestion answers in milliseconds.
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: For work that may take minutes (a full segment recompute, a pipeline batch under load).
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# -- ingestion ----------------------------------------------------------------------------------
#: Events by source (its id: a rename keeps the series), outcome and reason. ``outcome`` is
#: accepted, duplicate (a messageId the source had sent: stored once) or rejected; ``reason``
#: is the rejection's code (``invalid_type``, ``event_too_large``, ...), empty otherwise.
EVENTS = Counter(
    "cdp_events_total",
    "Events received, by source, outcome (accepted, duplicate, rejected) and rejection code.",
    ["source", "outcome", "reason"],
)
# -- requests -----------------------------------------------------------------------------------
#: By endpoint: the URL pattern that answered (``v1/track``, ``api/v1/members/<int:member_id>/``),
#: never the path itself (ids would make a series per member); ``unmatched`` for a 404 path.
REQUEST_SECONDS = Histogram(
    "cdp_http_request_duration_seconds",
    "Time to answer a request, by endpoint (URL pattern), method and status class.",
    ["endpoint", "method", "status"],
    buckets=FAST_BUCKETS,
)
# -- pipeline -----------------------------------------------------------------------------------
BATCH_SECONDS = Histogram(
    "cdp_pipeline_batch_duration_seconds",
    "Time to claim and run the pipeline's stages on one batch of events (including any bisection).",
    buckets=SLOW_BUCKETS,
)
BATCH_EVENTS = Counter(
    "cdp_pipeline_events_total", "Events taken out of the pipeline's queue (processed or parked)."
)
RESOLVED_EVENTS = Counter(
    "cdp_identity_resolved_events_total",
    "Events identity resolution attached to members, by path: known (every identifier already one member's, "
    "resolved set-based), engine (decided event by event), known_overlap (taken as known, then the batch was "
    "resolved again by the engine alone because its replay reached that member; counted under engine too).",
    ["path"],
)
REFRESH_SECONDS = Histogram(
    "cdp_member_refresh_duration_seconds",
    "Time to refresh one batch of dirty members (traits, figures, points, tags, segments).",
    buckets=SLOW_BUCKETS,
)
REFRESH_MEMBERS = Counter(
    "cdp_member_refreshes_total", "Members taken out of the refresh queue (refreshed or parked)."
)
REFRESH_PATHS = Counter(
    "cdp_member_refresh_paths_total",
    "Members refreshed, by path: incremental (from their new events and stored state), full (from every event) "
    "or settled (marked for events an earlier refresh had already read: nothing to do).",
    ["path"],
)
REFRESH_FULL_REASONS = Counter(
    "cdp_member_refresh_full_reasons_total",
    "Members refreshed from every event, by why the incremental path could not take them "
    "(members.incremental.FULL_REASONS).",
    ["reason"],
)
POINTS_DERIVATIONS = Counter(
    "cdp_points_derivations_total",
    "Members whose points were derived by the refresh: resumed (from their checkpoint, with their new "
    "events alone) or replayed (from their whole loyalty history).",
    ["how"],
)
REFRESH_EVENTS_READ = Counter(
    "cdp_member_refresh_events_read_total", "Events the member refresh read from the log (both paths)."
)
PARKED = Counter("cdp_parked_total", "Work parked after a failure, by kind (event, member).", ["kind"])
# -- segments -----------------------------------------------------------------------------------
SEGMENT_COMPUTE_SECONDS = Histogram(
    "cdp_segment_compute_duration_seconds",
    "Time of one full compute of a segment or rule tag, by kind.",
    ["kind"],
    buckets=SLOW_BUCKETS,
)
SEGMENT_COMPUTE_ERRORS = Counter(
    "cdp_segment_compute_errors_total",
    "Full computes of a segment or rule tag that failed, by kind.",
    ["kind"],
)
# -- webhooks -----------------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "cdp_webhook_deliveries_total",
    "Segment webhook deliveries attempted, by outcome (ok, failed).",
    ["outcome"],
)
WEBHOOKS_DISABLED = Counter(
    "cdp_webhooks_disabled_total", "Segment webhooks turned off by failures (410 Gone, too many in a row)."
)
# -- tasks and the database ---------------------------------------------------------------------
TASK_FAILURES = Counter("cdp_celery_task_failures_total", "Celery tasks that raised, by task name.", ["task"])
TASK_RETRIES = Counter("cdp_celery_task_retries_total", "Celery task retries, by task name.", ["task"])
DATABASE_CONNECTION_ERRORS = Counter(
    "cdp_database_connection_errors_total",
    "Requests and tasks that failed because PostgreSQL could not be reached, by where (web, task).",
    ["where"],
)


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None when the values live in this process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_exited(pid: int) -> None:
    """A worker process of the server (or a Celery child) exited: drop what only a live process
    means (the live gauges' files; its counters and histograms stay, as a rate needs). Any
    server may call it; granian's master does (``config.granian``), gunicorn's ``child_exit``
    does (``config.gunicorn``), Celery's
    ``worker_process_shutdown`` does (``config.celery``). Nothing to do outside multiprocess mode."""
    path = multiprocess_dir()
    if path:
        _multiprocess.mark_process_dead(pid, path)


def gunicorn_child_exit(server: object, worker: object) -> None:
    """gunicorn's ``child_exit`` server hook."""
    process_exited(int(getattr(worker, "pid", 0)))


def task_failed(task_name: str, *, database_outage: bool) -> None:
    """A Celery task raised (``config.celery`` connects it to ``task_failure``)."""
    TASK_FAILURES.labels(task_name).inc()
    if database_outage:
        DATABASE_CONNECTION_ERRORS.labels("task").inc()


def task_retried(task_name: str) -> None:
    TASK_RETRIES.labels(task_name).inc()
