"""Personal data at rest: values sealed with authenticated encryption, and found again by a
keyed blind index (README, "Personal data at rest").

- **Sealing** is AES-256-GCM (``cryptography``): a random 96-bit nonce per value, and the
  value's *context* (its table, column and key, and for an identifier its blind index) bound
  as associated data, so a sealed value copied into another row or column does not open. A
  sealed text names the key that sealed it (``sealed:1:<key id>:<base64 of nonce+ciphertext>``),
  so keys can be rotated: new values are sealed under the first key of the list, and every key
  of the list still opens what it sealed.
- **The blind index** is HMAC-SHA256 under its own key, of the normalized value and its kind:
  equal values give equal indexes, so a phone is matched and looked up by its index alone,
  in the same indexed equality the plain value had. Unlike a plain hash it cannot be reversed by
  trying every phone number without the key. It is deterministic by design, so it shows which
  rows hold the same value (the price of matching); the key must not change (every index
  would have to be computed again from the sealed values).

Pure (no Django): callers pass the keys (``cdp.vault`` reads them from the settings).
"""

import base64
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: What a sealed text starts with, and the format's version.
SEALED_PREFIX = "sealed:1:"
INDEX_LENGTH = 64  # hex of SHA-256
_NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SealingError(ValueError):
    """A key list that cannot be used, or a sealed value that does not open (tampered, moved to
    another row, or sealed under a key that is not configured)."""


@dataclass(frozen=True)
class SealingKeys:
    """The keys values are sealed under, by id: the first seals, all of them open."""

    current: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str) -> "SealingKeys":
        """``id=base64key,id=base64key``: 32-byte keys (AES-256), the current one first
        (``python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"``)."""
        keys: dict[str, bytes] = {}
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            key_id, _, encoded = entry.partition("=")
            if not _KEY_ID.match(key_id):
                raise SealingError(f"key id {key_id!r}: 1 to 32 letters, digits, - or _")
            try:
                key = base64.b64decode(encoded, validate=True)
            except ValueError as error:
                raise SealingError(f"key {key_id!r} is not base64") from error
            if len(key) != 32:
                raise SealingError(f"key {key_id!r} must be 32 bytes (AES-256), not {len(key)}")
            if key_id in keys:
                raise SealingError(f"key id {key_id!r} is given twice")
            keys[key_id] = key
        if not keys:
            raise SealingError("no key: give at least one id=base64key")
        return cls(current=next(iter(keys)), keys=keys)


class Sealer:
    """Seals and opens values under ``SealingKeys``; computes blind indexes under its key."""

    def __init__(self, keys: SealingKeys, index_key: bytes) -> None:
        if not index_key:
            raise SealingError("the blind index key is empty")
        self.keys = keys
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys.items()}
        self._index_key = index_key

    def seal(self, text: str, *, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.keys.current].encrypt(nonce, text.encode(), context.encode())
        return f"{SEALED_PREFIX}{self.keys.current}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, *, context: str) -> str:
        key_id, payload = _parts(sealed)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealingError(f"sealed under key {key_id!r}, which is not configured")
        raw = base64.b64decode(payload)
        try:
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except InvalidTag as error:
            raise SealingError(
                "the sealed value does not open here (changed, or moved from another row)"
            ) from error

    def key_of(self, sealed: str) -> str:
        """The id of the key a sealed text was sealed under."""
        return _parts(sealed)[0]

    def index(self, kind: str, value: str) -> str:
        """The blind index of a normalized ``value`` of ``kind`` (an identifier type, or a search
        term's kind): one HMAC, in C."""
        return hmac.digest(self._index_key, f"{kind}\x1f{value}".encode(), "sha256").hex()


def default_sealing_keys(secret_key: str) -> str:
    """Outside production: one key derived from the secret key (production sets its own)."""
    return "dev=" + base64.b64encode(hashlib.sha256(f"sealing:{secret_key}".encode()).digest()).decode()


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


def _parts(sealed: str) -> tuple[str, str]:
    if not is_sealed(sealed):
        raise SealingError("not a sealed value")
    key_id, _, payload = sealed[len(SEALED_PREFIX) :].partition(":")
    return key_id, payload


# --- names: what a search by name is matched on ---------------------------------------------------

_SPACES = re.compile(r"\s+")
#: Ideographs: a Chinese, Japanese or Korean name is written without spaces, family name first.
_CJK = re.compile(r"^[\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+$")


def name_normalized(text: str) -> str:
    """A name as searches match it: Unicode NFKC, case-folded, spaces collapsed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def name_terms(text: str) -> frozenset[str]:
    """The terms a name is found by: the whole name, each word of it, and for a name in
    ideographs its family name (the first character; ``欧阳``-style double family names by the
    first two as well). A search matches whole terms: ``zhang`` finds "Zhang Wei", ``王`` finds
    "王芳", ``zha`` finds nobody (a blind index cannot match part of a term)."""
    whole = name_normalized(text)
    if not whole:
        return frozenset()
    terms = {whole, *whole.split(" ")}
    for word in whole.split(" "):
        if len(word) >= 2 and _CJK.match(word):
            terms.update((word[:1], word[:2]) if len(word) >= 3 else (word[:1],))
    return frozenset(terms)


def indexes_of(sealer: Sealer, kind: str, terms: Iterable[str]) -> list[str]:
    return sorted({sealer.index(kind, term) for term in terms})
