"""Per source and hour, how many events and rejections arrived (``SourceTraffic``), counted
incrementally: each evaluation reads only what arrived since the last (``events_traffic``), so
"a till sent nothing for an hour" and "a source's rejected share" cost a few rows, not a scan
of the event table over the window. The first run starts at the tables' newest ids: traffic
from before operations were switched on is not counted."""

from datetime import datetime, timedelta

from django.db import connection, transaction

from events.selectors import events_last_id, events_traffic
from ops.models import SourceTraffic, TrafficCursor

#: A row is counted once it was received this long ago (ingestion commits in milliseconds).
SETTLE = timedelta(seconds=30)

_ADD = f"""
INSERT INTO {SourceTraffic._meta.db_table} AS t (source_id, hour, accepted, rejected, last_event_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (source_id, hour) DO UPDATE SET
    accepted = t.accepted + EXCLUDED.accepted, rejected = t.rejected + EXCLUDED.rejected,
    last_event_at = GREATEST(t.last_event_at, EXCLUDED.last_event_at)
"""  # noqa: S608 - model table only


def traffic_count(*, now: datetime) -> int:
    """Count what arrived since the last call; returns how many rows (events and rejections).
    One evaluation at a time holds the cursor's row lock, so nothing is counted twice."""
    with transaction.atomic():
        cursor_row = TrafficCursor.objects.select_for_update().first()
        if cursor_row is None:
            TrafficCursor.objects.create(
                last_event_id=events_last_id(), last_rejected_id=events_last_id(rejected=True)
            )
            return 0
        settled = now - SETTLE
        accepted, cursor_row.last_event_id = events_traffic(
            after_id=cursor_row.last_event_id, settled_before=settled
        )
        rejected, cursor_row.last_rejected_id = events_traffic(
            after_id=cursor_row.last_rejected_id, settled_before=settled, rejected=True
        )
        rows = [(s, h, n, 0, last) for s, h, n, last in accepted] + [
            (s, h, 0, n, None) for s, h, n, _ in rejected
        ]
        with connection.cursor() as cursor:
            for row in rows:
                cursor.execute(_ADD, list(row))
        cursor_row.save(update_fields=["last_event_id", "last_rejected_id"])
        return sum(row[2] + row[3] for row in rows)


def traffic_since(*, since: datetime) -> dict[int, tuple[int, int, datetime | None]]:
    """Per source: (events, rejections, last event) over the hours from ``since``'s hour on."""
    hour = since.replace(minute=0, second=0, microsecond=0)
    totals: dict[int, tuple[int, int, datetime | None]] = {}
    for source_id, accepted, rejected, last in SourceTraffic.objects.filter(hour__gte=hour).values_list(
        "source_id", "accepted", "rejected", "last_event_at"
    ):
        a, r, seen = totals.get(source_id, (0, 0, None))
        totals[source_id] = (a + accepted, r + rejected, max(filter(None, (seen, last)), default=None))
    return totals


def last_event_at(source_ids: list[int]) -> dict[int, datetime]:
    """When each source's latest counted event arrived (sources never counted are absent)."""
    rows = (
        SourceTraffic.objects.filter(source_id__in=source_ids, last_event_at__isnull=False)
        .order_by("source_id", "-last_event_at")
        .distinct("source_id")
        .values_list("source_id", "last_event_at")
    )
    return {source_id: at for source_id, at in rows if at is not None}
