"""Worker process tuning: what a Celery or gunicorn worker process does once it is set up."""

import gc
import weakref

import pytest
from celery.signals import worker_process_init

import config.celery  # noqa: F401 - connects the worker signals


@pytest.fixture
def _gc_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("_gc_restored")
def test_a_worker_process_freezes_what_it_loaded_and_collects_young_objects_less_often():
    gc.unfreeze()
    default_young = gc.get_threshold()[0]

    worker_process_init.send(sender=None)

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] > default_young


class _Cycle:
    def __init__(self) -> None:
        self.itself = self


@pytest.mark.usefixtures("_gc_restored")
def test_a_web_worker_collects_garbage_that_reached_the_oldest_generation_without_waiting_for_a_quarter_of_what_it_loaded():
    from config.gunicorn import post_worker_init

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # Python's defaults, which a web worker keeps
    gc.collect()  # everything this process loaded is now in the oldest generation, as in a worker
    post_worker_init(worker=None)
    request_cycle = _Cycle()  # a request's objects, in flight while young collections ran
    collected = weakref.ref(request_cycle)
    gc.collect(1)  # survivors of the middle generation move to the oldest
    del request_cycle

    for _ in range(200_000):  # young garbage only: runs the collector's generations by itself
        loop: list[object] = []
        loop.append(loop)

    assert collected() is None


@pytest.mark.usefixtures("_gc_restored")
def test_the_application_a_web_server_imports_freezes_what_loading_left():
    import importlib

    import config.wsgi

    gc.unfreeze()
    importlib.reload(config.wsgi)

    assert gc.get_freeze_count() > 0


def test_a_pool_process_that_outgrew_the_memory_limit_is_replaced_after_its_task():
    from django.conf import settings

    from config.celery import app

    assert settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD == 1024 * 1024  # KiB: 1 GiB by default
    assert app.conf.worker_max_memory_per_child == settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD
