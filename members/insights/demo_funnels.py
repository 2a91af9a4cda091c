"""The demo's marketing story for the funnel, attribution and ROI pages: a spring sale pushed in
the app, advertised on the web with UTM links and handed out as mini-program coupons, most of
whose buyers then pay in a store; a short VIP week in the app; the spend behind both; and three
saved funnels. ``manage.py demo`` loads it with the rest of the demo.

``campaign_stream`` reads no database and is deterministic like ``events.demo``: the same people (their own
identifiers, ``events.demo.demo_person``), the same ``(seed, person)`` → the same messageIds, so
a re-run stores nothing twice. Every event carries the person's phone in ``context.traits``, as
a logged-in app, a web checkout or WeChat's phone authorisation would, so identity resolution
joins the campaign's touches to the member their purchases belong to.
"""

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from events.demo import CHINA_TIME, CURRENCY, DemoEvent, DemoPerson, demo_person
from members.insights.models import CampaignSpend, Funnel

_NAMESPACE = uuid.UUID("6d0c7f55-3a8e-4f0e-9b7b-0f8f5c2a41d3")  # fixed for good: messageIds derive from it


@dataclass(frozen=True, slots=True)
class DemoCampaign:
    name: str
    first_day_ago: int  # the campaign runs from this many days ago ...
    last_day_ago: int  # ... to this many (both included)
    reach: float  # share of people it touches
    converts: float  # share of the touched who then buy


CAMPAIGNS = (
    DemoCampaign("spring-sale", 40, 10, 0.45, 0.55),
    DemoCampaign("vip-week", 20, 14, 0.15, 0.4),
)
#: (channel, campaign, amount in the platform's currency): what marketing says each cost.
SPEND = (
    ("app", "spring-sale", Decimal("12000.00")),
    ("web", "spring-sale", Decimal("18000.00")),
    ("mini_program", "spring-sale", Decimal("9000.00")),
    ("app", "vip-week", Decimal("3000.00")),
    ("pos", "", Decimal("5000.00")),  # in-store promotion over the sale, no campaign link
)
DEMO_FUNNELS: tuple[tuple[str, str, list[dict[str, Any]], int, str, list[str]], ...] = (
    (
        "Viewed, then bought in any channel",
        "A product viewed anywhere, then an order within a week, by the channel of each step: WeChat "
        "browsers who pay at a till convert too.",
        [{"event": "Product Viewed"}, {"event": "Order Completed"}],
        168, "channel", [],
    ),
    (
        "App browse to any purchase",
        "App product views that reach the cart and an order in any channel, by loyalty tier.",
        [{"event": "Product Viewed", "where": {"channel": "app"}}, {"event": "Product Added"},
         {"event": "Order Completed"}],
        336, "tier", [],
    ),
    (
        "Spring sale: coupon to purchase",
        "A spring-sale coupon claimed in the mini-program, a product viewed, an order anywhere.",
        [{"event": "Coupon Claimed", "where": {"properties.campaign": "spring-sale"}}, {"event": "Product Viewed"},
         {"event": "Order Completed"}],
        336, "", [],
    ),
)  # fmt: skip
_PRODUCTS = (
    ("P1004", "Light Down Jacket", "Apparel/Outerwear", 89900),
    ("P2001", "Canvas Sneakers", "Shoes/Sneakers", 45900),
    ("P3001", "Hydrating Serum 50 ml", "Beauty/Skincare", 36800),
    ("P4002", "Cashmere Scarf", "Accessories/Scarves", 49900),
    ("P1006", "Silk Blend Midi Dress", "Apparel/Dresses", 69900),
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _yuan(fen: int) -> int | float:
    return fen // 100 if fen % 100 == 0 else fen / 100


class _Campaigns:
    def __init__(self, *, seed: int, person: DemoPerson, now: datetime) -> None:
        self.seed, self.person, self.now = seed, person, now
        # Seeded on purpose: reproducible demo data, not secrets.
        self.rng = random.Random(f"cdp-demo-campaign:{seed}:{person.index}")  # noqa: S311
        self.step = 0
        self.events: list[DemoEvent] = []

    def emit(self, source: str, at: datetime, call: str, ids: dict[str, Any], body: dict[str, Any],
             context: dict[str, Any]) -> None:  # fmt: skip
        self.step += 1
        if at > self.now:
            return
        sent = min(at + timedelta(milliseconds=self.rng.randrange(200, 3000)), self.now)
        message = {
            "type": call,
            "messageId": str(uuid.uuid5(_NAMESPACE, f"{self.seed}:{self.person.index}:{self.step}")),
            "timestamp": _iso(at), "sentAt": _iso(sent), **ids, **body,
            "context": {**context, "traits": {"phone": self.person.phone}, "locale": "zh-CN"},
        }  # fmt: skip
        self.events.append(DemoEvent(self.person.index, source, message, sent))

    def ids(self, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ids and context a channel sends for the person."""
        p = self.person
        if source == "app":
            return {"userId": p.account_id, "anonymousId": p.app_anonymous_id}, {}
        if source == "web":
            return {"userId": p.account_id, "anonymousId": str(uuid.uuid5(_NAMESPACE, f"web:{p.index}"))}, {}
        if source == "mini_program":
            return {"anonymousId": p.mini_anonymous_id}, {"externalIds": [
                {"id": p.wechat_openid, "type": "wechat_openid", "collection": "users", "encoding": "none"},
                {"id": p.wechat_unionid, "type": "wechat_unionid", "collection": "users", "encoding": "none"},
            ]}  # fmt: skip
        return {"userId": p.member_card}, {"externalIds": [
            {"id": p.member_card, "type": "member_card", "collection": "users", "encoding": "none"}]}  # fmt: skip

    def touch(self, campaign: DemoCampaign, at: datetime) -> tuple[datetime, str]:
        """A touch of ``campaign`` at ``at`` in a channel drawn for it; and that channel."""
        rng = self.rng
        kind = rng.choices(("push", "web", "coupon", "store"), weights=(40, 25, 25, 10))[0]
        if campaign.name == "vip-week":
            kind = "push"
        if kind == "push":
            ids, context = self.ids("app")
            utm = {"name": campaign.name, "source": "push", "medium": "push"}
            self.emit("app", at, "track", ids, {"event": "Push Opened", "properties": {"campaign": campaign.name}},
                      {**context, "campaign": utm})  # fmt: skip
        elif kind == "web":
            ids, context = self.ids("web")
            utm = {"name": campaign.name, "source": rng.choice(("wechat_moments", "baidu", "xiaohongshu")),
                   "medium": "cpc"}  # fmt: skip
            path = f"/sale/{campaign.name}"
            self.emit("web", at, "page", ids, {"name": "Spring Sale", "properties": {"path": path}},
                      {**context, "campaign": utm, "page": {"path": path}})  # fmt: skip
        elif kind == "coupon":
            ids, context = self.ids("mini_program")
            self.emit("mini_program", at, "track", ids, {"event": "Coupon Claimed", "properties": {
                "coupon_id": "SPRING50", "coupon_name": "¥50 off orders over ¥300", "campaign": campaign.name}},
                context)  # fmt: skip
        else:
            store = self.person.home_store
            ids, context = self.ids(store)
            self.emit(store, at, "track", ids, {"event": "Store Visited", "properties": {"campaign": campaign.name}},
                      context)  # fmt: skip
        return at, {"push": "app", "web": "web", "coupon": "mini_program"}.get(kind, "pos")

    def purchase(self, campaign: DemoCampaign, at: datetime, touched: str) -> None:
        """A product viewed, then an order: in the channel the touch came from, except that
        WeChat (mini-program) touches and store visits mostly end at a till. (The demo's app and
        web accounts log in with an account id and its tills with a member card, two user ids
        identity never joins; WeChat links to a till by phone.)"""
        rng = self.rng
        product_id, name, category, fen = rng.choice(_PRODUCTS)
        seen = {"product_id": product_id, "name": name, "category": category, "price": _yuan(fen),
                "quantity": 1, "currency": CURRENCY}  # fmt: skip
        browse = touched if touched in ("app", "web") else "mini_program"
        where = browse if touched in ("app", "web") or rng.random() < 0.3 else self.person.home_store
        ids, context = self.ids(browse)
        at += timedelta(minutes=rng.randrange(5, 600))
        self.emit(browse, at, "track", ids, {"event": "Product Viewed", "properties": seen}, context)
        ids, context = self.ids(where)
        at += timedelta(hours=rng.randrange(1, 96), minutes=rng.randrange(60))
        prefix = {"app": "A", "mini_program": "M", "web": "W"}.get(where, where[-4:])
        order = {
            "order_id": f"{prefix}C{campaign.name[:2].upper()}{self.person.index:07d}",
            "total": _yuan(fen - 5000 if fen >= 30000 else fen), "revenue": _yuan(fen), "currency": CURRENCY,
            "products": [{k: v for k, v in seen.items() if k != "currency"}],
        }  # fmt: skip
        if fen >= 30000:
            order["coupon"] = "SPRING50"
        self.emit(where, at, "track", ids, {"event": "Order Completed", "properties": order}, context)

    def run(self) -> list[DemoEvent]:
        today = datetime.combine(self.now.astimezone(CHINA_TIME).date(), datetime.min.time(), CHINA_TIME)
        for campaign in CAMPAIGNS:
            rng = self.rng
            reached = rng.random() < campaign.reach
            days = rng.randrange(campaign.last_day_ago, campaign.first_day_ago + 1)
            at = today - timedelta(days=days) + timedelta(minutes=rng.randrange(9 * 60, 23 * 60))
            converts = rng.random() < campaign.converts
            second = rng.random() < 0.4
            if not reached:
                continue
            at, touched = self.touch(campaign, at)
            if second:  # a second touch, maybe in another channel, a day or two later
                at, touched = self.touch(campaign, at + timedelta(hours=rng.randrange(6, 48)))
            if converts:
                self.purchase(campaign, at, touched)
        return sorted(self.events, key=lambda e: e.message["timestamp"])


def campaign_stream(*, members: int, seed: int, now: datetime) -> Iterator[DemoEvent]:
    """The campaigns' touches and the purchases after them, person by person."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    for index in range(members):
        yield from _Campaigns(seed=seed, person=demo_person(seed=seed, index=index), now=now).run()


def campaign_days(campaign: DemoCampaign, *, today: date) -> tuple[date, date]:
    return today - timedelta(days=campaign.first_day_ago), today - timedelta(days=campaign.last_day_ago)


def insights_funnels_demo_setup(*, today: date) -> None:
    """The demo's saved funnels and the campaigns' spend, created when missing (a funnel by its
    name, a spend line by channel and campaign): never changes what staff edited. Safe to run again."""
    for name, description, steps, window_hours, breakdown, segments in DEMO_FUNNELS:
        Funnel.objects.get_or_create(name=name, defaults={
            "description": description, "steps": steps, "window_hours": window_hours, "breakdown": breakdown,
            "segments": segments,
        })  # fmt: skip
    by_name = {c.name: c for c in CAMPAIGNS}
    first, last = min(campaign_days(c, today=today)[0] for c in CAMPAIGNS), today
    for channel, campaign, amount in SPEND:
        if CampaignSpend.objects.filter(channel=channel, campaign=campaign).exists():
            continue
        start, end = campaign_days(by_name[campaign], today=today) if campaign else (first, last)
        CampaignSpend.objects.create(channel=channel, campaign=campaign, period_start=start, period_end=end,
                                     amount=amount, currency=CURRENCY)  # fmt: skip
