"""``cdp.db``'s helpers for set-based hot paths."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.adapt import PyFormat, Transformer

from cdp.db import binary_parameters_cursor, text_array

# What a text column holds: any Unicode but NUL (PostgreSQL refuses it) and lone surrogates
# (not UTF-8; the ingestion contract refuses both before anything is stored).
_texts = st.lists(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00")), max_size=20)


@given(_texts)
def test_a_text_array_is_what_psycopg_would_send(values):
    if not values:  # psycopg sends an empty list as an unknown-typed text literal, not an array
        return
    (dumped,) = Transformer().dump_sequence([values], [PyFormat.BINARY])
    assert bytes(text_array([value.encode() for value in values])) == bytes(dumped)


@pytest.mark.django_db
@settings(max_examples=30, deadline=None)
@given(_texts)
def test_a_text_array_reaches_postgresql_as_the_texts_it_holds(values):
    with binary_parameters_cursor() as cursor:
        cursor.execute(
            "SELECT %b::text[], cardinality(%b::text[])", [text_array([v.encode() for v in values])] * 2
        )
        assert cursor.fetchone() == (values, len(values))
