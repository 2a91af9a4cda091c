"""What a rule depends on: the tags and segments it reads (to order computes and refuse
cycles), and when time alone may change its answer for a member (to recheck them then)."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from members.moments import moment_plus
from members.segments.rules.interpret import MemberFacts, aggregate_value, event_passes, event_times_of
from members.segments.rules.syntax import (
    Aggregate,
    All,
    Any_,
    Condition,
    ConsentGranted,
    Did,
    DidNot,
    FirstTime,
    HasTag,
    InSegment,
    Not,
    Stopped,
    Trait,
    rule_path,
)
from members.segments.rules.values import value_time


@dataclass(frozen=True, slots=True)
class References:
    segments: frozenset[str]
    tags: frozenset[str]
    time_based: bool


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
    # A statement dated ahead (a device's clock) comes into force when its time comes.
    return isinstance(leaf, FirstTime | Stopped | ConsentGranted)


def rule_references(condition: Condition) -> References:
    """The segments and tags a rule reads (to order computes and catch cycles), and whether
    time alone can change its answer (a window, within_days, older_than_days)."""
    found = list(leaves(condition))
    return References(
        segments=frozenset(leaf.key for leaf in found if isinstance(leaf, InSegment)),
        tags=frozenset(leaf.key for leaf in found if isinstance(leaf, HasTag)),
        time_based=any(_time_based(leaf) for leaf in found),
    )


def _moments(leaf: Condition, facts: MemberFacts, now: datetime) -> Iterable[datetime]:
    """Moments at which time alone may flip ``leaf`` for this member: a superset of the soonest
    one after ``now`` (``rule_window_expiry`` takes the soonest of those after ``now``)."""
    if isinstance(leaf, ConsentGranted):
        yield from (fact.at for fact in facts.consents if fact.purpose == leaf.purpose)
        return
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
    times = event_times_of(facts, leaf.event)
    if times is None:
        times = [event.at for event in facts.events if event_passes(event, leaf.event)]
    for days in offsets:
        # Each time leaves the window this long after it; of those leaving after ``now``, the
        # earliest time's leaves first. Found by comparing times, not by adding to each: a heavy
        # member's refresh added the window to each of its dozens of stored times, per rule.
        window = timedelta(days=days, microseconds=1)
        start = moment_plus(now, -window)  # None: before the calendar, every time is later
        earliest = min((at for at in times if start is None or at > start), default=None)
        if earliest is not None and (leaves_window := moment_plus(earliest, window)) is not None:
            yield leaves_window


def rule_window_expiry(condition: Condition, facts: MemberFacts, now: datetime) -> datetime | None:
    """The soonest moment after ``now`` at which time alone may change whether this member
    matches (recheck them then), or None if time alone never changes it."""
    moments = [m for leaf in leaves(condition) for m in _moments(leaf, facts, now) if m > now]
    return min(moments, default=None)


def rule_reference_paths(
    condition: Condition, path: str = ""
) -> Iterator[tuple[Literal["tag", "segment"], str, str]]:
    """(kind, key, path) of every tag and segment a rule reads, the paths as ``rule_parse``
    gives them (to say which part of a rule names what does not exist)."""
    if isinstance(condition, All | Any_):
        group = rule_path(path, "all" if isinstance(condition, All) else "any")
        for index, item in enumerate(condition.items):
            yield from rule_reference_paths(item, f"{group}[{index}]")
    elif isinstance(condition, Not):
        yield from rule_reference_paths(condition.item, rule_path(path, "not"))
    elif isinstance(condition, HasTag):
        yield "tag", condition.key, rule_path(path, "tag")
    elif isinstance(condition, InSegment):
        yield "segment", condition.key, rule_path(path, "segment")


def rule_consent_paths(condition: Condition, path: str = "") -> Iterator[tuple[str, str]]:
    """(purpose, path) of every consent a rule reads, the paths as ``rule_parse`` gives them
    (to say which part of a rule names a purpose that is not configured)."""
    if isinstance(condition, All | Any_):
        group = rule_path(path, "all" if isinstance(condition, All) else "any")
        for index, item in enumerate(condition.items):
            yield from rule_consent_paths(item, f"{group}[{index}]")
    elif isinstance(condition, Not):
        yield from rule_consent_paths(condition.item, rule_path(path, "not"))
    elif isinstance(condition, ConsentGranted):
        yield condition.purpose, rule_path(path, "consent")


def rule_trait_paths(condition: Condition, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(trait key, operator, path) of every trait a rule reads, the paths as ``rule_parse``
    gives them (to say which part of a rule compares a trait that is sealed at rest)."""
    if isinstance(condition, All | Any_):
        group = rule_path(path, "all" if isinstance(condition, All) else "any")
        for index, item in enumerate(condition.items):
            yield from rule_trait_paths(item, f"{group}[{index}]")
    elif isinstance(condition, Not):
        yield from rule_trait_paths(condition.item, rule_path(path, "not"))
    elif isinstance(condition, Trait):
        yield condition.key, condition.op, path
