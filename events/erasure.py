"""Erasure and retention in the event store.

Events are append-only, with three sanctioned exceptions, all here:

- **a person's erasure**: each of their events is kept for the figures with every personal
  field removed (``events_strip``) or deleted (``events_delete``), as its source says
  (``Source.erasure``); other people's events that mentioned the person's values lose those
  values (``events_redact``); refused events that mention them are deleted
  (``rejected_events_erase``);
- **an event arriving for an erased person** (identity's stage recognises it by the erased
  identifiers' fingerprints): stripped or deleted the same way before anything reads it
  (``events_erase_arrived``);
- **retention** (``members.privacy.retention``): payloads past their period lose the fields
  nothing derived from them needs (``event_payloads_expire``); refused events past theirs are
  deleted (``rejected_events_expire``).

A stripped event keeps what the figures read: its name, channel, store, times, source and
message id, and its properties without personal fields (an order's id, amounts, currency and
products). It loses its user and anonymous ids, its traits, its context but for the technical
keys in ``PRIVACY_EVENT_CONTEXT_KEPT``, and its integrations; ``context.cdp.erased`` marks it,
so resolution never reads it again (``identity.erasure``).
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.db.models import Q

from cdp.db import binary_parameters_cursor
from cdp.personal import PersonalPolicy, personal_strip
from cdp.redaction import Redactor
from events.models import ErasureRule, Event, ParkedEvent, PendingEvent, RejectedEvent

#: ``context.cdp`` flags: stripped by an erasure; payload past its retention period.
ERASED_FLAG = "erased"
EXPIRED_FLAG = "expired"
#: The events an erasure stripped (resolution never reads them again).
ERASED_EVENTS = Q(context__contains={"cdp": {ERASED_FLAG: True}})  # never NULL: exclude() keeps the others
#: Rows read and rewritten per statement.
CHUNK = 500

_EVENTS = Event._meta.db_table


def personal_policy() -> PersonalPolicy:
    return PersonalPolicy.build(settings.PERSONAL_DATA_KEYS, default_region=settings.IDENTITY_DEFAULT_REGION)


def _stripped(document: Any, at: str, policy: PersonalPolicy) -> Any:
    return personal_strip(document, policy, at=(at,)).value


def _cdp_flags(context: object, flag: str) -> dict:
    kept = context.get("cdp") if isinstance(context, dict) else None
    return {**(kept if isinstance(kept, dict) else {}), flag: True}


def event_stripped(
    *, type_: str, name: str, group_id: str, context: Any, traits: Any, properties: Any,
    redactor: Redactor, policy: PersonalPolicy,
) -> dict[str, Any]:  # fmt: skip
    """The columns of an erased person's event once stripped (the ones that change)."""
    kept_keys = set(settings.PRIVACY_EVENT_CONTEXT_KEPT)
    kept_context = {
        key: redactor.value(_stripped(value, "context", policy))
        for key, value in (context.items() if isinstance(context, dict) else ())
        if key in kept_keys and key != "cdp"
    }
    kept_context["cdp"] = _cdp_flags(context, ERASED_FLAG)
    # A group call's traits are the group's (a company, a store club), kept without personal
    # fields; anyone else's traits are the person's, all of them.
    # (Read at no path: ``traits.name`` is a person's name, a group's is the club's.)
    kept_traits = redactor.value(personal_strip(traits, policy).value) if type_ == "group" else {}
    return {
        "user_id": "",
        "anonymous_id": "",
        "previous_id": "",
        "name": redactor.text(name),
        "group_id": redactor.text(group_id),
        "context": kept_context,
        "traits": kept_traits if isinstance(kept_traits, dict) else {},
        "properties": redactor.value(_stripped(properties, "properties", policy)) or {},
        "integrations": {},
    }


def events_by_rule(*, event_ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """These events split by what an erasure does to them (their source's rule): (strip, delete)."""
    strip: list[int] = []
    delete: list[int] = []
    ids = sorted(set(event_ids))
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT e.id, s.erasure FROM unnest(%b::bigint[]) AS k(id) "  # noqa: S608
            f"CROSS JOIN LATERAL (SELECT id, source_id FROM {_EVENTS} WHERE id = k.id OFFSET 0) AS e "
            "JOIN events_source AS s ON s.id = e.source_id",
            [ids],
        )
        for event_id, rule in cursor.fetchall():
            (delete if rule == ErasureRule.DELETE else strip).append(event_id)
    return strip, delete


_READ = (
    "SELECT e.id, e.type, e.name, e.group_id, e.user_id, e.anonymous_id, e.previous_id, e.context, e.traits, "  # noqa: S608
    "e.properties, e.integrations FROM unnest(%b::bigint[]) AS k(id) "
    f"CROSS JOIN LATERAL (SELECT * FROM {_EVENTS} WHERE id = k.id OFFSET 0) AS e"
)
_WRITE = (
    f"UPDATE {_EVENTS} AS e SET user_id = v.u, anonymous_id = v.a, previous_id = v.p, name = v.n, "  # noqa: S608
    "group_id = v.g, context = v.c::jsonb, traits = v.t::jsonb, properties = v.pr::jsonb, integrations = v.i::jsonb "
    "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[]) AS v(id, u, a, p, n, g, c, t, pr, i) WHERE e.id = v.id"
)


def _rows(event_ids: Sequence[int]) -> list[tuple]:
    with binary_parameters_cursor() as cursor:
        cursor.execute(_READ, [list(event_ids)])
        return [(*row[:7], *(orjson.loads(v) for v in row[7:])) for row in cursor.fetchall()]


def _write(rows: list[tuple[int, dict[str, Any]]]) -> None:
    if not rows:
        return
    columns = ("user_id", "anonymous_id", "previous_id", "name", "group_id")
    documents = ("context", "traits", "properties", "integrations")
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            _WRITE,
            [
                [event_id for event_id, _ in rows],
                *([values[c] for _, values in rows] for c in columns),
                *([orjson.dumps(values[d]).decode() for _, values in rows] for d in documents),
            ],
        )


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def events_strip(*, event_ids: Sequence[int], redactor: Redactor) -> int:
    """Strip an erased person's events of every personal field (``event_stripped``), and their
    parked failures' texts of the person's values; returns how many."""
    policy = personal_policy()
    done = 0
    for chunk in _chunks(event_ids):
        stripped = [
            (event_id, event_stripped(type_=type_, name=name, group_id=group_id, context=context, traits=traits,
                                      properties=properties, redactor=redactor, policy=policy))
            for event_id, type_, name, group_id, _, _, _, context, traits, properties, _ in _rows(chunk)
        ]  # fmt: skip
        _write(stripped)
        done += len(stripped)
    _parked_redact(event_ids, redactor)
    return done


def events_delete(*, event_ids: Sequence[int]) -> int:
    """Delete an erased person's events (of sources whose rule is to delete them). Identity has
    let go of them first (``identity.erasure.identity_events_forget``); the figures computed
    from them stay where they are. Returns how many."""
    done = 0
    for chunk in _chunks(event_ids):
        ParkedEvent.objects.filter(event_id__in=chunk).delete()
        PendingEvent.objects.filter(event_id__in=chunk).delete()
        with binary_parameters_cursor() as cursor:
            cursor.execute(f"DELETE FROM {_EVENTS} WHERE id = ANY(%b::bigint[])", [chunk])  # noqa: S608
            done += cursor.rowcount
    return done


def events_redact(*, event_ids: Sequence[int], redactor: Redactor) -> int:
    """Other people's events that mentioned an erased person's value lose it, in any written
    form, wherever it stands (ids, traits, context, properties); returns how many changed."""
    changed = 0
    for chunk in _chunks(event_ids):
        rows = []
        for event_id, _, name, group_id, user_id, anonymous_id, previous_id, *documents in _rows(chunk):
            before = {
                "user_id": user_id, "anonymous_id": anonymous_id, "previous_id": previous_id, "name": name,
                "group_id": group_id, "context": documents[0], "traits": documents[1],
                "properties": documents[2], "integrations": documents[3],
            }  # fmt: skip
            after = {key: redactor.value(value) for key, value in before.items()}
            if after != before:
                rows.append((event_id, after))
        _write(rows)
        changed += len(rows)
    _parked_redact(event_ids, redactor)
    return changed


def events_erase_arrived(*, event_ids: Sequence[int], redactor: Redactor) -> int:
    """Events that arrived carrying an erased person's identifiers (identity's stage, before it
    resolves anything): stripped, or deleted by their source's rule, in the stage's transaction.
    Nothing of identity refers to them yet. Returns how many."""
    strip, delete = events_by_rule(event_ids=event_ids)
    return events_strip(event_ids=strip, redactor=redactor) + events_delete(event_ids=delete)


def _parked_redact(event_ids: Sequence[int], redactor: Redactor) -> None:
    for parked in ParkedEvent.objects.filter(event_id__in=list(event_ids)):
        error, traceback = redactor.text(parked.error), redactor.text(parked.traceback)
        if (error, traceback) != (parked.error, parked.traceback):
            ParkedEvent.objects.filter(pk=parked.pk).update(error=error, traceback=traceback)


def _like_any(forms: Sequence[str]) -> list[str]:
    return ["%" + form.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for form in forms]


def rejected_events_erase(*, redactor: Redactor) -> int:
    """Delete the refused events that mention the person in any of their written forms (a
    refused event is kept only to show a source what was wrong). Returns how many."""
    if not redactor:
        return 0
    patterns = _like_any(redactor.forms)
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {RejectedEvent._meta.db_table} WHERE payload::text ILIKE ANY(%b::text[]) "  # noqa: S608
            "OR raw_excerpt ILIKE ANY(%b::text[]) OR message_id ILIKE ANY(%b::text[]) "
            "OR reason ILIKE ANY(%b::text[]) OR errors::text ILIKE ANY(%b::text[])",
            [patterns] * 5,
        )
        return cursor.rowcount


# --- retention --------------------------------------------------------------------------------


def event_payload_expired(*, context: Any, properties: Any, policy: PersonalPolicy) -> dict[str, Any]:
    """What an event keeps once its payload is past retention: what identity and the profile
    read (ids, traits, ``context.traits``, the device id, ``context.externalIds``) and the
    properties without personal fields; its other context but for ``PRIVACY_EVENT_CONTEXT_KEPT``
    goes (addresses, user agent, location, pages and referrers)."""
    kept_keys = set(settings.PRIVACY_EVENT_CONTEXT_KEPT) | {"traits", "externalIds"}
    document = context if isinstance(context, dict) else {}
    kept = {key: value for key, value in document.items() if key in kept_keys and key != "cdp"}
    device = document.get("device")
    if isinstance(device, dict) and "id" in device:
        kept["device"] = {"id": device["id"]}
    kept["cdp"] = _cdp_flags(document, EXPIRED_FLAG)
    return {"context": kept, "properties": _stripped(properties, "properties", policy) or {}}


def event_payloads_expire(
    *, received_before: datetime, after_id: int, limit: int, dry_run: bool
) -> tuple[int, int | None]:
    """Expire the payloads of the events received before ``received_before`` among the next
    ``limit`` events after id ``after_id``. Ids follow arrival, so the walk is over once a
    whole batch is younger (one younger event among old ones does not stop it). Returns (how
    many were expired, the last id looked at; None: nothing older is left)."""
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            f"SELECT id, received_at < %b, context, properties FROM {_EVENTS} WHERE id > %b ORDER BY id LIMIT %b",  # noqa: S608
            [received_before, after_id, limit],
        )
        rows = cursor.fetchall()
    due = [
        (event_id, orjson.loads(context), orjson.loads(properties))
        for event_id, old, context, properties in rows
        if old
    ]
    if not due:
        return 0, None
    if not dry_run:
        policy = personal_policy()
        expired = [
            (event_id, event_payload_expired(context=c, properties=p, policy=policy))
            for event_id, c, p in due
        ]
        with binary_parameters_cursor() as cursor:
            cursor.execute(
                f"UPDATE {_EVENTS} AS e SET context = v.c::jsonb, properties = v.p::jsonb "  # noqa: S608
                "FROM unnest(%b::bigint[], %b::text[], %b::text[]) AS v(id, c, p) WHERE e.id = v.id",
                [
                    [event_id for event_id, _ in expired],
                    [orjson.dumps(values["context"]).decode() for _, values in expired],
                    [orjson.dumps(values["properties"]).decode() for _, values in expired],
                ],
            )
    return len(due), rows[-1][0]


def rejected_events_expire(*, received_before: datetime, limit: int, dry_run: bool) -> int:
    """Delete up to ``limit`` refused events received before ``received_before``, oldest first
    (``dry_run``: count all of them, delete nothing); returns how many."""
    old = RejectedEvent.objects.filter(received_at__lt=received_before).order_by("id")
    if dry_run:
        return old.count()
    ids = list(old.values_list("pk", flat=True)[:limit])
    if ids:
        RejectedEvent.objects.filter(pk__in=ids).delete()
    return len(ids)
