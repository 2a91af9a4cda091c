"""What every write of a tag or segment definition shares: the refusal it raises, the one lock
it takes, the checks on keys and rows, and the full recompute it asks for after the commit."""

import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction

from cdp.models import AuditEntry
from cdp.services import audit_record
from cdp.tasks import enqueue_on_commit
from members.segments import tasks
from members.segments.models import Segment, Tag

#: Advisory-lock key (two-key form) that serializes writes of tag and segment definitions.
DEFINITIONS_LOCK = (0x4446, 0)
#: Tag keys that would clash with the API's paths (/members/{id}/tags/history/).
RESERVED_TAG_KEYS = frozenset({"history"})

_KEY = re.compile(r"[-a-zA-Z0-9_]{1,64}")  # as rules name tags and segments


class DefinitionRefused(Exception):
    """A definition write that cannot be done: ``message`` for people, ``errors`` as (field,
    reason) pairs (a rule's problems as ``rule.<path>``), ``status`` the HTTP status it maps
    to (400 bad input, 404 unknown, 409 not allowed in the current state)."""

    def __init__(self, message: str, errors: Sequence[tuple[str, str]] = (), *, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.errors, self.status = message, list(errors), status


#: An update's default for ``rule``: not given (None is a value, "no rule").
UNCHANGED: Any = object()


def definitions_lock() -> None:
    """Serialize definition writes (transaction-scoped): two edits made at once could build a
    cycle, or delete what the other starts to read."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(DEFINITIONS_LOCK))


def key_check(key: object, what: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise DefinitionRefused(f"Bad {what} key.", [("key", "1 to 64 letters, digits, - and _")])
    if what == "tag" and key in RESERVED_TAG_KEYS:
        raise DefinitionRefused(f"The tag key {key!r} is reserved.", [("key", "reserved: pick another key")])


def definition_created(model: type[Segment] | type[Tag], what: str, **fields: object) -> Any:
    if model.objects.filter(key=fields["key"]).exists():
        raise _taken(what, str(fields["key"]))
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError as error:  # created by a writer that does not take the lock
        raise _taken(what, str(fields["key"])) from error


def _taken(what: str, key: str) -> DefinitionRefused:
    return DefinitionRefused(f"A {what} {key!r} exists already.", [("key", "already taken")], status=409)


def definition_locked(model: type[Segment] | type[Tag], pk: int, what: str, key: str) -> Any:
    found = model.objects.select_for_update().filter(pk=pk).first()
    if found is None:
        raise DefinitionRefused(f"No {what} {key!r}.", status=404)
    return found


def built_in_refused(segment: Segment) -> DefinitionRefused:
    return DefinitionRefused(
        f"Segment {segment.key!r} is built in: copy it to change it.",
        [("key", "a built-in segment cannot be changed or deleted; copy it")],
        status=409,
    )


def computed_refused(tag: Tag) -> DefinitionRefused:
    return DefinitionRefused(
        f"Tag {tag.key!r} is computed by the platform and cannot be changed or deleted.",
        [("key", "a computed tag is read-only")],
        status=409,
    )


def recompute_after_commit(kind: Literal["tag", "segment"], pk: int) -> None:
    """Recompute the rule in full once the edit is committed. A lost message is not lost
    work: the nightly full recompute computes every rule."""
    task = tasks.segment_recompute if kind == "segment" else tasks.tag_recompute
    enqueue_on_commit(task, pk, fallback="the nightly recompute")


def definition_audit(
    what: str, key: str, change: str, *, rule: object = None, by: User | None, channel: str
) -> None:
    """A segment's or tag's definition written (who targets whom is what marketing acts on):
    in the audit log, in the writer's transaction, with the rule as it now reads."""
    text = f"{what} {key}: {change}"
    if rule is not None:
        text += f"; rule {orjson.dumps(rule).decode()}"
    audit_record(user=by, action=AuditEntry.Action.CHANGE_RULE, member_ids=(), channel=channel, detail=text)
