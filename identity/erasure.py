"""Erasure in identity: a person's identifiers go, only keyed fingerprints of them stay, and no
event can bring the person back.

What an erasure does here (``identity_erase``, under the identity lock, in the erasure's
transaction):

- the member (and the members merged into it: one person) is marked ``erased``: it keeps its
  id and its events, so the orders and points computed from them stay under a member that
  nobody can name;
- its identifiers are deleted: those it owns, those it holds of types that never merge (a
  shared one only loses this holder), and those only its events mentioned; each erased value
  leaves a keyed fingerprint (``ErasedIdentifier``, ``cdp.fingerprints``), as its type and, for
  a value that is a phone or an email whatever field held it, as ``phone`` / ``email``;
- its events mention nothing any more (their payloads are stripped by events), and the events
  of other people that mentioned an erased value are named to the caller, to be redacted;
- the merge and split records lose the erased identifiers, and a split's reason the person's
  values in any written form.

Afterwards (``erasure_check``, in the pipeline stage and in every rebuild): an event carrying
an identifier whose fingerprint is kept is never resolved. In the pipeline it is stripped of
its personal data on arrival (or deleted, by its source's rule) instead of making a member;
a rebuild skips it, and re-attaches the events of erased members to them as they were. A
policy may allow a new sign-up: a sign-up event (``PRIVACY_SIGNUP_EVENTS``) carrying erased
values then releases them from its event time on, and the person starts again as a new member.
"""

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cdp.db import binary_parameters_cursor
from cdp.fingerprints import fingerprint
from cdp.redaction import Redactor
from cdp.vault import identifier_open, text_seal
from events.models import Event
from events.pipeline import ClaimedEvent
from identity.identifiers import (
    Identifier,
    IdentifierType,
    erased_probes,
    identifier_probes,
)
from identity.models import (
    ErasedIdentifier,
    EventIdentifier,
    EventResolution,
    Member,
    MemberIdentifier,
    MergeRecord,
    SplitRecord,
)
from identity.models import Identifier as IdentifierRow
from identity.policy import identity_lock, normalization_policy
from identity.resolution import EventKey


def fingerprint_key() -> bytes:
    return settings.PRIVACY_FINGERPRINT_KEY.encode()


def _fingerprints(probes: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Fingerprint -> kind, of each probe."""
    key = fingerprint_key()
    return {_fingerprint(kind, value, key): kind for kind, value in probes}


def _fingerprint(kind: str, value: str, key: bytes) -> str:
    return fingerprint(kind, value, key=key)


@functools.lru_cache(maxsize=65_536)
def _looked_up_by(identifier: Identifier, key: bytes) -> tuple[str, ...]:
    """The fingerprints an identifier is looked up by among the erased, remembered: the same
    ids come back event after event (a customer's session, a store's card readers), and each
    probe is an HMAC the pipeline would compute again."""
    return tuple(_fingerprint(kind, value, key) for kind, value in identifier_probes(identifier))


# --- the person ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """One person as identity holds them: the active member, the members merged into it, the
    events resolved to it, and the identifiers an erasure of it removes."""

    member_id: int
    member_ids: tuple[int, ...]
    event_ids: tuple[int, ...]
    #: The person's identifiers, their values as normalized (a phone's and an email's opened).
    identifiers: tuple[Identifier, ...]
    #: The same identifiers as stored (a phone or an email as its blind index, ``cdp.vault``):
    #: what rows and records name.
    stored: tuple[Identifier, ...]
    #: Held of a type that never merges and shared with other members: only unlinked.
    shared: tuple[Identifier, ...]
    #: Events of other members that mentioned an erased identifier (to be redacted).
    others_event_ids: tuple[int, ...]
    #: The members those events belong to (their profiles are recomputed once redacted).
    others_member_ids: tuple[int, ...]


def member_cluster(*, member_id: int) -> Cluster | None:
    """The person behind an active member, read under the identity lock (taken here and held
    until the transaction ends: the caller erases in the same transaction); None when the
    member is not active (unknown, merged away, or erased already)."""
    identity_lock()
    member = Member.objects.filter(pk=member_id, status=Member.Status.ACTIVE).first()
    if member is None:
        return None
    member_ids = sorted(
        {member_id, *Member.objects.filter(merged_into_id=member_id).values_list("pk", flat=True)}
    )
    event_ids = sorted(EventResolution.objects.filter(member_id=member_id).values_list("event_id", flat=True))
    owned = set(
        IdentifierRow.objects.filter(member_id__in=member_ids).values_list("pk", "type", "value", "sealed")
    )
    held = set(
        MemberIdentifier.objects.filter(member_id__in=member_ids).values_list(
            "identifier_id", "identifier__type", "identifier__value", "identifier__sealed"
        )
    )
    shared_ids = set(
        MemberIdentifier.objects.filter(identifier_id__in=[pk for pk, *_ in held])
        .exclude(member_id__in=member_ids)
        .values_list("identifier_id", flat=True)
    )
    # Seen only in this person's events and never attached to anyone (dropped for matching).
    mentioned_only_here = set(
        IdentifierRow.objects.filter(
            member__isnull=True, pk__in=_identifier_ids_mentioned_by(event_ids)
        ).values_list("pk", "type", "value", "sealed")
    )
    if mentioned_only_here:
        elsewhere = _mentioned_outside({pk for pk, *_ in mentioned_only_here}, event_ids)
        mentioned_only_here = {row for row in mentioned_only_here if row[0] not in elsewhere}
    erased = owned | {row for row in held if row[0] not in shared_ids} | mentioned_only_here
    others = _events_mentioning({pk for pk, *_ in erased}, exclude=event_ids)
    others_members = set(
        EventResolution.objects.filter(event_id__in=sorted(others)).values_list("member_id", flat=True)
    )
    return Cluster(
        member_id=member_id,
        member_ids=tuple(member_ids),
        event_ids=tuple(event_ids),
        identifiers=tuple(
            sorted(Identifier(t, identifier_open(t, value, box)) for _, t, value, box in erased)
        ),
        stored=tuple(sorted(Identifier(type_, value) for _, type_, value, _ in erased)),
        shared=tuple(
            sorted(
                Identifier(t, identifier_open(t, value, box))
                for pk, t, value, box in held
                if pk in shared_ids
            )
        ),
        others_event_ids=tuple(sorted(others)),
        others_member_ids=tuple(sorted(others_members - set(member_ids))),
    )


def _identifier_ids_mentioned_by(event_ids: Sequence[int]) -> set[int]:
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT m.identifier_id FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL "  # noqa: S608
            f"(SELECT identifier_id FROM {EventIdentifier._meta.db_table} WHERE event_id = k.id OFFSET 0) AS m",
            [list(event_ids)],
        )
        return {row[0] for row in cursor.fetchall()}


def _events_mentioning(identifier_ids: set[int], *, exclude: Sequence[int]) -> set[int]:
    if not identifier_ids:
        return set()
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT m.event_id FROM unnest(%b::bigint[]) AS k(id) CROSS JOIN LATERAL "  # noqa: S608
            f"(SELECT event_id FROM {EventIdentifier._meta.db_table} WHERE identifier_id = k.id OFFSET 0) AS m",
            [sorted(identifier_ids)],
        )
        return {row[0] for row in cursor.fetchall()} - set(exclude)


def _mentioned_outside(identifier_ids: set[int], event_ids: Sequence[int]) -> set[int]:
    """Which of these identifiers an event outside ``event_ids`` mentions."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT m.identifier_id FROM {EventIdentifier._meta.db_table} AS m "  # noqa: S608
            "WHERE m.identifier_id = ANY(%b::bigint[]) AND NOT m.event_id = ANY(%b::bigint[])",
            [sorted(identifier_ids), list(event_ids)],
        )
        return {row[0] for row in cursor.fetchall()}


# --- erasing ------------------------------------------------------------------------------------


def identity_erase(*, cluster: Cluster, erasure_id: int, redactor: Redactor, block: bool) -> dict[str, int]:
    """Erase the person ``member_cluster`` read (in the same transaction, under its lock).
    ``block``: keep fingerprints of the erased identifiers, so later events carrying them are
    stripped (a data subject's erasure); without, they may come back as a new person (a
    retention sweep of anonymous members). Returns counts by what was done."""
    texts = [str(i) for i in cluster.stored]  # as records name them
    rows = list(
        IdentifierRow.objects.filter(member_id__in=cluster.member_ids).values_list("pk", flat=True)
    ) + list(
        IdentifierRow.objects.filter(pk__in=_rows_of(cluster.stored), member__isnull=True).values_list(
            "pk", flat=True
        )
    )
    counts: dict[str, int] = {f"identifiers.{type_}": 0 for type_ in {i.type for i in cluster.identifiers}}
    for identifier in cluster.identifiers:
        counts[f"identifiers.{identifier.type}"] += 1
    if block and cluster.identifiers:
        policy = normalization_policy()
        prints: dict[str, str] = {}
        for identifier in cluster.identifiers:
            prints.update(_fingerprints(erased_probes(identifier, policy)))
        counts["fingerprints"] = _fingerprints_keep(prints, erasure_id)
    # The person's events mention nothing any more; nobody's events mention an erased value.
    erased_ids = set(rows)
    counts["mentions"] = _mentions_delete(cluster.event_ids, erased_ids)
    MemberIdentifier.objects.filter(member_id__in=cluster.member_ids).delete()
    IdentifierRow.objects.filter(pk__in=erased_ids).delete()
    EventResolution.objects.filter(event_id__in=cluster.event_ids).exclude(problems=[]).update(problems=[])
    counts["merge_records"] = _merge_records_erase(texts, cluster.member_ids)
    counts["split_records"] = _split_records_erase(texts, cluster.member_ids, redactor)
    counts["event_problems"] = _problems_redact(cluster.others_event_ids, redactor)
    Member.objects.filter(pk=cluster.member_id).update(status=Member.Status.ERASED, updated_at=timezone.now())
    return counts


def _rows_of(identifiers: Iterable[Identifier]) -> list[int]:
    wanted = list(identifiers)
    if not wanted:
        return []
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT i.id FROM unnest(%b::text[], %b::text[]) AS k(t, v) CROSS JOIN LATERAL "  # noqa: S608
            f"(SELECT id FROM {IdentifierRow._meta.db_table} WHERE type = k.t AND value = k.v OFFSET 0) AS i",
            [[i.type for i in wanted], [i.value for i in wanted]],
        )
        return [row[0] for row in cursor.fetchall()]


def _fingerprints_keep(prints: dict[str, str], erasure_id: int) -> int:
    """Upsert: a value erased again (after a new sign-up released it) is blocked again."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ErasedIdentifier._meta.db_table} (kind, fingerprint, erasure_id, erased_at, released_from) "  # noqa: S608
            "SELECT v.k, v.f, %b, now(), NULL FROM unnest(%b::text[], %b::text[]) AS v(f, k) "
            "ON CONFLICT (fingerprint) DO UPDATE SET erasure_id = EXCLUDED.erasure_id, erased_at = now(), "
            "released_from = NULL",
            [erasure_id, list(prints), list(prints.values())],
        )
        return len(prints)


def _mentions_delete(event_ids: Sequence[int], identifier_ids: set[int]) -> int:
    table = EventIdentifier._meta.db_table
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT r.ctid FROM unnest(%b::bigint[]) AS k(id) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT ctid FROM {table} WHERE event_id = k.id OFFSET 0) AS r)) "
            "OR identifier_id = ANY(%b::bigint[])",
            [list(event_ids), sorted(identifier_ids)],
        )
        return cursor.rowcount


def _merge_records_erase(texts: list[str], member_ids: Sequence[int]) -> int:
    """Every merge record loses the erased identifiers it names (a record of another member's
    merge may name one: the event that linked them carried it)."""
    if not texts:
        return 0
    records = MergeRecord.objects.filter(identifiers__has_any_keys=texts)
    erased = set(texts)
    changed = 0
    for record in records.only("pk", "identifiers"):
        record.identifiers = [i for i in record.identifiers if i not in erased]
        record.save(update_fields=["identifiers"])
        changed += 1
    return changed


def _split_records_erase(texts: list[str], member_ids: Sequence[int], redactor: Redactor) -> int:
    """Split records lose the erased identifiers on either side, and the person's values in
    their reason. A side left empty separates nothing any more: the erased values can never
    come back (their fingerprints stop them), unless a new sign-up brings them as a new member."""
    erased = set(texts)
    candidates = SplitRecord.objects.filter(member_id__in=member_ids)
    if texts:
        candidates = candidates | SplitRecord.objects.filter(identifiers__has_any_keys=texts)
        candidates = candidates | SplitRecord.objects.filter(others__has_any_keys=texts)
    changed = 0
    for record in candidates.distinct():
        identifiers = [i for i in record.identifiers if i not in erased]
        others = [i for i in record.others if i not in erased]
        reason = redactor.text(record.reason_text)
        if (identifiers, others, reason) != (record.identifiers, record.others, record.reason_text):
            record.identifiers, record.others = identifiers, others
            record.reason = text_seal(SplitRecord.REASON, reason)
            record.save(update_fields=["identifiers", "others", "reason"])
            changed += 1
    return changed


def _problems_redact(event_ids: Sequence[int], redactor: Redactor) -> int:
    """Other people's events may have carried the person's values among their unusable ones."""
    changed = 0
    for resolution in EventResolution.objects.filter(event_id__in=event_ids).exclude(problems=[]):
        problems = redactor.value(resolution.problems)
        if problems != resolution.problems:
            EventResolution.objects.filter(pk=resolution.pk).update(problems=problems)
            changed += 1
    return changed


def identity_events_forget(*, event_ids: Sequence[int]) -> int:
    """Identity lets go of events about to be deleted (an erasure or retention deleting them):
    their resolutions and mentions go, merge records stop citing them. Returns how many
    resolutions went."""
    if not event_ids:
        return 0
    ids = list(event_ids)
    MergeRecord.objects.filter(event_id__in=ids).update(event=None)
    _mentions_delete(ids, set())
    with binary_parameters_cursor() as cursor:
        table = EventResolution._meta.db_table
        cursor.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT r.ctid FROM unnest(%b::bigint[]) AS k(id) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT ctid FROM {table} WHERE event_id = k.id OFFSET 0) AS r))",
            [ids],
        )
        return cursor.rowcount


# --- afterwards: what arrives later -------------------------------------------------------------


@dataclass
class ErasureCheck:
    """A batch's events that carry erased identifiers (never to be resolved), and the values
    each carried, to strip them by."""

    blocked: dict[int, list[Identifier]] = field(default_factory=dict)  # event id -> its identifiers
    released: int = 0


def erasure_check(
    events: Sequence[ClaimedEvent | Event],
    identifiers: dict[EventKey, frozenset[Identifier]],
    keys: dict[int, EventKey],
    *,
    release: bool,
) -> ErasureCheck:
    """Which of these events carry an identifier an erasure blocked, as of each event's time.
    ``release``: the pipeline's stage, which lets a sign-up event release the values it carries
    when the policy allows one (``PRIVACY_ALLOW_SIGNUP_AFTER_ERASURE``); a rebuild reads the
    releases already made."""
    check = ErasureCheck()
    if not ErasedIdentifier.objects.exists():  # nobody erased yet: nothing to compute
        return check
    key = fingerprint_key()
    probes: dict[int, set[str]] = {
        event.id: {fp for i in identifiers[keys[event.id]] for fp in _looked_up_by(i, key)}
        for event in events
    }
    wanted = sorted({fp for found in probes.values() for fp in found})
    if not wanted:
        return check
    blocked = _blocked(wanted)
    if not blocked:
        return check
    by_id = {event.id: event for event in events}
    if release and settings.PRIVACY_ALLOW_SIGNUP_AFTER_ERASURE:
        signups = [
            event for event in events
            if event.type == "track" and event.event in settings.PRIVACY_SIGNUP_EVENTS
            and probes[event.id] & blocked.keys()
        ]  # fmt: skip
        for event in sorted(signups, key=lambda e: keys[e.id]):
            mine = sorted(probes[event.id] & blocked.keys())
            _release(mine, event.timestamp)
            for fp in mine:
                blocked[fp] = event.timestamp
            check.released += len(mine)
    for event_id, found in probes.items():
        if any(_blocks(blocked, fp, by_id[event_id].timestamp) for fp in found):
            check.blocked[event_id] = sorted(identifiers[keys[event_id]])
    return check


def _blocks(blocked: dict[str, datetime | None], fp: str, at: datetime) -> bool:
    """Whether an erased fingerprint stops an event of this time (released from a sign-up on)."""
    if fp not in blocked:
        return False
    released_from = blocked[fp]
    return released_from is None or at < released_from


def _blocked(fingerprints: list[str]) -> dict[str, datetime | None]:
    """The erased ones among these fingerprints, with the event time they are released from."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT e.fingerprint, e.released_from FROM unnest(%b::text[]) AS k(f) CROSS JOIN LATERAL "  # noqa: S608
            f"(SELECT fingerprint, released_from FROM {ErasedIdentifier._meta.db_table} "
            "WHERE fingerprint = k.f OFFSET 0) AS e",
            [fingerprints],
        )
        return dict(cursor.fetchall())


def _release(fingerprints: list[str], at: datetime) -> None:
    ErasedIdentifier.objects.filter(fingerprint__in=fingerprints).update(released_from=at)


def identifier_forms(identifiers: Iterable[Identifier]) -> tuple[list[str], list[str]]:
    """These identifiers' values as a redactor takes them: (phones in E.164, other texts; an
    openid also without its mini-program's scope)."""
    phones, texts = [], []
    for identifier in identifiers:
        if identifier.type == IdentifierType.PHONE:
            phones.append(identifier.value)
            continue
        texts.append(identifier.value)
        if identifier.type == IdentifierType.WECHAT_OPENID and ":" in identifier.value:
            texts.append(identifier.value.split(":", 1)[1])
    return phones, texts


def redactor_of(identifiers: Iterable[Identifier]) -> Redactor:
    """A redactor of these identifiers' values, phones in every written form."""
    phones, texts = identifier_forms(identifiers)
    return Redactor(phones=phones, texts=texts)


def erased_resolutions() -> list[tuple[int, int]]:
    """(event, member) of every event resolved to an erased member: what a rebuild puts back."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.event_id, r.member_id FROM {EventResolution._meta.db_table} AS r "  # noqa: S608
            f"JOIN {Member._meta.db_table} AS m ON m.id = r.member_id WHERE m.status = %s",
            [Member.Status.ERASED],
        )
        return cursor.fetchall()


def erased_resolutions_restore(rows: list[tuple[int, int]]) -> None:
    if not rows:
        return
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EventResolution._meta.db_table} (event_id, member_id, problems, resolved_at) "  # noqa: S608
            "SELECT v.e, v.m, '[]'::jsonb, now() FROM unnest(%b::bigint[], %b::bigint[]) AS v(e, m) "
            "ON CONFLICT (event_id) DO NOTHING",
            [[e for e, _ in rows], [m for _, m in rows]],
        )
