import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdp.json_limits import MAX_JSON_DEPTH, JsonTooDeep, json_depth, json_loads_bounded


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[]" + b"}" * (depth - 1)


def test_depth_of_scalars_and_containers():
    assert json_depth(1) == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4


def test_limit_is_inclusive():
    assert json_depth(json_loads_bounded(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH
    with pytest.raises(JsonTooDeep):
        json_loads_bounded(nested(MAX_JSON_DEPTH + 1))


@pytest.mark.parametrize("depth", [300, 1100, 50_000])
def test_very_deep_documents_are_too_deep_not_a_recursion_error(depth):
    with pytest.raises(JsonTooDeep):
        json_loads_bounded(b"[" * depth + b"]" * depth)
    # beside a long integer (the exact, recursive parser's path) too
    with pytest.raises(JsonTooDeep):
        json_loads_bounded(b'{"n": 123456789012345678901234, "x": ' + b"[" * depth + b"]" * depth + b"}")


@pytest.mark.parametrize("number", [123456789012345678901234, 2**64, -(2**63) - 1, -(10**19) + 1])
def test_long_integers_stay_exact(number):
    assert json_loads_bounded(b'{"n": %d}' % number) == {"n": number}
    assert json_loads_bounded(b"[%d]" % number) == [number]
    assert json_loads_bounded(b"%d" % number) == number


@pytest.mark.parametrize("raw", [b"{", b'{"a": NaN}', b"[Infinity]", b""])
def test_not_json_is_a_value_error(raw):
    with pytest.raises(ValueError) as info:  # noqa: PT011 - any ValueError but JsonTooDeep
        json_loads_bounded(raw)
    assert not isinstance(info.value, JsonTooDeep)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


@given(json_values)
def test_depth_matches_a_recursive_reference(value):
    def reference(v):
        if isinstance(v, dict):
            return 1 + max((reference(c) for c in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((reference(c) for c in v), default=0)
        return 0

    assert json_depth(value) == reference(value)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(alphabet="ab{[]}", max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet="k{[", max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(value=_JSON, limit=st.integers(0, 6))
def test_a_document_is_refused_exactly_when_it_nests_past_the_limit(value, limit):
    # Few brackets or many (in strings too): the count that skips the walk never changes the answer.
    raw = orjson.dumps(value)
    if json_depth(value) > limit:
        with pytest.raises(JsonTooDeep):
            json_loads_bounded(raw, limit=limit)
    else:
        assert json_loads_bounded(raw, limit=limit) == value


_NUMBERS_AND_DIGITS = st.recursive(
    st.integers()
    | st.text(alphabet="0123456789-:,[ ", max_size=25)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet="1-", max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(_NUMBERS_AND_DIGITS)
def test_every_integer_is_read_exactly_whatever_surrounds_it(value):
    # Integers of any size (beyond 64 bits: read by the exact parser), beside strings of digits
    # that only look like them: the quick search for a run of digits never skips a long integer.
    raw = json.dumps(value).encode()
    read = json_loads_bounded(raw)
    assert read == value
    assert _types(read) == _types(value)


def _types(value):
    if isinstance(value, dict):
        return {key: _types(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_types(child) for child in value]
    return type(value)


def test_a_long_integer_is_found_after_a_string_of_digits():
    raw = b'{"phone": "12345678901234567890123", "n": 123456789012345678901234}'
    assert json_loads_bounded(raw) == {"phone": "12345678901234567890123", "n": 123456789012345678901234}
