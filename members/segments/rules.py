"""The rule language shared by rule tags and dynamic segments (docs/rules.md).

Pure (no ORM): ``rule_parse`` turns the stored JSON into frozen dataclasses or says everything
that is wrong with it; ``rule_matches`` evaluates a condition for one member from their
``MemberFacts`` (the incremental path); ``members.segments.compile.rule_sql`` turns the same
condition into one set-based SQL expression (the full recompute). Both follow the value
semantics below, and a property test holds them to a plain reference evaluator.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Union

from cdp.json_limits import JsonTooDeep, json_check_depth
from identity.identifiers import BUILT_IN_TYPES
from members.moments import moment_plus

CHANNELS = ("pos", "app", "mini_program", "web")

#: Trait operators, in the order error messages list them.
TRAIT_OPS = (
    "eq", "ne", "in", "contains", "gt", "gte", "lt", "lte",
    "exists", "not_exists", "within_days", "older_than_days",
)  # fmt: skip
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte")
ORDERINGS = ("gt", "gte", "lt", "lte")

NUMBER_AGGREGATES = (
    "orders", "spend", "refunded", "average_order_value",
    *(f"orders_{c}" for c in CHANNELS), *(f"spend_{c}" for c in CHANNELS),
    "events", *(f"events_{c}" for c in CHANNELS),
)  # fmt: skip
#: Aggregates that may be null on a member's row (null never matches).
NULLABLE_AGGREGATES = frozenset({"average_order_value"})
TIME_AGGREGATES = ("first_purchase_at", "last_purchase_at", "last_event_at")
TIME_OPS = ("before", "after", "within_days", "older_than_days")
STORE_OPS = ("contains", "count_gte", "count_lte")
AGGREGATES = (*NUMBER_AGGREGATES, *TIME_AGGREGATES, "stores_visited")

KINDS = (
    "all", "any", "not", "trait", "has_identifier", "aggregate", "event", "did_not",
    "first_time", "stopped", "points", "tier", "tag", "segment",
)  # fmt: skip

NUMERIC_STRING = re.compile(r"-?[0-9]+(\.[0-9]+)?")
#: The same pattern as ``members.segments.compile`` uses in SQL (groups: year, month, day,
#: hour, minute, second, fraction, offset).
TIME_PATTERN = (
    r"([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ]([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9])(?:\.([0-9]{1,6}))?)?"
    r"(Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?"
)
_TIME = re.compile(TIME_PATTERN)
_KEY = re.compile(r"[-a-zA-Z0-9_]{1,64}")
_IDENTIFIER_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_DAYS = 36_500

Scalar = str | int | float | bool | Decimal


# --- the conditions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class All:
    items: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class Any_:
    items: tuple["Condition", ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: "Condition"


@dataclass(frozen=True, slots=True)
class Trait:
    """``value``: None (exists, not_exists), a tuple of scalars (in), an int of days
    (within_days, older_than_days), a datetime (an ordering on a time), or a scalar; numbers
    as Decimal."""

    key: str
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class HasIdentifier:
    type: str


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``value``: a Decimal (numbers), a datetime (before, after), an int (days, counts) or a
    store code (contains)."""

    name: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events count: the track name, and equalities on ``channel``, ``store_code`` or
    ``properties.<key>`` (kept as (field, value) pairs, in the rule's order)."""

    name: str
    where: tuple[tuple[str, Scalar], ...] = ()


@dataclass(frozen=True, slots=True)
class Did:
    """Did the event at least / at most N times in the last ``in_last_days`` days (None:
    ever)."""

    event: EventFilter
    in_last_days: int | None
    at_least: int | None
    at_most: int | None


@dataclass(frozen=True, slots=True)
class DidNot:
    event: EventFilter
    in_last_days: int | None


@dataclass(frozen=True, slots=True)
class FirstTime:
    """Did it in the last ``in_last_days`` days and never before."""

    event: EventFilter
    in_last_days: int


@dataclass(frozen=True, slots=True)
class Stopped:
    """Did it in the ``before_days`` days before the last ``in_last_days`` days, and not in the
    last ``in_last_days`` days."""

    event: EventFilter
    in_last_days: int
    before_days: int


@dataclass(frozen=True, slots=True)
class Points:
    op: str
    value: int


@dataclass(frozen=True, slots=True)
class TierIn:
    tiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HasTag:
    key: str


@dataclass(frozen=True, slots=True)
class InSegment:
    key: str


Condition = Union[  # noqa: UP007  (a forward-referenced union alias)
    All, Any_, Not, Trait, HasIdentifier, Aggregate, Did, DidNot, FirstTime, Stopped, Points, TierIn, HasTag,
    InSegment,
]  # fmt: skip


class RuleInvalid(ValueError):
    """A rule that is not valid: ``errors`` lists every problem as (path, reason), the path
    like ``all[1].value`` ("" for the rule itself)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '(rule)'}: {reason}" for path, reason in errors))


# --- the facts of one member ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventFact:
    name: str
    at: datetime
    channel: str = ""
    store_code: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemberFacts:
    """What rules look at for one member. ``aggregates`` is empty for a member without a
    figures row (orders and spend 0, times None); ``tier`` is "" without one."""

    member_id: int
    traits: Mapping[str, Any] = field(default_factory=dict)
    identifier_types: frozenset[str] = frozenset()
    aggregates: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[EventFact, ...] = ()
    points: int = 0
    tier: str = ""
    tags: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class References:
    segments: frozenset[str]
    tags: frozenset[str]
    time_based: bool


# --- values -----------------------------------------------------------------------------------


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


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if op == "gt":
        return left > right
    if op == "gte":
        return left >= right
    if op == "lt":
        return left < right
    return left <= right


# --- parsing ----------------------------------------------------------------------------------


def _one_of(names: Iterable[str]) -> str:
    return ", ".join(names)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Parser:
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))

    # values

    def scalar(self, value: object, path: str) -> Scalar | None:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = value_number(value)
            if isinstance(value, float) and not number.is_finite():  # type: ignore[union-attr]
                self.fail(path, "expected a finite number")
                return None
            return number
        if isinstance(value, str):
            if "\x00" in value:
                self.fail(path, "a text value cannot contain a NUL character")
                return None
            return value
        self.fail(path, f"expected a text, number or true/false value, got {_kind(value)}")
        return None

    def days(self, value: object, path: str, *, minimum: int = 0) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_DAYS:
            self.fail(path, f"expected a whole number of days from {minimum} to {MAX_DAYS}, got {value!r}")
            return None
        return value

    def count(self, value: object, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(path, f"expected a whole number 0 or more, got {value!r}")
            return None
        return value

    def number(self, value: object, path: str) -> Decimal | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"expected a number, got {_kind(value)}")
            return None
        number = value_number(value)
        if not number.is_finite():  # type: ignore[union-attr]
            self.fail(path, "expected a finite number")
            return None
        return number

    def time(self, value: object, path: str) -> datetime | None:
        moment = value_time(value)
        if moment is None:
            self.fail(path, f"expected an ISO date or date-time such as 2026-01-31 or 2026-01-31T08:00:00+08:00, "
                            f"got {value!r}")  # fmt: skip
        return moment

    def key(self, value: object, path: str, what: str) -> str | None:
        if not isinstance(value, str) or not _KEY.fullmatch(value):
            self.fail(path, f"expected a {what} key (letters, digits, - and _), got {value!r}")
            return None
        return value

    def keys(self, data: dict, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        ok = True
        for name in data:
            if name not in allowed:
                self.fail(_join(path, str(name)), f"unknown key {name!r}; expected {_one_of(allowed)}")
                ok = False
        for name in required:
            if name not in data:
                self.fail(_join(path, name), "is required")
                ok = False
        return ok

    # conditions

    def condition(self, data: object, path: str) -> Condition | None:
        if not isinstance(data, dict):
            self.fail(path, f'expected a condition (an object such as {{"trait": ...}}), got {_kind(data)}')
            return None
        kinds = [k for k in KINDS if k in data]
        if len(kinds) != 1:
            if kinds:
                reason = f"a condition has exactly one of {_one_of(KINDS)}; got {_one_of(kinds)}"
            else:
                unknown = ", ".join(repr(k) for k in data) or "an empty object"
                reason = f"not a condition ({unknown}); expected one of {_one_of(KINDS)}"
            self.fail(path, reason)
            return None
        return getattr(self, f"c_{kinds[0]}")(data, path)

    def _group(self, data: dict, path: str, kind: str) -> tuple | None:
        self.keys(data, path, (kind,))
        items = data[kind]
        here = _join(path, kind)
        if not isinstance(items, list) or not items:
            self.fail(here, f"expected a non-empty list of conditions, got {_kind(items)}")
            return None
        parsed = [self.condition(item, f"{here}[{index}]") for index, item in enumerate(items)]
        return tuple(parsed) if all(p is not None for p in parsed) else None

    def c_all(self, data: dict, path: str) -> Condition | None:
        items = self._group(data, path, "all")
        return All(items) if items else None

    def c_any(self, data: dict, path: str) -> Condition | None:
        items = self._group(data, path, "any")
        return Any_(items) if items else None

    def c_not(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("not",))
        item = self.condition(data["not"], _join(path, "not"))
        return Not(item) if item is not None else None

    def c_trait(self, data: dict, path: str) -> Condition | None:
        op = data.get("op")
        no_value = op in ("exists", "not_exists")
        allowed = ("trait", "op") if no_value else ("trait", "op", "value")
        self.keys(
            data,
            path,
            allowed,
            ("trait", "op", "value") if op in TRAIT_OPS and not no_value else ("trait", "op"),
        )
        if "op" not in data:
            return None
        key = data.get("trait")
        if not isinstance(key, str) or not key or "\x00" in key:
            self.fail(_join(path, "trait"), f"expected a trait name, got {key!r}")
            key = None
        if op not in TRAIT_OPS:
            self.fail(_join(path, "op"), f"unknown operator {op!r}; one of {_one_of(TRAIT_OPS)}")
            return None
        here = _join(path, "value")
        value: Any = None
        if no_value:
            pass
        elif "value" not in data:
            return None
        elif op in ("eq", "ne", "contains"):
            value = self.scalar(data["value"], here)
            if value is None:
                return None
        elif op == "in":
            raw = data["value"]
            if not isinstance(raw, list) or not raw:
                self.fail(here, f"expected a non-empty list of values, got {_kind(raw)}")
                return None
            values = [self.scalar(v, f"{here}[{i}]") for i, v in enumerate(raw)]
            if any(v is None for v in values):
                return None
            value = tuple(values)
        elif op in ORDERINGS:
            raw = data["value"]
            if isinstance(raw, str):
                value = self.time(raw, here)
            elif isinstance(raw, int | float) and not isinstance(raw, bool):
                value = self.number(raw, here)
            else:
                self.fail(here, f"{op} compares numbers or ISO dates, got {_kind(raw)}")
            if value is None:
                return None
        else:
            value = self.days(data["value"], here)
            if value is None:
                return None
        return Trait(key, op, value) if key else None

    def c_has_identifier(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("has_identifier",))
        kind = data["has_identifier"]
        if not isinstance(kind, str) or not _IDENTIFIER_TYPE.fullmatch(kind):
            self.fail(_join(path, "has_identifier"),
                      f"expected an identifier type ({_one_of(sorted(BUILT_IN_TYPES))}, or a custom type in "
                      f"lower case), got {kind!r}")  # fmt: skip
            return None
        return HasIdentifier(kind)

    def c_aggregate(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("aggregate", "op", "value"), ("aggregate", "op", "value"))
        name, op, raw = data.get("aggregate"), data.get("op"), data.get("value")
        if name not in AGGREGATES:
            self.fail(_join(path, "aggregate"), f"unknown aggregate {name!r}; one of {_one_of(AGGREGATES)}")
            return None
        ops = COMPARISONS if name in NUMBER_AGGREGATES else TIME_OPS if name in TIME_AGGREGATES else STORE_OPS
        if op not in ops:
            self.fail(_join(path, "op"), f"unknown operator {op!r} for {name}; one of {_one_of(ops)}")
            return None
        if "value" not in data:
            return None
        here = _join(path, "value")
        if name in NUMBER_AGGREGATES:
            value: Any = self.number(raw, here)
        elif op in ("before", "after"):
            value = self.time(raw, here)
        elif op in ("within_days", "older_than_days"):
            value = self.days(raw, here)
        elif op == "contains":
            value = raw if isinstance(raw, str) and raw and "\x00" not in raw else None
            if value is None:
                self.fail(here, f"expected a store code, got {raw!r}")
        else:
            value = self.count(raw, here)
        return None if value is None else Aggregate(name, op, value)

    def event_filter(self, data: dict, path: str) -> EventFilter | None:
        name = data.get("event")
        ok = True
        if not isinstance(name, str) or not name or "\x00" in name:
            self.fail(_join(path, "event"), f"expected an event name such as 'Order Completed', got {name!r}")
            ok = False
        where: list[tuple[str, Scalar]] = []
        raw = data.get("where", {})
        here = _join(path, "where")
        if not isinstance(raw, dict):
            self.fail(here, f"expected an object of equalities, got {_kind(raw)}")
            return None
        for key, value in raw.items():
            at = _join(here, str(key))
            if key == "channel":
                if value not in CHANNELS:
                    self.fail(at, f"unknown channel {value!r}; one of {_one_of(CHANNELS)}")
                    ok = False
                    continue
            elif key == "store_code":
                if not isinstance(value, str) or "\x00" in value:
                    self.fail(at, f"expected a store code, got {value!r}")
                    ok = False
                    continue
            elif isinstance(key, str) and key.startswith("properties.") and len(key) > len("properties."):
                if "\x00" in key:
                    self.fail(at, "a property name cannot contain a NUL character")
                    ok = False
                    continue
                value = self.scalar(value, at)
                if value is None:
                    ok = False
                    continue
            else:
                self.fail(at, f"unknown field {key!r}; one of channel, store_code, properties.<name>")
                ok = False
                continue
            where.append((key, value))
        return EventFilter(name, tuple(where)) if ok else None

    def _behaviour(self, data: dict, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> tuple:
        self.keys(data, path, allowed, required)
        event = self.event_filter(data, path)
        days = {}
        for name in ("in_last_days", "before_days"):
            if name in data and name in allowed:
                days[name] = self.days(data[name], _join(path, name), minimum=1)
        return event, days

    def c_event(self, data: dict, path: str) -> Condition | None:
        event, days = self._behaviour(data, path, ("event", "where", "in_last_days", "at_least", "at_most"),
                                      ("event",))  # fmt: skip
        at_least = self.count(data["at_least"], _join(path, "at_least")) if "at_least" in data else None
        at_most = self.count(data["at_most"], _join(path, "at_most")) if "at_most" in data else None
        if "at_least" not in data and "at_most" not in data:
            at_least = 1
        if event is None or None in days.values() or (at_least is None and at_most is None):
            return None
        if ("at_least" in data and at_least is None) or ("at_most" in data and at_most is None):
            return None
        return Did(event, days.get("in_last_days"), at_least, at_most)

    def _nested(self, data: dict, path: str, kind: str, required: tuple[str, ...]) -> tuple:
        self.keys(data, path, (kind,))
        inner = data[kind]
        here = _join(path, kind)
        if not isinstance(inner, dict):
            fields = ", ".join(("event", "where (optional)", *required[1:]))
            self.fail(here, f"expected an object with {fields}, got {_kind(inner)}")
            return None, {}
        allowed = ("event", "where", "in_last_days", "before_days") if kind == "stopped" else (
            "event", "where", "in_last_days")  # fmt: skip
        return self._behaviour(inner, here, allowed, required)

    def c_did_not(self, data: dict, path: str) -> Condition | None:
        event, days = self._nested(data, path, "did_not", ("event",))
        if event is None or None in days.values():
            return None
        return DidNot(event, days.get("in_last_days"))

    def c_first_time(self, data: dict, path: str) -> Condition | None:
        event, days = self._nested(data, path, "first_time", ("event", "in_last_days"))
        if event is None or days.get("in_last_days") is None:
            return None
        return FirstTime(event, days["in_last_days"])

    def c_stopped(self, data: dict, path: str) -> Condition | None:
        event, days = self._nested(data, path, "stopped", ("event", "in_last_days", "before_days"))
        if event is None or days.get("in_last_days") is None or days.get("before_days") is None:
            return None
        return Stopped(event, days["in_last_days"], days["before_days"])

    def c_points(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("points",))
        inner, here = data["points"], _join(path, "points")
        if not isinstance(inner, dict):
            self.fail(here, f'expected {{"op": ..., "value": ...}}, got {_kind(inner)}')
            return None
        self.keys(inner, here, ("op", "value"), ("op", "value"))
        op, raw = inner.get("op"), inner.get("value")
        if op not in COMPARISONS:
            self.fail(_join(here, "op"), f"unknown operator {op!r}; one of {_one_of(COMPARISONS)}")
            op = None
        if "value" in inner and (isinstance(raw, bool) or not isinstance(raw, int)):
            self.fail(_join(here, "value"), f"expected a whole number of points, got {raw!r}")
            raw = None
        return Points(op, raw) if op is not None and raw is not None else None

    def c_tier(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("tier",))
        inner, here = data["tier"], _join(path, "tier")
        if not isinstance(inner, dict) or len(inner) != 1 or next(iter(inner)) not in ("in", "eq"):
            self.fail(here, f'expected {{"in": ["gold", ...]}} or {{"eq": "gold"}}, got {inner!r}')
            return None
        op, raw = next(iter(inner.items()))
        values = [raw] if op == "eq" else raw
        if not isinstance(values, list) or not values:
            self.fail(_join(here, op), f"expected a non-empty list of tier keys, got {_kind(raw)}")
            return None
        tiers = []
        for index, tier in enumerate(values):
            at = _join(here, op) if op == "eq" else f"{_join(here, op)}[{index}]"
            if not isinstance(tier, str) or not tier or "\x00" in tier:
                self.fail(at, f"expected a tier key, got {tier!r}")
            else:
                tiers.append(tier)
        return TierIn(tuple(tiers)) if len(tiers) == len(values) else None

    def c_tag(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("tag",))
        key = self.key(data["tag"], _join(path, "tag"), "tag")
        return HasTag(key) if key else None

    def c_segment(self, data: dict, path: str) -> Condition | None:
        self.keys(data, path, ("segment",))
        key = self.key(data["segment"], _join(path, "segment"), "segment")
        return InSegment(key) if key else None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def rule_parse(data: object) -> Condition:
    """The condition a rule's JSON states, or ``RuleInvalid`` listing every problem in it.

    A rule nested past ``cdp.json_limits.MAX_JSON_DEPTH`` is refused before it is walked (the
    parse, the SQL compiler and the evaluator all recurse), wherever it comes from: the API
    (whose body parser refuses it too), the admin, a stored definition."""
    try:
        json_check_depth(data)
    except JsonTooDeep as error:
        raise RuleInvalid([("", str(error))]) from error
    parser = _Parser()
    condition = parser.condition(data, "")
    if parser.errors or condition is None:
        raise RuleInvalid(parser.errors or [("", "not a valid condition")])
    return condition


# --- evaluation for one member ----------------------------------------------------------------


def _trait_matches(condition: Trait, facts: MemberFacts, now: datetime) -> bool:
    value = facts.traits.get(condition.key)
    op, expected = condition.op, condition.value
    if op == "exists":
        return value is not None
    if op == "not_exists":
        return value is None
    if value is None:
        return False
    if op == "eq":
        return values_equal(value, expected)
    if op == "ne":
        return not values_equal(value, expected)
    if op == "in":
        return any(values_equal(value, option) for option in expected)
    if op == "contains":
        if isinstance(value, list):
            return any(values_equal(element, expected) for element in value)
        return isinstance(value, str) and isinstance(expected, str) and expected in value
    if op in ORDERINGS:
        mine = value_time(value) if isinstance(expected, datetime) else value_number(value)
        return mine is not None and _compare(mine, op, expected)
    moment = value_time(value)
    return moment is not None and _in_days(moment, op, expected, now)


def _in_days(moment: datetime, op: str, days: int, now: datetime) -> bool:
    if op == "within_days":
        return now - timedelta(days=days) <= moment <= now
    return moment < now - timedelta(days=days)


def aggregate_value(facts: MemberFacts, name: str) -> Any:
    """A member's figure, with the defaults of a member without a figures row."""
    if name == "stores_visited":
        return list(facts.aggregates.get(name) or ())
    if name in TIME_AGGREGATES or name in NULLABLE_AGGREGATES:
        return facts.aggregates.get(name)
    return facts.aggregates.get(name, 0)


def _aggregate_matches(condition: Aggregate, facts: MemberFacts, now: datetime) -> bool:
    value, op, expected = aggregate_value(facts, condition.name), condition.op, condition.value
    if condition.name == "stores_visited":
        if op == "contains":
            return expected in value
        return len(value) >= expected if op == "count_gte" else len(value) <= expected
    if value is None:
        return False
    if condition.name in TIME_AGGREGATES:
        if op == "before":
            return value < expected
        if op == "after":
            return value > expected
        return _in_days(value, op, expected, now)
    return _compare(Decimal(value), op, expected)


def event_passes(event: EventFact, wanted: EventFilter) -> bool:
    if event.name != wanted.name:
        return False
    for key, expected in wanted.where:
        if key == "channel":
            ok = event.channel == expected
        elif key == "store_code":
            ok = event.store_code == expected
        else:
            ok = values_equal(event.properties.get(key[len("properties.") :]), expected)
        if not ok:
            return False
    return True


def _count(facts: MemberFacts, wanted: EventFilter, since: datetime | None, until: datetime | None) -> int:
    """Events passing ``wanted`` at ``since`` or later and before ``until`` (None: unbounded)."""
    return sum(
        1
        for event in facts.events
        if (since is None or event.at >= since)
        and (until is None or event.at < until)
        and event_passes(event, wanted)
    )


def _ago(now: datetime, days: int | None) -> datetime | None:
    return None if days is None else now - timedelta(days=days)


def rule_matches(condition: Condition, facts: MemberFacts, *, now: datetime) -> bool:
    """Whether one member matches ``condition`` at ``now`` (aware)."""
    match condition:
        case All(items):
            return all(rule_matches(item, facts, now=now) for item in items)
        case Any_(items):
            return any(rule_matches(item, facts, now=now) for item in items)
        case Not(item):
            return not rule_matches(item, facts, now=now)
        case Trait():
            return _trait_matches(condition, facts, now)
        case HasIdentifier(kind):
            return kind in facts.identifier_types
        case Aggregate():
            return _aggregate_matches(condition, facts, now)
        case Did(event, days, at_least, at_most):
            count = _count(facts, event, _ago(now, days), None)
            return (at_least is None or count >= at_least) and (at_most is None or count <= at_most)
        case DidNot(event, days):
            return _count(facts, event, _ago(now, days), None) == 0
        case FirstTime(event, days):
            start = _ago(now, days)
            return _count(facts, event, start, None) > 0 and _count(facts, event, None, start) == 0
        case Stopped(event, days, before):
            start = _ago(now, days)
            return (
                _count(facts, event, start, None) == 0
                and _count(facts, event, _ago(start, before), start) > 0
            )
        case Points(op, value):
            return _compare(facts.points, op, value)
        case TierIn(tiers):
            return facts.tier in tiers
        case HasTag(key):
            return key in facts.tags
        case InSegment(key):
            return key in facts.segments
    raise TypeError(f"not a condition: {condition!r}")


# --- what a rule depends on -------------------------------------------------------------------


def leaves(condition: Condition) -> Iterable[Condition]:
    """Every condition of a rule that is not a group (all, any, not)."""
    if isinstance(condition, All | Any_):
        for item in condition.items:
            yield from leaves(item)
    elif isinstance(condition, Not):
        yield from leaves(condition.item)
    else:
        yield condition


def _time_based(leaf: Condition) -> bool:
    if isinstance(leaf, Trait | Aggregate):
        return leaf.op in ("within_days", "older_than_days")
    if isinstance(leaf, Did | DidNot):
        return leaf.in_last_days is not None
    return isinstance(leaf, FirstTime | Stopped)


def rule_references(condition: Condition) -> References:
    """The segments and tags a rule reads (to order computes and catch cycles), and whether
    time alone can change its answer (a window, within_days, older_than_days)."""
    found = list(leaves(condition))
    return References(
        segments=frozenset(leaf.key for leaf in found if isinstance(leaf, InSegment)),
        tags=frozenset(leaf.key for leaf in found if isinstance(leaf, HasTag)),
        time_based=any(_time_based(leaf) for leaf in found),
    )


def _moments(leaf: Condition, facts: MemberFacts) -> Iterable[datetime]:
    """Moments at which time alone may flip ``leaf`` for this member (a superset)."""
    if isinstance(leaf, Trait | Aggregate) and leaf.op in ("within_days", "older_than_days"):
        if isinstance(leaf, Trait):
            moment = value_time(facts.traits.get(leaf.key))
        else:
            moment = aggregate_value(facts, leaf.name)
        if moment is not None:
            yield moment  # a future time enters the window when it comes
            if (leaves_window := moment_plus(moment, timedelta(days=leaf.value, microseconds=1))) is not None:
                yield leaves_window  # (None: beyond the end of the calendar, never)
        return
    if isinstance(leaf, Did | DidNot | FirstTime) and leaf.in_last_days is not None:
        offsets = [leaf.in_last_days]
    elif isinstance(leaf, Stopped):
        offsets = [leaf.in_last_days, leaf.in_last_days + leaf.before_days]
    else:
        return
    for event in facts.events:
        if event_passes(event, leaf.event):
            for days in offsets:
                if (leaves_window := moment_plus(event.at, timedelta(days=days, microseconds=1))) is not None:
                    yield leaves_window


def rule_window_expiry(condition: Condition, facts: MemberFacts, now: datetime) -> datetime | None:
    """The soonest moment after ``now`` at which time alone may change whether this member
    matches (recheck them then), or None if time alone never changes it."""
    moments = [m for leaf in leaves(condition) for m in _moments(leaf, facts) if m > now]
    return min(moments, default=None)
