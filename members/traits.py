"""Profile traits: for each trait, the value from the latest event, whatever order events
arrived in. Pure (no ORM).

A late POS upload of last week's till data must not overwrite the email the customer changed
in the app yesterday, so traits are ranked by event time, not arrival. Two values observed at
the same instant are ranked by channel precedence (configurable: by default a store's own
records beat the app, which beats the web), then by messageId, so the answer is unique.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DEFAULT_CHANNEL_PRECEDENCE = ("pos", "mini_program", "app", "web")


@dataclass(frozen=True, slots=True)
class TraitObservation:
    key: str
    value: Any
    observed_at: datetime
    channel: str
    message_id: str
    source_id: int
    event_id: int


#: The Segment call whose ``traits`` describe a group (an account, a company, a store club),
#: not the person who made it (``members.groups``).
GROUP_CALL = "group"


def traits_of_event(
    traits: Mapping[str, Any], context: Mapping[str, Any], message_type: str = ""
) -> dict[str, Any]:
    """The person's traits an event states: ``context.traits`` (any call), then ``traits``
    (identify) unless the call is a ``group``, whose traits are the group's: a group named
    "ACME Ltd" does not rename the person."""
    stated = dict(context.get("traits") or {}) if isinstance(context.get("traits"), Mapping) else {}
    if message_type != GROUP_CALL:
        stated.update(traits)
    return stated


def latest_traits(
    observations: Iterable[TraitObservation], precedence: Sequence[str] = DEFAULT_CHANNEL_PRECEDENCE
) -> dict[str, TraitObservation]:
    rank = {channel: len(precedence) - index for index, channel in enumerate(precedence)}
    best: dict[str, TraitObservation] = {}

    def order(o: TraitObservation) -> tuple[datetime, int, str, int, int]:
        return (o.observed_at, rank.get(o.channel, 0), o.message_id, o.source_id, o.event_id)

    for observation in observations:
        current = best.get(observation.key)
        if current is None or order(observation) > order(current):
            best[observation.key] = observation
    return best
