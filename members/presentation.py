"""A member as staff see it, shared by the API and the console: plain data with every personal
value (a phone or email at any depth, a name, an address: ``cdp.privacy``) masked for roles
that may not see them, in traits, identifiers, history, groups and timeline rows alike."""

from decimal import Decimal, InvalidOperation

from cdp.privacy import CONTACT_TYPES, Masking
from events.models import Channel, Event
from identity.identifiers import IdentifierType
from members.selectors import GroupHeld, MemberProfile, MemberSummary, trait_shown

#: Identifier types as staff read them; a custom type (``context.externalIds``) reads as its
#: name in words ("loyalty_no" → "Loyalty no").
IDENTIFIER_LABELS = {
    IdentifierType.USER_ID: "User id",
    IdentifierType.PHONE: "Phone",
    IdentifierType.EMAIL: "Email",
    IdentifierType.MEMBER_CARD: "Member card",
    IdentifierType.WECHAT_UNIONID: "WeChat unionid",
    IdentifierType.WECHAT_OPENID: "WeChat openid",
    IdentifierType.DEVICE_ID: "Device id",
    IdentifierType.ANONYMOUS_ID: "Anonymous id",
    "member_id": "Member id",
    "order_id": "Order number",
}


def identifier_label(type_: str) -> str:
    """``wechat_unionid`` → ``WeChat unionid``."""
    return IDENTIFIER_LABELS.get(type_) or type_.replace("_", " ").strip().capitalize()


def summary_json(summaries: list[MemberSummary], masking: Masking) -> list[dict]:
    return [
        {
            "id": s.id,
            "name": masking.document(s.name, at=("traits", "name")),
            "phone": masking.value("phone", s.phone),
            "email": masking.value("email", s.email),
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
                "value": masking.document(t.value, at=("traits", t.key)),
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
        "groups": [_group_json(g, masking) for g in profile.groups],
    }


def _group_json(group: GroupHeld, masking: Masking) -> dict:
    # A group's personal data (a contact's phone, an email) is masked as a person's is.
    traits = masking.mapping(group.traits, at=("groups", "traits"))
    return {
        "group_id": group.group_id,
        "name": traits.get("name") if isinstance(traits, dict) else None,
        "traits": traits,
        "first_call_at": group.first_call_at,
        "last_call_at": group.last_call_at,
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
            "traits": masking.mapping(_contacts_normalized(e.traits), at=("traits",)),
            "properties": masking.mapping(e.properties, at=("properties",)),
        }
        for e in events
    ]


def _contacts_normalized(traits: object) -> object:
    """An event's traits with phone and email in their normalized form, and dropped when they
    are no identifier (a till's placeholder is never shown as a phone)."""
    if not isinstance(traits, dict) or not CONTACT_TYPES & traits.keys():
        return traits
    shown = {key: trait_shown(key, value) if key in CONTACT_TYPES else value for key, value in traits.items()}
    return {key: value for key, value in shown.items() if key not in CONTACT_TYPES or value is not None}


def timeline_details(entry: dict) -> list[str]:
    """What an agent reads about a timeline event, as short phrases ("order S-1: 300.00 CNY",
    "coupon SPRING20 (Spring 20 off): -20.00 CNY", "name=Zhang Wei"): only values the event
    carries, so a missing amount or trait is left out rather than shown as ``None``. ``entry``
    is a ``timeline_json`` entry (traits and properties already masked)."""
    properties = entry["properties"] if isinstance(entry.get("properties"), dict) else {}
    traits = entry["traits"] if isinstance(entry.get("traits"), dict) else {}
    currency = _text(properties.get("currency"))
    details = []
    order_id = _text(properties.get("order_id"))
    if order_id:
        amount = _money(_first(properties, "total", "revenue", "value"), currency)
        order = f"{'refund of ' if entry.get('event') == 'Order Refunded' else ''}order {order_id}"
        details.append(f"{order}: {amount}" if amount else order)
    coupon = _text(properties.get("coupon_id") or properties.get("coupon"))
    if coupon:
        name = _text(properties.get("coupon_name"))
        discount = _money(properties.get("discount"), currency)
        details.append(
            f"coupon {coupon}" + (f" ({name})" if name else "") + (f": -{discount}" if discount else "")
        )
    product = _text(properties.get("name")) or _text(properties.get("sku"))
    if product and not order_id:
        price = _money(properties.get("price"), currency)
        details.append(f"{product}: {price}" if price else product)
    products = properties.get("products")
    if isinstance(products, list) and products:
        items = sum(_quantity(p) for p in products)
        details.append(f"{items} item{'' if items == 1 else 's'}")
    category = _text(properties.get("category"))
    if category and not product:
        details.append(category)
    details += [f"{key}={_text(value)}" for key, value in traits.items() if _text(value)]
    return details


def _first(mapping: dict, *keys: str) -> object:
    return next((mapping[key] for key in keys if mapping.get(key) not in (None, "")), None)


def _text(value: object) -> str:
    """A scalar as text; nothing (empty) for null, empty, lists and objects."""
    if value is None or isinstance(value, list | dict):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip()


def _money(amount: object, currency: str) -> str:
    """``300`` → ``300.00 CNY``; empty when there is no amount or it is not a number."""
    if amount is None or isinstance(amount, bool) or not isinstance(amount, int | float | str):
        return ""
    try:
        value = Decimal(str(amount).strip()).quantize(Decimal("0.01"))
    except InvalidOperation:  # not a number, infinite, or too many digits to show cents
        return ""
    return f"{value} {currency}".rstrip() if value.is_finite() else ""


def _quantity(product: object) -> int:
    quantity = product.get("quantity", 1) if isinstance(product, dict) else 1
    return quantity if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0 else 1
