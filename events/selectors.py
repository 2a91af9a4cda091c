"""Reads of the events app."""

import time
from collections.abc import Iterable

from cdp.credentials import credential_hash
from events.models import Source


def source_for_write_key(write_key: str) -> Source | None:
    """The enabled source holding this write key. Not cached: disabling a source must stop
    its key at once in every process."""
    try:
        return Source.objects.get(write_key_hash=credential_hash(write_key), enabled=True)
    except Source.DoesNotExist:
        return None


#: Source names change rarely and label every timeline line: each process keeps them this long
#: (a renamed source shows its new name within this time; a new source at once).
SOURCE_NAMES_TTL_SECONDS = 60.0
_source_names: tuple[float, dict[int, str]] = (0.0, {})


def source_names(wanted: Iterable[int] = ()) -> dict[int, str]:
    """Source names by id, from a per-process copy reloaded (one query) when it is older than
    the TTL or lacks one of the ``wanted`` ids."""
    global _source_names
    loaded_at, names = _source_names
    if time.monotonic() - loaded_at > SOURCE_NAMES_TTL_SECONDS or not set(wanted) <= names.keys():
        names = dict(Source.objects.values_list("id", "name"))
        _source_names = (time.monotonic(), names)
    return names


def source_names_forget(**kwargs: object) -> None:
    """Drop this process's copy (a ``post_save`` receiver of ``Source``)."""
    global _source_names
    _source_names = (0.0, {})
