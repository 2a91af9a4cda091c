"""Parsing a rule: the stored JSON to the dataclasses of ``syntax``, or ``RuleInvalid`` with
every problem in it, each at its path."""

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from cdp.json_limits import JsonTooDeep, json_check_depth
from identity.identifiers import BUILT_IN_TYPES
from members.segments.rules.syntax import (
    AGGREGATES,
    CHANNELS,
    COMPARISONS,
    KINDS,
    MAX_DAYS,
    NUMBER_AGGREGATES,
    ORDERINGS,
    STORE_OPS,
    TIME_AGGREGATES,
    TIME_OPS,
    TRAIT_OPS,
    Aggregate,
    All,
    Any_,
    Condition,
    ConsentGranted,
    Did,
    DidNot,
    EventFilter,
    FirstTime,
    HasIdentifier,
    HasTag,
    InSegment,
    Not,
    Points,
    Stopped,
    TierIn,
    Trait,
    rule_path,
)
from members.segments.rules.values import Scalar, value_number, value_time

#: A rule's JSON object, as ``json.loads`` gives it.
JsonObject = dict[str, Any]
#: What a behaviour condition's common part parses to: its event filter and its day windows.
_Behaviour = tuple["EventFilter | None", dict[str, int | None]]

_KEY = re.compile(r"[-a-zA-Z0-9_]{1,64}")
_IDENTIFIER_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PURPOSE = _IDENTIFIER_TYPE  # consent purposes are named alike (members.consent.apps checks the settings)


class RuleInvalid(ValueError):
    """A rule that is not valid: ``errors`` lists every problem as (path, reason), the path
    like ``all[1].value`` ("" for the rule itself)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '(rule)'}: {reason}" for path, reason in errors))


def _one_of(names: Iterable[str]) -> str:
    return ", ".join(names)


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

    def keys(
        self, data: JsonObject, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> bool:
        ok = True
        for name in data:
            if name not in allowed:
                self.fail(rule_path(path, str(name)), f"unknown key {name!r}; expected {_one_of(allowed)}")
                ok = False
        for name in required:
            if name not in data:
                self.fail(rule_path(path, name), "is required")
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
        return _CONDITION_PARSERS[kinds[0]](self, data, path)

    def _group(self, data: JsonObject, path: str, kind: str) -> tuple[Condition, ...] | None:
        self.keys(data, path, (kind,))
        items = data[kind]
        here = rule_path(path, kind)
        if not isinstance(items, list) or not items:
            self.fail(here, f"expected a non-empty list of conditions, got {_kind(items)}")
            return None
        parsed = [self.condition(item, f"{here}[{index}]") for index, item in enumerate(items)]
        conditions = tuple(p for p in parsed if p is not None)
        return conditions if len(conditions) == len(parsed) else None

    def parse_all(self, data: JsonObject, path: str) -> Condition | None:
        items = self._group(data, path, "all")
        return All(items) if items else None

    def parse_any(self, data: JsonObject, path: str) -> Condition | None:
        items = self._group(data, path, "any")
        return Any_(items) if items else None

    def parse_not(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("not",))
        item = self.condition(data["not"], rule_path(path, "not"))
        return Not(item) if item is not None else None

    def parse_trait(self, data: JsonObject, path: str) -> Condition | None:
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
            self.fail(rule_path(path, "trait"), f"expected a trait name, got {key!r}")
            key = None
        if op not in TRAIT_OPS:
            self.fail(rule_path(path, "op"), f"unknown operator {op!r}; one of {_one_of(TRAIT_OPS)}")
            return None
        here = rule_path(path, "value")
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

    def parse_has_identifier(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("has_identifier",))
        kind = data["has_identifier"]
        if not isinstance(kind, str) or not _IDENTIFIER_TYPE.fullmatch(kind):
            self.fail(rule_path(path, "has_identifier"),
                      f"expected an identifier type ({_one_of(sorted(BUILT_IN_TYPES))}, or a custom type in "
                      f"lower case), got {kind!r}")  # fmt: skip
            return None
        return HasIdentifier(kind)

    def parse_aggregate(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("aggregate", "op", "value"), ("aggregate", "op", "value"))
        name, op, raw = data.get("aggregate"), data.get("op"), data.get("value")
        if name not in AGGREGATES:
            self.fail(
                rule_path(path, "aggregate"), f"unknown aggregate {name!r}; one of {_one_of(AGGREGATES)}"
            )
            return None
        ops = COMPARISONS if name in NUMBER_AGGREGATES else TIME_OPS if name in TIME_AGGREGATES else STORE_OPS
        if not isinstance(op, str) or op not in ops:
            self.fail(rule_path(path, "op"), f"unknown operator {op!r} for {name}; one of {_one_of(ops)}")
            return None
        if "value" not in data:
            return None
        here = rule_path(path, "value")
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

    def event_filter(self, data: JsonObject, path: str) -> EventFilter | None:
        name = data.get("event")
        ok = True
        if not isinstance(name, str) or not name or "\x00" in name:
            self.fail(
                rule_path(path, "event"), f"expected an event name such as 'Order Completed', got {name!r}"
            )
            ok = False
        where: list[tuple[str, Scalar]] = []
        raw = data.get("where", {})
        here = rule_path(path, "where")
        if not isinstance(raw, dict):
            self.fail(here, f"expected an object of equalities, got {_kind(raw)}")
            return None
        for key, value in raw.items():
            at = rule_path(here, str(key))
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
        return EventFilter(name, tuple(where)) if ok and isinstance(name, str) else None

    def _behaviour(
        self, data: JsonObject, path: str, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> _Behaviour:
        self.keys(data, path, allowed, required)
        event = self.event_filter(data, path)
        days: dict[str, int | None] = {}
        for name in ("in_last_days", "before_days"):
            if name in data and name in allowed:
                days[name] = self.days(data[name], rule_path(path, name), minimum=1)
        return event, days

    def parse_event(self, data: JsonObject, path: str) -> Condition | None:
        event, days = self._behaviour(data, path, ("event", "where", "in_last_days", "at_least", "at_most"),
                                      ("event",))  # fmt: skip
        at_least = self.count(data["at_least"], rule_path(path, "at_least")) if "at_least" in data else None
        at_most = self.count(data["at_most"], rule_path(path, "at_most")) if "at_most" in data else None
        if "at_least" not in data and "at_most" not in data:
            at_least = 1
        if event is None or None in days.values() or (at_least is None and at_most is None):
            return None
        if ("at_least" in data and at_least is None) or ("at_most" in data and at_most is None):
            return None
        return Did(event, days.get("in_last_days"), at_least, at_most)

    def _nested(self, data: JsonObject, path: str, kind: str, required: tuple[str, ...]) -> _Behaviour:
        self.keys(data, path, (kind,))
        inner = data[kind]
        here = rule_path(path, kind)
        if not isinstance(inner, dict):
            fields = ", ".join(("event", "where (optional)", *required[1:]))
            self.fail(here, f"expected an object with {fields}, got {_kind(inner)}")
            return None, {}
        allowed = ("event", "where", "in_last_days", "before_days") if kind == "stopped" else (
            "event", "where", "in_last_days")  # fmt: skip
        return self._behaviour(inner, here, allowed, required)

    def parse_did_not(self, data: JsonObject, path: str) -> Condition | None:
        event, days = self._nested(data, path, "did_not", ("event",))
        if event is None or None in days.values():
            return None
        return DidNot(event, days.get("in_last_days"))

    def parse_first_time(self, data: JsonObject, path: str) -> Condition | None:
        event, days = self._nested(data, path, "first_time", ("event", "in_last_days"))
        in_last_days = days.get("in_last_days")
        if event is None or in_last_days is None:
            return None
        return FirstTime(event, in_last_days)

    def parse_stopped(self, data: JsonObject, path: str) -> Condition | None:
        event, days = self._nested(data, path, "stopped", ("event", "in_last_days", "before_days"))
        in_last_days, before_days = days.get("in_last_days"), days.get("before_days")
        if event is None or in_last_days is None or before_days is None:
            return None
        return Stopped(event, in_last_days, before_days)

    def parse_points(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("points",))
        inner, here = data["points"], rule_path(path, "points")
        if not isinstance(inner, dict):
            self.fail(here, f'expected {{"op": ..., "value": ...}}, got {_kind(inner)}')
            return None
        self.keys(inner, here, ("op", "value"), ("op", "value"))
        op, raw = inner.get("op"), inner.get("value")
        if op not in COMPARISONS:
            self.fail(rule_path(here, "op"), f"unknown operator {op!r}; one of {_one_of(COMPARISONS)}")
            op = None
        if "value" in inner and (isinstance(raw, bool) or not isinstance(raw, int)):
            self.fail(rule_path(here, "value"), f"expected a whole number of points, got {raw!r}")
            raw = None
        return Points(op, raw) if op is not None and raw is not None else None

    def parse_tier(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("tier",))
        inner, here = data["tier"], rule_path(path, "tier")
        if not isinstance(inner, dict) or len(inner) != 1 or next(iter(inner)) not in ("in", "eq"):
            self.fail(here, f'expected {{"in": ["gold", ...]}} or {{"eq": "gold"}}, got {inner!r}')
            return None
        op, raw = next(iter(inner.items()))
        values = [raw] if op == "eq" else raw
        if not isinstance(values, list) or not values:
            self.fail(rule_path(here, op), f"expected a non-empty list of tier keys, got {_kind(raw)}")
            return None
        tiers = []
        for index, tier in enumerate(values):
            at = rule_path(here, op) if op == "eq" else f"{rule_path(here, op)}[{index}]"
            if not isinstance(tier, str) or not tier or "\x00" in tier:
                self.fail(at, f"expected a tier key, got {tier!r}")
            else:
                tiers.append(tier)
        return TierIn(tuple(tiers)) if len(tiers) == len(values) else None

    def parse_tag(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("tag",))
        key = self.key(data["tag"], rule_path(path, "tag"), "tag")
        return HasTag(key) if key else None

    def parse_segment(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("segment",))
        key = self.key(data["segment"], rule_path(path, "segment"), "segment")
        return InSegment(key) if key else None

    def parse_consent(self, data: JsonObject, path: str) -> Condition | None:
        self.keys(data, path, ("consent",))
        purpose = data["consent"]
        if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
            self.fail(rule_path(path, "consent"),
                      f"expected a consent purpose such as 'marketing_sms' (lower case), got {purpose!r}")  # fmt: skip
            return None
        return ConsentGranted(purpose)


#: The parser of each kind of condition (``syntax.KINDS``).
_CONDITION_PARSERS: dict[str, Callable[[_Parser, JsonObject, str], Condition | None]] = {
    "all": _Parser.parse_all,
    "any": _Parser.parse_any,
    "not": _Parser.parse_not,
    "trait": _Parser.parse_trait,
    "has_identifier": _Parser.parse_has_identifier,
    "aggregate": _Parser.parse_aggregate,
    "event": _Parser.parse_event,
    "did_not": _Parser.parse_did_not,
    "first_time": _Parser.parse_first_time,
    "stopped": _Parser.parse_stopped,
    "points": _Parser.parse_points,
    "tier": _Parser.parse_tier,
    "tag": _Parser.parse_tag,
    "segment": _Parser.parse_segment,
    "consent": _Parser.parse_consent,
}


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
