"""Members' state for ``/metrics`` (``METRICS_COLLECTORS``), read at scrape time, one cheap
query each: the refresh queue (counted up to a cap, as the pipeline's backlog), parked
members, webhooks turned off and segments whose last compute failed."""

from collections.abc import Iterable

from django.db import connection
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from members.models import DirtyMark
from members.parking import parked_members_count
from members.segments.models import Segment, SegmentWebhook

#: Dirty marks are counted exactly up to this many.
DIRTY_COUNT_CAP = 1_000_000

_MARKS = DirtyMark._meta.db_table
_DIRTY = f"""
SELECT (SELECT count(*) FROM (SELECT 1 FROM {_MARKS} LIMIT %s) AS capped),
       (SELECT marked_at FROM {_MARKS} ORDER BY id LIMIT 1)
"""  # noqa: S608 - model tables only


def members_collect() -> Iterable[Metric]:
    with connection.cursor() as cursor:
        cursor.execute(_DIRTY, [DIRTY_COUNT_CAP])
        marks, oldest = cursor.fetchone()
    yield GaugeMetricFamily(
        "cdp_dirty_marks", f"Marks of members waiting for a refresh (counted up to {DIRTY_COUNT_CAP}).", marks
    )
    yield GaugeMetricFamily(
        "cdp_dirty_oldest_age_seconds",
        "How long the oldest mark has waited for its refresh (0: none).",
        max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0,
    )
    yield GaugeMetricFamily(
        "cdp_parked_members",
        "Members parked after a failed refresh, waiting for a replay.",
        parked_members_count(),
    )
    yield GaugeMetricFamily(
        "cdp_webhooks_inactive",
        "Segment webhooks turned off (by failures or by staff).",
        SegmentWebhook.objects.filter(active=False).count(),
    )
    # Rule tags keep no error (a failing one keeps its members, and is counted in
    # cdp_segment_compute_errors_total{kind="tag"} each time it fails).
    yield GaugeMetricFamily(
        "cdp_segments_failing",
        "Dynamic segments whose last compute failed.",
        Segment.objects.exclude(error="").count(),
    )
