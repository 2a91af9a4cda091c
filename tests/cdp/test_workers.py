"""Worker process tuning: what a Celery worker process does once it is set up."""

import gc

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
