"""The demo's tags and segments: a few a marketer would define on day one, so a newcomer's demo
shows rule tags and segments filling as the worker refreshes the demo members (besides the
built-in RFM and lifecycle ones). Created when missing; never changes a definition staff
edited. Safe to run again."""

from typing import Any

from members.segments.models import Segment, Tag

#: (key, name, kind, rule): the rule is None for a manual tag.
DEMO_TAGS: tuple[tuple[str, str, str, dict[str, Any] | None], ...] = (
    ("frequent-buyer", "Frequent buyer", Tag.Kind.RULE, {"aggregate": "orders", "op": "gte", "value": 3}),
    ("vip", "VIP (set by staff)", Tag.Kind.MANUAL, None),
)
DEMO_SEGMENTS = (
    (
        "gold-in-stores-not-mini-program",
        "Gold and Black members who bought in a store in the last 30 days but never in the mini-program",
        {"all": [
            {"tier": {"in": ["gold", "black"]}},
            {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 30},
            {"did_not": {"event": "Order Completed", "where": {"channel": "mini_program"}}},
        ]},
    ),
    ("big-spenders", "Spent 5,000 or more", {"aggregate": "spend", "op": "gte", "value": 5000}),
    (
        "shoe-browsers-not-buyers",
        "Looked at sneakers in the last 30 days, bought nothing since",
        {"all": [
            {"event": "Product Viewed", "where": {"properties.category": "Shoes/Sneakers"}, "in_last_days": 30},
            {"did_not": {"event": "Order Completed", "in_last_days": 30}},
        ]},
    ),
    (
        "lapsed-store-shoppers",
        "Bought in a store in the 90 days before the last 60, not since",
        {"stopped": {"event": "Order Completed", "where": {"channel": "pos"}, "in_last_days": 60, "before_days": 90}},
    ),
    (
        "frequent-without-email",
        "Frequent buyers we cannot email",
        {"all": [{"tag": "frequent-buyer"}, {"not": {"has_identifier": "email"}}]},
    ),
)  # fmt: skip


def segments_demo_setup() -> None:
    """Create the demo's tags and segments that do not exist yet (before the demo's events are
    processed: the member refresh puts each member where it belongs as it goes)."""
    for key, name, kind, rule in DEMO_TAGS:
        Tag.objects.get_or_create(key=key, defaults={"name": name, "kind": kind, "rule": rule})
    for key, name, rule in DEMO_SEGMENTS:
        Segment.objects.get_or_create(
            key=key, defaults={"name": name, "kind": Segment.Kind.DYNAMIC, "rule": rule}
        )
