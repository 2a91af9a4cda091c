"""The Segment-compatible tracking API: every rule of the contract, over HTTP."""

import gzip
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from events.commerce import currency_was_defaulted
from events.contract import MAX_BATCH_BYTES, MAX_EVENT_BYTES
from events.models import Channel, Event, PendingEvent, RejectedEvent
from events.services import source_set_enabled
from tests.conftest import basic_auth
from tests.factories import SourceFactory, StaffTokenFactory, TrackMessageFactory

pytestmark = pytest.mark.django_db

MINIMAL_CALLS = {
    "identify": {"userId": "u-1", "traits": {"phone": "+86 138 0013 8000", "email": "Z@Example.com"}},
    "track": {"anonymousId": "a-1", "event": "Product Viewed", "properties": {"product_id": "p-1"}},
    "page": {"anonymousId": "a-1", "name": "Home", "properties": {"path": "/"}},
    "screen": {"userId": "u-1", "name": "Cart"},
    "alias": {"userId": "u-1", "previousId": "a-1"},
    "group": {"userId": "u-1", "groupId": "company-9", "traits": {"name": "ACME"}},
}


@pytest.mark.parametrize(("call", "body"), MINIMAL_CALLS.items())
def test_each_call_is_stored_with_its_fields(ingest, source, call, body):
    response = ingest(call, body | {"messageId": f"{call}-1"})

    assert response.status_code == 200, response.json()
    assert response.json() == {"success": True, "messageId": f"{call}-1", "duplicate": False}
    event = Event.objects.get(message_id=f"{call}-1")
    assert event.type == call
    assert event.source == source
    assert event.channel == Channel.WEB
    assert event.user_id == body.get("userId", "")
    assert event.anonymous_id == body.get("anonymousId", "")
    assert event.previous_id == body.get("previousId", "")
    assert event.group_id == body.get("groupId", "")
    assert event.event == body.get("event", "")
    assert event.name == body.get("name", "")
    assert event.traits == body.get("traits", {})
    assert event.properties == body.get("properties", {})
    assert PendingEvent.objects.filter(event=event).exists()  # the pipeline nudge runs only after the commit


def test_context_integrations_and_numeric_ids_are_kept(ingest):
    context = {
        "device": {"id": "dev-42", "type": "ios"},
        "externalIds": [{"id": "oX1", "type": "wechat_openid", "collection": "users", "encoding": "none"}],
        "traits": {"email": "a@b.cn"},
    }
    response = ingest(
        "track",
        {"userId": 12345, "event": "Product Viewed", "context": context, "integrations": {"All": False}},
    )

    assert response.status_code == 200
    event = Event.objects.get()
    assert event.user_id == "12345"
    assert event.context == context
    assert event.integrations == {"All": False}


def test_pos_event_records_channel_and_store(ingest, pos_source):
    response = ingest("track", TrackMessageFactory(), write_key=pos_source.write_key)

    assert response.status_code == 200
    event = Event.objects.get()
    assert (event.channel, event.store_code) == (Channel.POS, "S001")


def test_channel_comes_from_the_source_not_the_payload(ingest, source):
    ingest("track", TrackMessageFactory(context={"channel": "pos"}, channel="pos"))

    assert Event.objects.get().channel == Channel.WEB


def test_message_id_is_generated_when_absent(ingest):
    response = ingest("identify", {"userId": "u-1"})

    generated = response.json()["messageId"]
    assert uuid.UUID(generated)
    assert Event.objects.get().message_id == generated


# --- authentication -------------------------------------------------------------------


def test_write_key_in_body_is_accepted(ingest, source):
    response = ingest("identify", {"userId": "u-1", "writeKey": source.write_key}, write_key="")

    assert response.status_code == 200
    assert Event.objects.filter(source=source).count() == 1


@pytest.mark.parametrize(
    ("authorization", "body_key"),
    [
        pytest.param(None, None, id="no-credentials"),
        pytest.param(basic_auth("wk_unknown"), None, id="unknown-basic"),
        pytest.param(None, "wk_unknown", id="unknown-body"),
        pytest.param("Basic !!notbase64", None, id="garbled-basic"),
    ],
)
def test_missing_or_unknown_write_key_is_401(ingest, authorization, body_key):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    body = {"userId": "u-1"} | ({"writeKey": body_key} if body_key else {})

    response = ingest("identify", body, write_key="", **headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["code"] in {"not_authenticated", "authentication_failed"}
    assert not Event.objects.exists()


@pytest.mark.parametrize("key", [b"\\ud800", b"wk\\u0000"])
def test_a_write_key_that_is_no_text_is_401(ingest, key):
    response = ingest("identify", None, write_key="", raw=b'{"userId": "u-1", "writeKey": "' + key + b'"}')

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_disabled_source_key_stops_working_at_once(ingest, source):
    assert ingest("identify", {"userId": "u-1"}).status_code == 200

    source_set_enabled(source=source, enabled=False)

    assert ingest("identify", {"userId": "u-2"}).status_code == 401
    assert Event.objects.count() == 1


def test_staff_token_does_not_work_on_ingestion(ingest):
    token = StaffTokenFactory()

    response = ingest(
        "identify", {"userId": "u-1"}, write_key="", HTTP_AUTHORIZATION=f"Bearer {token.secret}"
    )

    assert response.status_code == 401


# --- timestamps -----------------------------------------------------------------------


def _stored_times(ingest, body, call="track"):
    before = datetime.now(UTC)
    assert ingest(call, body).status_code == 200
    after = datetime.now(UTC)
    return Event.objects.get(), before, after


def _device_clock(hours_fast: int) -> datetime:
    """What a device clock running ``hours_fast`` hours fast says now, to the second."""
    return (datetime.now(UTC) + timedelta(hours=hours_fast)).replace(microsecond=0)


def test_clock_skew_is_corrected_with_sent_at(ingest):
    # The device clock runs 2 hours fast: it says the event happened at T and was sent at
    # T + 5 min; we received it now, so it happened 5 minutes ago.
    sent = _device_clock(2)
    body = TrackMessageFactory(timestamp=(sent - timedelta(minutes=5)).isoformat(), sentAt=sent.isoformat())

    event, before, after = _stored_times(ingest, body)

    assert event.original_timestamp == sent - timedelta(minutes=5)
    assert event.sent_at == sent
    assert before <= event.received_at <= after
    assert event.timestamp == event.received_at - timedelta(minutes=5)


def test_timestamp_without_sent_at_is_trusted(ingest):
    event, _, _ = _stored_times(ingest, TrackMessageFactory(timestamp="2026-03-01T08:30:00+08:00"))

    assert event.timestamp == datetime(2026, 3, 1, 0, 30, tzinfo=UTC)


def test_naive_timestamp_is_read_as_utc(ingest):
    event, _, _ = _stored_times(ingest, TrackMessageFactory(timestamp="2026-03-01T08:30:00"))

    assert event.timestamp == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


def test_no_timestamp_means_received_at(ingest):
    body = TrackMessageFactory()
    del body["timestamp"]

    event, _, _ = _stored_times(ingest, body)

    assert event.timestamp == event.received_at
    assert event.original_timestamp is None


def test_batch_level_sent_at_and_context_apply_to_each_message(ingest):
    sent = _device_clock(2)
    body = {
        "sentAt": sent.isoformat(),
        "context": {"library": {"name": "analytics-python"}, "locale": "zh-CN"},
        "batch": [
            TrackMessageFactory(timestamp=(sent - timedelta(minutes=5)).isoformat()),
            TrackMessageFactory(
                timestamp=(sent - timedelta(minutes=1)).isoformat(), context={"locale": "en-US"}
            ),
        ],
    }

    response = ingest("batch", body)

    assert response.status_code == 200
    first, second = Event.objects.order_by("original_timestamp")
    assert second.timestamp - first.timestamp == timedelta(minutes=4)
    assert first.timestamp == first.received_at - timedelta(minutes=5)
    assert first.context == {"library": {"name": "analytics-python"}, "locale": "zh-CN"}
    assert second.context == {"library": {"name": "analytics-python"}, "locale": "en-US"}


# --- bad input: single calls ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"event": "Product Viewed"}, "userId", id="missing-ids"),
        pytest.param({"userId": "  ", "event": "Product Viewed"}, "userId", id="blank-id"),
        pytest.param({"userId": {"id": 1}, "event": "Product Viewed"}, "userId", id="object-id"),
        pytest.param({"userId": True, "event": "Product Viewed"}, "userId", id="bool-id"),
        pytest.param({"userId": "u", "event": ""}, "event", id="empty-event"),
        pytest.param({"userId": "u", "event": 7}, "event", id="numeric-event"),
        pytest.param({"userId": "u", "event": "X", "properties": []}, "properties", id="list-properties"),
        pytest.param({"userId": "u", "event": "X", "context": "web"}, "context", id="string-context"),
        pytest.param(
            {"userId": "u", "event": "X", "timestamp": "yesterday"}, "timestamp", id="bad-timestamp"
        ),
        pytest.param({"userId": "u" * 256, "event": "X"}, "userId", id="id-too-long"),
    ],
)
def test_invalid_single_call_is_400_with_field_and_kept(ingest, source, body, field):
    response = ingest("track", body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid_event"
    assert field in [error["field"] for error in payload["errors"]]
    assert not Event.objects.exists()
    rejected = RejectedEvent.objects.get()
    assert (rejected.source, rejected.endpoint, rejected.code) == (source, "track", "invalid_event")
    assert rejected.payload == body
    assert field in [error["field"] for error in rejected.errors]


@pytest.mark.parametrize(
    ("call", "body", "field"),
    [
        ("alias", {"userId": "u-1"}, "previousId"),
        ("alias", {"anonymousId": "a-1", "previousId": "a-0"}, "userId"),
        ("group", {"userId": "u-1"}, "groupId"),
    ],
)
def test_call_specific_required_fields(ingest, call, body, field):
    response = ingest(call, body)

    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"{not json", "invalid_json", id="invalid-json"),
        pytest.param(b"[1, 2]", "invalid_json", id="array-body"),
        pytest.param(b'{"userId": 1e999}', "invalid_json", id="infinite-number"),
        pytest.param(b'{"userId": "u", "event": "X", "traits": {"n": NaN}}', "invalid_json", id="nan"),
    ],
)
def test_unusable_body_is_400_and_kept_with_an_excerpt(ingest, source, raw, code):
    response = ingest("track", None, raw=raw)

    assert response.status_code == 400
    assert response.json()["code"] == code
    rejected = RejectedEvent.objects.get()
    assert rejected.code == code
    assert rejected.raw_excerpt == raw.decode()


def test_event_over_32_kb_is_400(ingest):
    body = TrackMessageFactory(properties={"blob": "x" * MAX_EVENT_BYTES})

    response = ingest("track", body)

    assert response.status_code == 400
    assert response.json()["code"] == "event_too_large"
    assert "32 KB" in response.json()["message"]
    assert RejectedEvent.objects.get().code == "event_too_large"


def test_nul_character_is_refused_not_a_server_error(ingest):
    response = ingest("identify", {"userId": "u\u0000-1"})

    assert response.status_code == 400
    assert "NUL" in response.json()["message"]
    assert RejectedEvent.objects.get().raw_excerpt == '{"userId":"u\\u0000-1"}'


def test_integer_beyond_64_bits_is_refused_not_rounded(ingest):
    raw = b'{"userId": "u-1", "traits": {"member_no": 123456789012345678901234567890}}'

    response = ingest("identify", None, raw=raw)

    assert response.status_code == 400
    assert "64-bit" in response.json()["message"]
    assert RejectedEvent.objects.get().payload["traits"]["member_no"] == 123456789012345678901234567890


def test_gzip_body_is_accepted(ingest):
    body = gzip.compress(orjson.dumps({"userId": "u-1", "traits": {"name": "Li Lei"}}))

    response = ingest("identify", None, raw=body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200
    assert Event.objects.get().traits == {"name": "Li Lei"}


def test_invalid_gzip_is_400(ingest):
    response = ingest("identify", None, raw=b"not gzip", HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_encoding"


def test_gzip_bomb_is_cut_at_the_limit(ingest):
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")

    response = ingest("batch", None, raw=bomb, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"


# --- commerce -------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["Order Completed", "Order Refunded"])
@pytest.mark.parametrize(
    ("properties", "field"),
    [
        pytest.param({"total": 10, "currency": "CNY"}, "properties.order_id", id="no-order-id"),
        pytest.param(
            {"order_id": " ", "total": 10, "currency": "CNY"}, "properties.order_id", id="blank-order"
        ),
        pytest.param(  # an order row holds 255 characters; its refresh once failed for ever
            {"order_id": "o" * 256, "total": 10, "currency": "CNY"}, "properties.order_id", id="long-order"
        ),
        pytest.param({"order_id": "o1", "currency": "CNY"}, "properties.total", id="no-amount"),
        pytest.param(
            {"order_id": "o1", "total": 10, "currency": ""}, "properties.currency", id="blank-currency"
        ),
        pytest.param(
            {"order_id": "o1", "total": 10, "currency": 156}, "properties.currency", id="numeric-currency"
        ),
        pytest.param(
            {"order_id": "o1", "total": 10, "currency": "RMB¥"}, "properties.currency", id="bad-currency"
        ),
        pytest.param(
            {"order_id": "o1", "total": "ten", "currency": "CNY"}, "properties.total", id="text-total"
        ),
        pytest.param(
            {"order_id": "o1", "total": True, "currency": "CNY"}, "properties.total", id="bool-total"
        ),
        pytest.param({"order_id": "o1", "total": -5, "currency": "CNY"}, "properties.total", id="negative"),
        pytest.param(
            {"order_id": "o1", "total": 5, "currency": "CNY", "products": [{"price": "x"}]},
            "properties.products[0].price",
            id="product-price",
        ),
        pytest.param(
            {"order_id": "o1", "total": 5, "currency": "CNY", "products": {"sku": 1}},
            "properties.products",
            id="products-not-list",
        ),
    ],
)
def test_order_events_require_order_id_amount_and_a_valid_currency(ingest, event, properties, field):
    response = ingest("track", {"userId": "u-1", "event": event, "properties": properties})

    assert response.status_code == 400
    assert field in [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    "properties",
    [
        {"order_id": "o1", "total": 99.5, "currency": "CNY"},
        {"order_id": 1001, "revenue": "88.00", "currency": "cny"},
        {
            "order_id": "o1",
            "total": 10,
            "currency": "CNY",
            "products": [{"sku": "a", "price": 5, "quantity": 2}],
        },
    ],
)
def test_valid_orders_are_accepted(ingest, properties):
    response = ingest("track", {"userId": "u-1", "event": "Order Completed", "properties": properties})

    assert response.status_code == 200, response.json()


@pytest.mark.parametrize("event", ["Order Completed", "Order Refunded"])
@pytest.mark.parametrize("currency", [{}, {"currency": None}], ids=["absent", "null"])
def test_an_order_without_currency_gets_its_sources_default_marked_as_defaulted(
    ingest, source, event, currency
):
    source.default_currency = "HKD"
    source.save()

    response = ingest("track", {"userId": "u-1", "messageId": "o-1", "event": event,
                                "properties": {"order_id": "o1", "total": 10, **currency},
                                "context": {"cdp": {"note": "kept"}}})  # fmt: skip

    assert response.status_code == 200, response.json()
    stored = Event.objects.get(message_id="o-1")
    assert stored.properties["currency"] == "HKD"
    assert stored.context["cdp"] == {"note": "kept", "currency_defaulted": True}
    assert currency_was_defaulted(stored.context)


def test_an_order_that_names_its_currency_is_not_marked(ingest):
    response = ingest("track", {"userId": "u-1", "messageId": "o-2", "event": "Order Completed",
                                "properties": {"order_id": "o2", "total": 10, "currency": "usd"}})  # fmt: skip

    assert response.status_code == 200
    stored = Event.objects.get(message_id="o-2")
    assert stored.properties["currency"] == "usd"
    assert not currency_was_defaulted(stored.context)


def test_in_a_batch_a_bad_currency_refuses_only_its_event(ingest):
    orders = [
        {"type": "track", "userId": "u-1", "messageId": f"b-{i}", "event": "Order Completed",
         "properties": {"order_id": f"o{i}", "total": 10, **currency}}
        for i, currency in enumerate([{}, {"currency": "RMB¥"}, {"currency": "CNY"}])
    ]  # fmt: skip

    response = ingest("batch", {"batch": orders})

    assert response.status_code == 200, response.json()
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["b-0", "b-2"]
    assert Event.objects.get(message_id="b-0").properties["currency"] == "CNY"  # the platform's default


def test_other_commerce_events_check_amount_types(ingest):
    response = ingest("track", {"userId": "u-1", "event": "Product Viewed", "properties": {"price": "n/a"}})

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "properties.price", "reason": "must be a number"}]


def test_custom_events_are_not_held_to_the_commerce_spec(ingest):
    response = ingest("track", {"userId": "u-1", "event": "Store Visited", "properties": {"total": "n/a"}})

    assert response.status_code == 200


# --- batches --------------------------------------------------------------------------


def test_batch_keeps_valid_events_and_lists_each_rejection(ingest, source):
    batch = [
        TrackMessageFactory(messageId="ok-1"),
        {"type": "track", "messageId": "bad-1", "event": "X"},
        TrackMessageFactory(messageId="ok-2"),
        {"type": "teleport", "messageId": "bad-2", "userId": "u"},
        "not an object",
        TrackMessageFactory(messageId="bad-3", properties={"blob": "x" * MAX_EVENT_BYTES}),
    ]

    response = ingest("batch", {"batch": batch})

    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["accepted"], body["duplicates"]) == (True, 2, 0)
    assert [(r["index"], r["messageId"], r["code"]) for r in body["rejected"]] == [
        (1, "bad-1", "invalid_event"),
        (3, "bad-2", "invalid_event"),
        (4, "", "invalid_event"),
        (5, "bad-3", "event_too_large"),
    ]
    assert body["rejected"][0]["errors"] == [
        {"field": "userId", "reason": "userId or anonymousId is required"}
    ]
    assert body["rejected"][1]["errors"][0]["field"] == "type"
    assert set(Event.objects.values_list("message_id", flat=True)) == {"ok-1", "ok-2"}
    kept = RejectedEvent.objects.order_by("batch_index")
    assert [(r.batch_index, r.endpoint) for r in kept] == [
        (1, "batch"),
        (3, "batch"),
        (4, "batch"),
        (5, "batch"),
    ]
    assert kept[0].payload == batch[1]
    assert kept[2].payload == "not an object"
    assert kept[3].payload is None
    assert kept[3].raw_excerpt.startswith('{"type":"track"')


def test_batch_with_no_valid_event_is_400(ingest):
    response = ingest("batch", {"batch": [{"type": "track"}, {"type": "identify"}]})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_batch"
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    assert RejectedEvent.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [({"batch": []}, "batch"), ({}, "batch"), ({"batch": {"type": "track"}}, "batch")],
)
def test_malformed_batch_is_400(ingest, body, field):
    response = ingest("batch", body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_batch"
    assert response.json()["errors"][0]["field"] == field
    assert RejectedEvent.objects.get().code == "invalid_batch"


def test_batch_over_500_kb_is_400(ingest):
    batch = [TrackMessageFactory(properties={"blob": "x" * 30_000}) for _ in range(18)]
    raw = orjson.dumps({"batch": batch})
    assert len(raw) > MAX_BATCH_BYTES

    response = ingest("batch", None, raw=raw)

    assert response.status_code == 400
    assert response.json()["code"] == "request_too_large"
    assert "500 KB" in response.json()["message"]
    assert not Event.objects.exists()
    assert RejectedEvent.objects.get().code == "request_too_large"


def test_mobile_batch_path_is_served(ingest):
    assert ingest("b", {"batch": [TrackMessageFactory()]}).status_code == 200


# --- idempotency and efficiency ------------------------------------------------------


def test_duplicate_message_id_is_stored_once(ingest):
    body = TrackMessageFactory(messageId="dup-1")

    first, second = ingest("track", body), ingest("track", body)

    assert first.json()["duplicate"] is False
    assert (second.status_code, second.json()["duplicate"]) == (200, True)
    assert Event.objects.filter(message_id="dup-1").count() == 1


def test_duplicates_within_and_across_batches(ingest):
    batch = [
        TrackMessageFactory(messageId="d-1"),
        TrackMessageFactory(messageId="d-1"),
        TrackMessageFactory(),
    ]

    first = ingest("batch", {"batch": batch}).json()
    second = ingest("batch", {"batch": batch}).json()

    assert (first["accepted"], first["duplicates"]) == (2, 1)
    assert (second["accepted"], second["duplicates"]) == (0, 3)
    assert Event.objects.count() == 2


def test_same_message_id_from_another_source_is_another_event(ingest):
    other = SourceFactory()
    body = TrackMessageFactory(messageId="shared-id")

    ingest("track", body)
    ingest("track", body, write_key=other.write_key)

    assert Event.objects.filter(message_id="shared-id").count() == 2


def test_a_batch_costs_a_fixed_number_of_queries(ingest, django_assert_num_queries):
    small = {"batch": [TrackMessageFactory() for _ in range(2)]}
    large = {"batch": [TrackMessageFactory() for _ in range(400)] + [{"type": "track"}] * 3}

    # source lookup, savepoint, insert, (rejections), release: the same for 2 or 400 events
    with django_assert_num_queries(4):
        assert ingest("batch", small).status_code == 200
    with django_assert_num_queries(5):
        assert ingest("batch", large).json()["accepted"] == 400


# --- bounded values: refused at the door, per event, with the field and reason -------------


def _fields(rejection: dict) -> list[str]:
    return [error["field"] for error in rejection["errors"]]


def _batch_with(bad: dict | bytes) -> bytes:
    """A batch of two good events around ``bad`` (a message, or its raw JSON)."""
    raw_bad = bad if isinstance(bad, bytes) else orjson.dumps(bad)
    good = [orjson.dumps(TrackMessageFactory(messageId=f"good-{n}")) for n in (1, 2)]
    return b'{"batch": [' + good[0] + b", " + raw_bad + b", " + good[1] + b"]}"


def _assert_only_the_bad_one_refused(response, code: str) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1]
    assert body["rejected"][0]["code"] == code
    assert set(Event.objects.values_list("message_id", flat=True)) == {"good-1", "good-2"}
    assert RejectedEvent.objects.get().code == code
    return body["rejected"][0]


@pytest.mark.parametrize(
    ("times", "field"),
    [
        pytest.param({"timestamp": "9999-12-31T23:59:59-10:00"}, "timestamp", id="year-10000-in-utc"),
        pytest.param({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp", id="bc-in-utc"),
        pytest.param({"timestamp": "1999-12-31T23:59:59Z"}, "timestamp", id="before-2000"),
        pytest.param({"originalTimestamp": "2999-01-01T00:00:00Z"}, "originalTimestamp", id="original"),
        pytest.param({"sentAt": "1970-01-01T00:00:00Z"}, "sentAt", id="sent-at"),
    ],
)
def test_time_outside_the_window_is_refused_with_its_field(ingest, times, field):
    body = TrackMessageFactory(**times)
    body.pop("timestamp", None) if "timestamp" not in times else None

    response = ingest("track", body)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_event"
    assert field in _fields(response.json())
    assert "outside the accepted window" in response.json()["errors"][0]["reason"]
    assert not Event.objects.exists()
    assert field in [error["field"] for error in RejectedEvent.objects.get().errors]


def test_time_outside_the_window_sinks_only_its_event(ingest):
    bad = TrackMessageFactory(messageId="bad", timestamp="9999-12-31T23:59:59-10:00")

    rejected = _assert_only_the_bad_one_refused(ingest("batch", None, raw=_batch_with(bad)), "invalid_event")

    assert (rejected["messageId"], _fields(rejected)) == ("bad", ["timestamp"])


def test_the_corrected_time_is_checked_too(ingest):
    # Both times are in the window, but the device's clock offset they imply (sent 20 years
    # before the event) would put the event 20 years after its arrival.
    body = TrackMessageFactory(timestamp="2025-01-01T00:00:00Z", sentAt="2005-01-01T00:00:00Z")

    response = ingest("track", body)

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "sentAt"
    assert "corrects timestamp" in response.json()["errors"][0]["reason"]


def test_the_window_edges_are_inclusive_and_configurable(ingest, settings):
    earliest = "2000-01-01T00:00:00+00:00"
    assert ingest("track", TrackMessageFactory(timestamp=earliest)).status_code == 200
    ahead = (datetime.now(UTC) + timedelta(days=6, hours=23)).isoformat()
    assert ingest("track", TrackMessageFactory(timestamp=ahead)).status_code == 200
    beyond = (datetime.now(UTC) + timedelta(days=7, minutes=1)).isoformat()
    assert ingest("track", TrackMessageFactory(timestamp=beyond)).status_code == 400

    settings.EVENT_TIMESTAMP_EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
    settings.EVENT_TIMESTAMP_DAYS_AHEAD = 30

    assert ingest("track", TrackMessageFactory(timestamp=earliest)).status_code == 400
    assert ingest("track", TrackMessageFactory(timestamp=beyond)).status_code == 200


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        pytest.param({"total": 1e308}, "properties.total", id="1e308"),
        pytest.param({"total": 3_000_000_000}, "properties.total", id="3e9"),
        pytest.param({"total": 99_999_999_999_999}, "properties.total", id="99999999999999"),
        pytest.param({"total": "100000000.01"}, "properties.total", id="just-beyond-as-text"),
        pytest.param({"total": 10, "revenue": 2e9}, "properties.revenue", id="revenue"),
        pytest.param({"total": 10, "discount": -1e9}, "properties.discount", id="negative-discount"),
        pytest.param({"total": 10, "tax": "1e400"}, "properties.tax", id="huge-exponent-text"),
        pytest.param({"total": "1e999999999"}, "properties.total", id="beyond-decimal-exponent"),
        pytest.param({"total": 5e-324}, "properties.total", id="5e-324"),
        pytest.param({"total": "1e-999999"}, "properties.total", id="a million places"),
        pytest.param({"total": "0." + "0" * 20 + "1"}, "properties.total", id="21-places"),
        pytest.param(
            {"total": 10, "products": [{"sku": "a", "price": 10, "quantity": 1_000_001}]},
            "properties.products[0].quantity",
            id="quantity",
        ),
        pytest.param(
            {"total": 10, "products": [{"sku": "a", "price": 1e12, "quantity": 1}]},
            "properties.products[0].price",
            id="price",
        ),
    ],
)
def test_commerce_amounts_beyond_the_bounds_are_refused(ingest, properties, field):
    order = {"order_id": "o-1", "currency": "CNY"} | properties

    response = ingest("track", {"userId": "u-1", "event": "Order Completed", "properties": order})

    assert response.status_code == 400
    assert field in _fields(response.json())
    assert RejectedEvent.objects.get().errors[0]["field"] == field


def test_commerce_amounts_at_the_bounds_are_accepted(ingest):
    order = {
        "order_id": "o-1",
        "currency": "CNY",
        "total": 100_000_000,
        "discount": "-100000000",
        "tax": 0.30000000000000004,
        "shipping": "0." + "0" * 19 + "1",
        "products": [{"sku": "a", "price": 100, "quantity": 1_000_000}],
    }

    response = ingest("track", {"userId": "u-1", "event": "Order Completed", "properties": order})

    assert response.status_code == 200, response.json()


def test_nesting_past_the_limit_is_refused_as_too_deep(ingest):
    deep = b'{"userId": "u-1", "traits": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}"

    response = ingest("identify", None, raw=deep)

    assert response.status_code == 400
    assert response.json()["code"] == "too_deep"
    assert "64 levels" in response.json()["message"]
    assert RejectedEvent.objects.get().code == "too_deep"


@pytest.mark.parametrize("depth", [65, 300, 3_000])
def test_an_event_too_deep_beside_a_long_integer_sinks_only_itself(ingest, depth):
    bad = (
        b'{"type": "identify", "messageId": "bad", "userId": "u", "traits": {"n": 123456789012345678901234, "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )

    rejected = _assert_only_the_bad_one_refused(ingest("batch", None, raw=_batch_with(bad)), "too_deep")

    assert "64 levels" in rejected["message"]


def test_a_lone_surrogate_is_refused_with_its_field(ingest):
    raw = b'{"userId": "u-1", "traits": {"name": "\\ud800", "n": 123456789012345678901234}}'

    response = ingest("identify", None, raw=raw)

    assert response.status_code == 400
    assert "surrogate" in response.json()["message"]
    assert "traits.name" in _fields(response.json())
    rejected = RejectedEvent.objects.get()
    assert rejected.payload is None
    assert "\\ud800" in rejected.raw_excerpt


def test_a_lone_surrogate_beside_a_long_integer_sinks_only_its_event(ingest):
    bad = b'{"type": "identify", "messageId": "bad\\udfff", "userId": "u", "traits": {"name": "\\ud800", "n": 123456789012345678901234}}'

    rejected = _assert_only_the_bad_one_refused(ingest("batch", None, raw=_batch_with(bad)), "invalid_event")

    assert "surrogate" in rejected["message"]
    assert rejected["messageId"] == "bad\\udfff"
    assert set(_fields(rejected)) == {"traits.name", "traits.n", "messageId"}


def test_a_real_nul_sinks_only_its_event_and_names_its_field(ingest):
    bad = TrackMessageFactory(messageId="bad", properties={"path": "C:\u0000dir"})

    rejected = _assert_only_the_bad_one_refused(ingest("batch", None, raw=_batch_with(bad)), "invalid_event")

    assert "NUL" in rejected["message"]
    assert _fields(rejected) == ["properties.path"]


def test_a_backslash_before_u0000_is_text_not_a_nul(ingest):
    path = "C:\\u0000dir"  # backslash, 'u', four zeros: what a Windows path may well contain
    body = TrackMessageFactory(properties={"path": path, "other": "\\\\u0000"})

    response = ingest("track", body)

    assert response.status_code == 200, response.json()
    assert Event.objects.get().properties["path"] == path


@pytest.mark.parametrize(
    ("context", "code"),
    [
        pytest.param({"ip": "1.2.3.4\u0000"}, "invalid_batch", id="nul"),
        pytest.param(b'{"library": "\\ud800"}', "invalid_batch", id="surrogate"),
        pytest.param(b'{"n": 123456789012345678901234}', "invalid_batch", id="long-integer"),
        pytest.param(b'{"a": ' * 300 + b"1" + b"}" * 300, "too_deep", id="300-deep"),
        pytest.param(b'{"a": ' * 64 + b"1" + b"}" * 64, "too_deep", id="too-deep-once-merged"),
        pytest.param(b"[" * 3_000 + b"]" * 3_000, "too_deep", id="3000-deep"),
        pytest.param({"blob": "x" * MAX_EVENT_BYTES}, "invalid_batch", id="over-32-kb"),
    ],
)
@pytest.mark.parametrize("member", ["context", "integrations"])
def test_batch_level_members_get_an_events_checks(ingest, member, context, code):
    raw_context = context if isinstance(context, bytes) else orjson.dumps(context)
    raw = (
        b'{"batch": ['
        + orjson.dumps(TrackMessageFactory())
        + b'], "'
        + member.encode()
        + b'": '
        + raw_context
        + b"}"
    )

    response = ingest("batch", None, raw=raw)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert response.json()["errors"][0]["field"].startswith(member)
    assert not Event.objects.exists()
    assert RejectedEvent.objects.get().code == code


def test_the_32_kb_limit_applies_to_the_event_as_stored(ingest):
    # 400 events under a 30 KB context: 421 KB sent, 12 MB if each event were stored with it.
    context = {"blob": "x" * 30_000}
    small = TrackMessageFactory(messageId="small")
    large = TrackMessageFactory(messageId="large", properties={"blob": "y" * 3_000})
    batch = [small, large] + [TrackMessageFactory(properties={"blob": "z" * 3_000}) for _ in range(100)]

    response = ingest("batch", {"context": context, "batch": batch})

    body = response.json()
    assert body["accepted"] == 1
    assert len(body["rejected"]) == 101
    assert {r["code"] for r in body["rejected"]} == {"event_too_large"}
    assert "as stored with the batch's context" in body["rejected"][0]["message"]
    stored = Event.objects.get()
    assert (stored.message_id, stored.context) == ("small", context)
    assert max(len(r.raw_excerpt) for r in RejectedEvent.objects.all()) <= 2048


@pytest.mark.parametrize(
    "bad",
    [b'"nul\\u0000"', b'"\\ud800"', b"123456789012345678901234567890", b'[["C:\\u0000"]]', b'"C:\\\\u0000"'],
)
def test_an_event_that_is_no_object_sinks_only_itself_whatever_it_holds(ingest, bad):
    rejected = _assert_only_the_bad_one_refused(ingest("batch", None, raw=_batch_with(bad)), "invalid_event")

    assert rejected["message"] == "An event must be a JSON object."
    kept = RejectedEvent.objects.get()
    assert kept.payload is not None or kept.raw_excerpt


@pytest.mark.parametrize("key", [b"\\ud800", b"nul\\u0000"])
def test_a_batch_member_named_with_no_text_is_named_printably(ingest, key):
    raw = b'{"batch": [{"type": "track"}], "' + key + b'": ' + b"[" * 300 + b"]" * 300 + b"}"

    response = ingest("batch", None, raw=raw)

    assert response.status_code == 400
    assert response.json()["code"] == "too_deep"
    assert response.json()["errors"][0]["field"] == key.decode()
    assert RejectedEvent.objects.get().errors[0]["field"] == key.decode()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b'{"type": "identify", "userId": "u", "n": ' + b"7" * 5_000 + b"}", id="5000-digits"),
        pytest.param(b'{"type": "identify", "userId": "u", "n": NaN}', id="nan"),
        pytest.param(b'{"type": "identify", "userId": "u", "n": 1e999}', id="infinite"),
    ],
)
def test_an_event_no_parser_reads_sinks_only_itself(ingest, bad):
    rejected = _assert_only_the_bad_one_refused(ingest("batch", None, raw=_batch_with(bad)), "invalid_json")

    assert rejected["message"].startswith("The event is not valid JSON")
    assert RejectedEvent.objects.get().raw_excerpt.startswith('{"type": "identify"')
