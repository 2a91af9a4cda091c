"""Identifiers: which ones an event carries, in one canonical form, and which must never match.

Pure (no ORM): the same functions normalize what ingestion stored and what a CRM agent types
into a search box, so ``138 0013 8000`` at the till and ``+86 13800138000`` in the
mini-program are one phone everywhere.
"""

import contextlib
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import phonenumbers


class IdentifierType(StrEnum):
    USER_ID = "user_id"
    PHONE = "phone"
    EMAIL = "email"
    MEMBER_CARD = "member_card"
    WECHAT_UNIONID = "wechat_unionid"
    WECHAT_OPENID = "wechat_openid"
    DEVICE_ID = "device_id"
    ANONYMOUS_ID = "anonymous_id"


BUILT_IN_TYPES = frozenset(IdentifierType)

#: Values SDKs, tills and forms put where an id is missing. Matching on them would merge
#: every customer who left the field empty into one person.
DEFAULT_BLOCKED_VALUES = frozenset(
    {
        "0",
        "-1",
        "null",
        "nil",
        "none",
        "undefined",
        "nan",
        "anonymous",
        "unknown",
        "n/a",
        "na",
        "test",
        "guest",
    }
)
_ALL_ZEROS = re.compile(r"^0+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Worth trying as a phone when it came as another type (cheap test before phonenumbers).
_PHONE_LIKE = re.compile(r"^\+?[\d\s\-().]{6,30}$")
_CUSTOM_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_VALUE_LENGTH = 255


@dataclass(frozen=True, slots=True, order=True)
class Identifier:
    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True)
class IdentifierProblem:
    """A value the event carried that is not used as a key, and why."""

    type: str
    value: str
    reason: str  # "invalid" or "blocked"
    detail: str


@dataclass(frozen=True, slots=True)
class Extraction:
    identifiers: frozenset[Identifier]
    problems: tuple[IdentifierProblem, ...]
    #: An alias: the event states its identifiers are one person's (``ResolvableEvent.vouches``).
    vouches: bool = False


#: Segment call types whose payload identifiers mean something other than an ordinary event's.
ALIAS = "alias"
GROUP = "group"


def vouches_for_one_person(message_type: str) -> bool:
    """Whether an event of this call type states that all its identifiers are one person's.

    Segment's ``alias``: ``previousId`` and ``userId`` are the same person."""
    return message_type == ALIAS


@dataclass(frozen=True, slots=True)
class NormalizationPolicy:
    default_region: str = "CN"
    blocked_values: frozenset[str] = DEFAULT_BLOCKED_VALUES


class InvalidIdentifier(ValueError):
    """A value that cannot be an identifier of its type (an unparsable phone, say)."""


class BlockedIdentifier(ValueError):
    """A placeholder value that must never match anything."""


def _is_blocked(value: str, policy: NormalizationPolicy) -> bool:
    folded = value.strip().casefold()
    return not folded or folded in policy.blocked_values or bool(_ALL_ZEROS.match(folded))


def normalize(type_: str, value: Any, policy: NormalizationPolicy) -> str:
    """The canonical form of ``value`` as an identifier of ``type_``.

    Raises ``BlockedIdentifier`` for placeholders and ``InvalidIdentifier`` for values that
    are not identifiers of that type.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidIdentifier("must be a string")
    text = str(value).strip()
    if _is_blocked(text, policy):
        raise BlockedIdentifier("a placeholder value")
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidIdentifier(f"longer than {MAX_VALUE_LENGTH} characters")
    if type_ == IdentifierType.PHONE:
        return _normalize_phone(text, policy)
    if type_ == IdentifierType.EMAIL:
        email = text.casefold()
        if not _EMAIL.match(email):
            raise InvalidIdentifier("not an email address")
        return email
    return text


#: A parse costs ~100 µs, the most of an event's identifiers; the same number comes again and
#: again close together (an imported member's registration and consent events, a customer's
#: orders in one batch), so the latest few thousand are kept. Failures are not kept: they raise.
@functools.lru_cache(maxsize=8192)
def _normalize_phone(text: str, policy: NormalizationPolicy) -> str:
    try:
        number = phonenumbers.parse(text, policy.default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifier(f"not a phone number ({exc})") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if _is_blocked(e164.lstrip("+")[len(str(number.country_code)) :], policy):
        raise BlockedIdentifier("a placeholder value")
    return e164


def custom_type(raw_type: Any) -> str | None:
    """The identifier type named in ``context.externalIds``, or None if it can't be one."""
    if not isinstance(raw_type, str):
        return None
    name = raw_type.strip().casefold().replace("-", "_").replace(" ", "_")
    return name if _CUSTOM_TYPE.match(name) else None


def _candidates(
    *,
    message_type: str,
    user_id: str,
    anonymous_id: str,
    previous_id: str,
    traits: Mapping[str, Any],
    context: Mapping[str, Any],
) -> Iterable[tuple[Any, Any]]:
    """(type, value) pairs as the event states them: an ``externalIds`` entry's type is whatever
    the sender wrote, checked by the caller."""
    if user_id:
        yield IdentifierType.USER_ID, user_id
    if anonymous_id:
        yield IdentifierType.ANONYMOUS_ID, anonymous_id
    if previous_id and message_type == ALIAS:
        # The id the person was known by before: a user id they identified with, or the
        # anonymous id of a device. Which one the sender means is not said, so it is both:
        # each links to whatever member held it, under the limits (``identity.resolution``).
        yield IdentifierType.USER_ID, previous_id
        yield IdentifierType.ANONYMOUS_ID, previous_id
    context_traits = context.get("traits")
    if not isinstance(context_traits, Mapping):
        context_traits = {}
    # A group call's ``traits`` describe the group (a company, a store club), not the person:
    # its email is the company's. ``context.traits`` are the person's in every call.
    stated = (context_traits,) if message_type == GROUP else (traits, context_traits)
    for source in stated:
        for type_ in (
            IdentifierType.PHONE,
            IdentifierType.EMAIL,
            IdentifierType.MEMBER_CARD,
            IdentifierType.WECHAT_UNIONID,
            IdentifierType.WECHAT_OPENID,
        ):
            if source.get(type_) not in (None, ""):
                yield type_, source[type_]
    device = context.get("device")
    if isinstance(device, Mapping) and device.get("id") not in (None, ""):
        yield IdentifierType.DEVICE_ID, device["id"]
    external = context.get("externalIds")
    if isinstance(external, list):
        for entry in external:
            if isinstance(entry, Mapping):
                yield entry.get("type"), entry.get("id")


def identifiers_extract(
    *,
    user_id: str,
    anonymous_id: str,
    traits: Mapping[str, Any],
    context: Mapping[str, Any],
    policy: NormalizationPolicy,
    openid_scope: str = "",
    message_type: str = "",
    previous_id: str = "",
) -> Extraction:
    """Every identifier an event carries, normalized, with the values that were not usable.

    ``openid_scope`` is the mini-program's appid: an openid is only unique within one app,
    so it is stored as ``<appid>:<openid>``. ``message_type`` is the Segment call: an
    ``alias`` also carries its ``previous_id``; a ``group`` call's ``traits`` are not the
    person's.
    """
    identifiers: set[Identifier] = set()
    problems: list[IdentifierProblem] = []
    for raw_type, raw_value in _candidates(
        message_type=message_type,
        user_id=user_id,
        anonymous_id=anonymous_id,
        previous_id=previous_id,
        traits=traits,
        context=context,
    ):
        type_ = raw_type if raw_type in BUILT_IN_TYPES else custom_type(raw_type)
        if type_ is None:
            problems.append(
                IdentifierProblem(str(raw_type), str(raw_value), "invalid", "not an identifier type")
            )
            continue
        try:
            value = normalize(type_, raw_value, policy)
        except BlockedIdentifier as exc:
            problems.append(IdentifierProblem(type_, str(raw_value), "blocked", str(exc)))
            continue
        except InvalidIdentifier as exc:
            problems.append(IdentifierProblem(type_, str(raw_value), "invalid", str(exc)))
            continue
        if type_ == IdentifierType.WECHAT_OPENID and openid_scope:
            value = f"{openid_scope}:{value}"
        identifiers.add(Identifier(str(type_), value))
    return Extraction(frozenset(identifiers), tuple(problems), vouches_for_one_person(message_type))


#: The kind of a probe made of a phone's digits alone: what any spelling of a number, with or
#: without its country code, is recognised by without parsing it (``identifier_probes``).
PHONE_DIGITS = "phone_digits"
_NON_DIGITS = re.compile(r"\D")


def identifier_probes(identifier: Identifier) -> frozenset[tuple[str, str]]:
    """The (kind, value) forms an identifier is looked up by among the erased ones: its type and
    stored value; a value that is an email whatever its type also as ``email`` (lower case); a
    phone's digits (``PHONE_DIGITS``), and the digits of any value written like a phone. So an
    erased phone is recognised when a later event sends it as a user id or a member card, and
    the other way round.

    On the pipeline's hot path, once per identifier of every event: no phone parsing (hundreds
    of microseconds a value). ``erased_probes`` gives an erased phone every digit form a later
    value may take."""
    probes = {(identifier.type, identifier.value)}
    value = identifier.value
    if identifier.type == IdentifierType.PHONE:
        probes.add((PHONE_DIGITS, value.lstrip("+")))
    elif identifier.type != IdentifierType.EMAIL:
        if "@" in value:
            email = value.strip().casefold()
            if _EMAIL.match(email):
                probes.add((IdentifierType.EMAIL.value, email))
        elif _PHONE_LIKE.match(value):
            probes.add((PHONE_DIGITS, _NON_DIGITS.sub("", value)))
    return frozenset(probes)


def erased_probes(identifier: Identifier, policy: NormalizationPolicy) -> frozenset[tuple[str, str]]:
    """What an erasure keeps fingerprints of, for one identifier: its own probes and, for a
    phone (or a value of another type that is one), the phone in E.164 and every digit form it
    may be written in: with its country code, with ``00`` before it, the national number, with
    the trunk ``0``."""
    probes = set(identifier_probes(identifier))
    e164 = identifier.value if identifier.type == IdentifierType.PHONE else None
    if e164 is None and _PHONE_LIKE.match(identifier.value):
        with contextlib.suppress(InvalidIdentifier, BlockedIdentifier):
            e164 = _normalize_phone(identifier.value.strip(), policy)
    if e164 is not None:
        number = phonenumbers.parse(e164, None)
        national, code = str(number.national_number), str(number.country_code)
        probes.add((IdentifierType.PHONE.value, e164))
        probes.update(
            (PHONE_DIGITS, digits)
            for digits in (code + national, f"00{code}{national}", national, f"0{national}")
        )
    return frozenset(probes)
