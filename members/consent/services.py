"""Writes of consent: statements from events (the member refresh), from staff (API and console),
and erasure's ``forget``."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from cdp.db import binary_parameters_cursor
from cdp.models import AuditEntry
from cdp.services import ERASURE_SETTING, audit_record
from events.models import Event
from members.consent.models import ConsentStatement
from members.consent.selectors import consent_facts
from members.consent.statements import (
    MAX_VERSION,
    ORIGIN_STAFF,
    STATES,
    ConsentFact,
    Stated,
    consent_of_event,
    consent_of_traits,
)
from members.marks import members_mark_dirty, members_refresh_enqueue
from members.models import Member
from members.selectors import member_resolve


@dataclass(frozen=True, slots=True)
class ConsentSource:
    """An event of a member that may state consent: the person's traits it states (``traits``
    and ``context.traits``), and a ``Consent Updated`` event's properties (else None)."""

    member_id: int
    event_id: int
    traits: Mapping[str, object]
    properties: Mapping[str, object] | None


_TABLE = ConsentStatement._meta.db_table
# An event's statements, inserted with what the event says of where it came from; a statement
# already recorded (event, purpose) only moves to the member the event belongs to now.
_UPSERT = f"""
INSERT INTO {_TABLE} AS s (member_id, purpose, state, at, version, origin, event_id, source_id, channel,
                           store_code, app, device_id, note, recorded_at)
SELECT v.m, v.p, v.st, e.timestamp, v.ver, v.o, e.id, e.source_id, e.channel, e.store_code,
       left(concat_ws(' ', e.context -> 'app' ->> 'name', e.context -> 'app' ->> 'version'), 100),
       left(coalesce(e.context -> 'device' ->> 'id', ''), 255), '', now()
FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[])
     AS v(m, ev, p, st, ver, o)
JOIN {Event._meta.db_table} AS e ON e.id = v.ev
ORDER BY e.id, v.p
ON CONFLICT (event_id, purpose) WHERE event_id IS NOT NULL
DO UPDATE SET member_id = EXCLUDED.member_id WHERE s.member_id <> EXCLUDED.member_id
"""  # noqa: S608 - model tables only
# Staff statements are held by the member they were recorded on, or its survivor while merged:
# the refreshed members and the members merged into them, each found by index (a staff
# statement's subject by consent_by_subject), never a pass over every staff statement.
_REHOME = f"""
UPDATE {_TABLE} AS s SET member_id = t.holder
FROM (
    SELECT m.id, coalesce(m.merged_into_id, m.id) AS holder FROM {Member._meta.db_table} AS m
    WHERE m.id = ANY(%b::bigint[])
    UNION
    SELECT m.id, m.merged_into_id FROM {Member._meta.db_table} AS m WHERE m.merged_into_id = ANY(%b::bigint[])
) AS t
WHERE s.subject_id = t.id AND s.event_id IS NULL AND s.member_id <> t.holder
"""  # noqa: S608


def consent_refresh(
    *, member_ids: set[int], active: set[int], sources: Iterable[ConsentSource]
) -> dict[int, tuple[ConsentFact, ...]]:
    """Attach to each member the statements its events make, and the staff statements recorded
    on it or on a member merged into it (the member refresh, for ``member_ids``, of which
    ``active`` are active); returns the active members' statements as rules read them.

    Statements are history: one per (event, purpose), never rewritten; a statement only moves
    to the member its event (or, recorded by staff, its subject) belongs to now. So after a
    merge the survivor holds both sides' statements (the latest per purpose is in force), and
    after a split each goes back with the member whose event made it. Written in one statement
    in (event, purpose) order, so two refreshes never deadlock on them.
    """
    purposes, legacy = settings.CONSENT_PURPOSES, settings.MARKETING_CONSENT_TRAIT
    rows: list[tuple[int, int, Stated]] = []
    for source in sources:
        stated = {
            s.purpose: s for s in consent_of_traits(source.traits, purposes=purposes, legacy_trait=legacy)
        }
        if source.properties is not None:
            stated.update((s.purpose, s) for s in consent_of_event(source.properties, purposes=purposes))
        rows += [(source.member_id, source.event_id, s) for s in stated.values()]
    with binary_parameters_cursor() as cursor:
        if rows:
            cursor.execute(
                _UPSERT,
                [[m for m, _, _ in rows], [e for _, e, _ in rows], [s.purpose for _, _, s in rows],
                 [s.state for _, _, s in rows], [s.version for _, _, s in rows], [s.origin for _, _, s in rows]],
            )  # fmt: skip
        if member_ids:
            ids = sorted(member_ids)
            cursor.execute(_REHOME, [ids, ids])
    return consent_facts(member_ids=active)


class ConsentRefused(Exception):
    """A staff statement that cannot be recorded: ``field`` and ``reason`` say why; ``status``
    404 for a member that does not exist, else 400."""

    def __init__(self, field: str, reason: str, *, status: int = 400) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.status = field, reason, status


def consent_record(
    *, member_id: int, purpose: str, state: str, version: str, note: str, user: User, channel: str
) -> ConsentStatement:
    """Record what a person told staff (at the desk, on the phone): a statement on the member
    (an absorbed id counts as its survivor), at this moment, audited; the member is marked for
    a refresh so rules that read consent follow."""
    if purpose not in settings.CONSENT_PURPOSES:
        raise ConsentRefused("purpose", f"one of {', '.join(settings.CONSENT_PURPOSES)}")
    if state not in STATES:
        raise ConsentRefused("state", f"one of {', '.join(STATES)}")
    if len(version.strip()) > MAX_VERSION:
        raise ConsentRefused("version", f"at most {MAX_VERSION} characters")
    with transaction.atomic():
        member = member_resolve(member_id=member_id)
        if member is None:
            raise ConsentRefused("member_id", f"no member {member_id}", status=404)
        statement = ConsentStatement.objects.create(
            member=member, subject_id=member.pk, purpose=purpose, state=state, at=timezone.now(),
            version=version.strip(), origin=ORIGIN_STAFF, channel="staff", recorded_by=user, note=note.strip()[:255],
        )  # fmt: skip
        audit_record(
            user=user,
            action=AuditEntry.Action.RECORD_CONSENT,
            member_ids=[member.pk],
            channel=channel,
            detail=f"{purpose} {state}" + (f" (version {statement.version})" if statement.version else ""),
        )
        members_mark_dirty(member_ids=[member.pk])
        transaction.on_commit(members_refresh_enqueue)
    return statement


def forget(member_ids: Iterable[int]) -> int:
    """Delete every consent statement these members hold or that staff recorded on them, for
    erasure; returns how many. The only way a statement is deleted (the table's trigger
    refuses any other). Erase or strip the members' events first: the refresh derives
    statements again from events that still state consent."""
    ids = sorted(set(member_ids))
    if not ids:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', true)", [ERASURE_SETTING])
        cursor.execute(
            f"DELETE FROM {_TABLE} WHERE member_id = ANY(%s) OR subject_id = ANY(%s)",  # noqa: S608
            [ids, ids],
        )
        deleted = cursor.rowcount
        cursor.execute("SELECT set_config(%s, 'off', true)", [ERASURE_SETTING])
    return deleted
