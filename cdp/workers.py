"""Tuning of long-lived worker processes (gunicorn and Celery workers, and the benchmarks that
stand in for them), and of a command's bulk work (``process_objects_frozen``)."""

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Collect the youngest generation after this many net allocations instead of Python's 700,
#: and the older ones as rarely. A pipeline batch allocates hundreds of thousands of
#: short-lived objects (rows, identifiers, decisions, facts); with the defaults the collector
#: ran hundreds of times a batch and its older generations walked everything loaded at start
#: (modules, models, phone-number metadata): 10-15% of a worker's time, measured with
#: ``gc.callbacks`` over the identity benchmark's pipeline (4.1 s of collections for 80,000
#: events; 0.2 s tuned).
_GC_THRESHOLDS = (50_000, 20, 20)


def loaded_freeze() -> None:
    """Freeze what is loaded by now (code, settings, metadata: never garbage, never walked
    again), so that what becomes garbage later is collected soon.

    Python runs a full collection only once the objects that reached the oldest generation
    since the last one number a quarter of those it found there then (CPython's
    ``long_lived_pending``/``long_lived_total``). Without this, "those" are everything loaded
    at start: a web worker's requests each leave a cycle (Django's and DRF's request, view,
    parser context and response refer to each other) holding the parsed batch, the cycles of
    requests in flight at a young collection are promoted, and they piled up for minutes
    (``bench/soak.py``, 300 events/s: no full collection in 6 minutes, a worker's allocated
    blocks +150,000 and its RSS +1.2 MiB a minute). ``gc.freeze`` alone does not reset that
    quarter's base: the collection after it does, counting only what is not frozen.
    """
    gc.collect()
    gc.freeze()
    gc.collect()


def worker_gc_tune() -> None:
    """A Celery worker process, once set up: ``loaded_freeze``, and young objects collected
    less often."""
    loaded_freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def web_worker_gc_tune() -> None:
    """A web worker process, once its application is loaded: every view imported (Django
    imports the URLconf, and with it the views, at the first request), then ``loaded_freeze``.
    Python's default thresholds stay: a request allocates far less than a pipeline batch."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imported now, to be frozen
    loaded_freeze()


@contextmanager
def process_objects_frozen() -> Iterator[None]:
    """For a command's bulk work (an import): CPython's cyclic collector walks, in every
    collection of its oldest generation, every object it tracks: in a platform process some
    130,000 that live as long as the process (modules, models, compiled rules, caches), 20 to
    60 ms of CPU each time. A bulk job allocates millions of short-lived containers, which
    trigger full collections again and again, each walking those objects to free none of them
    (measured, ``bench/import_stages.py``, 2026-12-05, under load: a tenth of the refresh's CPU
    per row, a seventh of the import's). A worker process freezes them once for its life
    (``worker_gc_tune``); a command freezes them for the block.

    Freeze the objects alive now for the block, unfrozen after it (back to the oldest
    generation, collected again from then on: a cycle that died meanwhile is not kept for the
    life of the process). Nothing when objects are frozen already (an outer block, or a process
    that froze its start-up objects): that freeze is its owner's to undo. Processes forked in
    the block (the refresh's) inherit the frozen generation, and touch fewer of the parent's
    pages when collecting."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
