"""The stage queues (config/queues.py): every task routed to its stage, the operator's routes
first, and a worker without ``-Q`` consuming every queue."""

import yaml
from celery import Celery
from kombu.entity import Queue

from config import queues
from config.celery import app
from tests.processes import ROOT


def queue_of(celery: Celery, task: str) -> str:
    return celery.amqp.router.route({}, task)["queue"].name


def test_every_task_of_the_apps_has_its_stage_queue_and_no_route_names_a_missing_task():
    app.loader.import_default_modules()
    own = {name for name in app.tasks if not name.startswith(("celery.", "tests."))}

    assert own == set(queues.TASK_QUEUES)
    assert {name: queue_of(app, name) for name in own} == dict(queues.TASK_QUEUES)


def test_the_heavy_nightly_runs_and_the_pipeline_never_share_a_queue():
    assert queue_of(app, "events.process_pending") == queues.PIPELINE
    for nightly in ("members.memberships_recompute_all", "members.insights.recompute_all", "imports.run_job"):
        assert queue_of(app, nightly) == queues.BULK


def test_a_worker_without_q_consumes_every_queue_a_task_is_routed_to():
    consumed = set(app.amqp.queues)  # what `celery worker` with no -Q listens on

    assert consumed == set(queues.QUEUES)
    assert set(queues.TASK_QUEUES.values()) <= consumed
    assert app.conf.task_default_queue in consumed


def configured(overrides: queues.Routes) -> Celery:
    celery = Celery("routes-under-test", set_as_current=False)
    celery.conf.task_routes = queues.task_routes(overrides)
    celery.conf.task_queues = [Queue(name) for name in queues.queues_consumed(overrides)]
    return celery


def test_the_operators_routes_win_over_the_stages_globs_included():
    celery = configured({"members.*": {"queue": "crm"}, "events.process_pending": {"queue": "fast"}})

    assert queue_of(celery, "members.refresh_pending") == "crm"  # a glob over an exact stage route
    assert queue_of(celery, "members.insights.recompute_all") == "crm"
    assert queue_of(celery, "events.process_pending") == "fast"
    assert queue_of(celery, "imports.run_job") == queues.BULK  # not overridden: its stage's


def test_a_queue_only_the_operators_routes_name_is_consumed_too():
    consumed = queues.queues_consumed({"imports.*": {"queue": "imports"}})

    assert consumed == [*queues.QUEUES, "imports"]
    assert queues.queues_consumed({}) == list(queues.QUEUES)


def test_the_compose_files_pools_together_consume_every_queue_once():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    pools = [service for name, service in compose["services"].items() if name.startswith("worker-")]
    consumed: list[str] = []
    for service in pools:
        words = service["command"].split()
        consumed += words[words.index("-Q") + 1].split(",")

    assert sorted(consumed) == sorted(queues.QUEUES)
