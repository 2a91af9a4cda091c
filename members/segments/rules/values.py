"""What the JSON values that rules compare stand for: the one reading of numbers, times and
equality that the interpreter, the parser and (in SQL) ``members.segments.compile`` share.

Value semantics (traits and event properties are JSON values):

- A missing value and JSON ``null`` are the same: absent. Absent values never match a
  comparison (``eq``, ``ne``, ``gt``, ..., ``within_days``); only ``not_exists`` matches them.
- Numbers: a JSON number, or a string in plain decimal notation (``"5"``, ``"-0.5"``), is a
  number for ``gt/gte/lt/lte``, and for ``eq/ne/in`` when either side is a JSON number
  (``"5"`` equals ``5``, ``"05"`` equals ``5``, but the strings ``"05"`` and ``"5"`` differ).
  Booleans are never numbers.
- Times: a string ``YYYY-MM-DD`` or ``YYYY-MM-DD[T ]hh:mm[:ss[.ffffff]][Z|±hh:mm]`` (years
  1000 to 2999, a real calendar day) is a time: without an offset it is UTC, a date alone is
  midnight UTC. ``gt/gte/lt/lte`` with a time value compare times; ``eq`` compares strings.
- Strings compare exactly (case-sensitive); ``contains`` is a substring test on a string and
  an element test (with ``eq``) on a list.
"""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

NUMERIC_STRING = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: The same pattern as ``members.segments.compile`` uses in SQL (groups: year, month, day,
#: hour, minute, second, fraction, offset).
TIME_PATTERN = (
    r"([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
_TIME = re.compile(TIME_PATTERN)

Scalar = str | int | float | bool | Decimal


def value_number(value: object) -> Decimal | None:
    """The number a JSON value stands for (a number or a plain decimal string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and NUMERIC_STRING.fullmatch(value):
        return Decimal(value)
    return None


def value_time(value: object) -> datetime | None:
    """The moment a JSON string stands for (see the module docstring), else None."""
    if not isinstance(value, str) or not (match := _TIME.fullmatch(value)):
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:  # not a calendar day (2026-02-30)
        return None
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    return moment


def values_equal(value: object, expected: Scalar) -> bool:
    """``eq`` between a JSON value and a rule's scalar: numbers when either side is a JSON
    number (and both are numbers), booleans by identity, strings exactly."""
    if value is None or isinstance(value, list | dict):
        return False
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and value == expected
    if not isinstance(expected, str) or not isinstance(value, str):  # a JSON number on a side
        number, wanted = value_number(value), value_number(expected)
        return number is not None and wanted is not None and number == wanted
    return value == expected
