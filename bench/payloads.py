"""Realistic Segment messages as a Chinese omnichannel retailer's app and stores send them.

The mix is what the ingestion benchmark posts: identify calls carrying ``traits.phone`` /
``traits.email`` and ``context.externalIds`` (WeChat ids, member card), and e-commerce track
calls (``Product Viewed``, ``Product Added``, ``Order Completed`` with ``order_id``,
``total``, ``currency`` CNY and a ``products`` list), 400-700 bytes of JSON each.

Bodies are prebuilt as *templates*: JSON split at every ``messageId``, so a client makes a
fresh request by joining the fragments with new random ids (one ``os.urandom`` and one
``bytes.join`` per request) and spends almost no CPU next to the server it measures.
"""

import os
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

#: Where a message id goes in a template; filled with "mid-" and 32 random hex digits (as much
#: entropy as a UUID, which is what the SDKs send: inserts land all over the unique index).
MESSAGE_ID_SLOT = "@@MESSAGE-ID-SLOT@@"
MESSAGE_ID_LENGTH = 36

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜秀敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂"
_CITIES = ("上海", "北京", "广州", "深圳", "杭州", "成都", "南京", "武汉", "苏州", "西安")
_CATEGORIES = ("护肤", "彩妆", "香水", "个护", "母婴", "食品", "服饰", "鞋包")
_BRANDS = ("Lumière", "青木", "SkinLab", "花漾", "Nordic Home", "Kinder Joy", "山野", "Urban Run")
_PRODUCT_WORDS = (
    "精华液",
    "面霜",
    "口红",
    "洗发水",
    "保温杯",
    "运动鞋",
    "连衣裙",
    "奶粉",
    "香氛蜡烛",
    "防晒霜",
)
_DEVICES = (
    ("ios", "Apple", "iPhone15,2", "iOS", "17.5.1"),
    ("ios", "Apple", "iPhone14,5", "iOS", "16.7.8"),
    ("android", "HUAWEI", "ALN-AL00", "HarmonyOS", "4.2.0"),
    ("android", "Xiaomi", "23127PN0CC", "Android", "14"),
    ("android", "OPPO", "PHZ110", "Android", "14"),
)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _Customer:
    user_id: str
    anonymous_id: str
    phone: str
    email: str
    name: str
    member_card: str
    unionid: str
    openid: str
    device: tuple[str, str, str, str, str]
    device_id: str
    city: str


def _customer(rng: random.Random) -> _Customer:
    number = rng.randrange(10_000_000, 99_999_999)
    return _Customer(
        user_id=f"m{number}",
        anonymous_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        phone=f"+86 1{rng.choice('3578')}{rng.randrange(10**8, 10**9)}",
        email=f"user{number}@{rng.choice(('qq.com', '163.com', 'outlook.com', 'gmail.com'))}",
        name=rng.choice(_SURNAMES) + rng.choice(_GIVEN) + rng.choice(("", *_GIVEN)),
        member_card=f"VIP{rng.randrange(10**9, 10**10)}",
        unionid="o" + _hex(rng, 27),
        openid="oX" + _hex(rng, 26),
        device=rng.choice(_DEVICES),
        device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper(),
        city=rng.choice(_CITIES),
    )


def _context(customer: _Customer, rng: random.Random) -> dict[str, Any]:
    kind, _maker, model, os_name, os_version = customer.device
    return {
        "app": {"name": "会员商城", "version": "5.12.0"},
        "device": {"id": customer.device_id, "model": model, "type": kind},
        "os": {"name": os_name, "version": os_version},
        "library": {"name": f"analytics-{kind}", "version": "4.1.8"},
        "locale": "zh-CN",
        "ip": f"112.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    }


def _product(rng: random.Random) -> dict[str, Any]:
    number = rng.randrange(100_000, 999_999)
    return {
        "product_id": f"P{number}",
        "name": rng.choice(_BRANDS) + " " + rng.choice(_PRODUCT_WORDS),
        "price": round(rng.uniform(19, 899), 2),
    }


def _identify(customer: _Customer, rng: random.Random) -> dict[str, Any]:
    context = _context(customer, rng)
    del context["library"], context["ip"], context["os"]
    context["externalIds"] = [
        {"id": customer.unionid, "type": "wechat_unionid", "collection": "users"},
        {"id": customer.member_card, "type": "member_card", "collection": "users"},
    ]
    return {
        "type": "identify",
        "userId": customer.user_id,
        "anonymousId": customer.anonymous_id,
        "traits": {
            "phone": customer.phone,
            "email": customer.email,
            "name": customer.name,
            "birthday": f"{rng.randrange(1965, 2005)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "city": customer.city,
        },
        "context": context,
    }


def _product_event(customer: _Customer, rng: random.Random, event: str) -> dict[str, Any]:
    product = _product(rng)
    properties = {
        **product,
        "sku": f"SKU-{product['product_id'][1:]}-{rng.randrange(10, 99)}",
        "category": rng.choice(_CATEGORIES),
        "brand": product["name"].split(" ")[0],
        "currency": "CNY",
    }
    if event == "Product Added":
        properties["quantity"] = rng.randrange(1, 4)
        properties["cart_id"] = "c" + _hex(rng, 12)
    context = _context(customer, rng)
    if rng.random() < 0.5:  # half of them come from the mini-program: no app or OS block
        del context["app"], context["os"]
        context["library"] = {"name": "analytics-miniprogram", "version": "2.3.0"}
    message = {
        "type": "track",
        "event": event,
        "anonymousId": customer.anonymous_id,
        "properties": properties,
        "context": context,
    }
    if rng.random() < 0.7:
        message["userId"] = customer.user_id
    return message


def _order_completed(customer: _Customer, rng: random.Random) -> dict[str, Any]:
    products = [_product(rng) for _ in range(rng.choice((1, 1, 1, 2, 2, 3)))]
    for product in products:
        product["quantity"] = rng.randrange(1, 3)
    subtotal = round(sum(p["price"] * p["quantity"] for p in products), 2)
    discount = round(subtotal * rng.choice((0, 0, 0.05, 0.1)), 2)
    context = _context(customer, rng)
    context["externalIds"] = [{"id": customer.member_card, "type": "member_card", "collection": "users"}]
    del context["app"], context["os"], context["ip"]
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": customer.user_id,
        "properties": {
            "order_id": f"SO{rng.randrange(10**11, 10**12)}",
            "total": round(subtotal - discount, 2),
            "discount": discount,
            "currency": "CNY",
            "products": products,
        },
        "context": context,
    }


class Customers:
    """A population of ``size`` customers who come back: each draw is one of them, the same
    person (phone, ids, device) every time they are drawn, rebuilt from their number rather
    than kept (a million cost no memory)."""

    def __init__(self, size: int, *, seed: int) -> None:
        self.size, self.seed = size, seed

    def draw(self, rng: random.Random) -> _Customer:
        return _customer(random.Random(self.seed * 1_000_000_007 + rng.randrange(self.size)))


def message(rng: random.Random, *, at: datetime, customers: Customers | None = None) -> dict[str, Any]:
    """One message of the mix (20% identify, 45% Product Viewed, 15% Product Added,
    20% Order Completed) without its messageId, stamped a few seconds before ``at``: by a
    customer of ``customers``, or by a new one each time."""
    customer = customers.draw(rng) if customers else _customer(rng)
    draw = rng.random()
    if draw < 0.20:
        body = _identify(customer, rng)
    elif draw < 0.65:
        body = _product_event(customer, rng, "Product Viewed")
    elif draw < 0.80:
        body = _product_event(customer, rng, "Product Added")
    else:
        body = _order_completed(customer, rng)
    body["timestamp"] = _iso(at - timedelta(milliseconds=rng.randrange(50, 20_000)))
    return body


def _with_slot(body: dict[str, Any]) -> dict[str, Any]:
    return {"messageId": MESSAGE_ID_SLOT, **body}


@dataclass(frozen=True)
class Template:
    """A request body split at its message ids; ``render`` fills them with fresh random ones."""

    fragments: tuple[bytes, ...]
    events: int

    @property
    def size(self) -> int:
        return sum(map(len, self.fragments)) + self.events * MESSAGE_ID_LENGTH

    def render(self) -> bytes:
        return self.render_with_ids()[0]

    def render_with_ids(self) -> tuple[bytes, list[bytes]]:
        """The body and its message ids, in batch order (to check later that each was stored)."""
        digits = os.urandom(16 * self.events).hex().encode()
        ids = [b"mid-" + digits[i : i + 32] for i in range(0, 32 * self.events, 32)]
        parts: list[bytes] = [b""] * (2 * self.events + 1)
        parts[0::2] = self.fragments
        parts[1::2] = ids
        return b"".join(parts), ids


def _template(document: dict[str, Any], events: int) -> Template:
    fragments = tuple(orjson.dumps(document).split(MESSAGE_ID_SLOT.encode()))
    assert len(fragments) == events + 1
    return Template(fragments=fragments, events=events)


def batch_template(
    rng: random.Random, size: int, *, at: datetime | None = None, customers: Customers | None = None
) -> Template:
    """A ``POST /v1/batch`` body of ``size`` messages, with a batch-level ``sentAt``."""
    at = at or datetime.now(UTC)
    batch = [_with_slot(message(rng, at=at, customers=customers)) for _ in range(size)]
    return _template({"batch": batch, "sentAt": _iso(at)}, size)


def track_template(rng: random.Random, *, at: datetime | None = None) -> Template:
    """A ``POST /v1/track`` body: one track message of the mix, with its own ``sentAt``."""
    at = at or datetime.now(UTC)
    while (body := message(rng, at=at))["type"] != "track":
        pass
    body.pop("type")
    return _template({**_with_slot(body), "sentAt": _iso(at)}, 1)


def sample(rng: random.Random, count: int, *, at: datetime | None = None) -> list[dict[str, Any]]:
    """``count`` complete messages (random message ids filled in), e.g. to build COPY rows."""
    at = at or datetime.now(UTC)
    return [{"messageId": "mid-" + _hex(rng, 32), **message(rng, at=at)} for _ in range(count)]
