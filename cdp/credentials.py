"""Secrets we hand out once and only ever store hashed: source write keys and staff tokens.

They are 256-bit random values, so a fast SHA-256 is enough (nobody can brute-force the
pre-image) and lets every request find its credential through a unique index.
"""

import hashlib
import secrets

PREFIX_LENGTH = 10


def credential_new(*, kind: str) -> str:
    """A fresh secret such as ``wk_3Nf...``; the kind prefix tells people what they hold."""
    return f"{kind}_{secrets.token_urlsafe(32)}"


def credential_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def credential_prefix(value: str) -> str:
    """The first characters, kept in clear so staff can tell credentials apart."""
    return value[:PREFIX_LENGTH]
