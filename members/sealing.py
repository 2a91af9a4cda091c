"""Sealing the profile's phones, emails and names (``cdp.vault``): what the upgrade runs over
the traits written before (``members`` migration 0021), and what ``manage.py
seal_personal_data`` runs to seal what is left or, after a new key was put first, to seal
everything again under it. In batches by id, each its own short statement; a name trait gets
the blind indexes of its terms (``lookup``) too. A refresh running meanwhile rewrites its
members' traits sealed anyway."""

from collections.abc import Callable

import orjson
from django.conf import settings
from django.db import connection, transaction

from cdp.sealing import SEALED_PREFIX, is_sealed
from cdp.vault import sealer, trait_lookup, trait_open, trait_seal

_UNSEALED = (
    "SELECT id, key, value::text FROM members_membertrait WHERE key = ANY(%s) AND id > %s "
    "AND value IS NOT NULL AND (jsonb_typeof(value) <> 'string' OR NOT starts_with(value #>> '{}', %s) "
    "OR (%s AND NOT starts_with(value #>> '{}', %s))) ORDER BY id LIMIT %s"
)
_UPDATE = (
    "UPDATE members_membertrait AS t SET value = v.value::jsonb, lookup = string_to_array(v.lookup, ',') "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, value, lookup) WHERE t.id = v.id"
)


def traits_seal(
    *, batch_size: int = 5_000, rotate: bool = False, progress: Callable[[int], None] = lambda done: None
) -> int:
    """Seal the sealed traits (``PRIVACY_SEALED_TRAITS``) stored in the clear (``rotate``: also
    those sealed under another key than the current one); returns how many rows changed."""
    keys = sorted(settings.PRIVACY_SEALED_TRAITS)
    current = f"{SEALED_PREFIX}{sealer().keys.current}:"
    done, after = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_UNSEALED, [keys, after, SEALED_PREFIX, rotate, current, batch_size])
            rows = cursor.fetchall()
            if not rows:
                return done
            ids, values, lookups = [], [], []
            for pk, key, text in rows:
                stored = orjson.loads(text)
                value = trait_open(key, stored) if is_sealed(stored) else stored
                ids.append(pk)
                values.append(orjson.dumps(trait_seal(key, value)).decode())
                lookups.append(",".join(trait_lookup(key, value)))
            cursor.execute(_UPDATE, [ids, values, lookups])
        done += len(rows)
        after = rows[-1][0]
        progress(done)
