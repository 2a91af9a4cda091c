"""Sealing identity's stored phones and emails (``cdp.vault``): what the upgrade runs over the
rows written before (``identity`` migration 0011), and what ``manage.py seal_personal_data``
runs to seal what is left or, after a new key was put first, to seal everything again under it.

In batches, each in its own short statement, by id: an identifier row gets its blind index as
``value`` and its value sealed beside it, its alias class the index of the class's value; a
merge or split record names a phone or an email by its index. Matching keeps working across
the change because resolution takes the lock of ``identity.policy`` around it.
"""

from collections.abc import Callable

import orjson
from django.db import connection, transaction

from cdp.sealing import SEALED_PREFIX
from cdp.vault import (
    SEALED_IDENTIFIER_TYPES,
    identifier_index,
    identifier_open,
    identifier_seal,
    sealer,
    text_open,
    text_seal,
)
from identity.models import SplitRecord
from identity.policy import identity_lock

_TYPES = sorted(SEALED_IDENTIFIER_TYPES)
_UNSEALED = (
    "SELECT id, type, value, sealed, alias_class FROM identity_identifier "
    "WHERE type = ANY(%s) AND id > %s AND (sealed = '' OR (%s AND sealed NOT LIKE %s)) ORDER BY id LIMIT %s"
)
_UPDATE = (
    "UPDATE identity_identifier AS i SET value = v.value, sealed = v.sealed, alias_class = v.alias "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS v(id, value, sealed, alias) WHERE i.id = v.id"
)


def identifiers_seal(
    *, batch_size: int = 5_000, rotate: bool = False, progress: Callable[[int], None] = lambda done: None
) -> int:
    """Seal the phones and emails stored in the clear (``rotate``: also those sealed under
    another key than the current one); returns how many rows changed."""
    current = f"{SEALED_PREFIX}{sealer().keys.current}:%"
    done, after = 0, 0
    while True:
        with transaction.atomic():
            identity_lock()  # resolution waits: it never sees half of a batch sealed
            with connection.cursor() as cursor:
                cursor.execute(_UNSEALED, [_TYPES, after, rotate, current, batch_size])
                rows = cursor.fetchall()
                if not rows:
                    return done
                ids, values, boxes, aliases = [], [], [], []
                for pk, type_, stored, sealed, alias in rows:
                    if sealed:  # sealed under an older key: opened and sealed again
                        index, value = stored, identifier_open(type_, stored, sealed)
                    else:
                        index, value = identifier_index(type_, stored), stored
                        alias = identifier_index(type_, alias) if alias else ""
                    ids.append(pk)
                    values.append(index)
                    boxes.append(identifier_seal(type_, index, value))
                    aliases.append(alias)
                cursor.execute(_UPDATE, [ids, values, boxes, aliases])
        done += len(rows)
        after = rows[-1][0]
        progress(done)


def _indexed(text: str) -> str:
    type_, _, value = text.partition(":")
    if type_ not in SEALED_IDENTIFIER_TYPES or _is_index(value):
        return text
    return f"{type_}:{identifier_index(type_, value)}"


def _is_index(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def records_seal(*, batch_size: int = 5_000, rotate: bool = False) -> int:
    """Merge and split records name phones and emails by their index, and a split's reason is
    sealed; returns how many records changed."""
    changed = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, reason FROM identity_splitrecord WHERE reason <> '' AND (NOT starts_with(reason, %s) "
            "OR (%s AND NOT starts_with(reason, %s)))",
            [SEALED_PREFIX, rotate, f"{SEALED_PREFIX}{sealer().keys.current}:"],
        )
        for pk, reason in cursor.fetchall():  # staff splits: a handful
            text = text_seal(SplitRecord.REASON, text_open(SplitRecord.REASON, reason))
            cursor.execute("UPDATE identity_splitrecord SET reason = %s WHERE id = %s", [text, pk])
            changed += 1
    for table, columns in (
        ("identity_mergerecord", ("identifiers",)),
        ("identity_splitrecord", ("identifiers", "others")),
    ):
        after = 0
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT id, {', '.join(f'{c}::text' for c in columns)} FROM {table} "  # noqa: S608 - constants
                    "WHERE id > %s ORDER BY id LIMIT %s",
                    [after, batch_size],
                )
                rows = cursor.fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                for pk, *texts in rows:
                    lists = [orjson.loads(text) for text in texts]
                    indexed = [[_indexed(t) if isinstance(t, str) else t for t in found] for found in lists]
                    if indexed != lists:
                        cursor.execute(
                            f"UPDATE {table} SET {', '.join(f'{c} = %s::jsonb' for c in columns)} WHERE id = %s",  # noqa: S608
                            [*(orjson.dumps(found).decode() for found in indexed), pk],
                        )
                        changed += 1
    return changed
