"""Keyed one-way fingerprints of personal values: what an erasure keeps of each identifier it
erased, so that a later event carrying the same phone, email or id is recognised without the
value being stored anywhere.

HMAC-SHA256 under a server secret (``PRIVACY_FINGERPRINT_KEY``), not a plain hash: the space
of phone numbers is small (a few billion per country), so an unkeyed SHA-256 of one is
reversed by trying them all in minutes; without the key nobody can test a guess against a
stored fingerprint. The key must never change: a fingerprint made under another key matches
nothing, and the erased values are gone, so they cannot be fingerprinted again.

Pure (no Django): callers pass the key.
"""

import hmac

#: A fingerprint's length in characters (hex of SHA-256).
FINGERPRINT_LENGTH = 64


def fingerprint(kind: str, value: str, *, key: bytes) -> str:
    """The fingerprint of ``value`` as a ``kind`` (an identifier type, or ``phone`` / ``email``
    for a value that is one whatever the type it came as). The caller normalizes ``value``
    first: ``+8613800138000``, not ``138 0013 8000``."""
    return hmac.digest(key, f"{kind}\x1f{value}".encode(), "sha256").hex()  # one-shot: C, no objects
