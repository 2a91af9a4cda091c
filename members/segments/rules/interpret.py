"""Evaluating a rule for one member (the incremental path): ``rule_matches`` over the facts
the member refresh loads (``MemberFacts``)."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from members.consent.statements import GRANTED, ConsentFact, consent_in_force
from members.segments.rules.syntax import (
    NULLABLE_AGGREGATES,
    ORDERINGS,
    TIME_AGGREGATES,
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
    event_filter_key,
)
from members.segments.rules.values import value_number, value_time, values_equal

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
    figures row (orders and spend 0, times None); ``tier`` is "" without one; ``consents`` are
    the consent statements the member holds.

    ``event_counts``: how many events of all time pass each filter (by ``event_filter_key``):
    given, a leaf over all time ("did it ever", "never did", a first time's "never before")
    reads its filter's count instead of ``events`` (``Definitions.ever_filters``); a filter
    without a count is counted in ``events``.

    ``event_times``: the times of the events passing each filter windowed leaves count (by
    ``event_filter_key``), as far back as they look (``event_times_add``): given, a windowed
    leaf reads them instead of ``events``."""

    member_id: int
    traits: Mapping[str, Any] = field(default_factory=dict)
    #: The identifier types it holds, of those some rule asks about (``Definitions.identifier_types``).
    identifier_types: frozenset[str] = frozenset()
    aggregates: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[EventFact, ...] = ()
    points: int = 0
    tier: str = ""
    tags: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    consents: tuple[ConsentFact, ...] = ()
    event_counts: Mapping[str, int] | None = None
    event_times: Mapping[str, Sequence[datetime]] | None = None


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


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
            return bool(expected in value)
        return bool(len(value) >= expected if op == "count_gte" else len(value) <= expected)
    if value is None:
        return False
    if condition.name in TIME_AGGREGATES:
        if op == "before":
            return bool(value < expected)
        if op == "after":
            return bool(value > expected)
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
    if since is not None and (times := event_times_of(facts, wanted)) is not None:
        return sum(1 for at in times if at >= since and (until is None or at < until))
    return sum(
        1
        for event in facts.events
        if (since is None or event.at >= since)
        and (until is None or event.at < until)
        and event_passes(event, wanted)
    )


def _count_ever(facts: MemberFacts, wanted: EventFilter) -> int:
    """Events of all time passing ``wanted``: the stored count when the facts carry it."""
    if (
        facts.event_counts is not None
        and (stored := facts.event_counts.get(event_filter_key(wanted))) is not None
    ):
        return stored
    return _count(facts, wanted, None, None)


def event_counts_add(
    counts: Mapping[str, int], events: Iterable[EventFact], filters: Mapping[str, EventFilter]
) -> dict[str, int]:
    """Each filter's count (``filters``: by ``event_filter_key``) moved by the events passing
    it; a filter missing from ``counts`` starts at 0, and a count of no filter is dropped."""
    moved = {key: counts.get(key, 0) for key in filters}
    by_name: dict[str, list[tuple[str, EventFilter]]] = {}
    for key, wanted in filters.items():
        by_name.setdefault(wanted.name, []).append((key, wanted))
    for event in events:
        for key, wanted in by_name.get(event.name, ()):
            if event_passes(event, wanted):
                moved[key] += 1
    return moved


def event_times_of(facts: MemberFacts, wanted: EventFilter) -> Sequence[datetime] | None:
    """The stored times of the member's events passing ``wanted``, if the facts carry them."""
    return None if facts.event_times is None else facts.event_times.get(event_filter_key(wanted))


#: How much further back than its window a filter's stored times reach: a refresh whose clock
#: is a little behind the one that stored them still finds every time its window holds.
WINDOW_MARGIN = timedelta(days=1)


def window_key(wanted: EventFilter, days: int) -> str:
    """The key a windowed filter's times are stored under: the filter and how many days back
    rules read it, so that a window lengthened since finds no times (and recomputes)."""
    return f"{days}:{event_filter_key(wanted)}"


def event_times_add(
    stored: Mapping[str, Sequence[datetime]],
    events: Iterable[EventFact],
    filters: Mapping[str, tuple[EventFilter, int]],
    now: datetime,
) -> dict[str, list[datetime]]:
    """Each windowed filter's times (``filters``: by ``window_key``, with the days rules read
    it) with those of the events passing it added, in order, less those older than its window
    (and ``WINDOW_MARGIN``) at ``now``: rules read them at ``now`` or later. A filter missing
    from ``stored`` starts empty; times of no filter are dropped."""
    moved = {key: list(stored.get(key, ())) for key in filters}
    by_name: dict[str, list[tuple[str, EventFilter]]] = {}
    for key, (wanted, _) in filters.items():
        by_name.setdefault(wanted.name, []).append((key, wanted))
    for event in events:
        for key, wanted in by_name.get(event.name, ()):
            if event_passes(event, wanted):
                moved[key].append(event.at)
    for key, (_, days) in filters.items():
        start = now - timedelta(days=days) - WINDOW_MARGIN
        moved[key] = sorted(at for at in moved[key] if at >= start)
    return moved


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
            count = _count_ever(facts, event) if days is None else _count(facts, event, _ago(now, days), None)
            return (at_least is None or count >= at_least) and (at_most is None or count <= at_most)
        case DidNot(event, days):
            if days is None:
                return _count_ever(facts, event) == 0
            return _count(facts, event, _ago(now, days), None) == 0
        case FirstTime(event, days):
            start = _ago(now, days)
            recent = _count(facts, event, start, None)
            # "Never before": every event of all time is one of the window's.
            return recent > 0 and _count_ever(facts, event) - recent == 0
        case Stopped(event, days, before):
            start = now - timedelta(days=days)
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
        case ConsentGranted(purpose):
            in_force = consent_in_force(facts.consents, purpose, now)
            return in_force is not None and in_force.state == GRANTED
    raise TypeError(f"not a condition: {condition!r}")
