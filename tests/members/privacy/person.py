"""A person with a full life on the platform, built the way production builds one (events over
HTTP, the pipeline, the staff API), and the whole-database search for them.

Lin Xiuying (林秀英) buys at a store, in the app, in the mini-program and on the web shop; her
members merge; a till once typed her phone on someone else's card (Zhou Min's), which staff
split; she earns points, gets and uses a coupon, carries tags, is in segments a webhook
pushes to a receiver that echoes what it got, and staff looked her up by phone.
"""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.roles import Role
from events.models import ErasureRule
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.models import Coupon, CouponCampaign
from members.segments.models import SegmentWebhook
from members.segments.webhooks.delivery import webhook_deliver
from tests.conftest import basic_auth
from tests.factories import SourceFactory
from tests.members.test_api import staff_client

PHONE = "+8613800138000"
EMAIL = "lin.xiuying@example.com"
NAMES = ("Xiuying Lindqvist", "林秀英", "Xiuying", "Lindqvist")
IDS = (
    "u-lin-7731", "MC-77310042", "oUnion-lin-7731", "oOpen-lin-7731", "dev-lin-7731-ios",
    "anon-lin-7731-a", "anon-lin-7731-b",
)  # fmt: skip
ZHOU_CARD = "MC-99-ZHOU"


def written_forms() -> list[str]:
    """Every way the person's data may be written down: the phone raw, in E.164, without the
    country code, spaced, dashed, in URL encoding; the email in lower and upper case; names and
    ids, JSON-escaped and URL-encoded too. Written out here, apart from the code under test."""
    phones = [
        PHONE, "8613800138000", "008613800138000", "13800138000", "138 0013 8000", "138-0013-8000",
        "+86 138 0013 8000", "+86-138-0013-8000", "+86 138-0013-8000",
    ]  # fmt: skip
    texts = [
        *phones,
        EMAIL,
        EMAIL.upper(),
        "Lin.Xiuying@Example.com",
        *NAMES,
        *IDS,
        *(i.upper() for i in IDS),
    ]
    forms = set(texts)
    for text in texts:
        forms.add(json.dumps(text)[1:-1])  # JSON-escaped: \u6797\u79c0\u82f1
        forms.add(quote(text, safe=""))
        forms.add(quote_plus(text, safe=""))
    return sorted(forms)


def _like(form: str) -> str:
    return "%" + form.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def readable_anywhere(forms: list[str]) -> dict[str, list[str]]:
    """Every text, JSON and array column of every table in the database (information_schema),
    searched for each form, case-insensitively: ``{"table.column": [forms found]}``."""
    patterns = [_like(form) for form in forms]
    found: dict[str, list[str]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'character', "
            "'jsonb', 'json', 'ARRAY') ORDER BY table_name, column_name"
        )
        columns = cursor.fetchall()
        for table, column in columns:
            cursor.execute(
                f'SELECT DISTINCT p.pattern FROM "{table}" AS t, unnest(%s::text[]) AS p(pattern) '
                f'WHERE t."{column}"::text ILIKE p.pattern',
                [patterns],
            )
            hits = [row[0] for row in cursor.fetchall()]
            if hits:
                found[f"{table}.{column}"] = sorted(forms[patterns.index(hit)] for hit in hits)
    # The walk covers the whole schema: every app's tables (and Django's own).
    tables = {table for table, _ in columns}
    assert {"events_event", "identity_identifier", "members_membertrait", "cdp_auditentry", "auth_user",
            "django_admin_log", "privacy_privacyrequest"} <= tables, tables  # fmt: skip
    assert len(columns) > 100, len(columns)
    return found


class EchoingReceiver:
    """A marketing tool's webhook receiver that answers with what it holds about the members of
    a batch, personal data included (the delivery log keeps the start of that answer), and
    forgets a member whose exit says ``erased``."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.contacts: dict[int, str] = {}  # what the tool holds, by member id
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.bodies.append(body)
                answer = []
                for change in body["changes"]:
                    member = change["member_id"]
                    if change.get("reason") == "erased":
                        receiver.contacts.pop(member, None)
                        answer.append(f"forgot member {member}")
                    else:
                        receiver.contacts.setdefault(member, f"{EMAIL} / 138-0013-8000 (Xiuying Lindqvist)")
                        answer.append(f"synced member {member} to contact {receiver.contacts[member]}")
                self.send_response(200)
                self.end_headers()
                self.wfile.write("; ".join(answer).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Life:
    member: int
    zhou: int
    sources: dict[str, Any]
    receiver: EchoingReceiver
    webhook: int
    coupon: str
    clients: dict[str, APIClient] = field(default_factory=dict)


def post(source: Any, call: str, body: dict) -> Any:
    return APIClient().generic(
        "POST", f"/v1/{call}", orjson.dumps(body).decode(), content_type="application/json",
        HTTP_AUTHORIZATION=basic_auth(source.write_key),
    )  # fmt: skip


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.content)
    return response


def at(days_ago: float) -> str:
    return (timezone.now() - timedelta(days=days_ago)).isoformat()


def lin_lives() -> Iterator[Life]:
    """Build her life (a generator: the receiver is closed after the test)."""
    sources = {
        "pos": SourceFactory(pos=True, store_code="SH01", name="Shanghai Huaihai Rd"),
        "zhou_pos": SourceFactory(pos=True, store_code="BJ02", name="Beijing Sanlitun"),
        "app": SourceFactory(kind="app", name="iOS app"),
        "mini": SourceFactory(kind="mini_program", name="Mini-program", wechat_appid="wxapp1"),
        "web": SourceFactory(kind="web", name="Web shop", erasure=ErasureRule.DELETE),
    }
    pos, app, mini, web = sources["pos"], sources["app"], sources["mini"], sources["web"]
    # The store: she gives her phone and card at the till, then buys.
    ok(post(pos, "identify", {
        "anonymousId": "till-1-session-1", "messageId": "pos-1", "timestamp": at(40),
        "traits": {"phone": "138 0013 8000", "name": "林秀英", "birthday": "1990-04-02"},
        "context": {"externalIds": [{"id": "MC-77310042", "type": "member_card"}], "ip": "10.1.2.3"},
    }))  # fmt: skip
    ok(post(pos, "track", {
        "anonymousId": "till-1-session-1", "messageId": "pos-2", "event": "Order Completed", "timestamp": at(40),
        "context": {"traits": {"phone": "13800138000"}},
        "properties": {"order_id": "POS-5501", "total": 300, "currency": "CNY",
                       "products": [{"sku": "TEA-1", "price": 300, "quantity": 1}]},
    }))  # fmt: skip
    # The app: browsing anonymously on her phone, buying, then logging in.
    ok(post(app, "track", {
        "anonymousId": "anon-lin-7731-a", "messageId": "app-1", "event": "Product Viewed", "timestamp": at(30),
        "context": {"device": {"id": "dev-lin-7731-ios", "type": "ios"}, "userAgent": "CDPApp/3.1 (iPhone)"},
        "properties": {"product_id": "TEA-2"},
    }))  # fmt: skip
    ok(post(app, "track", {
        "anonymousId": "anon-lin-7731-a", "messageId": "app-2", "event": "Order Completed", "timestamp": at(30),
        "properties": {"order_id": "APP-8801", "total": 120, "currency": "CNY"},
    }))  # fmt: skip
    events_process_pending()
    ok(post(app, "identify", {
        "userId": "u-lin-7731", "anonymousId": "anon-lin-7731-a", "messageId": "app-3", "timestamp": at(29),
        "traits": {"phone": "+86 138-0013-8000", "email": "Lin.Xiuying@Example.com",
                   "name": "Xiuying Lindqvist", "first_name": "Xiuying", "last_name": "Lindqvist",
                   "address": {"city": "Shanghai", "street": "88 Huaihai Rd"},
                   # What she agreed to in the app (consent statements: erased with her too).
                   "consent": {"marketing_sms": True, "marketing_wechat": True, "marketing_email": True,
                               "marketing_push": True}},
    }))  # fmt: skip
    ok(post(app, "alias", {"userId": "u-lin-7731", "previousId": "anon-lin-7731-b", "messageId": "app-4",
                           "timestamp": at(28)}))  # fmt: skip
    ok(post(app, "group", {
        "userId": "u-lin-7731", "groupId": "club-runners", "messageId": "app-5", "timestamp": at(28),
        "traits": {"name": "Huaihai Runners", "email": EMAIL, "members": 40},
    }))  # fmt: skip
    # The mini-program: WeChat ids, her email, an order.
    ok(post(mini, "identify", {
        "anonymousId": "mp-session-9", "messageId": "mini-1", "timestamp": at(20),
        "traits": {"email": "lin.xiuying@example.com"},
        "context": {"externalIds": [{"id": "oUnion-lin-7731", "type": "wechat_unionid"},
                                    {"id": "oOpen-lin-7731", "type": "wechat_openid"}]},
    }))  # fmt: skip
    ok(post(mini, "track", {
        "anonymousId": "mp-session-9", "messageId": "mini-2", "event": "Order Completed", "timestamp": at(20),
        "properties": {"order_id": "MP-3301", "total": 88, "currency": "CNY"},
    }))  # fmt: skip
    # The web shop (its events are deleted by an erasure): an order shipped to her.
    ok(post(web, "track", {
        "userId": "u-lin-7731", "messageId": "web-1", "event": "Order Completed", "timestamp": at(10),
        "properties": {"order_id": "WEB-1201", "total": 59, "currency": "CNY",
                       "shipping_address": {"name": "Xiuying Lindqvist", "phone": PHONE, "street": "88 Huaihai Rd"},
                       "note": "call 138-0013-8000 before delivery"},
        "context": {"page": {"url": f"https://shop.example.com/checkout?email={quote(EMAIL)}"}},
    }))  # fmt: skip
    # Someone else's card, with her phone typed at a Beijing till: two people made one ...
    ok(post(sources["zhou_pos"], "identify", {
        "anonymousId": "till-7-session-4", "messageId": "zhou-1", "timestamp": at(15),
        "traits": {"phone": "13800138000"},
        "context": {"externalIds": [{"id": ZHOU_CARD, "type": "member_card"}]},
    }))  # fmt: skip
    ok(post(sources["zhou_pos"], "track", {
        "anonymousId": "till-7-session-5", "messageId": "zhou-2", "event": "Order Completed", "timestamp": at(14),
        "context": {"externalIds": [{"id": ZHOU_CARD, "type": "member_card"}], "traits": {"name": "Zhou Min"}},
        "properties": {"order_id": "BJ-77", "total": 45, "currency": "CNY"},
    }))  # fmt: skip
    # A refused event that carries her email (a track without its event name).
    ok(post(app, "track", {"userId": "u-lin-7731", "messageId": "bad-1", "timestamp": at(5),
                           "context": {"traits": {"email": EMAIL}}}), 400)  # fmt: skip
    events_process_pending()
    member = EventResolution.objects.get(event__message_id="pos-1").member_id

    clients = {role: staff_client(role) for role in (Role.CRM_MANAGER, Role.MARKETING, Role.CHECKOUT)}
    manager = clients[Role.CRM_MANAGER]
    # ... until staff split them, saying why in words that name her phone.
    ok(manager.post(
        f"/api/v1/members/{member}/split/",
        {"identifiers": [f"member_card:{ZHOU_CARD}", "anonymous_id:till-7-session-4", "anonymous_id:till-7-session-5"],
         "reason": "Card MC-99-ZHOU is Zhou Min's; the till typed 138 0013 8000"},
        format="json",
    ))  # fmt: skip
    events_process_pending()
    zhou = EventResolution.objects.get(event__message_id="zhou-2").member_id
    assert zhou != member
    # Staff look her up by phone, and give her points with a note.
    ok(manager.get("/api/v1/members/", {"phone": "138 0013 8000"}))
    ok(manager.get(f"/api/v1/members/?email={quote(EMAIL)}"))
    ok(manager.post(
        f"/api/v1/members/{member}/points/adjust/",
        {"points": 25, "reason": "Goodwill: Xiuying Lindqvist called from 138-0013-8000"},
        format="json", HTTP_IDEMPOTENCY_KEY="desk-ticket-4411",
    ), 201)  # fmt: skip
    marketing = clients[Role.MARKETING]
    ok(marketing.post("/api/v1/tags/", {"key": "vip", "name": "VIP", "kind": "manual"}, format="json"), 201)
    ok(manager.post(f"/api/v1/members/{member}/tags/", {"tag": "vip"}, format="json"), 201)
    # Marketing: a segment she is in, pushed to a tool; a static list naming her; a coupon she uses.
    ok(marketing.post("/api/v1/segments/", {
        "key": "big-spenders", "name": "Big spenders", "kind": "dynamic",
        "rule": {"aggregate": "spend", "op": "gte", "value": 400},
    }, format="json"), 201)  # fmt: skip
    ok(
        marketing.post(
            "/api/v1/segments/", {"key": "invited", "name": "Invited", "kind": "static"}, format="json"
        ),
        201,
    )
    ok(marketing.put("/api/v1/segments/invited/members/", {"member_ids": [member]}, format="json"))
    receiver = EchoingReceiver()
    hook = ok(marketing.post("/api/v1/segments/big-spenders/webhooks/", {"url": receiver.url, "since": 0},
                             format="json"), 201).json()  # fmt: skip
    campaign = CouponCampaign.objects.create(
        name="Autumn 20 off 100",
        benefit="amount",
        value=Decimal(20),
        minimum_spend=Decimal(100),
        valid_from=timezone.now() - timedelta(days=1),
        valid_until=timezone.now() + timedelta(days=30),
    )
    ok(marketing.post(f"/api/v1/campaigns/{campaign.pk}/issue/", {"member_ids": [member]}, format="json"))
    code = Coupon.objects.get(campaign=campaign, member_id=member).code
    ok(clients[Role.CHECKOUT].post(f"/api/v1/coupons/{code}/redeem", {
        "order_id": "POS-5502", "channel": "pos", "order_total": "150.00", "member_id": member,
    }, format="json"), 201)  # fmt: skip
    events_process_pending()
    webhook_deliver(webhook_id=hook["id"])
    assert receiver.bodies
    assert receiver.bodies[0]["changes"][0]["member_id"] == member
    webhook = SegmentWebhook.objects.get(pk=hook["id"]).pk
    try:
        yield Life(member, zhou, sources, receiver, webhook, code, {str(k): v for k, v in clients.items()})
    finally:
        receiver.close()
