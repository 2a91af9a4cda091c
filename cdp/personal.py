"""Personal fields in a JSON document, wherever a source put them: found by key and by value,
masked for staff who may not see them, or stripped.

A source states a person's phone as ``traits.phone``, ``traits.mobile``, ``traits.contact.phone``,
``properties.shipping_address.phone``, a JSON number, an element of ``traits.emails`` or a phone
written into a note. Two names cannot cover that, so a field is personal when

- its **key** is on a configurable list (``PersonalPolicy.keys``): a bare key (``mobile``) is
  personal at any depth; a dotted path (``traits.name``) only there, ``*`` standing for any one
  key. Keys compare in snake case (``firstName`` is ``first_name``) and list positions are not
  part of a path. Everything under a personal key is personal (``address`` covers its street,
  city and phone);
- or its **value** is a phone number (valid for the default region, or in international form)
  or an email address, alone or inside a longer text, at any depth, in lists too, dict keys
  included.

Pure (no Django): callers pass the policy, built from settings (``cdp.privacy``). Recursive: the
documents it walks were parsed within ``cdp.json_limits.MAX_JSON_DEPTH`` levels.
"""

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import phonenumbers

#: Keys personal wherever they appear (a bare key), or at one path (dotted). ``name`` is only the
#: person's own: ``properties.name`` is a product's or a page's, ``context.app.name`` the app's.
DEFAULT_PERSONAL_KEYS: tuple[str, ...] = (
    "phone",
    "phones",
    "mobile",
    "mobile_phone",
    "mobile_number",
    "phone_number",
    "telephone",
    "tel",
    "cellphone",
    "email",
    "emails",
    "email_address",
    "first_name",
    "last_name",
    "full_name",
    "real_name",
    "nickname",
    "birthday",
    "birthdate",
    "date_of_birth",
    "address",
    "addresses",
    "shipping_address",
    "billing_address",
    "street",
    "id_card",
    "id_number",
    "passport_number",
    "contact",
    "recipient",
    "traits.name",
    "context.traits.name",
    "traits.username",
)

#: What a stripped text keeps in place of a phone or email it held.
REMOVED = "[removed]"
#: A personal value that is neither phone nor email, masked: its first character and this.
MASK = "***"

# An email inside a text: the local part's characters RFC 5322 allows unquoted, a domain of
# at least two labels. A whole value is an email by a looser test (``_is_email``).
_EMAIL_IN_TEXT = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
)
_WHOLE_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-]+")
# Fewer digits than this is no phone number anywhere (the shortest national numbers are 7), and
# a phone written on its own is no longer than this (``+86 (0) 138-0013-8000 ext. 1234``).
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_LENGTH = 40
_SEVEN_DIGITS = re.compile(r"\d(?:\D{0,3}\d){6}")
# What a phone written on its own is made of: an order number (``S0034670020338``) is not one,
# though its digits would dial Spain. Inside a text, the matcher wants a phone to stand apart.
_PHONE_CHARACTERS = re.compile(r"[\d\s+\-().]+")

Path = tuple[str | int, ...]


class Kind(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    KEY = "key"  # under a personal key, neither phone nor email (a name, an address)


@dataclass(frozen=True)
class Finding:
    """One personal value: where it is (keys and list positions) and what it is."""

    path: Path
    kind: Kind

    @property
    def dotted(self) -> str:
        """``traits.emails[0]``, as an audit entry names it."""
        return path_text(self.path)


@dataclass(frozen=True)
class Redacted:
    """A document's copy with its personal values masked or removed, and where they were."""

    value: Any
    found: tuple[Finding, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(finding.dotted for finding in self.found))


@dataclass(frozen=True)
class PersonalPolicy:
    """Which keys are personal, and the region a phone without its country code belongs to."""

    anywhere: frozenset[str]
    at_paths: frozenset[tuple[str, ...]]
    default_region: str | None = None

    @classmethod
    def build(cls, keys: Iterable[str], *, default_region: str | None = None) -> "PersonalPolicy":
        anywhere: set[str] = set()
        at_paths: set[tuple[str, ...]] = set()
        for entry in keys:
            parts = tuple(key_name(part) for part in entry.split(".") if part.strip())
            if len(parts) == 1:
                anywhere.add(parts[0])
            elif parts:
                at_paths.add(parts)
        return cls(frozenset(anywhere), frozenset(at_paths), default_region or None)

    def key_is_personal(self, keys: tuple[str, ...]) -> bool:
        """Whether the value at ``keys`` (snake-cased keys, list positions left out) is personal."""
        return _key_is_personal(self, keys)

    def _decide(self, keys: tuple[str, ...]) -> bool:
        if not keys:
            return False
        if keys[-1] in self.anywhere:
            return True
        return any(
            len(pattern) == len(keys) and all(p in ("*", k) for p, k in zip(pattern, keys, strict=True))
            for pattern in self.at_paths
        )


@functools.lru_cache(maxsize=4096)
def _key_is_personal(policy: PersonalPolicy, keys: tuple[str, ...]) -> bool:
    return policy._decide(keys)


@functools.lru_cache(maxsize=4096)
def key_name(key: str) -> str:
    """``firstName``, ``First-Name`` and ``first name`` are all ``first_name``."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", key.strip())).casefold()


def path_text(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# -- masks -----------------------------------------------------------------------------------


def mask_phone(phone: str) -> str:
    """``+8613800138000`` → ``138****8000``: the national number, its middle hidden. (The
    country code is found by prefix: no parse, which costs more than the rest of a mask.)"""
    text = phone.strip().lstrip("( ")
    digits = "".join(c for c in text if c.isdigit())
    if text.startswith(("+", "00")):
        digits = digits[2:] if text.startswith("00") else digits
        for length in (1, 2, 3):
            if digits[:length].isdigit() and int(digits[:length]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                digits = digits[length:]
                break
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_start = 3 if len(digits) >= 10 else 1
    return digits[:keep_start] + "*" * (len(digits) - keep_start - 4) + digits[-4:]


def mask_email(email: str) -> str:
    """``Zhang.Wei@Example.com`` → ``z***@example.com``."""
    local, at, domain = email.strip().casefold().rpartition("@")
    if not at:
        return MASK
    return f"{local[:1]}{MASK}@{domain}"


def mask_other(text: str) -> str:
    """A name or an address: its first character only (``Zhang Wei`` → ``Z***``)."""
    text = text.strip()
    return f"{text[:1]}{MASK}" if text else text


# -- what a value is -------------------------------------------------------------------------


def _maybe_phone(text: str) -> bool:
    """Cheap first test: seven digits at least, at most three other characters apart."""
    return len(text) >= _MIN_PHONE_DIGITS and _SEVEN_DIGITS.search(text) is not None


def is_phone(value: object, *, default_region: str | None) -> bool:
    """A phone number on its own: only a phone's characters (digits, spaces, ``+ - ( ) .``),
    valid in the default region or in international form (``+``, ``00``); a JSON number too."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    text = str(value).strip()
    if len(text) > _MAX_PHONE_LENGTH or not _PHONE_CHARACTERS.fullmatch(text) or not _maybe_phone(text):
        return False
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region if not text.startswith("+") else None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def is_email(value: object) -> bool:
    return isinstance(value, str) and _WHOLE_EMAIL.fullmatch(value.strip()) is not None


def kind_of(value: object, *, default_region: str | None) -> Kind | None:
    """``PHONE`` or ``EMAIL`` for a value that is one on its own, else None."""
    if is_email(value):
        return Kind.EMAIL
    if is_phone(value, default_region=default_region):
        return Kind.PHONE
    return None


def _shape(value: str | int) -> Kind:
    """How a value already known to be personal is masked: as an email, as a phone (written
    with a phone's characters, seven digits at least; no validation: a phone key's value is
    masked as a phone even when it would dial nowhere), or by its first character."""
    text = str(value).strip()
    if is_email(text):
        return Kind.EMAIL
    if _PHONE_CHARACTERS.fullmatch(text) and _maybe_phone(text):
        return Kind.PHONE
    return Kind.KEY


@functools.lru_cache(maxsize=4096)
def _key_kind(key: str, region: str | None) -> Kind | None:
    """``kind_of`` for dict keys, which repeat from one document to the next."""
    return kind_of(key, default_region=region)


def _in_text(text: str, default_region: str | None) -> list[tuple[int, int, Kind]]:
    """Where phones and emails sit inside a longer text: (start, end, kind), in order, apart."""
    spans: list[tuple[int, int, Kind]] = []
    if "@" in text:
        spans.extend((m.start(), m.end(), Kind.EMAIL) for m in _EMAIL_IN_TEXT.finditer(text))
    if _maybe_phone(text):
        taken = list(spans)
        for match in phonenumbers.PhoneNumberMatcher(
            text, default_region or "ZZ", leniency=phonenumbers.Leniency.VALID
        ):
            if not any(start < match.end and match.start < end for start, end, _ in taken):
                spans.append((match.start, match.end, Kind.PHONE))
    return sorted(spans)


def _masked(value: object, kind: Kind) -> str:
    text = str(value)
    if kind == Kind.PHONE:
        return mask_phone(text)
    if kind == Kind.EMAIL:
        return mask_email(text)
    return mask_other(text) if isinstance(value, str) else MASK


# -- the walk --------------------------------------------------------------------------------


class _Walk:
    """One pass over a document: ``mode`` is ``find``, ``mask`` or ``strip``."""

    def __init__(self, policy: PersonalPolicy, mode: str) -> None:
        self.policy, self.mode = policy, mode
        self.region = policy.default_region
        self.found: list[Finding] = []

    def node(self, value: Any, path: Path, keys: tuple[str, ...], personal: bool) -> tuple[bool, Any]:
        """(keep, the value as shown): ``keep`` False when stripping removes it whole."""
        if isinstance(value, dict):
            return True, self.mapping(value, path, keys, personal)
        if isinstance(value, list):
            return True, self.sequence(value, path, keys, personal)
        return self.scalar(value, path, personal)

    def mapping(
        self, value: dict[Any, Any], path: Path, keys: tuple[str, ...], personal: bool
    ) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, item in value.items():
            # A key may itself be a phone or an email: it is masked in the copy and in every
            # path reported (paths go into the audit log), and stripped with its value.
            key_kind = _key_kind(key, self.region) if isinstance(key, str) else None
            shown_key = key if key_kind is None else _masked(key, key_kind)
            child_path = (*path, shown_key)
            if key_kind is not None:
                self.found.append(Finding(child_path, key_kind))
                if self.mode == "strip":
                    continue
            child_keys = (*keys, key_name(key)) if isinstance(key, str) else keys
            child_personal = personal or self.policy.key_is_personal(child_keys)
            if child_personal and not personal and self.mode == "strip":
                self.found.append(Finding(child_path, Kind.KEY))
                continue
            keep, shown = self.node(item, child_path, child_keys, child_personal)
            if keep:
                if self.mode == "mask":
                    while shown_key in out:  # two keys masked alike
                        shown_key = f"{shown_key}'"
                else:
                    shown_key = key
                out[shown_key] = shown
        return out

    def sequence(self, value: list[Any], path: Path, keys: tuple[str, ...], personal: bool) -> list[Any]:
        out: list[Any] = []
        for index, item in enumerate(value):
            keep, shown = self.node(item, (*path, index), keys, personal)
            if keep:
                out.append(shown)
        return out

    def scalar(self, value: Any, path: Path, personal: bool) -> tuple[bool, Any]:
        if value is None or isinstance(value, bool | float) or value == "":
            if personal and isinstance(value, float):
                return self._whole(value, path, Kind.KEY)
            return True, value
        if not isinstance(value, str | int):
            return True, value
        if personal:  # personal whatever it holds: only how to mask it is left to tell (cheaply)
            return self._whole(value, path, _shape(value))
        kind = kind_of(value, default_region=self.region)
        if kind is not None:
            return self._whole(value, path, kind)
        if isinstance(value, str):
            return True, self._text(value, path)
        return True, value

    def _whole(self, value: Any, path: Path, kind: Kind) -> tuple[bool, Any]:
        self.found.append(Finding(path, kind))
        if self.mode == "find":
            return True, value
        if self.mode == "strip":
            return False, None
        return True, _masked(value, kind)

    def _text(self, text: str, path: Path) -> str:
        spans = _in_text(text, self.region)
        if not spans:
            return text
        self.found.extend(Finding(path, kind) for _, _, kind in spans)
        if self.mode == "find":
            return text
        pieces, last = [], 0
        for start, end, kind in spans:
            part = text[start:end]
            if self.mode == "strip":
                shown = REMOVED
            else:
                shown = mask_phone(part) if kind == Kind.PHONE else mask_email(part)
            pieces += [text[last:start], shown]
            last = end
        pieces.append(text[last:])
        return "".join(pieces)


def _run(document: Any, policy: PersonalPolicy, mode: str, at: Path) -> Redacted:
    walk = _Walk(policy, mode)
    keys = tuple(key_name(part) for part in at if isinstance(part, str))
    personal = policy.key_is_personal(keys)
    if personal and mode == "strip":  # the document sits under a personal key: all of it goes
        return Redacted(None, (Finding(at, Kind.KEY),))
    keep, value = walk.node(document, at, keys, personal)
    if not keep and mode == "strip":
        value = None
    return Redacted(value, tuple(walk.found))


def personal_find(document: Any, policy: PersonalPolicy, *, at: Path = ()) -> tuple[Finding, ...]:
    """Every personal value in ``document``; ``at`` is where the document sits (``("traits",)``
    for a member's traits), so that dotted keys match and paths read in full."""
    return _run(document, policy, "find", at).found


def personal_mask(document: Any, policy: PersonalPolicy, *, at: Path = ()) -> Redacted:
    """A copy with every personal value masked: phones to their last four digits, emails to
    their first letter and domain, anything else under a personal key to its first character;
    a phone or email inside a text is masked where it stands."""
    return _run(document, policy, "mask", at)


def personal_strip(document: Any, policy: PersonalPolicy, *, at: Path = ()) -> Redacted:
    """A copy without its personal values: personal keys and phone or email values are removed
    (from lists too); a phone or email inside a text is replaced by ``REMOVED``. None when the
    document is personal whole (a phone, or anything sitting at a personal key)."""
    return _run(document, policy, "strip", at)
