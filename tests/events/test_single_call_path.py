"""The single-call path (``events.api.single``): a single call that will be accepted costs one
statement (its source's card cached per process and checked by that statement), answers as the
DRF view does, and leaves everything else to the view; a card gone stale (source disabled,
renamed, another default currency) is noticed by the very next request."""

import gzip
from datetime import UTC, datetime

import orjson
import psycopg
import pytest
from django.db import DataError, connection, transaction

from cdp.db import statement_run
from events.commerce import currency_was_defaulted
from events.models import Event, PendingEvent, RejectedEvent
from events.services import source_set_default_currency, source_set_enabled
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db

TRACK = {"userId": "u-1", "event": "Product Viewed", "properties": {"sku": "A-1"}}
ORDER = {"userId": "u-1", "event": "Order Completed", "properties": {"order_id": "o-1", "total": 10}}


def test_a_single_call_costs_one_statement_once_its_source_is_known(ingest, django_assert_num_queries):
    ingest("track", TRACK)  # reads the source's card

    with django_assert_num_queries(1):
        answer = ingest("track", {**TRACK, "messageId": "m-1"})

    assert answer.status_code == 200
    assert answer.json() == {"success": True, "messageId": "m-1", "duplicate": False}
    assert answer["Content-Type"] == "application/json"
    assert int(answer["Content-Length"]) == len(answer.content)
    assert "Allow" not in answer  # answered before DRF (whose views add it)
    assert PendingEvent.objects.filter(event__message_id="m-1").exists()  # queued by the trigger


def test_a_repeat_is_answered_as_a_duplicate_and_stored_once(ingest):
    first = ingest("page", {"anonymousId": "a-1", "name": "Home", "messageId": "m-2"})
    again = ingest("page", {"anonymousId": "a-1", "name": "Home", "messageId": "m-2"})

    assert first.json()["duplicate"] is False
    assert again.json() == {"success": True, "messageId": "m-2", "duplicate": True}
    assert Event.objects.filter(message_id="m-2").count() == 1


def test_what_this_path_does_not_accept_is_answered_by_the_view(ingest, source):
    ingest("track", TRACK)

    refused = ingest("track", {"userId": "u-1"})  # no event name
    unknown = ingest("track", TRACK, write_key="wk_nobody")
    in_body = ingest("track", {**TRACK, "writeKey": source.write_key}, write_key="")

    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "event"
    assert RejectedEvent.objects.filter(source=source, code=refused.json()["code"]).count() == 1
    assert unknown.status_code == 401
    assert in_body.status_code == 200
    assert "Allow" in in_body  # the view's answer
    assert Event.objects.filter(source=source).count() == 2


def test_a_disabled_source_stops_at_once_though_its_card_is_cached(ingest, source):
    assert ingest("track", TRACK).status_code == 200

    source_set_enabled(source=source, enabled=False)
    refused = ingest("track", TRACK)
    source_set_enabled(source=source, enabled=True)

    assert refused.status_code == 401
    assert ingest("track", TRACK).status_code == 200
    assert Event.objects.filter(source=source).count() == 2


def test_a_new_default_currency_prices_the_next_order(ingest, source):
    source_set_default_currency(source=source, currency="CNY")
    assert ingest("track", {**ORDER, "messageId": "o-cny"}).status_code == 200

    source_set_default_currency(source=source, currency="EUR")
    assert ingest("track", {**ORDER, "messageId": "o-eur"}).status_code == 200

    stored = {event.message_id: event for event in Event.objects.all()}
    assert (stored["o-cny"].properties["currency"], stored["o-eur"].properties["currency"]) == ("CNY", "EUR")
    assert all(currency_was_defaulted(event.context) for event in stored.values())


def test_another_source_with_the_same_message_id_is_another_event(ingest):
    other = SourceFactory()
    body = {**TRACK, "messageId": "shared"}

    answers = [ingest("track", body).json(), ingest("track", body, write_key=other.write_key).json()]

    assert [a["duplicate"] for a in answers] == [False, False]
    assert Event.objects.filter(message_id="shared").count() == 2


def test_gzip_and_oversized_bodies_go_to_the_view(ingest):
    zipped = ingest("track", None, raw=gzip.compress(orjson.dumps(TRACK)), HTTP_CONTENT_ENCODING="gzip")
    large = ingest("track", {**TRACK, "properties": {"blob": "x" * 40_000}})

    assert zipped.status_code == 200
    assert large.status_code == 400
    assert large.json()["code"] == "event_too_large"


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_is_replaced_for_an_idempotent_statement():
    connection.ensure_connection()
    connection.connection.close()  # as if PostgreSQL had restarted meanwhile

    assert statement_run("SELECT %b::int + 1", [41]) == [(42,)]


@pytest.mark.django_db(transaction=True)
def test_a_statement_outside_a_transaction_binds_every_type_and_null_as_a_cursor_would():
    """The single-event statement runs on libpq directly, prepared per parameter types: a NULL,
    a small or a large integer, a timestamp and JSON in the same place, call after call."""
    sql = "SELECT %b::bigint, %b::text, %b::timestamptz, %b::jsonb ->> 'a'"
    at = datetime(2026, 12, 5, 3, 4, 5, 123456, tzinfo=UTC)

    first = statement_run(sql, [1, "x", at, '{"a": "b"}'])
    second = statement_run(sql, [2**62, None, None, None])
    third = statement_run(sql, [-7, "日本", at, '{"a": 1}'])

    assert first == [(1, "x", at, "b")]
    assert second == [(2**62, None, None, None)]
    assert third == [(-7, "日本", at, "1")]
    assert first[0][2].tzinfo is not None


@pytest.mark.django_db(transaction=True)
def test_a_statement_error_is_djangos_error():
    with pytest.raises(DataError):
        statement_run("SELECT 1 / %b::int", [0])
    assert statement_run("SELECT 1 / %b::int", [1]) == [(1,)]  # the connection is still good


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_ended_is_replaced_for_an_idempotent_statement():
    """PostgreSQL ended the connection (a restart, a failover): the statement is sent once more
    on a new connection."""
    statement_run("SELECT %b::int", [1])
    backend = connection.connection.info.backend_pid
    with psycopg.connect(_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend])

    assert statement_run("SELECT %b::int + 1", [41]) == [(42,)]
    assert connection.connection.info.backend_pid != backend


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_statement_is_part_of_it():
    """Not its own autocommit: what it sets for the transaction, the transaction's next query sees."""
    with transaction.atomic(), connection.cursor() as cursor:
        statement_run("SELECT set_config('cdp.statement_probe', %b, true)", ["inside"])
        cursor.execute("SELECT current_setting('cdp.statement_probe', true)")
        seen = cursor.fetchone()

    assert seen == ("inside",)


def _url() -> str:
    settings = connection.settings_dict
    return f"postgresql://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_the_session_lost_is_prepared_again():
    """A pooler's reset (DISCARD ALL) drops what was prepared on the server connection."""
    assert statement_run("SELECT %b::int * 2", [21]) == [(42,)]
    connection.connection.execute("DEALLOCATE ALL")

    assert statement_run("SELECT %b::int * 2", [21]) == [(42,)]
