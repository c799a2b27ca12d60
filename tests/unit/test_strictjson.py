"""The one strict JSON reader (operator manifests, runtime configuration requests)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.errors import JsonError
from confide.strictjson import MAX_DEPTH, loads, loads_object

LIMIT = 4096

# Each document Python's own reader takes (the guard below checks it), and why ours does not.
REFUSED: dict[str, tuple[bytes, str]] = {
    "duplicate key": (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    "duplicate nested key": (b'{"a": [{"b": 1, "b": 1}]}', "duplicate key 'b'"),
    "NaN": (b'{"a": NaN}', "NaN is not JSON"),
    "Infinity": (b"[Infinity]", "Infinity is not JSON"),
    "-Infinity": (b"-Infinity", "-Infinity is not JSON"),
    "too deep": (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested too deeply"),
    "too large": (b'"' + b"x" * LIMIT + b'"', "more than the 4096 allowed"),
}


@pytest.mark.parametrize(("data", "why"), REFUSED.values(), ids=REFUSED.keys())
def test_python_accepts_these_but_the_strict_reader_does_not(data: bytes, why: str) -> None:
    json.loads(data)  # guard: not refused for being broken JSON
    with pytest.raises(JsonError, match=why) as info:
        loads(data, what="the document", max_bytes=LIMIT)
    assert info.value.code == "json" and info.value.message.startswith("the document ")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"{", "is not valid JSON"),
        (b'"\xff"', "is not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_broken_documents(data: bytes, why: str) -> None:
    with pytest.raises(JsonError, match=why):
        loads(data, what="x", max_bytes=len(data))


def test_text_with_a_lone_surrogate_is_our_error_not_unicodes() -> None:
    with pytest.raises(JsonError, match="is not UTF-8"):
        loads('"\ud800"', what="x", max_bytes=LIMIT)


def test_an_object_at_the_top() -> None:
    assert loads_object('{"a": [1, {"b": null}]}', what="x", max_bytes=LIMIT) == {
        "a": [1, {"b": None}]
    }
    with pytest.raises(JsonError, match="x must be a JSON object, got list"):
        loads_object(b"[]", what="x", max_bytes=LIMIT)
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(nested, what="x", max_bytes=LIMIT) is not None  # the bound itself is fine


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_what_json_dumps_writes_reads_back(value: Any) -> None:
    data = json.dumps(value).encode()
    assert loads(data, what="x", max_bytes=len(data)) == value


@given(st.binary(max_size=64))
def test_any_bytes_read_or_raise_json_error(data: bytes) -> None:
    try:
        loads(data, what="x", max_bytes=64)
    except JsonError:
        pass
