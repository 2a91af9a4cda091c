"""Generated event streams for the database engine's tests: raw events, and the stored events
they describe."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from events.models import Event, Source
from tests.factories import EventFactory, SourceFactory

T0 = datetime(2026, 10, 1, tzinfo=UTC)

FIELD_POOLS = {
    "user_id": ["u1", "u2", "u3", "0"],
    "anonymous_id": ["a1", "a2", "a3", "a4"],
    "phone": ["13800138001", "+86 138 0013 8002", "8613800138003", "12345"],
    "device": ["ipad-shared", "d1", "d2"],
    "card": ["C1", "C2", "C3"],
}


@st.composite
def raw_events(draw) -> list[dict]:
    """Events over small pools of raw values (junk and several written forms included): many
    links, limits reached, ties in time broken by messageId; one in five an alias."""
    events = []
    for index in range(draw(st.integers(min_value=1, max_value=12))):
        chosen = {
            field: draw(st.sampled_from(values))
            for field, values in FIELD_POOLS.items()
            if draw(st.booleans())
        }
        if draw(st.integers(0, 4)) == 0:  # an alias: the previous id seen as a user or anonymous id
            chosen["previous_id"] = draw(
                st.sampled_from(FIELD_POOLS["user_id"][:3] + FIELD_POOLS["anonymous_id"])
            )
            chosen["user_id"] = draw(st.sampled_from(FIELD_POOLS["user_id"][:3]))
        events.append(
            {"index": index, "minute": draw(st.integers(0, 8)), "source": draw(st.integers(0, 1)), **chosen}
        )
    return events


def create_event(raw: dict, sources: Sequence[Source | SourceFactory]) -> Event:
    """The event a generated raw event describes, from one of two sources."""
    context: dict[str, Any] = {}
    if "device" in raw:
        context["device"] = {"id": raw["device"]}
    if "card" in raw:
        context["externalIds"] = [{"id": raw["card"], "type": "member_card"}]
    return EventFactory.create(
        source=sources[raw["source"]],
        message_id=f"m{raw['index']:02d}",
        type="alias" if "previous_id" in raw else "track",
        previous_id=raw.get("previous_id", ""),
        user_id=raw.get("user_id", ""),
        anonymous_id=raw.get("anonymous_id", "" if "user_id" in raw else f"solo-{raw['index']}"),
        traits={"phone": raw["phone"]} if "phone" in raw else {},
        context=context,
        timestamp=T0 + timedelta(minutes=raw["minute"]),
    )
