"""One person's personal values in every written form, and their removal from text and JSON.

An erasure knows the person's identifiers (normalized: ``+8613800138000``,
``zhang.wei@example.com``, ``u-1234``) and names. What other rows hold is what people and
systems wrote: ``138 0013 8000`` in a split's reason, ``Zhang.Wei@Example.com`` in an audit
entry's path, ``+86-138-0013-8000`` in a webhook receiver's answer, ``\\u6797\\u79c0\\u82f1``
(JSON-escaped) in a rejected request's excerpt. ``Redactor`` finds all of those:

- texts (emails, ids, names) in any letter case, and JSON-escaped where they are not ASCII;
- phones as E.164, without the ``+``, with ``00`` for it, the national number (with its trunk
  ``0`` too), and any spelling with spaces, dashes, dots, slashes or brackets between digits.

Pure (no Django): the same code builds the forms the erasure removes and the forms its test
searches the whole database for.
"""

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import phonenumbers

#: What a removed value is replaced with inside a text that stays.
REDACTED = "[erased]"
#: Shorter texts are not looked for (a one-letter name would remove that letter everywhere).
MIN_TEXT_LENGTH = 2
# A phone written with separators: a digit, then 6 to 18 more, each after up to two of
# space, dash, dot, slash or bracket; a "+" or nothing before, no digit on either side.
_PHONE_SPELLING = re.compile(r"(?<!\d)\+?\d(?:[\s\-./()]{0,2}\d){6,18}(?!\d)")
_NON_DIGITS = re.compile(r"\D")
# What is left of a text that held nothing but the person's values.
_ONLY_REDACTED = re.compile(r"[\s\W]*(?:" + re.escape(REDACTED) + r"[\s\W]*)+")


def phone_forms(e164: str) -> list[str]:
    """The usual written forms of a phone: ``+8613800138000``, ``8613800138000``,
    ``008613800138000``, ``13800138000``, ``138 0013 8000``, ``+86 138 0013 8000``,
    ``138-0013-8000``, ``+86-138-0013-8000``."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return [e164]
    national = str(number.national_number)
    code = str(number.country_code)
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    forms = [
        f"+{code}{national}",
        f"{code}{national}",
        f"00{code}{national}",
        national,
        formatted,
        international,
        formatted.replace(" ", "-"),
        international.replace(" ", "-"),
    ]
    return list(dict.fromkeys(forms))


def escaped_forms(text: str) -> list[str]:
    """``text``, its JSON-escaped spelling (non-ASCII, quotes) and its spellings in a URL (a
    lookup's query string in an audit entry: ``138%200013%208000``, ``138+0013+8000``)."""
    forms = [text, json.dumps(text, ensure_ascii=True)[1:-1], quote(text, safe=""), quote_plus(text, safe="")]
    return list(dict.fromkeys(forms))


class Redactor:
    """Removes one person's phones (E.164) and texts (emails, ids, names) from whatever holds
    them, in any written form."""

    def __init__(self, *, phones: Iterable[str] = (), texts: Iterable[str] = ()) -> None:
        self.phones = tuple(sorted(set(phones)))
        self._numbers: set[tuple[str, str]] = set()
        for phone in self.phones:
            try:
                number = phonenumbers.parse(phone, None)
            except phonenumbers.NumberParseException:
                continue
            self._numbers.add((str(number.country_code), str(number.national_number)))
        literal: set[str] = set()
        for text in texts:
            text = text.strip()
            if len(text) >= MIN_TEXT_LENGTH:
                literal.update(escaped_forms(text))
        for phone in self.phones:
            for form in phone_forms(phone):
                literal.update(escaped_forms(form))
        #: Every literal form, longest first (so a longer form is replaced before its parts).
        self.forms: tuple[str, ...] = tuple(sorted(literal, key=lambda f: (-len(f), f)))
        self._pattern = (
            re.compile("|".join(re.escape(form) for form in self.forms), re.IGNORECASE)
            if self.forms
            else None
        )

    def __bool__(self) -> bool:
        return bool(self.forms)

    def _is_phone(self, spelled: str) -> bool:
        digits = _NON_DIGITS.sub("", spelled)
        return any(
            digits in (national, f"0{national}", f"{code}{national}", f"00{code}{national}")
            for code, national in self._numbers
        )

    def text(self, text: str) -> str:
        """``text`` with every form of the person's values replaced by ``REDACTED``."""
        if self._pattern is None:
            return text
        if self._numbers:  # first: a spelling the literal forms only partly cover goes whole
            text = _PHONE_SPELLING.sub(lambda m: REDACTED if self._is_phone(m.group()) else m.group(), text)
        return self._pattern.sub(REDACTED, text)

    def mentions(self, text: str) -> bool:
        return self.text(text) != text

    def scrub(self, text: str) -> str:
        """``text`` redacted, or empty when nothing but the person's values was in it (a phone
        field goes blank rather than saying ``[erased]``)."""
        cleaned = self.text(text)
        return "" if cleaned != text and _ONLY_REDACTED.fullmatch(cleaned) else cleaned

    def value(self, value: Any) -> Any:
        """A JSON value without the person's values: a string, key or list element that was
        nothing but one of them is removed (a string on its own becomes empty), one that held
        one among other text keeps the text with ``REDACTED`` in its place, and a phone stated
        as a JSON number goes too."""
        cleaned = self._value(value)
        return "" if cleaned is _GONE else cleaned

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            cleaned = self.scrub(value)
            return _GONE if value and not cleaned else cleaned
        if isinstance(value, list):
            return [kept for item in value if (kept := self._value(item)) is not _GONE]
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                name = self.scrub(key) if isinstance(key, str) else key
                kept = self._value(item)
                if kept is not _GONE and not (key and not name):
                    out[name] = kept
            return out
        if isinstance(value, int) and not isinstance(value, bool) and self._is_phone(str(value)):
            return _GONE
        return value


_GONE = object()  # a value that was nothing but the person's: removed where it stood
