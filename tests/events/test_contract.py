"""The pure contract: clock-skew correction and message parsing, without HTTP or a database."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.commerce import as_amount
from events.contract import (
    BatchDefaults,
    Message,
    Rejection,
    TimestampWindow,
    corrected_timestamp,
    message_parse,
)

RECEIVED = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
offsets = st.timedeltas(min_value=timedelta(days=-3650), max_value=timedelta(days=3650))
delays = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))


@given(
    happened=instants, queued=delays, transit=st.timedeltas(timedelta(0), timedelta(seconds=30)), skew=offsets
)
def test_a_wrong_device_clock_does_not_move_the_corrected_time(happened, queued, transit, skew):
    sent = happened + queued
    received = sent + transit

    corrected = corrected_timestamp(original=happened + skew, sent_at=sent + skew, received_at=received)

    # Exact up to the network transit time, whatever the device clock says.
    assert corrected == happened + transit


@given(original=instants)
def test_without_sent_at_the_timestamp_is_trusted(original):
    assert corrected_timestamp(original=original, sent_at=None, received_at=RECEIVED) == original


def test_without_timestamp_the_event_happened_on_arrival():
    assert corrected_timestamp(original=None, sent_at=RECEIVED, received_at=RECEIVED) == RECEIVED


def test_original_timestamp_is_read_when_timestamp_is_absent():
    parsed = message_parse(
        {"type": "track", "userId": "u", "event": "X", "originalTimestamp": "2026-01-01T00:00:00Z"},
        received_at=RECEIVED,
    )

    assert isinstance(parsed, Message)
    assert parsed.timestamp == datetime(2026, 1, 1, tzinfo=UTC)


def test_message_values_override_batch_defaults():
    defaults = BatchDefaults(
        sent_at=RECEIVED, context={"ip": "1.2.3.4", "locale": "zh-CN"}, integrations={"All": True}
    )

    parsed = message_parse(
        {
            "type": "identify",
            "userId": "u",
            "context": {"locale": "en"},
            "integrations": {"Mailchimp": False},
        },
        received_at=RECEIVED,
        defaults=defaults,
    )

    assert parsed.context == {"ip": "1.2.3.4", "locale": "en"}
    assert parsed.integrations == {"All": True, "Mailchimp": False}
    assert parsed.sent_at == RECEIVED


def test_clock_skew_arithmetic_that_overflows_is_a_rejection():
    parsed = message_parse(
        {
            "type": "track",
            "userId": "u",
            "event": "X",
            "timestamp": "0001-01-02T00:00:00Z",
            "sentAt": "9999-12-30T00:00:00Z",
        },
        received_at=RECEIVED,
        window=TimestampWindow(earliest=datetime.min.replace(tzinfo=UTC), days_ahead=3_000_000),
    )

    assert isinstance(parsed, Rejection)
    assert parsed.errors[0].field == "sentAt"


def test_amounts_are_exact_decimals():
    assert as_amount(0.1) + as_amount(0.2) == as_amount("0.3")
    assert as_amount(True) is None
    assert as_amount("NaN") is None
    assert as_amount(float("inf")) is None
    assert as_amount(" 12.50 ") == as_amount(12.5)


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("depth", "code"), [(63, None), (64, "too_deep"), (100, "too_deep"), (300, "too_deep")]
)
def test_nesting_is_bounded_for_any_caller(depth, code):
    # The event is level 1 and its traits level 2: traits nested ``depth`` deep make depth + 1.
    parsed = message_parse(
        {"type": "identify", "userId": "u", "traits": _nested(depth)}, received_at=RECEIVED
    )

    assert (parsed.code if isinstance(parsed, Rejection) else None) == code


def test_brackets_in_text_are_not_nesting():
    parsed = message_parse(
        {"type": "identify", "userId": "u", "traits": {"note": "[{" * 100}}, received_at=RECEIVED
    )

    assert isinstance(parsed, Message)


def test_times_are_checked_against_the_window_given():
    message = {"type": "track", "userId": "u", "event": "X", "timestamp": "2010-01-01T00:00:00Z"}

    assert isinstance(message_parse(message, received_at=RECEIVED), Message)
    late = TimestampWindow(earliest=datetime(2020, 1, 1, tzinfo=UTC))
    refused = message_parse(message, received_at=RECEIVED, window=late)
    assert isinstance(refused, Rejection)
    assert refused.errors[0].field == "timestamp"


_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-1_000_001, max_value=1_000_001),
    st.integers(min_value=-100_000_001, max_value=100_000_001),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2e8, max_value=2e8),
    st.floats(min_value=-0.01, max_value=0.01),
    st.sampled_from([0.0, -0.0, 1e-3, 9.999e-4, 1e6, 1e8, 1e8 + 1, 999_999.99, 1e-25, 0.1 + 0.2]),
)


@given(value=_NUMBERS, key=st.sampled_from(["price", "quantity", "total"]))
def test_a_plain_number_is_answered_as_the_exact_check_answers_it(value, key):
    """The fast path for the usual amounts (no Decimal) agrees with the exact check, error for
    error, on either side of each limit and of the decimal places."""
    from events.commerce import _number_error, _number_error_exact

    assert _number_error("properties.x", key, value) == _number_error_exact("properties.x", key, value)
