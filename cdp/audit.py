"""Reading the audit log (``cdp.models.AuditEntry``): the filters the privacy officer and admins
use in the API and the console alike, and the CSV export of what they select.

Filters (all optional, combined): ``actor`` (a user name, exactly), ``action`` (one of
``AuditEntry.Action``), ``member`` (a member id among the entry's subjects), ``since`` and
``until`` (ISO 8601 times, ``since`` included, ``until`` excluded; a date alone is midnight in
the platform's time zone). Newest first.
"""

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, time

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from cdp.db import MAX_BIGINT
from cdp.models import AuditEntry

EXPORT_BATCH = 2000
CSV_COLUMNS = ("id", "at", "actor", "action", "member_ids", "channel", "address", "personal_fields", "detail")
FILTERS = ("actor", "action", "member", "since", "until")


class AuditFilterInvalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    member: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def describe(self) -> str:
        """As the export's own audit entry names what was exported."""
        parts = [f"{name}={value}" for name in FILTERS if (value := getattr(self, name)) not in ("", None)]
        return ", ".join(parts) or "everything"


def _moment(field: str, text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        moment = parse_datetime(text)
        day = None if moment else parse_date(text)
    except ValueError:  # well formed yet no time (month 13)
        moment = day = None
    if moment is None and day is None:
        raise AuditFilterInvalid(field, "an ISO 8601 date or time, e.g. 2026-09-01 or 2026-09-01T10:00:00Z")
    if moment is None:
        assert day is not None
        moment = datetime.combine(day, time.min)
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def audit_filter_parse(params: Mapping[str, str]) -> AuditFilter:
    """The filters in query parameters; raises ``AuditFilterInvalid`` naming the first bad one."""
    action = params.get("action", "").strip()
    if action and action not in AuditEntry.Action.values:
        raise AuditFilterInvalid("action", f"one of {', '.join(AuditEntry.Action.values)}")
    member_text = params.get("member", "").strip()
    member = None
    if member_text:
        if not (member_text.isascii() and member_text.isdigit() and len(member_text) <= 19):
            raise AuditFilterInvalid("member", "a member id")
        member = int(member_text)
        if member > MAX_BIGINT:
            raise AuditFilterInvalid("member", "a member id")
    since, until = _moment("since", params.get("since", "")), _moment("until", params.get("until", ""))
    if since and until and until <= since:
        raise AuditFilterInvalid("until", "must be after since")
    return AuditFilter(params.get("actor", "").strip()[:150], action, member, since, until)


def audit_entries(selected: AuditFilter) -> QuerySet[AuditEntry]:
    """The entries the filter selects, newest first (indexed: by member, user, action, time)."""
    entries = AuditEntry.objects.all()
    if selected.actor:
        entries = entries.filter(actor=selected.actor)
    if selected.action:
        entries = entries.filter(action=selected.action)
    if selected.member is not None:
        entries = entries.filter(member_ids__contains=[selected.member])
    if selected.since:
        entries = entries.filter(at__gte=selected.since)
    if selected.until:
        entries = entries.filter(at__lt=selected.until)
    return entries.order_by("-id")


def audit_entry_json(entry: AuditEntry) -> dict[str, object]:
    return {
        "id": entry.pk,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "action_label": AuditEntry.Action(entry.action).label
        if entry.action in AuditEntry.Action.values
        else "",
        "member_ids": entry.member_ids,
        "channel": entry.channel,
        "address": entry.address,
        "personal_fields": entry.personal_fields,
        "detail": entry.detail,
    }


#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def audit_csv_chunks(entries: QuerySet[AuditEntry]) -> Iterator[bytes]:
    """A header row, then the entries a batch at a time (a server-side cursor: flat memory)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for count, entry in enumerate(entries.iterator(chunk_size=EXPORT_BATCH), start=1):
        row = audit_entry_json(entry)
        writer.writerow([_cell(row[column]) for column in CSV_COLUMNS])
        if count % EXPORT_BATCH == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
