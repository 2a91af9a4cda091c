"""The pipeline's state for ``/metrics`` (``METRICS_COLLECTORS``), read at scrape time.

Each figure is one cheap query: the backlog is counted up to ``BACKLOG_COUNT_CAP`` rows, and
reads as "at least the cap" past it; the oldest waiting event is the queue's lowest id, looked up
by key. The count walks the queue's rows (while the pipeline takes from it, most of its pages
are not yet marked all-visible, so the walk visits the heap too): 20 to 30 ms per 100,000 rows
here, so the cap keeps a scrape every 10 s during a flood of millions near 0.3% of a core (3%
at a cap of a million). How far behind the pipeline is, the age of the oldest event says, and
that is what the backlog alert reads.
"""

from collections.abc import Iterable
from datetime import datetime

from django.db import connection
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from events.models import Event, PendingEvent
from events.parking import parked_events_count

#: The backlog is counted exactly up to this many events.
BACKLOG_COUNT_CAP = 100_000

_EVENTS, _PENDING = Event._meta.db_table, PendingEvent._meta.db_table
_BACKLOG = f"""
SELECT (SELECT count(*) FROM (SELECT 1 FROM {_PENDING} LIMIT %s) AS capped),
       (SELECT e.received_at FROM {_EVENTS} AS e
         WHERE e.id = (SELECT min(event_id) FROM {_PENDING}))
"""  # noqa: S608 - model tables only


def pipeline_backlog() -> tuple[int, datetime | None]:
    """How many events wait for the pipeline (up to the cap), and when the oldest arrived."""
    with connection.cursor() as cursor:
        cursor.execute(_BACKLOG, [BACKLOG_COUNT_CAP])
        depth, oldest = cursor.fetchone()
    return int(depth), oldest


def pipeline_collect() -> Iterable[Metric]:
    depth, oldest = pipeline_backlog()
    age = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
    yield GaugeMetricFamily(
        "cdp_pipeline_backlog_events",
        f"Events waiting for the pipeline (counted up to {BACKLOG_COUNT_CAP}).",
        depth,
    )
    yield GaugeMetricFamily(
        "cdp_pipeline_backlog_oldest_age_seconds",
        "How long the oldest waiting event has waited (0: none).",
        age,
    )
    yield GaugeMetricFamily(
        "cdp_parked_events", "Events parked after a failure, waiting for a replay.", parked_events_count()
    )
