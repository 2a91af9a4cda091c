"""The rule language's words and shapes: the kinds of condition, their operators, the
figures they may read, and the frozen dataclasses a parsed rule is made of (docs/rules.md)."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Union

import orjson

from members.segments.rules.values import Scalar

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
    "first_time", "stopped", "points", "tier", "tag", "segment", "consent",
)  # fmt: skip

MAX_DAYS = 36_500


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


def event_filter_key(wanted: EventFilter) -> str:
    """The filter as canonical JSON (its name, then its equalities sorted by field), the key
    its stored all-time count goes by (``MemberAggregate.event_counts``): the same for the same
    filter whatever order its rule wrote the equalities in, and a number (``5``) never the same
    as a text (``"5"``) or a boolean, since they match different events (``values_equal``).
    Not cached by the filter: filters compare equal across those types (``Decimal(1) == True``)."""
    pairs = ",".join(
        f"[{orjson.dumps(field).decode()},{_json_scalar(value)}]"
        for field, value in sorted(wanted.where, key=lambda pair: pair[0])
    )
    return f"[{orjson.dumps(wanted.name).decode()},[{pairs}]]"


def _json_scalar(value: Scalar) -> str:
    if isinstance(value, bool | str):
        return orjson.dumps(value).decode()
    number = (
        value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
    )
    return str(number)  # a JSON number (the parser refuses what is not finite)


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


@dataclass(frozen=True, slots=True)
class ConsentGranted:
    """The member's consent to ``purpose`` in force now is a grant (``members.consent``)."""

    purpose: str


Condition = Union[  # noqa: UP007  (a forward-referenced union alias)
    All, Any_, Not, Trait, HasIdentifier, Aggregate, Did, DidNot, FirstTime, Stopped, Points, TierIn, HasTag,
    InSegment, ConsentGranted,
]  # fmt: skip


def rule_path(path: str, key: str) -> str:
    """The path of ``key`` inside the part of a rule at ``path``, as errors name it
    (``all[1].value``; "" is the rule itself)."""
    return f"{path}.{key}" if path else key
