"""bench/soak.py's report: the processed rate is the pipeline's own count, not accepted minus a
capped backlog count."""

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from events.metrics import BACKLOG_COUNT_CAP

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    sys.path.append(str(BENCH))
    harness = importlib.import_module("harness")  # puts the project first and bench/ last on sys.path
    return harness.bench_script("soak")


def _sample(soak: ModuleType, t: float, *, accepted: int, processed: int, depth: int) -> object:
    return soak.Sample(
        t=t,
        accepted=accepted,
        processed=processed,
        depth=depth,
        oldest_age_s=0.0,
        lateness_s=0.0,
        load=0.0,
        memory_mib={},
        cpu_s={},
    )


def test_the_processed_rate_is_the_pipelines_even_past_the_backlog_cap(soak: ModuleType) -> None:
    """3,000 accepted and 1,200 processed a second, for 30 minutes: from the 9th minute more
    than the cap waits, and accepted minus the (capped) count waiting would read 3,000 a second
    at the end, the rate of the last 07:41/10:16 runs' reports."""
    samples = []
    for t in range(0, 1801, 10):
        accepted, processed = 3000 * t, 1200 * t
        samples.append(
            _sample(
                soak,
                t,
                accepted=accepted,
                processed=processed,
                depth=min(accepted - processed, BACKLOG_COUNT_CAP),
            )
        )

    window, (first_accepted, first_processed), (last_accepted, last_processed) = soak.window_rates(
        samples, 1800
    )

    assert window == 300
    assert (first_accepted, last_accepted) == (3000, 3000)
    assert (first_processed, last_processed) == (1200, 1200)


def test_the_processed_count_sums_every_process_that_counted_live_or_not(
    soak: ModuleType, tmp_path: Path
) -> None:
    """The pipeline's counter as the Celery pool processes write it in multiprocess mode: each
    child counts into its own file; one that exited (marked dead) still counts."""
    script = textwrap.dedent(
        """
        import sys
        from cdp.metrics import BATCH_EVENTS
        BATCH_EVENTS.inc(int(sys.argv[1]))
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    assert soak.pipeline_processed(str(tmp_path)) == 0
    first = subprocess.Popen([sys.executable, "-c", script, "500"], env=env)
    assert first.wait() == 0
    subprocess.run([sys.executable, "-c", script, "120"], env=env, check=True)
    mark_dead = f"from cdp.metrics import process_exited; process_exited({first.pid})"
    subprocess.run([sys.executable, "-c", mark_dead], env=env, check=True)

    assert soak.pipeline_processed(str(tmp_path)) == 620
