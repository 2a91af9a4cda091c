"""A member as staff see it, shared by the API and the console: plain data with phone and
email masked for roles that may not see them (``cdp.privacy.Masking``)."""

from cdp.privacy import CONTACT_TYPES, Masking
from events.models import Channel, Event
from members.selectors import MemberProfile, MemberSummary


def summary_json(summaries: list[MemberSummary], masking: Masking) -> list[dict]:
    return [
        {
            "id": s.id,
            "name": s.traits.get("name"),
            "phone": masking.value("phone", s.traits.get("phone")),
            "email": masking.value("email", s.traits.get("email")),
            "orders": s.orders,
            "spend": s.spend,
            "currency": s.currency,
            "last_event_at": s.last_event_at,
        }
        for s in summaries
    ]


def profile_json(profile: MemberProfile, masking: Masking) -> dict:
    identifiers: dict[str, list[dict]] = {}
    for held in profile.identifiers:
        identifiers.setdefault(held.type, []).append(
            {
                "value": masking.value(held.type, held.value),
                "last_seen_at": held.last_seen_at,
                "merges": held.merges,
            }
        )
    aggregate, points = profile.aggregate, profile.points
    return {
        "loyalty": None
        if points is None
        else {
            "balance": points.balance,
            "tier": profile.tier.key if profile.tier else None,
            "tier_name": profile.tier.name if profile.tier else None,
            "tier_since": points.tier_since,
            "next_expiry_at": points.next_expiry_at,
            "next_expiry_points": points.next_expiry_points,
        },
        "id": profile.member.pk,
        "resolved_from": profile.resolved_from,
        "first_event_at": profile.member.first_event_at,
        "last_event_at": profile.member.last_event_at,
        "identifiers": identifiers,
        "traits": {
            t.key: {
                "value": masking.value(t.key, t.value) if t.key in CONTACT_TYPES else t.value,
                "observed_at": t.observed_at,
                "channel": t.channel,
                "source": t.source,
            }
            for t in profile.traits
        },
        "aggregates": None
        if aggregate is None
        else {
            "currency": aggregate.currency,
            "orders": aggregate.orders,
            "spend": aggregate.spend,
            "refunded": aggregate.refunded,
            "average_order_value": aggregate.average_order_value,
            "first_purchase_at": aggregate.first_purchase_at,
            "last_purchase_at": aggregate.last_purchase_at,
            "by_channel": {
                channel: {
                    "orders": getattr(aggregate, f"orders_{channel}"),
                    "spend": getattr(aggregate, f"spend_{channel}"),
                    "events": getattr(aggregate, f"events_{channel}"),
                }
                for channel in Channel.values
            },
            "stores_visited": aggregate.stores_visited,
            "orders_in_other_currencies": aggregate.orders_in_other_currencies,
            "events": aggregate.events,
            "last_event_at": aggregate.last_event_at,
            "computed_at": aggregate.computed_at,
        },
        "recent_orders": [
            {
                "order_id": o.order_id,
                "placed_at": o.placed_at,
                "channel": o.channel,
                "store_code": o.store_code,
                "currency": o.currency,
                "total": o.total,
                "refunded": o.refunded,
            }
            for o in profile.recent_orders
        ],
        "history": [
            {
                **entry.__dict__,
                "identifiers": [masking.identifier(text) for text in entry.identifiers],
            }
            for entry in profile.history
        ],
        "tags": [tag.__dict__ for tag in profile.tags],
        "segments": [segment.__dict__ for segment in profile.segments],
        "groups": [
            {
                "group_id": g.group_id,
                "name": g.traits.get("name"),
                # A group's contact details are masked as a person's would be.
                "traits": masking.mapping(g.traits),
                "first_call_at": g.first_call_at,
                "last_call_at": g.last_call_at,
            }
            for g in profile.groups
        ],
    }


def timeline_json(events: list[Event], masking: Masking, source_names: dict[int, str]) -> list[dict]:
    return [
        {
            "id": e.id,
            "timestamp": e.timestamp,
            "type": e.type,
            "event": e.event,
            "name": e.name,
            "channel": e.channel,
            "store_code": e.store_code,
            "source": source_names.get(e.source_id, ""),
            "traits": masking.mapping(e.traits),
            "properties": masking.mapping(e.properties),
        }
        for e in events
    ]
