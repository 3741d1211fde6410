"""Listing queries: sort parsing and the opaque keyset cursor."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloom.domain.errors import ValidationFailed
from workloom.domain.queries import SortKey, decode_cursor, encode_cursor, parse_sort

SORTABLE = ("created_at", "updated_at", "priority", "status", "title", "identifier")


def test_parse_sort_reads_directions_in_order():
    assert parse_sort("-priority,created_at,+title", SORTABLE, "created_at") == [
        SortKey("priority", descending=True),
        SortKey("created_at", descending=False),
        SortKey("title", descending=False),
    ]


@pytest.mark.parametrize("text", [None, ""])
def test_parse_sort_falls_back_to_the_default(text):
    assert parse_sort(text, SORTABLE, "-created_at") == [SortKey("created_at", descending=True)]


def test_parse_sort_ignores_empty_parts_and_spaces():
    assert parse_sort(" priority , ,-title,", SORTABLE, "created_at") == [
        SortKey("priority", False),
        SortKey("title", True),
    ]


@pytest.mark.parametrize("text", ["colour", "-secret_column", "priority,nope"])
def test_parse_sort_names_what_is_sortable(text):
    with pytest.raises(ValidationFailed) as info:
        parse_sort(text, SORTABLE, "created_at")
    [error] = info.value.errors
    assert error.field == "sort"
    assert "created_at, updated_at, priority, status, title, identifier" in error.message


def test_cursor_round_trips_scalars():
    values = [3, "task_abc", None, 1.5, True, -7]
    cursor = encode_cursor(values)
    assert "=" not in cursor
    assert decode_cursor(cursor) == values


def test_cursor_round_trips_datetimes():
    when = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    values = [when, 3, "task_abc", None, 1.5, True]
    cursor = encode_cursor(values)
    assert "=" not in cursor
    assert decode_cursor(cursor) == values
    assert decode_cursor(cursor)[0].tzinfo is not None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        _b64(b"{not json"),
        _b64(orjson.dumps({"a": 1})),
        _b64(orjson.dumps(7)),
        _b64(orjson.dumps([{"$dt": "yesterday"}])),
        _b64(orjson.dumps([{"$dt": 5}])),
    ],
    ids=["empty", "not-base64", "not-json", "object", "number", "bad-datetime", "datetime-not-text"],
)
def test_a_tampered_cursor_is_a_validation_error(cursor):
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert [e.field for e in info.value.errors] == ["cursor"]


def test_encoding_something_else_is_a_programming_error():
    with pytest.raises(TypeError):
        encode_cursor([object()])


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.text(max_size=30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)


@given(st.lists(scalars, max_size=6))
def test_any_cursor_we_encode_decodes_to_the_same_values(values):
    assert decode_cursor(encode_cursor(values)) == values
