"""Reading request bodies: event by event when a batch holds an unreadable one."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp.json_limits import MAX_JSON_DEPTH
from events.wire import BodyUnreadable, Unreadable, _batch_read_apart, body_read, value_read

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\,:[]{} \n\u00e9'), max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(json_values, max_size=5),
    context=st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    indent=st.sampled_from([None, 0, 2]),
)
def test_reading_apart_reads_what_a_parser_reads(events, context, indent):
    raw = json.dumps({"context": context, "batch": events, "sentAt": "2026-01-01"}, indent=indent).encode()

    assert _batch_read_apart(raw, whole=Unreadable("invalid_json", "", "")) == json.loads(raw)


def test_one_unreadable_event_leaves_the_others_readable():
    raw = (
        b'{"batch": [{"a": "],}"}, ' + b"[" * 2_000 + b"]" * 2_000 + b', {"s": "\\ud800"}, {"n": NaN}, 7],'
        b' "context": {"k": 123456789012345678901234567890}}'
    )

    body = body_read(raw, batch=True)

    first, deep, surrogate, nan, last = body["batch"]
    assert (first, surrogate, last) == ({"a": "],}"}, {"s": "\ud800"}, 7)
    assert (deep.code, nan.code) == ("too_deep", "invalid_json")
    assert "The event is not valid JSON" in nan.message
    assert body["context"] == {"k": 123456789012345678901234567890}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"batch": [1], "context": ' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"batch": [1], "context": {"a": NaN}}',
        b'{"batch": [1, ' + b"[" * 300 + b"]" * 300 + b"], }",
        b'{"batch": [1, ' + b"[" * 300 + b"]" * 300 + b"] x}",
        b'{"batch": [1, ' + b"[" * 300 + b"}" * 300 + b"]}",
        b'{"batch" [1, ' + b"[" * 300 + b"]" * 300 + b"]}",
        b'[{"batch": [' + b"[" * 300 + b"]" * 300 + b"]}]",
        b'{"batch": [' + b"[" * 300 + b"]" * 300 + b"]} {}",
    ],
)
def test_a_body_whose_own_members_are_unreadable_is_refused_whole(raw):
    with pytest.raises(BodyUnreadable):
        body_read(raw, batch=True)


def test_the_limit_is_the_events_not_the_bodys():
    event = b'{"a": ' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH

    assert body_read(b'{"batch": [' + event + b"]}", batch=True)["batch"][0] == json.loads(event)
    assert isinstance(value_read(b"[" + event + b"]"), Unreadable)
    with pytest.raises(BodyUnreadable) as raised:
        body_read(b"[" + event + b"]", batch=False)
    assert raised.value.unreadable.code == "too_deep"
