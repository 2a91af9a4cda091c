"""A seeded stream of events from many people across a retailer's channels, for ``identity.py``.

Pure (no ORM, no I/O) and deterministic: the same ``(people, events, seed)`` gives the same
stream. Shaped by what identity resolution has to cope with, not by what is convenient:

- Each person has some of: a CN mobile phone (written four ways: ``138 0013 8000``,
  ``+86 13800138000``, ``8613800138000``, bare), an email (varied case, pasted spaces), one
  or two member cards, a WeChat unionid and mini-program openid, one or two app devices
  (each with its install's anonymousId), web cookies that rotate, and an online account
  (``userId``) for app and web logins. About 1% share a household phone with the person
  before them, so the per-type limits come into play.
- POS sessions send the member card (``userId`` and ``context.externalIds``) and, on
  identify, the phone; guests get a placeholder ``userId`` (``0``, ``null``, ``000000``) or a
  per-visit anonymousId; a few cashiers type a placeholder phone; the four flagship stores have
  a shared clienteling iPad whose device id shows up on 5% of their sales.
- App, mini-program and web sessions start anonymous (anonymousId, device id, WeChat ids)
  and are identified later by a login (``userId`` plus phone or email), so anonymous history
  has to be joined to the person afterwards.
- About 5% of sessions reach the platform late (a till or phone offline for 10 minutes to
  three days): events arrive mostly in event-time order, with those out of it.

Event counts per person are skewed (a few heavy shoppers, many one-off visitors) and add up
to exactly ``events``; every person has at least one event.
"""

import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from events.demo import JUNK_IDENTIFIERS, phone_forms

#: Event time runs over this window from a fixed start, so the stream never depends on today.
START = datetime(2026, 9, 1, tzinfo=UTC)
WINDOW = timedelta(days=60)
STORES = 20
#: The flagship stores (the first few) each have one clienteling iPad that many customers check
#: out on: its device id identifies a counter, not a person.
SHARED_DEVICES = 4
MINI_PROGRAM_APPID = "wx5d0b1e6c3a9f2b71"
LATE_SESSION_SHARE = 0.05
CURRENCY = "CNY"

_MOBILE_PREFIXES = ("135", "136", "138", "139", "150", "152", "158", "177", "186", "187", "188", "199")
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
_PINYIN = ("wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun")
_GIVEN = ("fang", "wei", "na", "min", "jing", "lei", "yang", "jie", "ting", "xue", "haoran", "zihan")
_PRODUCTS = (
    ("P1001", "Organic Cotton Tee", "Apparel/Tops", 129),
    ("P1004", "Light Down Jacket", "Apparel/Outerwear", 899),
    ("P2001", "Canvas Sneakers", "Shoes/Sneakers", 459),
    ("P3001", "Hydrating Serum 50 ml", "Beauty/Skincare", 368),
    ("P3003", "Velvet Lipstick Ruby", "Beauty/Makeup", 190),
    ("P4002", "Cashmere Scarf", "Accessories/Scarves", 499),
    ("P5001", "Fig Scented Candle", "Home/Fragrance", 228),
)
# Odd and not a multiple of 5, so ``x * _SPREAD % 10**n`` is a bijection: unique numbers.
_SPREAD = 2862933555777941757


@dataclass(frozen=True, slots=True)
class StreamSource:
    slug: str
    name: str
    kind: str
    store_code: str = ""
    wechat_appid: str = ""


def stream_sources() -> tuple[StreamSource, ...]:
    stores = tuple(
        StreamSource(f"pos-S{n:03d}", f"Bench POS S{n:03d}", "pos", f"S{n:03d}") for n in range(1, STORES + 1)
    )
    return (
        *stores,
        StreamSource("app", "Bench App", "app"),
        StreamSource("mini_program", "Bench Mini-program", "mini_program", wechat_appid=MINI_PROGRAM_APPID),
        StreamSource("web", "Bench Web Shop", "web"),
    )


@dataclass(slots=True)
class StreamEvent:
    """One message as its source would send it, as ingestion would store it."""

    source: str
    type: str
    message_id: str
    user_id: str
    anonymous_id: str
    timestamp: datetime
    received_at: datetime
    context: dict[str, Any]
    traits: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    event: str = ""
    name: str = ""
    late: bool = False
    person: int = 0


@dataclass(slots=True)
class _Device:
    device_id: str
    anonymous_id: str
    platform: str


@dataclass(slots=True)
class _Person:
    index: int
    phone: str
    email: str
    cards: tuple[str, ...]
    account: str
    unionid: str
    openid: str
    devices: tuple[_Device, ...]
    channels: tuple[str, ...]
    weights: tuple[int, ...]
    home_store: int
    logs_in_app: bool
    logs_in_web: bool
    wechat_login: bool
    # What each channel already knows about the person as the stream goes on.
    app_logged_in: set[int] = field(default_factory=set)  # device indexes
    mini_identified: bool = False
    web_cookie: str = ""
    web_cookie_logged_in: bool = False
    web_sessions: int = 0


def _unique(index: int, digits: int, salt: int) -> int:
    return (index * _SPREAD + salt) % 10**digits


class _Generator:
    def __init__(self, *, people: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.people = people
        self.store_ipads = [self._uuid().upper() for _ in range(SHARED_DEVICES)]

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _wechat_id(self) -> str:
        return "o" + f"{self.rng.getrandbits(108):027x}"[:27]

    def person(self, index: int, previous: _Person | None) -> _Person:
        rng = self.rng
        channels = tuple(
            c
            for c, share in (("pos", 0.6), ("app", 0.4), ("mini_program", 0.45), ("web", 0.3))
            if rng.random() < share
        ) or (rng.choice(("pos", "app", "mini_program", "web")),)
        phone = rng.choice(_MOBILE_PREFIXES) + f"{_unique(index, 8, 7919):08d}"
        if previous is not None and previous.phone and rng.random() < 0.01:
            phone = previous.phone  # a household sharing one number
        elif rng.random() < 0.1:
            phone = ""  # never gave one
        email = ""
        if rng.random() < 0.4:
            email = f"{rng.choice(_GIVEN)}.{rng.choice(_PINYIN)}{_unique(index, 7, 104729):07d}@{rng.choice(_EMAIL_DOMAINS)}"
        cards: tuple[str, ...] = ()
        if "pos" in channels and rng.random() < 0.9:
            cards = (f"88{_unique(index, 9, 15485863):09d}",)
            if rng.random() < 0.05:  # lost the first card, got a new one
                cards += (f"89{_unique(index, 9, 32452843):09d}",)
        devices: tuple[_Device, ...] = ()
        if "app" in channels:
            count = 2 if rng.random() < 0.15 else 1
            devices = tuple(self._device() for _ in range(count))
        return _Person(
            index=index,
            phone=phone,
            email=email,
            cards=cards,
            account=f"u{_unique(index, 9, 1299709):09d}",
            unionid=self._wechat_id(),
            openid=self._wechat_id(),
            devices=devices,
            channels=channels,
            weights=tuple({"pos": 3, "app": 4, "mini_program": 2, "web": 2}[c] for c in channels),
            home_store=rng.randrange(STORES),
            logs_in_app=rng.random() < 0.85,
            logs_in_web=rng.random() < 0.7,
            wechat_login=rng.random() < 0.3,
            web_cookie=self._uuid(),
        )

    def _device(self) -> _Device:
        rng = self.rng
        if rng.random() < 0.6:
            return _Device(self._uuid().upper(), self._uuid(), "ios")
        return _Device(f"{rng.getrandbits(64):016x}", self._uuid(), "android")

    # --- what people write ----------------------------------------------------------------------

    def _phone(self, person: _Person) -> str:
        return self.rng.choice(phone_forms(person.phone))

    def _email(self, person: _Person) -> str:
        form = self.rng.randrange(5)
        if form == 1:
            return person.email.upper()
        if form == 2:
            local, _, domain = person.email.partition("@")
            return f"{local.title()}@{domain.title()}"
        if form == 3:
            return f" {person.email} "
        return person.email

    def _product(self) -> dict[str, Any]:
        product_id, name, category, price = self.rng.choice(_PRODUCTS)
        return {
            "product_id": product_id,
            "name": name,
            "category": category,
            "price": price,
            "currency": CURRENCY,
        }

    def _order(self, prefix: str) -> dict[str, Any]:
        rng = self.rng
        lines = [
            {**self._product(), "quantity": 1 if rng.random() < 0.85 else 2}
            for _ in range(rng.choice((1, 1, 2, 3)))
        ]
        total = sum(line["price"] * line["quantity"] for line in lines)
        return {
            "order_id": f"{prefix}{rng.getrandbits(40):012d}",
            "total": total,
            "revenue": total,
            "currency": CURRENCY,
            "products": lines,
        }

    # --- sessions -------------------------------------------------------------------------------

    def session(self, person: _Person, channel: str, at: datetime, size: int) -> list[StreamEvent]:
        if channel == "pos":
            return self._pos(person, at, size)
        if channel == "app":
            return self._app(person, at, size)
        if channel == "mini_program":
            return self._mini(person, at, size)
        return self._web(person, at, size)

    def _event(
        self, source: str, at: datetime, ids: dict[str, str], context: dict[str, Any], **body: Any
    ) -> StreamEvent:
        return StreamEvent(
            source=source,
            type=body.pop("type", "track"),
            message_id=self._uuid(),
            user_id=ids.get("userId", ""),
            anonymous_id=ids.get("anonymousId", ""),
            timestamp=at,
            received_at=at,
            context=context,
            **body,
        )

    def _pos(self, person: _Person, at: datetime, size: int) -> list[StreamEvent]:
        rng = self.rng
        store = person.home_store if rng.random() < 0.85 else rng.randrange(STORES)
        source = f"pos-S{store + 1:03d}"
        context: dict[str, Any] = {
            "library": {"name": "retail-pos-connector", "version": "3.4.2"},
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
        }
        guest = not person.cards or rng.random() < 0.05
        if guest:
            ids = (
                {"userId": rng.choice(JUNK_IDENTIFIERS)}
                if rng.random() < 0.5
                else {"anonymousId": self._uuid()}
            )
        else:
            card = person.cards[-1] if len(person.cards) > 1 and rng.random() < 0.7 else person.cards[0]
            ids = {"userId": card}
            context["externalIds"] = [
                {"id": card, "type": "member_card", "collection": "users", "encoding": "none"}
            ]
        if rng.random() < 0.05 and store < SHARED_DEVICES:  # on the store's shared clienteling iPad
            context["device"] = {"id": self.store_ipads[store], "model": "iPad13,18", "type": "ios"}
        events = []
        for step in range(size):
            at += timedelta(seconds=rng.randrange(20, 240))
            if step == 0 and not guest and person.phone and rng.random() < 0.35:
                traits: dict[str, Any] = {
                    "phone": rng.choice(JUNK_IDENTIFIERS) if rng.random() < 0.04 else self._phone(person)
                }
                if person.email and rng.random() < 0.3:
                    traits["email"] = self._email(person)
                events.append(self._event(source, at, ids, context, type="identify", traits=traits))
            else:
                events.append(
                    self._event(
                        source,
                        at,
                        ids,
                        context,
                        event="Order Completed",
                        properties=self._order(f"S{store + 1:03d}"),
                    )
                )
        return events

    def _app(self, person: _Person, at: datetime, size: int) -> list[StreamEvent]:
        rng = self.rng
        # A second phone replaces the first halfway through the window.
        which = 1 if len(person.devices) > 1 and at >= START + WINDOW / 2 else 0
        device = person.devices[which]
        context = {
            "app": {"name": "Bench Retail", "version": "5.12.0", "build": "5120"},
            "device": {
                "id": device.device_id,
                "type": device.platform,
                "manufacturer": "Apple" if device.platform == "ios" else "Xiaomi",
            },
            "os": {"name": "iOS" if device.platform == "ios" else "Android"},
            "library": {
                "name": "analytics-swift" if device.platform == "ios" else "analytics-kotlin",
                "version": "1.16.3",
            },
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
        }
        login_at = (
            rng.randrange(size)
            if (person.logs_in_app and which not in person.app_logged_in and rng.random() < 0.5)
            else -1
        )
        events = []
        for step in range(size):
            at += timedelta(seconds=rng.randrange(5, 90))
            ids = {"anonymousId": device.anonymous_id}
            if which in person.app_logged_in:
                ids["userId"] = person.account
            if step == login_at:
                person.app_logged_in.add(which)
                ids["userId"] = person.account
                traits: dict[str, Any] = {}
                if person.phone and rng.random() < 0.8:
                    traits["phone"] = self._phone(person)
                if person.email and (not traits or rng.random() < 0.4):
                    traits["email"] = self._email(person)
                identify_context = context
                if person.wechat_login:
                    identify_context = {
                        **context,
                        "externalIds": [
                            {
                                "id": person.unionid,
                                "type": "wechat_unionid",
                                "collection": "users",
                                "encoding": "none",
                            }
                        ],
                    }
                events.append(self._event("app", at, ids, identify_context, type="identify", traits=traits))
            elif rng.random() < 0.5:
                events.append(
                    self._event(
                        "app",
                        at,
                        ids,
                        context,
                        type="screen",
                        name="Product Detail",
                        properties=self._product(),
                    )
                )
            else:
                events.append(
                    self._event("app", at, ids, context, event="Product Viewed", properties=self._product())
                )
        return events

    def _mini(self, person: _Person, at: datetime, size: int) -> list[StreamEvent]:
        rng = self.rng
        context = {
            "app": {"name": "Bench Retail 小程序", "version": "2.8.1"},
            "library": {"name": "analytics-wechat-miniprogram", "version": "1.6.0"},
            "externalIds": [
                {"id": person.openid, "type": "wechat_openid", "collection": "users", "encoding": "none"},
                {"id": person.unionid, "type": "wechat_unionid", "collection": "users", "encoding": "none"},
            ],
            "locale": "zh-CN",
        }
        ids = {"anonymousId": f"mp-{person.openid}"}
        identify_at = (
            rng.randrange(size)
            if (not person.mini_identified and person.phone and rng.random() < 0.6)
            else -1
        )
        events = []
        for step in range(size):
            at += timedelta(seconds=rng.randrange(10, 120))
            if step == identify_at:  # WeChat's phone-number authorisation
                person.mini_identified = True
                events.append(
                    self._event(
                        "mini_program",
                        at,
                        ids,
                        context,
                        type="identify",
                        traits={"phone": self._phone(person)},
                    )
                )
            elif rng.random() < 0.2:
                events.append(
                    self._event(
                        "mini_program", at, ids, context, event="Order Completed", properties=self._order("M")
                    )
                )
            else:
                events.append(
                    self._event(
                        "mini_program", at, ids, context, event="Product Viewed", properties=self._product()
                    )
                )
        return events

    def _web(self, person: _Person, at: datetime, size: int) -> list[StreamEvent]:
        rng = self.rng
        if person.web_sessions > 0 and rng.random() < 0.25:  # cookies cleared: a new anonymousId
            person.web_cookie, person.web_cookie_logged_in = self._uuid(), False
        person.web_sessions += 1
        context = {
            "library": {"name": "analytics.js", "version": "next-1.72.0"},
            "page": {"path": "/", "url": "https://shop.example.com/"},
            "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Safari/605.1.15",
            "locale": "zh-CN",
        }
        login_at = (
            rng.randrange(size)
            if (person.logs_in_web and not person.web_cookie_logged_in and rng.random() < 0.45)
            else -1
        )
        events = []
        for step in range(size):
            at += timedelta(seconds=rng.randrange(5, 120))
            ids = {"anonymousId": person.web_cookie}
            if person.web_cookie_logged_in:
                ids["userId"] = person.account
            if step == login_at:
                person.web_cookie_logged_in = True
                ids["userId"] = person.account
                traits = (
                    {"email": self._email(person)}
                    if person.email
                    else ({"phone": self._phone(person)} if person.phone else {})
                )
                events.append(self._event("web", at, ids, context, type="identify", traits=traits))
            else:
                events.append(
                    self._event(
                        "web", at, ids, context, type="page", name="Product", properties=self._product()
                    )
                )
        return events


def _events_per_person(rng: random.Random, people: int, events: int) -> list[int]:
    """At least one each; the rest spread by a heavy-tailed (log-normal) activity."""
    if events < people:
        raise ValueError(f"{events} events cannot give each of {people} people one")
    activity = [math.exp(rng.gauss(0, 1.2)) for _ in range(people)]
    counts = [1] * people
    for index in rng.choices(range(people), weights=activity, k=events - people):
        counts[index] += 1
    return counts


def _sessions(rng: random.Random, count: int) -> list[int]:
    sizes = []
    while count > 0:
        size = min(count, rng.choice((1, 1, 2, 2, 3, 3, 4, 5)))
        sizes.append(size)
        count -= size
    return sizes


def stream_generate(*, people: int, events: int, seed: int) -> list[StreamEvent]:
    """The whole stream in arrival order: by ``received_at`` (event time plus upload delay)."""
    generator = _Generator(people=people, seed=seed)
    rng = generator.rng
    counts = _events_per_person(rng, people, events)
    window = WINDOW.total_seconds() - 3600
    stream: list[StreamEvent] = []
    previous = None
    for index in range(people):
        person = generator.person(index, previous)
        previous = person
        sizes = _sessions(rng, counts[index])
        starts = sorted(START + timedelta(seconds=rng.uniform(0, window)) for _ in sizes)
        for at, size in zip(starts, sizes, strict=True):
            channel = rng.choices(person.channels, weights=person.weights)[0]
            session = generator.session(person, channel, at, size)
            late = rng.random() < LATE_SESSION_SHARE
            delay = timedelta(seconds=rng.uniform(600, 3 * 86400)) if late else timedelta(0)
            for event in session:
                # Uploaded within seconds, or (an offline till or phone) minutes to days late.
                event.received_at = event.timestamp + delay + timedelta(milliseconds=rng.randrange(200, 3000))
                event.late = late
                event.person = index
            stream.extend(session)
    stream.sort(key=lambda e: (e.received_at, e.message_id))
    return stream


def out_of_order(stream: Sequence[StreamEvent]) -> int:
    """Events that arrive after an event that happened later than they did."""
    latest = datetime.min.replace(tzinfo=UTC)
    count = 0
    for event in stream:
        if event.timestamp < latest:
            count += 1
        else:
            latest = event.timestamp
    return count
