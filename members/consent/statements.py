"""Consent as events state it, and the consent in force at a moment. Pure (no Django).

A *statement* says that, at a moment, a member granted, denied or withdrew consent to one
purpose (``marketing_sms``, ``analytics``, ...), under a version of the wording they were
shown. Statements are history: the consent in force for a purpose at a moment is the latest
statement for it at or before that moment (event time; at one instant, the one recorded
last). No statement means no consent.

Events state consent three ways (``docs/consent.md``):

- an ``identify`` trait (or ``context.traits`` of any call) ``consent``: an object of purposes,
  each ``true`` / ``false``, a state (``"granted"``, ``"denied"``, ``"withdrawn"``) or
  ``{"state": ..., "version": ...}``; a ``version`` key in the object is the version of its
  plain values;
- a ``Consent Updated`` track event: ``properties.consent`` in the same form, or
  ``properties.purpose`` (one purpose or a list) with ``properties.state``, and
  ``properties.version``;
- the legacy trait ``marketing_consent`` (``settings.MARKETING_CONSENT_TRAIT``): true grants,
  false denies, every marketing purpose at once (unless the same event states one of them in
  ``consent``).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

GRANTED, DENIED, WITHDRAWN = "granted", "denied", "withdrawn"
STATES = (GRANTED, DENIED, WITHDRAWN)

#: The trait whose object states consent per purpose.
CONSENT_TRAIT = "consent"
#: The track event that states consent in its properties.
CONSENT_EVENT = "Consent Updated"
#: A declared outflow purpose meaning every marketing purpose at once (the strictest).
ALL_MARKETING = "marketing"
#: Marketing purposes are the configured purposes named with this prefix.
MARKETING_PREFIX = "marketing_"
#: How a statement was made.
ORIGIN_TRAIT, ORIGIN_LEGACY, ORIGIN_EVENT, ORIGIN_STAFF = "trait", "legacy_trait", "event", "staff"

#: Why an outflow leaves a member out, as answers and audit entries count them.
NO_CONSENT = "no_consent"

MAX_VERSION = 64
_TRUE = frozenset({"true", "yes", "on", "y", "1"})
_FALSE = frozenset({"false", "no", "off", "n", "0"})


@dataclass(frozen=True, slots=True)
class Stated:
    """What one event says of one purpose."""

    purpose: str
    state: str
    version: str
    origin: str


@dataclass(frozen=True, slots=True)
class ConsentFact:
    """A statement as rules and checks read it: ``rank`` orders statements of one instant (the
    statement's id: the one recorded last wins)."""

    purpose: str
    state: str
    at: datetime
    rank: int


def marketing_purposes(purposes: Iterable[str]) -> tuple[str, ...]:
    return tuple(p for p in purposes if p.startswith(MARKETING_PREFIX))


def declared_purposes(declared: str, purposes: Sequence[str]) -> tuple[str, ...] | None:
    """The purposes an outflow declared as ``declared`` needs granted: one configured purpose,
    or every marketing purpose for ``marketing``; None if it names neither."""
    if declared == ALL_MARKETING:
        return marketing_purposes(purposes)
    return (declared,) if declared in purposes else None


def _version(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value).strip()[:MAX_VERSION]


def _state(value: object) -> str | None:
    """A stated value as a state: a boolean (true grants, false denies) or a state's name."""
    if isinstance(value, bool):
        return GRANTED if value else DENIED
    if isinstance(value, str) and (text := value.strip().casefold()) in STATES:
        return text
    return None


def _legacy_state(value: object) -> str | None:
    """The legacy marketing consent trait: true-ish grants, false-ish denies, else nothing."""
    if isinstance(value, bool):
        return GRANTED if value else DENIED
    if isinstance(value, int | float):
        return DENIED if value == 0 else GRANTED if value == 1 else None
    if isinstance(value, str):
        text = value.strip().casefold()
        return GRANTED if text in _TRUE else DENIED if text in _FALSE else None
    return None


def consent_of_mapping(
    data: Mapping[str, object], *, purposes: Sequence[str], origin: str, version: str = ""
) -> dict[str, Stated]:
    """The statements of a ``consent`` object, by purpose (purposes not configured, and values
    that state nothing, are left out)."""
    version = _version(data.get("version")) or version
    found: dict[str, Stated] = {}
    for purpose in purposes:
        value = data.get(purpose)
        if isinstance(value, Mapping):
            state = _state(value.get("state"))
            own = _version(value.get("version")) or version
        else:
            state, own = _state(value), version
        if state is not None:
            found[purpose] = Stated(purpose, state, own, origin)
    return found


def consent_of_traits(
    traits: Mapping[str, object], *, purposes: Sequence[str], legacy_trait: str
) -> list[Stated]:
    """What a person's stated traits say of consent: the ``consent`` object, and the legacy
    trait for the marketing purposes it does not name."""
    found: dict[str, Stated] = {}
    legacy = _legacy_state(traits.get(legacy_trait)) if legacy_trait else None
    if legacy is not None:
        found = {p: Stated(p, legacy, "", ORIGIN_LEGACY) for p in marketing_purposes(purposes)}
    stated = traits.get(CONSENT_TRAIT)
    if isinstance(stated, Mapping):
        found.update(consent_of_mapping(stated, purposes=purposes, origin=ORIGIN_TRAIT))
    return list(found.values())


def consent_of_event(properties: Mapping[str, object], *, purposes: Sequence[str]) -> list[Stated]:
    """What a ``Consent Updated`` event's properties say."""
    version = _version(properties.get("version"))
    found: dict[str, Stated] = {}
    named = properties.get("purpose")
    state = _state(properties.get("state"))
    if state is not None:
        for purpose in [named] if isinstance(named, str) else named if isinstance(named, list) else []:
            if isinstance(purpose, str) and purpose in purposes:
                found[purpose] = Stated(purpose, state, version, ORIGIN_EVENT)
    stated = properties.get(CONSENT_TRAIT)
    if isinstance(stated, Mapping):
        found.update(consent_of_mapping(stated, purposes=purposes, origin=ORIGIN_EVENT, version=version))
    return list(found.values())


def consent_in_force(facts: Iterable[ConsentFact], purpose: str, at: datetime) -> ConsentFact | None:
    """The statement in force for ``purpose`` at ``at``: the latest at or before it (by event
    time, then rank), or None."""
    best: ConsentFact | None = None
    for fact in facts:
        if (
            fact.purpose == purpose
            and fact.at <= at
            and (best is None or (fact.at, fact.rank) > (best.at, best.rank))
        ):
            best = fact
    return best


def consent_granted(facts: Iterable[ConsentFact], purposes: Iterable[str], at: datetime) -> bool:
    """Whether every one of ``purposes`` is granted at ``at`` (no purposes: nothing to ask)."""
    held = tuple(facts)
    for purpose in purposes:
        fact = consent_in_force(held, purpose, at)
        if fact is None or fact.state != GRANTED:
            return False
    return True
