"""The platform's sealing of personal data at rest (``cdp.sealing``), under the keys of the
settings: which identifiers and traits are sealed, and the one place that seals, opens and
indexes them, for every app.

- Identifiers of ``SEALED_IDENTIFIER_TYPES`` (phone, email) are stored as their blind index
  (``identity_identifier.value``: what resolution matches, lookups find and merge and split
  records name) with the value sealed beside it (``identity_identifier.sealed``).
- Traits named in ``PRIVACY_SEALED_TRAITS`` (phone, email and the name traits) are stored
  sealed in ``members_membertrait.value`` (a JSON text ``sealed:1:...`` in place of the value),
  and the name traits are found by the blind indexes of their terms (``members_membertrait.lookup``).
"""

import functools
from collections.abc import Mapping
from typing import Any

import orjson
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from cdp.sealing import Sealer, SealingKeys, indexes_of, is_sealed, name_normalized, name_terms

#: Identifier types stored as a blind index with the value sealed beside it.
SEALED_IDENTIFIER_TYPES = frozenset({"phone", "email"})
#: The blind index kind of a name's search terms.
NAME_TERM = "name_term"


@functools.cache
def sealer() -> Sealer:
    return Sealer(SealingKeys.parse(settings.PRIVACY_SEALING_KEYS), settings.PRIVACY_BLIND_INDEX_KEY.encode())


@receiver(setting_changed)
def _keys_changed(*, setting: str, **_: object) -> None:
    if setting in ("PRIVACY_SEALING_KEYS", "PRIVACY_BLIND_INDEX_KEY"):
        sealer.cache_clear()


# --- identifiers --------------------------------------------------------------------------------


def identifier_sealed(type_: str) -> bool:
    return type_ in SEALED_IDENTIFIER_TYPES


def identifier_index(type_: str, value: str) -> str:
    """What an identifier of a sealed type is stored, matched and looked up as: the blind index
    of its normalized value (the value itself for other types)."""
    return sealer().index(type_, value) if type_ in SEALED_IDENTIFIER_TYPES else value


def identifier_seal(type_: str, index: str, value: str) -> str:
    return sealer().seal(value, context=f"identifier:{type_}:{index}")


def identifier_open(type_: str, stored: str, sealed: str) -> str:
    """An identifier's value as it was normalized: opened when sealed, else as stored."""
    if type_ not in SEALED_IDENTIFIER_TYPES or not sealed:
        return stored
    return sealer().open(sealed, context=f"identifier:{type_}:{stored}")


# --- free text staff write about a person (a split's reason) ------------------------------------


def text_seal(context: str, text: str) -> str:
    return sealer().seal(text, context=context) if text else text


def text_open(context: str, stored: str) -> str:
    """Free text as written: opened when sealed (a text stored before sealing reads as it is)."""
    return sealer().open(stored, context=context) if is_sealed(stored) else stored


# --- traits -------------------------------------------------------------------------------------


def trait_sealed(key: str) -> bool:
    return key in settings.PRIVACY_SEALED_TRAITS


def trait_seal(key: str, value: Any) -> Any:
    """The trait's value as stored: sealed (its JSON, as a sealed text) for a sealed trait; a
    null or a value of any other trait as it is."""
    if value is None or key not in settings.PRIVACY_SEALED_TRAITS:
        return value
    return sealer().seal(orjson.dumps(value).decode(), context=f"trait:{key}")


def trait_open(key: str, stored: Any) -> Any:
    if not is_sealed(stored):
        return stored
    return orjson.loads(sealer().open(stored, context=f"trait:{key}"))


def traits_open(traits: Mapping[str, Any]) -> dict[str, Any]:
    return {key: trait_open(key, value) for key, value in traits.items()}


def trait_lookup(key: str, value: Any) -> list[str]:
    """The blind indexes a name trait is found by (``cdp.sealing.name_terms``); none for other
    traits and for a name that is not a text."""
    if key not in settings.PRIVACY_NAME_TRAITS or not isinstance(value, str):
        return []
    return indexes_of(sealer(), NAME_TERM, name_terms(value))


def name_search_index(text: str) -> str | None:
    """What a search for ``text`` as a name looks for: the blind index of the whole text as one
    term (a name, a word of one, a family name in ideographs), or None for blank text."""
    normalized = name_normalized(text)
    return sealer().index(NAME_TERM, normalized) if normalized else None
