"""The Celery queues, one per stage, and which task goes to which: the one place that says so.

A worker started without ``-Q`` consumes every queue named here (``CELERY_TASK_QUEUES``), so one
machine with one worker runs everything as before. Split into pools, each worker consumes the
queues of its pool (``celery -A config worker -Q pipeline``), and a nightly recompute holding the
``bulk`` pool for a quarter of an hour never delays the pipeline's nudges (docs/scaling.md).

Routes are by task name (the names the ``@shared_task`` decorators give), so they apply to every
sender alike: a request's nudge, beat's schedule, a task sending another, a send by name.
``CELERY_TASK_ROUTES`` (the operator's routes, JSON) are consulted first and win over these.
No Django here: the settings import it.
"""

from collections.abc import Iterable, Mapping

#: Ingestion's nudge and the sweep of the event outbox: identity resolution, then the member
#: refresh of the members a batch touched (the pipeline's follow-ups), in one task.
PIPELINE = "pipeline"
#: The member refresh's own queue of dirty marks, and the periodic rechecks that mark members.
MEMBERS = "members"
#: Recomputing one tag or segment after its definition changed (set-based SQL over all members).
SEGMENTS = "segments"
#: Segment webhooks: waits on other people's HTTP servers.
WEBHOOKS = "webhooks"
#: The KPI rollups of the members and days that changed (every few minutes).
INSIGHTS = "insights"
#: Long jobs: the nightly recomputes (segments, insights), retention, legacy imports.
BULK = "bulk"
#: Celery's default queue: the alert evaluation, erasures, and any task no route names.
DEFAULT = "celery"

#: Every queue, in the order a worker consuming them all lists them.
QUEUES: tuple[str, ...] = (PIPELINE, MEMBERS, SEGMENTS, WEBHOOKS, INSIGHTS, BULK, DEFAULT)

#: Task name -> its stage's queue. Every task the apps define is here (a test holds it to that).
TASK_QUEUES: Mapping[str, str] = {
    "events.process_pending": PIPELINE,
    "members.refresh_pending": MEMBERS,
    "members.loyalty_recheck": MEMBERS,
    "members.memberships_recheck": MEMBERS,
    "members.segment_recompute": SEGMENTS,
    "members.tag_recompute": SEGMENTS,
    "members.segments.webhook_deliver": WEBHOOKS,
    "members.segments.webhooks_sweep": WEBHOOKS,
    "members.insights.refresh": INSIGHTS,
    "members.memberships_recompute_all": BULK,
    "members.insights.recompute_all": BULK,
    "privacy.retention_apply": BULK,
    "imports.run_job": BULK,
    "imports.resume_stalled": BULK,
    "privacy.erasure_run": DEFAULT,
    "privacy.erasures_sweep": DEFAULT,
    "ops.alerts_evaluate": DEFAULT,
}

Routes = Mapping[str, Mapping[str, str]]


def task_routes(overrides: Routes) -> tuple[Routes, Routes]:
    """Celery's ``task_routes``: the operator's ``overrides`` first (exact names or globs), then
    the stages'. Two routers rather than one merged map: Celery tries a map's exact names before
    its globs, so an override ``"members.*"`` merged in would lose to the stages' exact names."""
    return (dict(overrides), {task: {"queue": queue} for task, queue in TASK_QUEUES.items()})


def queues_consumed(overrides: Routes) -> list[str]:
    """The queues a worker started without ``-Q`` consumes: every stage's, and any queue the
    operator's routes name (a task routed to a queue no worker consumes would wait forever)."""
    named: Iterable[str] = (route["queue"] for route in overrides.values() if "queue" in route)
    return list(dict.fromkeys([*QUEUES, *named]))
