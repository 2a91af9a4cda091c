"""Reads of the events app."""

from cdp.credentials import credential_hash
from events.models import Source


def source_for_write_key(write_key: str) -> Source | None:
    """The enabled source holding this write key. Not cached: disabling a source must stop
    its key at once in every process."""
    try:
        return Source.objects.get(write_key_hash=credential_hash(write_key), enabled=True)
    except Source.DoesNotExist:
        return None
