"""How any JSON the platform reads is parsed and bounded: one nesting limit for ingestion,
the staff API and stored rules alike.

A body nested thousands of levels deep is no data anyone sends on purpose; left unchecked it
ends in a ``RecursionError`` (the standard library's parser, Django's JSON field, any
recursive walk of ours) or in PostgreSQL's own jsonb depth limit, each a 500. Such a body is
refused at the door with its own reason instead.
"""

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

#: Deepest nesting of objects and arrays accepted anywhere (the body itself is level 1).
#: Segment payloads nest a handful of levels; a segment rule's ``all``/``any`` of ``not``
#: blocks takes two levels per block, so 64 leaves room for 30 nested conditions.
MAX_JSON_DEPTH = 64

# orjson reads integers beyond 64 bits as floats, silently changing them; bodies that may hold
# one (a false positive inside a string is harmless) are read exactly by the standard library.
# Beyond 64 bits: 20 digits or more, or 19 below -2^63 (9,223,372,036,854,775,808); a document
# may also be that number alone.
_LONG_INTEGER = re.compile(rb"(?:^|[\[:,])\s*(?:-?\d{20,}|-\d{19})")
# Either needs a run of 19 digits, which C finds at memory speed (each byte made "9" if it is a
# digit and a space if not, then a substring search); the regex, which has no literal to skip
# ahead to and is tried at every byte, runs only where there is one. Searching with the regex
# alone cost 10 µs of CPU an event of a realistic batch, more than parsing it.
_DIGITS_MARKED = bytes(0x39 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_DIGIT_RUN = b"9" * 19


class JsonTooDeep(ValueError):
    """The document nests objects and arrays deeper than the limit."""

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"The JSON nests objects and arrays more than {limit} levels deep, the limit.")
        self.limit = limit


_CONTAINERS = (dict, list)


def json_depth(value: Any, *, stop_at: int | None = None) -> int:
    """How deep ``value`` nests dicts and lists (a scalar is 0, ``{}`` is 1); the walk gives up
    once it passes ``stop_at`` (the answer is then ``stop_at + 1``). Iterative: no recursion limit.

    Level by level: each level's containers are picked out by a list comprehension, so no
    Python frame runs per leaf. A realistic batch of events (every one walked: it holds more
    brackets than the limit) took 7 µs of CPU an event with a stack of (child, depth) pairs
    built by a generator, a quarter of that now (bench/ingest_cpu.py)."""
    level: list[Any] = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if stop_at is not None and depth > stop_at:
            return depth
        below: list[Any] = []
        for item in level:
            children: Iterable[Any] = item.values() if isinstance(item, dict) else item
            below += [child for child in children if isinstance(child, _CONTAINERS)]
        level = below
    return depth


def json_check_depth(value: Any, *, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise ``JsonTooDeep`` when ``value`` nests deeper than ``limit``."""
    if json_depth(value, stop_at=limit) > limit:
        raise JsonTooDeep(limit)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def json_loads_bounded(raw: bytes | str, *, limit: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON exactly (integers beyond 64 bits stay integers) and within the nesting limit.

    Raises ``JsonTooDeep`` for a document nested past ``limit`` and ``ValueError`` for anything
    that is not JSON (``NaN`` and ``Infinity`` included); never ``RecursionError``.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson stops at 1,024 levels on its own, with this wording.
        if str(exc).startswith("depth limit exceeded"):
            raise JsonTooDeep(limit) from exc
        raise
    # A document cannot nest deeper than it has brackets: most bodies (an event holds a few
    # dozen) are under the limit by this count alone, without the walk (a tenth of a single
    # event's CPU, bench/profile_batch.py --track --cpu). Brackets inside strings only overcount.
    if data.count(b"{") + data.count(b"[") > limit:
        json_check_depth(value, limit=limit)
    if _DIGIT_RUN in data.translate(_DIGITS_MARKED) and _LONG_INTEGER.search(data):
        # Within the limit now, so the standard library's recursive parser cannot overflow.
        value = json.loads(data, parse_constant=_reject_constant)
    return value
