"""Every staff API route answers malformed input in the one error shape (``cdp.errors``): a
malformed or impossible id is a 404, an out-of-range number or a too-deep body a 400, never a
500. The routes are found by walking the URL resolver, so a new route is covered as it lands."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.exceptions import NoReverseMatch
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.json_limits import MAX_JSON_DEPTH
from cdp.services import token_issue
from events.pipeline import events_process_pending
from identity.models import EventResolution
from members.loyalty.models import CouponCampaign, PointsEntry
from members.loyalty.points import MAX_POINTS_MOVE
from members.loyalty.services import PointsRefused, points_adjust, points_redeem
from members.segments.definitions.segments import segment_create
from members.segments.definitions.writes import DefinitionRefused
from members.segments.models import Segment
from members.segments.rules.parse import RuleInvalid, rule_parse
from tests.factories import EventFactory, SourceFactory

pytestmark = pytest.mark.django_db

STAFF_PREFIX = "/api/v1/"
_SENTINELS = ("zzsentinelzz", 987654321987)


@dataclass(frozen=True)
class StaffRoute:
    name: str
    kwargs: tuple[str, ...]
    methods: tuple[str, ...]

    def url(self, **values: str) -> str:
        """The route's URL with each of ``kwargs`` replaced by the raw text given (which need
        not match the route's converter)."""
        for sentinel in _SENTINELS:
            try:
                url = reverse(self.name, kwargs=dict.fromkeys(self.kwargs, sentinel))
            except NoReverseMatch:
                continue
            parts = url.split(str(sentinel))
            assert len(parts) == len(self.kwargs) + 1, url
            built = parts[0]
            for name, rest in zip(self.kwargs, parts[1:], strict=True):
                built += values.get(name, str(sentinel)) + rest
            return built
        raise AssertionError(f"cannot build {self.name}")


def _methods(callback: object) -> tuple[str, ...]:
    actions = getattr(callback, "actions", None)
    if actions:  # a viewset route: the methods it maps
        return tuple(sorted(method for method in actions if method not in ("head", "options")))
    view = callback.cls  # type: ignore[attr-defined]  # as_view() sets it on the view function
    return tuple(
        sorted(
            method
            for method in view.http_method_names
            if method not in ("head", "options") and hasattr(view, method)
        )
    )


def _walk(patterns: list, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


def staff_routes() -> list[StaffRoute]:
    routes = {}
    for text, pattern in _walk(get_resolver().url_patterns):
        if not text.lstrip("^").startswith(STAFF_PREFIX.strip("/")) or pattern.name is None:
            continue
        kwargs = tuple(pattern.pattern.regex.groupindex)
        if kwargs and "format" not in kwargs:
            routes[pattern.name] = StaffRoute(pattern.name, kwargs, _methods(pattern.callback))
    return sorted(routes.values(), key=lambda route: route.name)


#: Ids no row can have: not a number, a number written otherwise, beyond bigint or too long
#: for int(), control characters, unicode digits ("²".isdigit() is true but int("²") fails).
MALFORMED_IDS = [
    "abc", "-1", "1.5", "1e3", "0x1f", "%C2%B2", "%D9%A1", "%201", "99999999999999999999999",
    "9223372036854775808", "1" * 5000, "%00", "a%00b", "x" * 300,
]  # fmt: skip
#: Path parameters that are free text (a coupon code): malformed is what no row can hold.
FREE_TEXT = {"code": ["%00", "a%00b", "%01", "x" * 300, "%20"]}

ROUTES = staff_routes()


def test_the_walk_finds_the_staff_routes():
    names = {route.name for route in ROUTES}
    # One of each kind: a router detail action, a path() with <str:>, a re_path, an <int:> and slug.
    assert {"source-disable", "member-detail", "member-points-adjust", "coupon-redeem",
            "campaign-issue", "segment-webhook", "member-tag"} <= names  # fmt: skip


@pytest.fixture
def admin_client() -> APIClient:
    user = get_user_model().objects.create_superuser(username="root-robust", password="unused-x1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user, name='test').secret}")
    return client


def _cases() -> Iterator:
    for route in ROUTES:
        for method in route.methods:
            for name in route.kwargs:
                yield pytest.param(route, method, name, id=f"{route.name}-{method}-{name}")


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"code", "message", "errors"}, body
    return body


@pytest.mark.parametrize(("route", "method", "kwarg"), list(_cases()))
def test_a_malformed_id_is_a_json_404_on_every_staff_route(admin_client, route, method, kwarg):
    for malformed in FREE_TEXT.get(kwarg, MALFORMED_IDS):
        url = route.url(**{kwarg: malformed})
        response = admin_client.generic(method.upper(), url, b"{}", content_type="application/json")
        body = assert_error_shape(response, 404)
        assert body["code"] == "not_found", (url, body)


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_an_unknown_staff_path_is_a_json_404(admin_client, method):
    response = admin_client.generic(method, "/api/v1/no-such-thing/", b"{}", content_type="application/json")

    assert assert_error_shape(response, 404)["code"] == "not_found"


# --- numbers beyond what the database stores: a 400 naming the field --------------------------


@pytest.fixture
def member_id() -> int:
    event = EventFactory.create(source=SourceFactory(), user_id="robust-1")
    events_process_pending()
    return EventResolution.objects.get(event=event).member_id


def post(client: APIClient, url: str, body: object, **headers: Any):
    # The standard library writes integers past 64 bits (orjson refuses them).
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


@pytest.mark.parametrize(
    "points", [2**31, -(2**31), 2**63, 10**30, MAX_POINTS_MOVE + 1, -MAX_POINTS_MOVE - 1]
)
def test_a_points_adjustment_past_the_bound_is_a_400_naming_points(admin_client, member_id, points):
    response = post(
        admin_client, f"/api/v1/members/{member_id}/points/adjust/", {"points": points, "reason": "typo"},
        HTTP_IDEMPOTENCY_KEY=f"adj-{points}",
    )  # fmt: skip

    body = assert_error_shape(response, 400)
    assert [e["field"] for e in body["errors"]] == ["points"]
    assert not PointsEntry.objects.filter(member_id=member_id).exists()


def test_a_points_adjustment_at_the_bound_is_written(admin_client, member_id):
    response = post(
        admin_client, f"/api/v1/members/{member_id}/points/adjust/",
        {"points": MAX_POINTS_MOVE, "reason": "the largest move"}, HTTP_IDEMPOTENCY_KEY="adj-max",
    )  # fmt: skip

    assert response.status_code == 201, response.content
    assert admin_client.get(f"/api/v1/members/{member_id}/points/").json()["balance"] == MAX_POINTS_MOVE


def test_the_services_refuse_a_move_past_the_bound_too(member_id):
    from members.selectors import member_resolve

    member, user = member_resolve(member_id=member_id), get_user_model().objects.create(username="svc")
    with pytest.raises(PointsRefused) as adjusted:
        points_adjust(member=member, points=MAX_POINTS_MOVE + 1, reason="x", idempotency_key="k1", user=user)
    with pytest.raises(PointsRefused) as redeemed:
        points_redeem(
            member=member, points=2**40, order_id="o", channel="pos", idempotency_key="k2", user=user
        )
    assert (adjusted.value.field, adjusted.value.status) == ("points", 400)
    assert (redeemed.value.field, redeemed.value.status) == ("points", 400)


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/v1/members/{member}/points/redeem/", {"points": 2**31, "order_id": "o-1", "channel": "pos"}, "points"),
        ("/api/v1/coupons/NOPE/redeem", {"order_id": "o-1", "channel": "pos", "order_total": "10", "member_id": 2**63}, "member_id"),
        ("/api/v1/campaigns/{campaign}/issue/", {"member_ids": [1, 2**64]}, "member_ids.1"),
        ("/api/v1/segments/vip-list/webhooks/", {"url": "https://example.com/hook", "since": 2**63}, "since"),
    ],
)  # fmt: skip
def test_an_id_or_number_past_bigint_in_a_body_is_a_400_naming_it(admin_client, member_id, url, body, field):
    campaign = CouponCampaign.objects.create(
        name="c", benefit="amount", value=5, currency="CNY", valid_from=timezone.now(),
        valid_until=timezone.now() + timedelta(days=1),
    )  # fmt: skip
    Segment.objects.create(key="vip-list", name="VIP list", kind=Segment.Kind.STATIC)

    response = post(
        admin_client, url.format(member=member_id, campaign=campaign.pk), body, HTTP_IDEMPOTENCY_KEY="k"
    )

    body = assert_error_shape(response, 400)
    assert field in [e["field"] for e in body["errors"]], body


def test_a_static_list_of_member_ids_past_bigint_is_a_400(admin_client):
    Segment.objects.create(key="vip-list", name="VIP list", kind=Segment.Kind.STATIC)

    response = admin_client.put(
        "/api/v1/segments/vip-list/members/",
        json.dumps({"member_ids": [2**63]}),
        content_type="application/json",
    )

    assert assert_error_shape(response, 400)["errors"][0]["field"] == "member_ids.0"


@pytest.mark.parametrize("value", ["%C2%B2", "1" * 5000, "%00", "-1"])
def test_a_malformed_number_in_a_query_is_a_400(admin_client, member_id, value):
    response = admin_client.get(f"/api/v1/members/{member_id}/points/?page_size={value}")

    assert assert_error_shape(response, 400)["errors"][0]["field"] == "page_size"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/rejected-events/?code=a%00b",
        "/api/v1/rejected-events/?source=%C2%B2",
        "/api/v1/members/?q=a%00b",
    ],
)
def test_text_in_a_query_that_no_row_can_hold_is_never_a_500(admin_client, url):
    response = admin_client.get(url)

    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert_error_shape(response, 400)


# --- bodies nested too deep: a 400 with its own code -----------------------------------------


def nested(depth: int, inner: object = 1) -> bytes:
    return b"[" * depth + orjson.dumps(inner) + b"]" * depth


def test_a_50000_deep_body_on_points_redeem_is_a_400_too_deep(admin_client, member_id):
    raw = b'{"points": 1, "order_id": "o", "channel": "pos", "x": ' + nested(50_000) + b"}"

    response = admin_client.post(
        f"/api/v1/members/{member_id}/points/redeem/", raw, content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="deep",
    )  # fmt: skip

    assert assert_error_shape(response, 400)["code"] == "too_deep"


def test_a_body_at_the_nesting_limit_is_read(admin_client, member_id):
    # The body is level 1, "x" holds MAX_JSON_DEPTH - 1 more: the deepest accepted.
    raw = b'{"points": 5, "reason": "deep but fine", "x": ' + nested(MAX_JSON_DEPTH - 1, None) + b"}"

    response = admin_client.post(
        f"/api/v1/members/{member_id}/points/adjust/", raw, content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="deep-ok",
    )  # fmt: skip

    assert response.status_code == 201, response.content


def test_a_body_that_is_not_json_is_a_400_invalid_json(admin_client, member_id):
    response = admin_client.post(
        f"/api/v1/members/{member_id}/points/adjust/", b'{"points": NaN}', content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="nan",
    )  # fmt: skip

    assert assert_error_shape(response, 400)["code"] == "invalid_json"


def deep_rule(depth: int) -> dict:
    rule: dict = {"trait": "city", "op": "eq", "value": "Shanghai"}
    for _ in range(depth):
        rule = {"not": rule}
    return rule


@pytest.mark.parametrize("depth", [400, 5000])
def test_a_segment_rule_nested_400_deep_is_a_400(admin_client, depth):
    leaf = b'{"trait": "city", "op": "eq", "value": "Shanghai"}'
    rule = b'{"not": ' * depth + leaf + b"}" * depth
    raw = b'{"key": "deep", "name": "Deep", "kind": "dynamic", "rule": ' + rule + b"}"

    response = admin_client.post("/api/v1/segments/", raw, content_type="application/json")

    assert assert_error_shape(response, 400)["code"] == "too_deep"
    assert not Segment.objects.filter(key="deep").exists()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 400, 100_000])
def test_a_rule_nested_past_the_limit_is_refused_wherever_it_comes_from(depth):
    with pytest.raises(RuleInvalid) as refused:
        rule_parse(deep_rule(depth))
    assert [path for path, _ in refused.value.errors] == [""]
    assert "levels deep" in refused.value.errors[0][1]

    with pytest.raises(DefinitionRefused) as by_service:
        segment_create(key="deep", name="Deep", kind="dynamic", rule=deep_rule(depth))
    assert [field for field, _ in by_service.value.errors] == ["rule"]


def test_a_rule_just_within_the_limit_parses():
    assert rule_parse(deep_rule(MAX_JSON_DEPTH - 1)) is not None
