"""The Segment e-commerce spec (v2): event names, and the checks we make at the door.

We check what later stages rely on (order ids, amounts, currency) so that a malformed order
is refused with a clear reason at ingestion instead of silently earning no points later.
Other properties are the sender's business and are stored as sent.

Every amount and quantity is bounded, in size and in decimal places, so that what the member
figures and the ledger compute from them (sums, price times quantity, points) always fits
their columns: an order of ``1e308`` or ``99999999999999`` once failed each member refresh
that read it, for ever.
"""

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from cdp.errors import FieldError

ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"

#: Events whose totals feed spend, points and refunds: order id and amount required; a missing
#: currency is the source's default (``order_currency_defaulted``).
ORDER_EVENTS = frozenset({ORDER_COMPLETED, ORDER_REFUNDED})

COMMERCE_EVENTS = frozenset(
    {
        "Products Searched",
        "Product List Viewed",
        "Product List Filtered",
        "Promotion Viewed",
        "Promotion Clicked",
        "Product Clicked",
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Checkout Step Viewed",
        "Checkout Step Completed",
        "Payment Info Entered",
        "Order Updated",
        ORDER_COMPLETED,
        ORDER_REFUNDED,
        "Order Cancelled",
        "Coupon Entered",
        "Coupon Applied",
        "Coupon Denied",
        "Coupon Removed",
        "Coupon Redeemed",
        "Product Added to Wishlist",
        "Product Removed from Wishlist",
        "Wishlist Product Added to Cart",
        "Product Shared",
        "Cart Shared",
        "Product Reviewed",
    }
)

#: The largest amount (total, revenue, price, tax, ...) accepted, in absolute value: 10^8 in the
#: order's currency. The figures' and ledger's columns are sized for sums of such amounts.
MAX_AMOUNT = Decimal("100000000")
#: The largest quantity of one product in an order, in absolute value.
MAX_QUANTITY = 1_000_000
#: The most decimal places an amount or quantity is written with. Beyond money's own cents, a
#: float's shortest form (``0.30000000000000004``) fits; ``"1e-999999"`` is no amount, and
#: PostgreSQL's binary numeric cannot even carry it (at most 16,383 places).
MAX_DECIMAL_PLACES = 20
#: The longest ``order_id`` (once trimmed) accepted: what an order's row stores. A longer one
#: was once accepted here and then failed, for ever, every refresh of its member.
MAX_ORDER_ID_LENGTH = 255

AMOUNT_PROPERTIES = ("total", "revenue", "subtotal", "tax", "shipping", "discount", "value", "price")
PRODUCT_AMOUNT_PROPERTIES = ("price", "quantity")
_LIMITS = {"quantity": Decimal(MAX_QUANTITY)}
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


def as_amount(value: Any) -> Decimal | None:
    """The value as an exact Decimal, or None when it is not a finite number.

    Numbers and numeric strings are both accepted (some POS systems send "12.50"); booleans
    are not numbers here, whatever Python thinks.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            return None
        return amount if amount.is_finite() else None
    return None


def _is_order_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and bool(value.strip())) or isinstance(value, int)


#: Bounds within which a JSON number needs no exact check (``_number_error``): an int within
#: every limit, a float whose shortest form is within every limit with at most 20 decimal
#: places (17 significant digits, and at most 3 zeros after the point before them).
_PLAIN_INT = min(MAX_QUANTITY, int(MAX_AMOUNT))
_PLAIN_FLOAT_LOW, _PLAIN_FLOAT_HIGH = 1e-3, float(_PLAIN_INT)


def _number_error(field: str, key: str, value: Any) -> FieldError | None:
    """Why ``value`` (of property ``key``) is not a number within its bound; None when it is."""
    if value is None:
        return None
    # The usual price, quantity and total, answered without the Decimal (a third of checking a
    # commerce event): each branch is a case the exact check below accepts too.
    kind = type(value)
    if kind is int and -_PLAIN_INT <= value <= _PLAIN_INT:
        return None
    if kind is float and (value == 0.0 or _PLAIN_FLOAT_LOW <= abs(value) < _PLAIN_FLOAT_HIGH):
        return None
    return _number_error_exact(field, key, value)


def _number_error_exact(field: str, key: str, value: Any) -> FieldError | None:
    number = as_amount(value)
    if number is None:
        return FieldError(field, "must be a number")
    limit = _LIMITS.get(key, MAX_AMOUNT)
    if number.copy_abs() > limit:  # exact: abs() rounds, and overflows past the context's exponent
        return FieldError(field, f"must be between -{limit:,} and {limit:,}")
    exponent = number.as_tuple().exponent  # a letter for NaN and infinities, refused above
    places = -exponent if isinstance(exponent, int) else 0
    if places > MAX_DECIMAL_PLACES:
        return FieldError(field, f"has {places} decimal places; at most {MAX_DECIMAL_PLACES} are accepted")
    return None


def commerce_errors(
    event: str, properties: Mapping[str, Any], *, currency_required: bool = False
) -> list[FieldError]:
    """What is wrong with a commerce event's properties; empty for other events.

    ``currency_required``: the sender has no default currency, so an order must name one."""
    if event not in COMMERCE_EVENTS:
        return []
    errors = [
        error
        for key in AMOUNT_PROPERTIES
        if (error := _number_error(f"properties.{key}", key, properties.get(key))) is not None
    ]
    products = properties.get("products")
    if products is not None:
        if not isinstance(products, list):
            errors.append(FieldError("properties.products", "must be a list of products"))
        else:
            for index, product in enumerate(products):
                field = f"properties.products[{index}]"
                if not isinstance(product, dict):
                    errors.append(FieldError(field, "must be an object"))
                    continue
                errors.extend(
                    error
                    for key in PRODUCT_AMOUNT_PROPERTIES
                    if (error := _number_error(f"{field}.{key}", key, product.get(key))) is not None
                )
    if event in ORDER_EVENTS:
        errors.extend(_order_errors(event, properties, currency_required=currency_required))
    return errors


def _order_errors(event: str, properties: Mapping[str, Any], *, currency_required: bool) -> list[FieldError]:
    errors = []
    order_id = properties.get("order_id")
    if not _is_order_id(order_id):
        errors.append(FieldError("properties.order_id", f"{event} requires order_id (a non-empty string)"))
    elif len(str(order_id).strip()) > MAX_ORDER_ID_LENGTH:
        errors.append(FieldError("properties.order_id", f"at most {MAX_ORDER_ID_LENGTH} characters"))
    amounts = [properties.get(key) for key in ("total", "revenue") if properties.get(key) is not None]
    if not amounts:
        errors.append(FieldError("properties.total", f"{event} requires total or revenue"))
    else:
        for key in ("total", "revenue"):
            amount = as_amount(properties.get(key))
            if amount is not None and amount < 0:
                errors.append(FieldError(f"properties.{key}", "must not be negative"))
    currency = properties.get("currency")
    # Absent (or null) is allowed: the spec makes it optional, and ``order_currency_defaulted``
    # gives the source's default. One that is sent must be a code.
    if currency is None and currency_required:
        errors.append(FieldError("properties.currency", f"{event} requires currency (ISO 4217, e.g. CNY)"))
    elif currency is not None and not (isinstance(currency, str) and _CURRENCY.match(currency)):
        errors.append(FieldError("properties.currency", "must be a three-letter ISO 4217 code, e.g. CNY"))
    return errors


#: Where an order event that named no currency records that it was given its source's
#: default: ``context["cdp"]["currency_defaulted"]`` (``context.cdp`` is the platform's).
PLATFORM_CONTEXT = "cdp"
CURRENCY_DEFAULTED = "currency_defaulted"


def order_currency_defaulted(
    event: str, properties: Mapping[str, Any], context: Mapping[str, Any], default_currency: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The properties and context of an order event without a currency, given its source's
    ``default_currency`` and marked as defaulted; None when nothing is to default.

    Stored so, the event means one thing for good: every later computation (spend, points,
    refunds) reads the same currency, even after the source's default is changed."""
    if event not in ORDER_EVENTS or properties.get("currency") is not None:
        return None
    platform = context.get(PLATFORM_CONTEXT)
    marked = {**(platform if isinstance(platform, Mapping) else {}), CURRENCY_DEFAULTED: True}
    return {**properties, "currency": default_currency}, {**context, PLATFORM_CONTEXT: marked}


def currency_was_defaulted(context: Mapping[str, Any]) -> bool:
    """Whether an order event's currency is its source's default rather than one it sent."""
    platform = context.get(PLATFORM_CONTEXT)
    return isinstance(platform, Mapping) and platform.get(CURRENCY_DEFAULTED) is True
