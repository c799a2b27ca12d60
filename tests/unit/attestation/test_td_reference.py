"""The guest image's reference values file (MRTD, RTMR0-2) an operator publishes and users pin."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.attestation import MAX_TD_REFERENCE_SIZE, TdReference
from confide.errors import FormatError

REFERENCE = TdReference(*(hashlib.sha384(n.encode()).digest() for n in ("mrtd", "r0", "r1", "r2")))
GOOD = json.loads(REFERENCE.to_json())


def test_the_file_names_each_register_in_hex() -> None:
    assert GOOD == {
        "format": "confide-td-reference",
        "version": 1,
        "mr_td": REFERENCE.mr_td.hex(),
        "rtmr0": REFERENCE.rtmr0.hex(),
        "rtmr1": REFERENCE.rtmr1.hex(),
        "rtmr2": REFERENCE.rtmr2.hex(),
    }
    assert TdReference.from_json(REFERENCE.to_json()) == REFERENCE


BAD: list[tuple[str, dict[str, object]]] = [
    ("another format", {**GOOD, "format": "confide-tdx-event-log"}),
    ("another version", {**GOOD, "version": 2}),
    ("a missing register", {k: v for k, v in GOOD.items() if k != "rtmr2"}),
    ("an extra key", {**GOOD, "rtmr3": "00" * 48}),
    ("a short register", {**GOOD, "mr_td": "00" * 47}),
    ("upper-case hex", {**GOOD, "rtmr0": "AB" * 48}),
    ("not hex", {**GOOD, "rtmr1": "zz" * 48}),
    ("a number", {**GOOD, "rtmr1": 5}),
]


@pytest.mark.parametrize(("row", "doc"), BAD, ids=[b[0] for b in BAD])
def test_malformed_files_are_refused(row: str, doc: dict[str, object]) -> None:
    with pytest.raises(FormatError) as info:
        TdReference.from_json(json.dumps(doc).encode())
    assert info.value.code == "td_reference.format"


def test_oversized_files_are_refused() -> None:
    with pytest.raises(FormatError) as info:
        TdReference.from_json(b" " * (MAX_TD_REFERENCE_SIZE + 1))
    assert info.value.code == "td_reference.size"


@given(st.lists(st.binary(min_size=48, max_size=48), min_size=4, max_size=4))
def test_round_trip(values: list[bytes]) -> None:
    reference = TdReference(*values)
    assert TdReference.from_json(reference.to_json()) == reference


@given(st.binary(max_size=600))
def test_the_parser_raises_only_its_own_error(raw: bytes) -> None:
    try:
        TdReference.from_json(raw)
    except FormatError as exc:
        assert exc.code in ("td_reference.format", "td_reference.size")
