"""How an ingestion request's body is read: fast and exact when all of it is usable JSON, and
event by event when some part of a batch is not, so that one unreadable event (nested too
deep, a lone surrogate, a number no parser keeps) never sinks the good events beside it.

Pure: no ORM, no I/O. The one nesting limit is ``cdp.json_limits.MAX_JSON_DEPTH``, counted
from the event (a single call's body, or one element of a batch's ``batch`` array).
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from cdp.json_limits import MAX_JSON_DEPTH, JsonTooDeep, json_loads_bounded

#: An event of a batch sits two levels below the body (the body object, the ``batch`` array).
BATCH_EVENT_LEVEL = 2
TOO_DEEP = "too_deep"
INVALID_JSON = "invalid_json"
_EXCERPT_BYTES = 2048

# Strings (escapes included, so that brackets and commas inside them are skipped in C) and the
# structural characters: enough to find where each member of the body and each event of its
# batch starts and ends, and how deep a span nests, without a recursive parser.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)
_BRACKETS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A part of the body that is not a usable JSON value, and why; the contract refuses it."""

    code: str
    message: str
    excerpt: str


class BodyUnreadable(ValueError):
    """The body as a whole is unusable; ``field`` names the member at fault, if one is."""

    def __init__(self, unreadable: Unreadable, field: str = "") -> None:
        super().__init__(unreadable.message)
        self.unreadable = unreadable
        self.field = field


def excerpt(raw: bytes) -> str:
    """The start of ``raw`` as text that any column and any JSON response can hold."""
    return raw[:_EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\\u0000")


def printable(text: str) -> str:
    """``text`` as any column and JSON response can hold it: NULs and lone surrogates escaped."""
    return text.encode("utf-8", errors="backslashreplace").decode().replace("\x00", "\\u0000")


def _raw_depth(raw: bytes) -> int:
    """How deep ``raw`` nests objects and arrays, read without parsing it (strings skipped)."""
    depth = deepest = 0
    for token in _BRACKETS.finditer(raw):
        char = token.group()[:1]
        if char in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in b"]}":
            depth -= 1
    return deepest


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a double")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep(raw: bytes) -> Unreadable:
    return Unreadable(TOO_DEEP, str(JsonTooDeep(MAX_JSON_DEPTH)), excerpt(raw))


def value_read(raw: bytes, *, limit: int = MAX_JSON_DEPTH, what: str = "body") -> Any | Unreadable:
    """One JSON value, exactly (``json_loads_bounded``), or why it cannot be read.

    Lone UTF-16 surrogates (``"\\ud800"``), which the fast parser refuses outright, are read
    by the standard library's so that the contract can refuse the event with that reason.
    """
    try:
        return json_loads_bounded(raw, limit=limit)
    except JsonTooDeep:
        return _too_deep(raw)
    except ValueError as exc:
        first_error = exc
    if _raw_depth(raw) > limit:  # checked first: the standard library's parser recurses
        return _too_deep(raw)
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except ValueError:
        return Unreadable(INVALID_JSON, f"The {what} is not valid JSON: {first_error}", excerpt(raw))


def body_read(raw: bytes, *, batch: bool) -> dict[str, Any]:
    """The body of a request: a JSON object. Raises ``BodyUnreadable`` when it is not one.

    For a batch, an element of ``batch`` that cannot be read becomes an ``Unreadable`` in its
    place (refused on its own); the body's other members must be readable.
    """
    limit = MAX_JSON_DEPTH + BATCH_EVENT_LEVEL if batch else MAX_JSON_DEPTH
    body = value_read(raw, limit=limit)
    if isinstance(body, Unreadable):
        if not batch:
            raise BodyUnreadable(body)
        body = _batch_read_apart(raw, whole=body)
    if not isinstance(body, dict):
        raise BodyUnreadable(Unreadable(INVALID_JSON, "The body must be a JSON object.", excerpt(raw)))
    return body


def _batch_read_apart(raw: bytes, *, whole: Unreadable) -> dict[str, Any]:
    """Read a batch body member by member and its events one by one.

    Only taken when the body as a whole could not be read (``whole`` says why): the structure
    is found by the tokenizer, and every span is then parsed by ``value_read``, so nothing
    unparsed is kept.
    """
    members = _top_level_spans(raw)
    if members is None:
        raise BodyUnreadable(whole)
    body: dict[str, Any] = {}
    for key, (start, end) in members.items():
        elements = _array_spans(raw, start, end) if key == "batch" else None
        if elements is not None:
            body[key] = [value_read(raw[s:e].strip(), what="event") for s, e in elements]
            continue
        # A batch-level member is merged into each event, one level below the event itself.
        value = value_read(raw[start:end], limit=MAX_JSON_DEPTH - 1)
        if isinstance(value, Unreadable):
            raise BodyUnreadable(value, field=printable(key))
        body[key] = value
    return body


_OPENING = {b"]": b"[", b"}": b"{"}


def _top_level_spans(raw: bytes) -> dict[str, tuple[int, int]] | None:
    """Each member of the top-level object and where its value lies; None when ``raw`` is not
    an object whose members are laid out (and brackets matched) as JSON lays them out."""
    spans: dict[str, tuple[int, int]] = {}
    open_brackets: list[bytes] = []
    expecting = "object"  # then "key", "colon", "value"
    key = ""
    value_start = position = 0
    for token in _TOKENS.finditer(raw):
        text, start = token.group(), token.start()
        char = text[:1]
        if len(open_brackets) > 1:  # inside a member's value: only brackets matter
            if char in b"[{":
                open_brackets.append(char)
            elif char in b"]}" and open_brackets.pop() != _OPENING[char]:
                return None
            position = token.end()
            continue
        if expecting != "value" and raw[position:start].strip():
            return None  # something other than whitespace between the object's own tokens
        position = token.end()
        if expecting == "object":
            if char != b"{":
                return None
            open_brackets.append(char)
            expecting = "key"
        elif expecting == "key":
            if char == b"}" and not spans:
                return spans if not raw[position:].strip() else None
            if char != b'"':
                return None
            key, expecting = json.loads(text), "colon"
        elif expecting == "colon":
            if char != b":":
                return None
            value_start, expecting = position, "value"
        elif char in b",}":
            spans[key] = (value_start, start)
            if char == b"}":
                return spans if not raw[position:].strip() else None
            expecting = "key"
        elif char in b"[{":
            open_brackets.append(char)
        elif char in b"]:":
            return None
    return None


def _array_spans(raw: bytes, start: int, end: int) -> list[tuple[int, int]] | None:
    """Where each element of the array ``raw[start:end]`` lies; None when it is no array.
    Its brackets were matched by ``_top_level_spans``."""
    text = raw[start:end]
    first = start + len(text) - len(text.lstrip())
    last = start + len(text.rstrip())
    if raw[first : first + 1] != b"[" or raw[last - 1 : last] != b"]":
        return None
    spans = []
    depth = 0
    element_start = first + 1
    for token in _TOKENS.finditer(raw, first, last):
        char = token.group()[:1]
        if char in b"[{":
            depth += 1
        elif char in b"]}":
            depth -= 1
        elif char == b"," and depth == 1:
            spans.append((element_start, token.start()))
            element_start = token.end()
    if spans or raw[element_start : last - 1].strip():
        spans.append((element_start, last - 1))
    return spans
