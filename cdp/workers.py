"""Tuning of long-lived worker processes (Celery workers, and the benchmarks that stand in
for them)."""

import gc

#: Collect the youngest generation after this many net allocations instead of Python's 700,
#: and the older ones as rarely. A pipeline batch allocates hundreds of thousands of
#: short-lived objects (rows, identifiers, decisions, facts); with the defaults the collector
#: ran hundreds of times a batch and its older generations walked everything loaded at start
#: (modules, models, phone-number metadata): 10-15% of a worker's time, measured with
#: ``gc.callbacks`` over the identity benchmark's pipeline (4.1 s of collections for 80,000
#: events; 0.2 s tuned).
_GC_THRESHOLDS = (50_000, 20, 20)


def worker_gc_tune() -> None:
    """Freeze what is loaded by now (code, settings, metadata: never garbage, never walked
    again) and collect young objects less often. Call once the process is set up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
