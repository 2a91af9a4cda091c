"""One row of an import file, in our field names (``mapping.ColumnMapping.apply``), turned into
what the live path would have stored for it, or the problems that keep it out. Pure (no Django).

- ``members``: an ``identify`` (identifiers and traits, at ``registered_at``) and, when the row
  states consent, a ``Consent Updated`` event at ``consent_at`` from ``consent_source``;
- ``orders``: an ``Order Completed``; ``refunds``: an ``Order Refunded``, each from the source of
  its channel and store;
- ``balances``, ``tiers``, ``coupons``: a reference to the member (found by identifier once the
  members are resolved) and what loyalty records for it.

Every message has a deterministic ``messageId`` (``import:<kind>:<external id>``) under a source
of the import's own (``import:<name>:<channel>[:<store>]``): the event store's unique
(source, messageId) makes a second run, or a resumed one, store nothing twice.

The member's key in the legacy system (``member_id``) becomes the anonymous id
``<import name>:<member_id>``: every file of one import names its members by it (an order's
``member_id`` links the order to the member), it joins members under no limit, and it is the
lowest-priority identifier, so it never keeps a real one (user id, phone, card) out.
"""

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from identity.identifiers import (
    BlockedIdentifier,
    IdentifierType,
    InvalidIdentifier,
    NormalizationPolicy,
    custom_type,
    normalize,
)

KINDS = ("members", "orders", "refunds", "balances", "tiers", "coupons")
#: Kinds written as events (the pipeline resolves them); the others need their members resolved.
EVENT_KINDS = frozenset({"members", "orders", "refunds"})
CHANNELS = ("pos", "app", "mini_program", "web")
MEMBER_KEY = "member_id"
#: Identifier fields, in the order a member is looked up by them (the strongest first).
IDENTIFIER_FIELDS = (
    MEMBER_KEY,
    IdentifierType.USER_ID.value,
    IdentifierType.WECHAT_UNIONID.value,
    IdentifierType.MEMBER_CARD.value,
    IdentifierType.PHONE.value,
    IdentifierType.EMAIL.value,
    IdentifierType.WECHAT_OPENID.value,
    IdentifierType.DEVICE_ID.value,
)
#: Identifiers stated as the person's traits (identity reads them from traits / context.traits).
_TRAIT_IDENTIFIERS = ("phone", "email", "member_card", "wechat_unionid", "wechat_openid")
#: ``id.<type>``: an identifier of a type of the brand's own (``context.externalIds``).
_CUSTOM_PREFIX = "id."
_TRAIT_PREFIX = "trait."
_CONSENT_PREFIX = "consent."
_MEMBER_FIELDS = frozenset(
    {
        *IDENTIFIER_FIELDS,
        "registered_at",
        "consent_at",
        "consent_source",
        "consent_version",
        "channel",
        "store",
    }
)
MAX_MESSAGE_ID = 255
_DATE_ONLY = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")
COUPON_STATES = ("issued", "redeemed", "expired")


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event, as a sender would post it, from the import's source of this channel and store."""

    channel: str
    store: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MemberRef:
    """How a loyalty row names its member: (type, normalized value) pairs, strongest first."""

    identifiers: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return ", ".join(f"{t}:{v}" for t, v in self.identifiers)


@dataclass(frozen=True, slots=True)
class Opening:
    member: MemberRef
    points: int
    at: datetime
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class TierReached:
    member: MemberRef
    tier: str
    at: datetime
    key: str


@dataclass(frozen=True, slots=True)
class CouponHeld:
    code: str
    campaign: str
    member: MemberRef | None
    state: str
    benefit: str
    value: Decimal | None
    currency: str
    minimum_spend: Decimal
    valid_from: datetime | None
    valid_until: datetime | None
    redeemed_at: datetime | None
    order_id: str
    channel: str
    order_total: Decimal


@dataclass(slots=True)
class Plan:
    """What one row becomes; ``problems`` non-empty: the row is skipped."""

    external_id: str = ""
    outgoing: list[Outgoing] = field(default_factory=list)
    opening: Opening | None = None
    tier: TierReached | None = None
    coupon: CouponHeld | None = None
    problems: list[Problem] = field(default_factory=list)
    #: Values that will not be used (an invalid phone): the row is imported, as live events are.
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RowContext:
    name: str  # the import's name: its sources and keys
    zone: ZoneInfo
    now: datetime
    policy: NormalizationPolicy


def message_id(kind: str, external_id: str) -> str:
    """``import:<kind>:<id>``; an id too long for the column is replaced by its SHA-256."""
    text = f"import:{kind}:{external_id}"
    if len(text) <= MAX_MESSAGE_ID:
        return text
    return f"import:{kind}:sha256:{hashlib.sha256(external_id.encode()).hexdigest()}"


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def parse_time(value: Any, zone: ZoneInfo) -> datetime:
    """ISO 8601 or ``YYYY-MM-DD HH:MM[:SS]`` (also with ``/``), or a date (midnight); a time
    without an offset is in ``zone``. Raises ``ValueError``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    text = str(value).strip().replace("/", "-")
    if not text:
        raise ValueError("is empty")
    if _DATE_ONLY.match(text):
        year, month, day = (int(part) for part in text.split("-"))
        moment = datetime.combine(date(year, month, day), time())
    else:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _time(
    row: Mapping[str, Any], key: str, ctx: RowContext, plan: Plan, *, required: bool
) -> datetime | None:
    value = row.get(key)
    if value in (None, ""):
        if required:
            plan.problems.append(Problem(key, "is required"))
        return None
    try:
        return parse_time(value, ctx.zone)
    except (ValueError, OverflowError, OSError):
        plan.problems.append(
            Problem(key, f"{str(value)[:40]!r} is not a time (ISO 8601, e.g. 2024-05-01 12:30:00)")
        )
        return None


def _json_number(text: str) -> int | float | str:
    """The amount as a JSON number, as a live sender would write it, when a float keeps it
    exactly; else the string (the contract reads numeric strings exactly too)."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return text
    if not amount.is_finite():
        return text
    if amount == amount.to_integral_value() and "." not in text and "e" not in text.lower():
        return int(amount)
    as_float = float(amount)
    return as_float if Decimal(repr(as_float)) == amount else text


def _amount(
    row: Mapping[str, Any], key: str, plan: Plan, *, required: bool = False
) -> int | float | str | None:
    value = row.get(key)
    if value in (None, ""):
        if required:
            plan.problems.append(Problem(key, "is required"))
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value).strip().replace(",", "")
    try:
        Decimal(text)
    except InvalidOperation:
        plan.problems.append(Problem(key, f"{text[:40]!r} is not a number"))
        return None
    return _json_number(text)


def _decimal(
    row: Mapping[str, Any], key: str, plan: Plan, *, default: Decimal | None = None
) -> Decimal | None:
    value = row.get(key)
    if value in (None, ""):
        return default
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        plan.problems.append(Problem(key, f"{str(value)[:40]!r} is not a number"))
        return None
    if not amount.is_finite():
        plan.problems.append(Problem(key, "is not a finite number"))
        return None
    return amount


def _legacy_key(ctx: RowContext, value: str) -> str:
    return f"{ctx.name}:{value}"


def _person(
    row: Mapping[str, Any], ctx: RowContext, plan: Plan, *, in_traits: bool, check: bool = True
) -> dict[str, Any]:
    """The identifying part of a message: userId / anonymousId, the identifier traits (in
    ``traits`` for an identify, ``context.traits`` otherwise), the device, custom ids.
    ``check``: warn of identifier values that will not identify anyone (a phone parse costs
    ~200 µs: done once per row, not once per message)."""
    message: dict[str, Any] = {}
    user_id, key = _text(row, "user_id"), _text(row, MEMBER_KEY)
    if user_id:
        message["userId"] = user_id
    if key:
        message["anonymousId"] = _legacy_key(ctx, key)
    traits = {name: _text(row, name) for name in _TRAIT_IDENTIFIERS if _text(row, name)}
    for name, value in traits.items() if check else ():
        try:
            normalize(name, value, ctx.policy)
        except (InvalidIdentifier, BlockedIdentifier) as exc:
            plan.warnings.append(Problem(name, f"{value[:40]!r} will not identify anyone: {exc}"))
    context: dict[str, Any] = {}
    if device := _text(row, "device_id"):
        context["device"] = {"id": device}
    external = []
    for name in row:
        if name.startswith(_CUSTOM_PREFIX) and (value := _text(row, name)):
            type_ = custom_type(name[len(_CUSTOM_PREFIX) :])
            if type_ is None:
                plan.problems.append(Problem(name, "is not an identifier type ([a-z][a-z0-9_]*)"))
            else:
                external.append({"type": type_, "id": value, "collection": "users"})
    if external:
        context["externalIds"] = external
    if traits:
        if in_traits:
            message["traits"] = traits
        else:
            context["traits"] = traits
    if context:
        message["context"] = context
    return message


def _needs_someone(message: dict[str, Any], plan: Plan, fallback: str) -> None:
    """A Segment message needs userId or anonymousId: a row identified only by a phone or a
    card gets an anonymous id of its own record (as a till sends one per receipt)."""
    has_identifier = (
        message.get("userId")
        or message.get("anonymousId")
        or message.get("traits")
        or message.get("context", {}).get("traits")
        or message.get("context", {}).get("device")
        or message.get("context", {}).get("externalIds")
    )
    if not has_identifier:
        plan.problems.append(Problem(MEMBER_KEY, "the row names no member: member_id, user_id, phone, ..."))
        return
    if not (message.get("userId") or message.get("anonymousId")):
        message["anonymousId"] = fallback


def _channel(row: Mapping[str, Any], plan: Plan, *, default: str = "") -> tuple[str, str]:
    channel = (_text(row, "channel") or default).lower()
    store = _text(row, "store")
    if channel not in CHANNELS:
        plan.problems.append(
            Problem(
                "channel", f"{channel!r} is not one of {', '.join(CHANNELS)}" if channel else "is required"
            )
        )
        return "", ""
    if channel == "pos" and not store:
        plan.problems.append(Problem("store", "a pos order needs its store"))
    if channel != "pos":
        store = ""
    return channel, store


def _stamp(message: dict[str, Any], at: datetime) -> None:
    message["timestamp"] = at.isoformat()


def _consent(row: Mapping[str, Any], plan: Plan) -> dict[str, Any]:
    stated: dict[str, Any] = {}
    for name in row:
        if name.startswith(_CONSENT_PREFIX) and (value := _text(row, name).lower()):
            purpose = name[len(_CONSENT_PREFIX) :]
            # Chinese CRMs write 是 / 否 (yes / no) and 同意 / 不同意 (agree / disagree).
            if value in ("true", "yes", "y", "1", "on", "granted", "是", "同意"):
                stated[purpose] = "granted"
            elif value in ("false", "no", "n", "0", "off", "denied", "否", "不同意"):
                stated[purpose] = "denied"
            elif value == "withdrawn":
                stated[purpose] = "withdrawn"
            else:
                plan.problems.append(
                    Problem(name, f"{value[:20]!r}: granted, denied, withdrawn, true or false")
                )
    return stated


def _member(row: Mapping[str, Any], ctx: RowContext, plan: Plan) -> None:
    key = _text(row, MEMBER_KEY) or _text(row, "user_id")
    if not key:
        plan.problems.append(Problem(MEMBER_KEY, "is required (or user_id)"))
        return
    plan.external_id = key
    channel, store = _channel(row, plan, default="web")
    registered = _time(row, "registered_at", ctx, plan, required=False) or ctx.now
    identify = {
        "type": "identify",
        "messageId": message_id("member", key),
        **_person(row, ctx, plan, in_traits=True),
    }
    traits = dict(identify.get("traits", {}))
    for name, value in row.items():
        if (
            name in _MEMBER_FIELDS
            or name.startswith((_CUSTOM_PREFIX, _CONSENT_PREFIX))
            or value in (None, "")
        ):
            continue
        trait = name[len(_TRAIT_PREFIX) :] if name.startswith(_TRAIT_PREFIX) else name
        traits[trait] = value
    if traits:
        identify["traits"] = traits
    _stamp(identify, registered)
    plan.outgoing.append(Outgoing(channel, store, identify))
    stated = _consent(row, plan)
    if stated:
        at = _time(row, "consent_at", ctx, plan, required=False) or registered
        properties: dict[str, Any] = {"consent": dict(stated)}
        if version := _text(row, "consent_version"):
            properties["consent"]["version"] = version
        consent = {
            "type": "track",
            "event": "Consent Updated",
            "messageId": message_id("consent", key),
            **_person(row, ctx, plan, in_traits=False, check=False),
            "properties": properties,
        }
        if where := _text(row, "consent_source"):
            # Where the person stated it (a paper form at a store, the old web shop): kept
            # with the statement as the app it was stated in.
            consent.setdefault("context", {})["app"] = {"name": where[:100]}
        _stamp(consent, at)
        plan.outgoing.append(Outgoing(channel, store, consent))


def _items(row: Mapping[str, Any], plan: Plan) -> list[Any] | None:
    value = row.get("items")
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            plan.problems.append(Problem("items", "must be a JSON list of products"))
            return None
    if not isinstance(value, list):
        plan.problems.append(Problem("items", "must be a list of products"))
        return None
    return value


def _order(row: Mapping[str, Any], ctx: RowContext, plan: Plan, *, refund: bool) -> None:
    order_id = _text(row, "order_id")
    if not order_id:
        plan.problems.append(Problem("order_id", "is required"))
    channel, store = _channel(row, plan)
    if refund:
        external = _text(row, "refund_id")
        at = _time(row, "refunded_at", ctx, plan, required=True)
        if not external and at is not None:
            external = f"{order_id}@{at.astimezone(UTC).isoformat()}"  # one refund of it at that time
    else:
        external = order_id
        at = _time(row, "completed_at", ctx, plan, required=True)
    plan.external_id = external
    properties: dict[str, Any] = {"order_id": order_id}
    for key in ("total", "revenue", "subtotal", "tax", "shipping", "discount"):
        amount = _amount(row, key, plan, required=key == "total" and row.get("revenue") in (None, ""))
        if amount is not None:
            properties[key] = amount
    if currency := _text(row, "currency").upper():
        properties["currency"] = currency
    if coupon := _text(row, "coupon"):
        properties["coupon"] = coupon
    if (items := _items(row, plan)) is not None:
        properties["products"] = items
    kind = "refund" if refund else "order"
    message = {
        "type": "track",
        "event": "Order Refunded" if refund else "Order Completed",
        "messageId": message_id(kind, external),
        **_person(row, ctx, plan, in_traits=False),
        "properties": properties,
    }
    _needs_someone(message, plan, _legacy_key(ctx, f"{kind}:{external}"))
    if at is not None:
        _stamp(message, at)
    if not plan.problems:
        plan.outgoing.append(Outgoing(channel, store, message))


def member_ref(
    row: Mapping[str, Any], ctx: RowContext, plan: Plan, *, required: bool = True
) -> MemberRef | None:
    """The member a loyalty row names, by every identifier it gives, normalized as stored."""
    found: list[tuple[str, str]] = []
    for name in IDENTIFIER_FIELDS:
        value = _text(row, name)
        if not value:
            continue
        if name == MEMBER_KEY:
            found.append((IdentifierType.ANONYMOUS_ID.value, _legacy_key(ctx, value)))
            continue
        try:
            found.append((name, normalize(name, value, ctx.policy)))
        except (InvalidIdentifier, BlockedIdentifier) as exc:
            plan.problems.append(Problem(name, f"{value[:40]!r}: {exc}"))
    if not found:
        if required:
            plan.problems.append(
                Problem(MEMBER_KEY, "the row names no member: member_id, user_id, phone, ...")
            )
        return None
    return MemberRef(tuple(found))


def _balance(row: Mapping[str, Any], ctx: RowContext, plan: Plan) -> None:
    member = member_ref(row, ctx, plan)
    external = _text(row, "balance_id") or _text(row, MEMBER_KEY) or (str(member) if member else "")
    plan.external_id = external
    points_text = _text(row, "points")
    points = 0
    try:
        points = int(Decimal(points_text.replace(",", "")))
        if Decimal(points_text.replace(",", "")) != points:
            plan.problems.append(Problem("points", "must be a whole number"))
    except (InvalidOperation, ValueError):
        plan.problems.append(
            Problem(
                "points",
                "is required, a whole number"
                if not points_text
                else f"{points_text[:20]!r} is not a whole number",
            )
        )
    if points_text and not plan.problems and points == 0:
        plan.problems.append(Problem("points", "is 0: nothing to open"))
    if points < 0 and not plan.problems:
        # A debt is not carried over by a file (docs/imports.md): a legacy debt is real (points
        # spent, then the order refunded), but the programme may forbid debt, and a file would
        # put debts into thousands of accounts unreviewed; staff carry the few real ones over
        # by hand (``points_adjust``: a reason, audited), as they settle any other debt.
        plan.problems.append(
            Problem("points", f"is negative ({points}): an opening balance carries points over, not debts")
        )
    at = _time(row, "at", ctx, plan, required=False) or ctx.now
    reason = _text(row, "reason") or f"opening balance imported from {ctx.name}"
    if member is not None and not plan.problems:
        plan.opening = Opening(member, points, at, f"opening:{ctx.name}:{external}"[:255], reason[:500])


def _tier(row: Mapping[str, Any], ctx: RowContext, plan: Plan) -> None:
    member = member_ref(row, ctx, plan)
    plan.external_id = _text(row, MEMBER_KEY) or (str(member) if member else "")
    tier = _text(row, "tier")
    if not tier:
        plan.problems.append(Problem("tier", "is required"))
    at = _time(row, "reached_at", ctx, plan, required=True)
    if member is not None and at is not None and not plan.problems:
        plan.tier = TierReached(member, tier, at, f"tier:{ctx.name}:{plan.external_id}"[:255])


def _coupon(row: Mapping[str, Any], ctx: RowContext, plan: Plan) -> None:
    code, campaign = _text(row, "code"), _text(row, "campaign")
    plan.external_id = code
    if not code:
        plan.problems.append(Problem("code", "is required"))
    if not campaign:
        plan.problems.append(Problem("campaign", "is required"))
    member = member_ref(row, ctx, plan, required=False)
    state = (_text(row, "state") or "issued").lower()
    if state not in COUPON_STATES:
        plan.problems.append(Problem("state", f"{state[:20]!r} is not one of {', '.join(COUPON_STATES)}"))
    benefit = (_text(row, "benefit") or "amount").lower()
    if benefit not in ("amount", "percent"):
        plan.problems.append(Problem("benefit", "amount or percent"))
    value = _decimal(row, "value", plan)
    redeemed_at = _time(row, "redeemed_at", ctx, plan, required=state == "redeemed")
    order_id = _text(row, "order_id")
    if state == "redeemed" and not order_id:
        plan.problems.append(Problem("order_id", "a redeemed coupon needs the order it was used on"))
    channel = (_text(row, "channel") or "pos").lower()
    if channel not in CHANNELS:
        plan.problems.append(Problem("channel", f"{channel!r} is not one of {', '.join(CHANNELS)}"))
    coupon = CouponHeld(
        code=code,
        campaign=campaign,
        member=member,
        state=state,
        benefit=benefit,
        value=value,
        currency=_text(row, "currency").upper(),
        minimum_spend=_decimal(row, "minimum_spend", plan, default=Decimal(0)) or Decimal(0),
        valid_from=_time(row, "valid_from", ctx, plan, required=False),
        valid_until=_time(row, "valid_until", ctx, plan, required=False),
        redeemed_at=redeemed_at,
        order_id=order_id,
        channel=channel,
        order_total=_decimal(row, "order_total", plan, default=Decimal(0)) or Decimal(0),
    )
    if not plan.problems:
        plan.coupon = coupon


def row_plan(kind: str, row: Mapping[str, Any], ctx: RowContext) -> Plan:
    plan = Plan()
    if kind == "members":
        _member(row, ctx, plan)
    elif kind == "orders":
        _order(row, ctx, plan, refund=False)
    elif kind == "refunds":
        _order(row, ctx, plan, refund=True)
    elif kind == "balances":
        _balance(row, ctx, plan)
    elif kind == "tiers":
        _tier(row, ctx, plan)
    elif kind == "coupons":
        _coupon(row, ctx, plan)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if plan.problems:
        plan.outgoing.clear()
    return plan
