"""Date arithmetic that stays inside the calendar. Pure (no ORM).

Ingestion refuses event times outside a window around the present, but events stored before it
did may be stamped in year 9999 or year 1; a window added to or taken from such a moment falls
outside what ``datetime`` holds and raised ``OverflowError``, and the member's refresh failed
on every try. What the refresh computes from event times goes through ``moment_plus``: a
moment beyond the calendar is None, which each caller reads as "never" (no expiry, no review,
no recheck) or "since always" (a window reaching back before year 1).
"""

from datetime import datetime, timedelta, tzinfo


def moment_plus(moment: datetime, delta: timedelta) -> datetime | None:
    """``moment + delta``, or None where that falls outside the calendar (years 1 to 9999)."""
    try:
        return moment + delta
    except OverflowError:
        return None


def local_of(moment: datetime, zone: tzinfo) -> datetime | None:
    """``moment`` in ``zone``, or None where its local date falls outside the calendar (the
    last hours of 9999 east of UTC)."""
    try:
        return moment.astimezone(zone)
    except OverflowError:
        return None
