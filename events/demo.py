"""Demo data: a seeded stream of Segment messages from a retailer's three stores, its app,
its WeChat mini-program and its web shop, as those senders would really send them.

It feeds ``manage.py demo`` (and tests and benchmarks), so it is shaped by what later stages
must cope with rather than by what is convenient: one customer shows up in several channels
under different identifiers (a phone number typed four ways, an email in varied case, a member
card, WeChat ids, an app device, web cookies); stores upload late; cashiers type placeholder
ids; one in-store iPad is shared by many customers.

Pure: no ORM and no I/O. Deterministic: the same ``(members, seed, now)`` gives the same
stream, and each message's ``messageId`` depends only on ``(seed, person, step)``, never on
``now`` or ``members``. Re-running the demo therefore stores nothing twice (ingestion dedupes
on ``(source, messageId)``), and a larger ``members`` only adds people.
"""

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

#: China has no daylight saving time, so a fixed offset is exact and needs no tz database.
CHINA_TIME = timezone(timedelta(hours=8), "Asia/Shanghai")
WINDOW = timedelta(days=180)
CURRENCY = "CNY"

#: Placeholders cashiers type when the till insists on an id; a platform that matched on
#: them would merge every walk-in customer into one person.
JUNK_IDENTIFIERS = ("0", "null", "000000")

#: The clienteling iPad at the Jing'an store: many customers check out on it, so its device
#: id identifies a store counter, not a person.
SHARED_IPAD_DEVICE_ID = "5C1F0E7A-93D4-4B2E-A6C8-2F71D0B94E35"
SHARED_IPAD_SOURCE = "pos-S001"

# Fixed for good: every messageId is derived from it, so changing it would make a re-run
# store the whole demo a second time.
_MESSAGE_NAMESPACE = uuid.UUID("b9f0c1de-54a3-4c8e-9d6a-0c3f2e7a1b45")
# Odd and not a multiple of 5, so coprime with every 10**n: ``x * _SPREAD % 10**n`` is a
# bijection, which gives ids that look random yet never collide between two people.
_SPREAD = 2862933555777941757


@dataclass(frozen=True, slots=True)
class DemoSource:
    """A demo sender. ``kind`` is an ``events.models.Channel`` value, kept as a plain string so
    that this module stays ORM-free."""

    slug: str
    name: str
    kind: str
    store_code: str = ""


DEMO_SOURCES: tuple[DemoSource, ...] = (
    DemoSource("pos-S001", "Demo POS S001 Shanghai Jing'an", "pos", "S001"),
    DemoSource("pos-S002", "Demo POS S002 Shanghai Xuhui", "pos", "S002"),
    DemoSource("pos-S003", "Demo POS S003 Hangzhou West Lake", "pos", "S003"),
    DemoSource("app", "Demo App", "app"),
    DemoSource("mini_program", "Demo WeChat Mini-program", "mini_program"),
    DemoSource("web", "Demo Web Shop", "web"),
)
DEMO_SOURCES_BY_SLUG: dict[str, DemoSource] = {source.slug: source for source in DEMO_SOURCES}
WEB_SOURCE_SLUG = "web"


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """One message as ``source_slug`` would send it.

    ``received_at`` is when the simulated sender's upload reaches the platform (the message's
    ``sentAt``, clocks in sync). Parse the message with it: the Segment clock-skew rule
    compares ``sentAt`` with the arrival time, so parsing a months-old message "now" would
    shift its timestamp by months.
    """

    person: int
    source_slug: str
    message: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class _Product:
    product_id: str
    sku: str
    name: str
    category: str
    price_fen: int  # integer fen: sums of float yuan would drift off by fractions of a fen


_CATALOG = (
    _Product("P1001", "TS-WHT-M", "Organic Cotton Tee", "Apparel/Tops", 12900),
    _Product("P1002", "TS-BLK-L", "Relaxed Linen Shirt", "Apparel/Tops", 39900),
    _Product("P1003", "KN-OAT-S", "Merino Crew Knit", "Apparel/Knitwear", 59900),
    _Product("P1004", "JK-NVY-M", "Light Down Jacket", "Apparel/Outerwear", 89900),
    _Product("P1005", "PT-KHK-30", "Wide-leg Chinos", "Apparel/Bottoms", 32900),
    _Product("P1006", "DR-SAG-S", "Silk Blend Midi Dress", "Apparel/Dresses", 69900),
    _Product("P2001", "SN-WHT-39", "Canvas Sneakers", "Shoes/Sneakers", 45900),
    _Product("P2002", "LF-BRN-40", "Leather Loafers", "Shoes/Formal", 99900),
    _Product("P3001", "SR-50ML", "Hydrating Serum 50 ml", "Beauty/Skincare", 36800),
    _Product("P3002", "CR-30ML", "Barrier Repair Cream 30 ml", "Beauty/Skincare", 29800),
    _Product("P3003", "LP-RED-01", "Velvet Lipstick Ruby", "Beauty/Makeup", 19000),
    _Product("P3004", "SS-SPF50", "Daily Sunscreen SPF50", "Beauty/Skincare", 15900),
    _Product("P4001", "BG-TOTE-BLK", "Canvas Tote Bag", "Accessories/Bags", 8990),
    _Product("P4002", "SC-CSH-GRY", "Cashmere Scarf", "Accessories/Scarves", 49900),
    _Product("P4003", "SK-3PK-M", "Cotton Socks 3-pack", "Accessories/Socks", 5990),
    _Product("P5001", "CD-FIG-200", "Fig Scented Candle", "Home/Fragrance", 22800),
    _Product("P5002", "MG-CER-350", "Ceramic Mug", "Home/Tableware", 6900),
    _Product("P5003", "TW-BTH-GRY", "Cotton Bath Towel", "Home/Textiles", 11900),
)

# (code, name, discount in fen, minimum spend in fen)
_COUPONS = (
    ("NEWMEMBER30", "New member ¥30 off", 3000, 19900),
    ("SPRING50", "¥50 off orders over ¥300", 5000, 30000),
    ("VIP100", "VIP ¥100 off orders over ¥800", 10000, 80000),
)
_PAYMENT_METHODS = ("wechat_pay", "alipay", "union_pay", "cash")

# (characters, pinyin): names print in characters, emails are made of pinyin.
_SURNAMES = (
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
    ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("林", "lin"),
)  # fmt: skip
_GIVEN_NAMES = (
    ("芳", "fang"), ("伟", "wei"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"),
    ("强", "qiang"), ("磊", "lei"), ("洋", "yang"), ("艳", "yan"), ("杰", "jie"), ("婷", "ting"),
    ("雪", "xue"), ("欣怡", "xinyi"), ("子涵", "zihan"), ("浩然", "haoran"), ("宇轩", "yuxuan"),
    ("诗涵", "shihan"), ("思远", "siyuan"), ("佳琪", "jiaqi"),
)  # fmt: skip
_MOBILE_PREFIXES = ("135", "136", "138", "139", "150", "152", "158", "177", "186", "187", "188", "199")
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org")  # reserved: no real inbox

_APP_LIBRARY = {"ios": ("analytics-swift", "1.5.11"), "android": ("analytics-kotlin", "1.16.3")}
_WEB_USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
_WEB_ORIGIN = "https://shop.example.com"


def phone_forms(phone: str) -> tuple[str, ...]:
    """The ways people and systems write one CN mobile number (11 digits), e.g. 13800138000:
    "138 0013 8000" at a till, "+86 13800138000" from an SDK, "8613800138000" from an export,
    "13800138000" bare. Identity resolution must see one number in all of them."""
    return (f"{phone[:3]} {phone[3:7]} {phone[7:]}", f"+86 {phone}", f"86{phone}", phone)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _yuan(fen: int) -> int | float:
    # Whole yuan as an int, else the float whose shortest repr is the exact decimal (89.9).
    return fen // 100 if fen % 100 == 0 else fen / 100


def _digest(seed: int, person: int, label: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{person}:{label}".encode(), digest_size=16).digest()


def _message_id(seed: int, person: int, step: int) -> str:
    """``uuid5(_MESSAGE_NAMESPACE, "seed:person:step")``, spelled out: it runs once per
    event, and building ``uuid.UUID`` objects was a sixth of the generator's time."""
    name = _MESSAGE_NAMESPACE.bytes + f"{seed}:{person}:{step}".encode()
    digest = hashlib.sha1(name).hexdigest()  # noqa: S324 - uuid5's hash, not a security measure
    variant = int(digest[16:18], 16) & 0x3F | 0x80
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{variant:02x}{digest[18:20]}-{digest[20:32]}"


@dataclass(frozen=True, slots=True)
class _Person:
    index: int
    name: str
    phone: str
    email: str  # "" for the half who never gave one
    birthday: str
    member_card: str
    account_id: str  # the online account (app and web shop log in with it)
    home_store: str
    platform: str  # "ios" or "android"
    device_id: str
    app_anonymous_id: str
    mini_anonymous_id: str
    wechat_openid: str
    wechat_unionid: str


def _scrambled(seed: int, value: int, digits: int, label: str) -> int:
    """``value`` spread over ``digits`` digits: random-looking, and never the same for two
    values below ``10**digits`` (so two people never share a phone, card or order id)."""
    salt = int.from_bytes(_digest(seed, -1, label)[:8], "big")
    return (value * _SPREAD + salt) % 10**digits


def _hashed_uuid(seed: int, person: int, label: str) -> str:
    return str(uuid.UUID(bytes=_digest(seed, person, label), version=4))


def _wechat_id(seed: int, person: int, label: str) -> str:
    # 28 characters starting with "o", the shape of real openids and unionids.
    return "o" + hashlib.blake2b(f"{seed}:{person}:{label}".encode(), digest_size=14).hexdigest()[:27]


def _person(rng: random.Random, *, seed: int, index: int) -> _Person:
    surname, surname_pinyin = rng.choice(_SURNAMES)
    given, given_pinyin = rng.choice(_GIVEN_NAMES)
    phone = rng.choice(_MOBILE_PREFIXES) + f"{_scrambled(seed, index, 8, 'phone'):08d}"
    email = ""
    if rng.random() < 0.5:
        number = _scrambled(seed, index, 6, "email")
        email = f"{given_pinyin}.{surname_pinyin}{number}@{rng.choice(_EMAIL_DOMAINS)}"
    platform = "ios" if rng.random() < 0.6 else "android"
    return _Person(
        index=index,
        name=surname + given,
        phone=phone,
        email=email,
        birthday=f"{rng.randrange(1965, 2005)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        member_card=f"88{_scrambled(seed, index, 8, 'card'):08d}",
        account_id=f"u{_scrambled(seed, index, 9, 'account'):09d}",
        home_store=rng.choices(("pos-S001", "pos-S002", "pos-S003"), weights=(45, 30, 25))[0],
        platform=platform,
        # iOS apps see an IDFV (upper-case UUID), Android apps a 16-hex-digit ANDROID_ID.
        device_id=(
            _hashed_uuid(seed, index, "idfv").upper()
            if platform == "ios"
            else _digest(seed, index, "android-id").hex()[:16]
        ),
        app_anonymous_id=_hashed_uuid(seed, index, "app-anon"),
        mini_anonymous_id=_hashed_uuid(seed, index, "mini-anon"),
        wechat_openid=_wechat_id(seed, index, "openid"),
        wechat_unionid=_wechat_id(seed, index, "unionid"),
    )


@dataclass(frozen=True, slots=True)
class DemoPerson:
    """What other demo streams need to send events about person ``index`` as their own channels
    know them (``members.insights.demo_funnels``' campaign)."""

    index: int
    phone: str
    member_card: str
    account_id: str
    home_store: str  # a POS source slug
    app_anonymous_id: str
    mini_anonymous_id: str
    wechat_openid: str
    wechat_unionid: str


def demo_person(*, seed: int, index: int) -> DemoPerson:
    """Person ``index``'s identifiers, drawn exactly as their journey draws them."""
    # Seeded on purpose: reproducible demo data, not secrets.
    person = _person(random.Random(f"cdp-demo:{seed}:{index}"), seed=seed, index=index)  # noqa: S311
    return DemoPerson(
        index=index, phone=person.phone, member_card=person.member_card, account_id=person.account_id,
        home_store=person.home_store, app_anonymous_id=person.app_anonymous_id,
        mini_anonymous_id=person.mini_anonymous_id, wechat_openid=person.wechat_openid,
        wechat_unionid=person.wechat_unionid,
    )  # fmt: skip


def _consent(seed: int, person: int, purposes: tuple[str, ...]) -> dict[str, Any]:
    """What the person answers when a channel asks for consent (``docs/consent.md``): most grant,
    some refuse. Drawn from a digest, not the person's generator, so the rest of the stream is
    the same with or without it."""
    draw = _digest(seed, person, "consent")
    return {"version": "2026-01", **{p: draw[i] % 10 < 8 for i, p in enumerate(purposes)}}


class _Journey:
    """One person's events over the window, in the order they were generated (``step``).

    Every random draw comes from the person's own generator, and none depends on ``now``:
    ``now`` only places the draws in time. That keeps messageIds (and order ids) stable
    whenever the demo runs.
    """

    def __init__(self, *, seed: int, index: int, now: datetime) -> None:
        self.seed = seed
        self.now = now
        # Seeded on purpose: reproducible demo data, not secrets.
        self.rng = random.Random(f"cdp-demo:{seed}:{index}")  # noqa: S311
        self.person = _person(self.rng, seed=seed, index=index)
        self.step = 0
        self.orders = 0
        self.events: list[tuple[datetime, int, DemoEvent]] = []
        # Per-channel state: what each sender already knows about the person.
        self.app_sessions = 0
        self.app_user_id = ""
        self.mini_identified = False
        self.web_sessions = 0
        self.web_user_id = ""
        self.web_anonymous_id = _hashed_uuid(seed, index, "web-anon-0")
        self.pos_identified = False

    def _phone(self) -> str:
        return self.rng.choice(phone_forms(self.person.phone))

    def _email(self) -> str:
        email = self.person.email
        form = self.rng.randrange(5)
        if form == 1:
            return email.upper()
        if form == 2:
            local, _, domain = email.partition("@")
            return f"{local.title()}@{domain.title()}"
        if form == 3:
            return f" {email} "  # pasted with whitespace
        return email

    # --- when -----------------------------------------------------------------------------

    def _moment(self, days_ago: int, minute_of_day: int, second: int) -> datetime:
        """A moment (in UTC) at a China-time hour of a day before today's.

        Anchored on today's date, not on ``now`` itself, and never adjusted one by one: a
        later run shifts every session by whole days alike, so their order, and with it
        which draw (and messageId) lands on which event, never changes. What a later run
        would place after ``now`` is simply not emitted.
        """
        today = datetime.combine(self.now.astimezone(CHINA_TIME).date(), time(), CHINA_TIME)
        moment = today - timedelta(days=days_ago + 1, minutes=-minute_of_day, seconds=-second)
        return moment.astimezone(UTC)

    def _session_start(self, *, store: bool) -> datetime:
        rng = self.rng
        days_ago = rng.randrange(0, WINDOW.days - 1)
        # Stores open 10:00-22:00; people shop online from breakfast to past midnight.
        minute = rng.randrange(10 * 60, 21 * 60 + 30) if store else rng.randrange(7 * 60, 24 * 60)
        return self._moment(days_ago, minute, rng.randrange(60))

    # --- emit -----------------------------------------------------------------------------

    def _emit(
        self,
        source: str,
        at: datetime,
        call: str,
        ids: dict[str, Any],
        context: dict[str, Any],
        *,
        body: dict[str, Any] | None = None,
        sent_at: datetime | None = None,
    ) -> None:
        step = self.step
        self.step += 1
        latency = timedelta(milliseconds=self.rng.randrange(200, 3000))
        if at > self.now:
            return  # e.g. a refund that would happen after today: its step stays unused
        sent = min(sent_at or at + latency, self.now).astimezone(UTC)
        message: dict[str, Any] = {
            "type": call,
            "messageId": _message_id(self.seed, self.person.index, step),
            "timestamp": _iso(at),
            "sentAt": _iso(sent),
            **ids,
            **(body or {}),
            "context": context,
        }
        event = DemoEvent(person=self.person.index, source_slug=source, message=message, received_at=sent)
        self.events.append((at, step, event))

    # --- what was bought --------------------------------------------------------------------

    def _order_id(self, prefix: str) -> str:
        self.orders += 1
        number = _scrambled(self.seed, self.person.index * 1000 + self.orders, 10, "order")
        return f"{prefix}{number:010d}"

    def _basket(self) -> list[tuple[_Product, int]]:
        rng = self.rng
        size = rng.choices((1, 2, 3, 4), weights=(50, 30, 15, 5))[0]
        return [(product, 1 if rng.random() < 0.85 else 2) for product in rng.sample(_CATALOG, size)]

    @staticmethod
    def _product_line(product: _Product, quantity: int) -> dict[str, Any]:
        return {
            "product_id": product.product_id,
            "sku": product.sku,
            "name": product.name,
            "category": product.category,
            "price": _yuan(product.price_fen),
            "quantity": quantity,
        }

    @classmethod
    def _product_seen(cls, product: _Product) -> dict[str, Any]:
        """Properties of Product Viewed / Product Added: the product, one of it, in CNY."""
        return {**cls._product_line(product, 1), "currency": CURRENCY}

    def _order(
        self, *, prefix: str, shipping_fen: int
    ) -> tuple[dict[str, Any], tuple[str, str, int, int] | None, list[tuple[_Product, int]]]:
        """Order Completed properties (Segment e-commerce spec), the coupon used if any, and
        the basket (for partial refunds)."""
        rng = self.rng
        basket = self._basket()
        subtotal = sum(product.price_fen * quantity for product, quantity in basket)
        coupon = rng.choice(_COUPONS) if rng.random() < 0.2 else None
        if coupon is not None and subtotal < coupon[3]:
            coupon = None
        discount = coupon[2] if coupon else 0
        properties: dict[str, Any] = {
            "order_id": self._order_id(prefix),
            "total": _yuan(subtotal - discount + shipping_fen),
            "revenue": _yuan(subtotal - discount),
            "subtotal": _yuan(subtotal),
            "shipping": _yuan(shipping_fen),
            "discount": _yuan(discount),
            "currency": CURRENCY,
            # Only a till takes cash.
            "payment_method": rng.choice(
                _PAYMENT_METHODS if prefix.startswith("S") else _PAYMENT_METHODS[:3]
            ),
            "products": [self._product_line(product, quantity) for product, quantity in basket],
        }
        if coupon:
            properties["coupon"] = coupon[0]
        return properties, coupon, basket

    def _checkout(
        self,
        source: str,
        at: datetime,
        ids: dict[str, Any],
        context: dict[str, Any],
        *,
        prefix: str,
        shipping_fen: int,
        sent_at: datetime | None = None,
    ) -> None:
        """Coupon Redeemed (if a coupon was used), Order Completed and maybe a refund later."""
        rng = self.rng
        order, coupon, basket = self._order(prefix=prefix, shipping_fen=shipping_fen)
        if coupon is not None:
            at += timedelta(seconds=rng.randrange(20, 120))
            coupon_properties = {
                "order_id": order["order_id"],
                "coupon_id": coupon[0],
                "coupon_name": coupon[1],
                "discount": _yuan(coupon[2]),
            }
            self._emit(
                source,
                at,
                "track",
                ids,
                dict(context),
                body={"event": "Coupon Redeemed", "properties": coupon_properties},
                sent_at=sent_at,
            )
        at += timedelta(seconds=rng.randrange(30, 240))
        self._emit(
            source,
            at,
            "track",
            ids,
            dict(context),
            body={"event": "Order Completed", "properties": order},
            sent_at=sent_at,
        )
        self._maybe_refund(source, at, ids, context, order=order, basket=basket)

    def _maybe_refund(
        self,
        source: str,
        ordered_at: datetime,
        ids: dict[str, Any],
        context: dict[str, Any],
        *,
        order: dict[str, Any],
        basket: list[tuple[_Product, int]],
    ) -> None:
        rng = self.rng
        refund = rng.random() < 0.07
        later = timedelta(days=rng.randrange(1, 15), minutes=rng.randrange(0, 600))
        partial = len(basket) > 1 and rng.random() < 0.4
        returned = rng.choice(basket)
        if not refund:
            return
        properties: dict[str, Any] = {"order_id": order["order_id"], "currency": CURRENCY}
        if partial:
            product, quantity = returned
            # A discount was spread over the basket; never refund more than was paid.
            properties["total"] = min(_yuan(product.price_fen * quantity), order["total"])
            properties["products"] = [self._product_line(product, quantity)]
        else:
            properties["total"] = order["total"]
        self._emit(
            source,
            ordered_at + later,
            "track",
            ids,
            dict(context),
            body={"event": "Order Refunded", "properties": properties},
        )

    # --- channels ---------------------------------------------------------------------------

    def _pos_session(self, source: str, at: datetime) -> None:
        rng = self.rng
        person = self.person
        store_code = DEMO_SOURCES_BY_SLUG[source].store_code
        # A till that was offline uploads its sales hours or days later.
        late = rng.random() < 0.12
        delay = timedelta(minutes=rng.randrange(90, 4 * 24 * 60))
        sent_at = at + delay if late else None
        on_ipad = source == SHARED_IPAD_SOURCE and rng.random() < 0.4
        roll = rng.random()
        guest = roll < 0.03  # no member lookup: the till's placeholder as userId
        junk_phone = 0.03 <= roll < 0.06  # member found, but the phone field holds a placeholder
        junk = rng.choice(JUNK_IDENTIFIERS)
        identify = not guest and (not self.pos_identified or rng.random() < 0.25)
        with_email = person.email != "" and rng.random() < 0.3

        context: dict[str, Any] = {
            "library": {"name": "retail-pos-connector", "version": "3.4.2"},
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
        }
        if not guest:
            context["externalIds"] = [
                {"id": person.member_card, "type": "member_card", "collection": "users", "encoding": "none"}
            ]
        if on_ipad:
            context["device"] = {
                "id": SHARED_IPAD_DEVICE_ID,
                "manufacturer": "Apple",
                "model": "iPad13,18",
                "type": "ios",
                "name": f"{store_code} clienteling iPad",
            }
        ids = {"userId": junk if guest else person.member_card}
        if identify:
            traits: dict[str, Any] = {
                "phone": junk if junk_phone else self._phone(),
                "name": person.name,
                "birthday": person.birthday,
            }
            if with_email:
                traits["email"] = self._email()
            if not guest:  # the membership form at the till asks for SMS and email marketing
                traits["consent"] = _consent(self.seed, person.index, ("marketing_sms", "marketing_email"))
            self._emit(source, at, "identify", ids, dict(context), body={"traits": traits}, sent_at=sent_at)
            self.pos_identified = True
        self._checkout(source, at, ids, context, prefix=store_code, shipping_fen=0, sent_at=sent_at)

    def _app_context(self) -> dict[str, Any]:
        person = self.person
        ios = person.platform == "ios"
        library, version = _APP_LIBRARY[person.platform]
        return {
            "app": {"name": "Demo Retail", "version": "5.12.0", "build": "5120"},
            "device": {
                "id": person.device_id,
                "manufacturer": "Apple" if ios else "Xiaomi",
                "model": "iPhone15,2" if ios else "23127PN0CC",
                "type": person.platform,
            },
            "os": {"name": "iOS" if ios else "Android", "version": "17.4" if ios else "14"},
            "library": {"name": library, "version": version},
            "network": {"wifi": self.rng.random() < 0.6},
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
        }

    def _app_session(self, at: datetime) -> None:
        rng = self.rng
        person = self.person
        first = self.app_sessions == 0
        self.app_sessions += 1
        never_logs_in = rng.random() < 0.1
        context = self._app_context()

        def ids() -> dict[str, Any]:
            found = {"anonymousId": person.app_anonymous_id}
            return {"userId": self.app_user_id, **found} if self.app_user_id else found

        def screen(name: str, **properties: Any) -> None:
            nonlocal at
            at += timedelta(seconds=rng.randrange(5, 90))
            self._emit(
                "app", at, "screen", ids(), dict(context), body={"name": name, "properties": properties}
            )

        def track(event: str, properties: dict[str, Any]) -> None:
            nonlocal at
            at += timedelta(seconds=rng.randrange(3, 60))
            self._emit(
                "app", at, "track", ids(), dict(context), body={"event": event, "properties": properties}
            )

        screen("Home")
        browsed = rng.sample(_CATALOG, rng.choice((1, 1, 2, 3)))
        for product in browsed:
            screen("Product Detail", product_id=product.product_id)
            track("Product Viewed", self._product_seen(product))
        # A first visit always gets as far as the cart: that is the anonymous history the
        # later login has to bring along.
        if first or rng.random() < 0.5:
            track("Product Added", self._product_seen(browsed[0]))
            screen("Cart")
            track("Cart Viewed", {"products": [self._product_line(browsed[0], 1)], "currency": CURRENCY})
        if not self.app_user_id and not never_logs_in:
            at += timedelta(seconds=rng.randrange(30, 300))
            traits: dict[str, Any] = {"phone": self._phone()}
            if person.email and rng.random() < 0.5:
                traits["email"] = self._email()
            # The app's sign-up screen asks for every purpose it serves.
            traits["consent"] = _consent(
                self.seed, person.index, ("marketing_sms", "marketing_email", "marketing_push", "personalization",
                                          "analytics"),
            )  # fmt: skip
            self.app_user_id = person.account_id
            self._emit("app", at, "identify", ids(), dict(context), body={"traits": traits})
        if self.app_user_id and rng.random() < 0.3:
            screen("Checkout")
            track("Checkout Started", {"currency": CURRENCY})
            self._checkout("app", at, ids(), context, prefix="A", shipping_fen=rng.choice((0, 0, 1000)))

    def _mini_session(self, at: datetime) -> None:
        rng = self.rng
        person = self.person
        context: dict[str, Any] = {
            "app": {"name": "Demo Retail 小程序", "version": "2.8.1"},
            "library": {"name": "analytics-wechat-miniprogram", "version": "1.6.0"},
            "externalIds": [
                {
                    "id": person.wechat_openid,
                    "type": "wechat_openid",
                    "collection": "users",
                    "encoding": "none",
                },
                {
                    "id": person.wechat_unionid,
                    "type": "wechat_unionid",
                    "collection": "users",
                    "encoding": "none",
                },
            ],
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
        }
        # The mini-program has its own login (WeChat): no brand userId, only the SDK's
        # anonymousId plus the WeChat ids, so linking it to the others takes phone or unionid.
        ids = {"anonymousId": person.mini_anonymous_id}
        at += timedelta(seconds=rng.randrange(5, 60))
        self._emit(
            "mini_program",
            at,
            "track",
            ids,
            dict(context),
            body={"event": "Product List Viewed", "properties": {"category": rng.choice(_CATALOG).category}},
        )
        if not self.mini_identified:
            # WeChat's phone-number authorisation, the usual first step of mini-program membership.
            at += timedelta(seconds=rng.randrange(10, 120))
            traits = {
                "phone": self._phone(),
                "consent": _consent(self.seed, person.index, ("marketing_wechat",)),
            }
            self._emit("mini_program", at, "identify", ids, dict(context), body={"traits": traits})
            self.mini_identified = True
        product = rng.choice(_CATALOG)
        at += timedelta(seconds=rng.randrange(10, 120))
        self._emit(
            "mini_program",
            at,
            "track",
            ids,
            dict(context),
            body={"event": "Product Viewed", "properties": self._product_seen(product)},
        )
        if rng.random() < 0.3:
            self._checkout("mini_program", at, ids, context, prefix="M", shipping_fen=0)

    def _web_session(self, at: datetime) -> None:
        rng = self.rng
        person = self.person
        # Browsers lose cookies: a new anonymousId that only a login ties back to the person.
        if self.web_sessions > 0 and rng.random() < 0.2:
            self.web_anonymous_id = _hashed_uuid(
                self.seed, self.person.index, f"web-anon-{self.web_sessions}"
            )
        self.web_sessions += 1
        logs_in = rng.random() < 0.7

        def ids() -> dict[str, Any]:
            found = {"anonymousId": self.web_anonymous_id}
            return {"userId": self.web_user_id, **found} if self.web_user_id else found

        def page(name: str, path: str, referrer: str = "") -> dict[str, Any]:
            nonlocal at
            at += timedelta(seconds=rng.randrange(5, 120))
            page_context = {"path": path, "url": _WEB_ORIGIN + path, "title": f"{name} | Demo Retail"}
            if referrer:
                page_context["referrer"] = referrer
            context = {
                "library": {"name": "analytics.js", "version": "next-1.72.0"},
                "page": page_context,
                "userAgent": _WEB_USER_AGENT,
                "locale": "zh-CN",
                "timezone": "Asia/Shanghai",
            }
            self._emit(
                "web", at, "page", ids(), dict(context), body={"name": name, "properties": page_context}
            )
            return context

        page("Home", "/", referrer=rng.choice(("https://www.baidu.com/", "https://www.xiaohongshu.com/", "")))
        product = rng.choice(_CATALOG)
        page("Category", f"/c/{product.category.split('/')[0].lower()}")
        context = page(product.name, f"/p/{product.product_id}")
        at += timedelta(seconds=rng.randrange(2, 20))
        self._emit(
            "web",
            at,
            "track",
            ids(),
            dict(context),
            body={"event": "Product Viewed", "properties": self._product_seen(product)},
        )
        if not self.web_user_id and logs_in:
            context = page("Sign in", "/account/login")
            at += timedelta(seconds=rng.randrange(10, 90))
            # Web accounts sign up with an email where there is one, else the phone.
            traits = {"email": self._email()} if person.email else {"phone": self._phone()}
            self.web_user_id = person.account_id
            self._emit("web", at, "identify", ids(), dict(context), body={"traits": traits})
        if self.web_user_id and rng.random() < 0.25:
            context = page("Checkout", "/checkout")
            self._checkout("web", at, ids(), context, prefix="W", shipping_fen=rng.choice((0, 1000)))

    # --- the whole journey --------------------------------------------------------------------

    def run(self) -> list[DemoEvent]:
        rng = self.rng
        channels = [
            channel
            for channel, share in (("pos", 0.72), ("app", 0.45), ("mini_program", 0.5), ("web", 0.35))
            if rng.random() < share
        ] or [rng.choice(("pos", "app", "mini_program", "web"))]
        extra = rng.choices(range(9), weights=(20, 18, 15, 12, 10, 8, 7, 5, 5))[0]
        # Every channel the person uses gets a session; stores get most of the repeats.
        weights = [{"pos": 6, "app": 3, "mini_program": 2, "web": 2}[channel] for channel in channels]
        kinds = channels + rng.choices(channels, weights=weights, k=extra)
        sessions = []
        for kind in kinds:
            source = kind
            if kind == "pos":
                source = self.person.home_store if rng.random() < 0.85 else rng.choice(DEMO_SOURCES[:3]).slug
            sessions.append((self._session_start(store=kind == "pos"), source))
        for at, source in sorted(sessions):
            if source.startswith("pos-"):
                self._pos_session(source, at)
            elif source == "app":
                self._app_session(at)
            elif source == "mini_program":
                self._mini_session(at)
            else:
                self._web_session(at)
        self.events.sort(key=lambda item: (item[0], item[1]))
        return [event for _, _, event in self.events]


def demo_stream(*, members: int, seed: int, now: datetime) -> Iterator[DemoEvent]:
    """Every demo member's events, person by person, each person's in event-time order.

    People are independent of each other and of ``members`` (person 7 is the same whether
    there are 10 or 10,000), so the stream can be consumed lazily in constant memory.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    for index in range(members):
        yield from _Journey(seed=seed, index=index, now=now).run()
