"""Collateral parsing: the dcap-qvl JSON layout, TCB info, QE identity, and their limits."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.attestation import (
    Collateral,
    Policy,
    QeIdentity,
    TcbInfo,
    TcbStatus,
    verify_quote,
)
from confide.attestation._collateral import MAX_COLLATERAL_SIZE, MAX_TCB_LEVELS
from confide.errors import CollateralError, FormatError
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
AUTOMATA = "sgx-automata-00606A000000"
TDX = "tdx-dcapqvl-B0C06F000000"
NEGATIVE = "tdx-gotdxguest-50806F000000-negative"
ALL_SETS = [SGX, AUTOMATA, TDX, NEGATIVE]
Loader = Callable[[str], "VectorSet"]
ACCEPT_ALL = Policy.accepting(s.value for s in TcbStatus if s is not TcbStatus.REVOKED)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@cache
def _texts(file: str) -> tuple[str, ...]:
    root = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
    return tuple((root / name / file).read_text() for name in ALL_SETS)


def _json(text: str) -> Any:
    return json.loads(text)


# -- real vectors ----------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SETS)
def test_real_collateral_round_trips_through_to_json(load_vector: Loader, name: str) -> None:
    v = load_vector(name)
    collateral = v.collateral()
    again = Collateral.from_json(collateral.to_json())
    assert again == collateral
    assert again.tcb_info_raw == v.text("tcb_info.json")
    # The written layout is dcap-qvl's too.
    dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())


def test_written_collateral_verifies_like_the_original(load_vector: Loader) -> None:
    v = load_vector(SGX)
    written = Collateral.from_json(v.collateral().to_json())
    result = verify_quote(v.quote, written, now=v.verification_time, policy=ACCEPT_ALL)
    assert result.tcb_status is TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED


@pytest.mark.parametrize("name", ALL_SETS)
def test_split_files_parse_to_the_same_models(load_vector: Loader, name: str) -> None:
    v = load_vector(name)
    collateral = v.collateral()
    assert TcbInfo.from_json(v.text("tcb_info.json")) == collateral.tcb_info
    assert QeIdentity.from_json(v.text("qe_identity.json")) == collateral.qe_identity


def test_collateral_accepts_utf8_bytes(load_vector: Loader) -> None:
    v = load_vector(SGX)
    assert Collateral.from_json(v.collateral_json.encode()) == v.collateral()


def test_sgx_tcb_info_model(load_vector: Loader) -> None:
    tcb = load_vector(SGX).collateral().tcb_info
    assert (tcb.id, tcb.version, tcb.tcb_type) == ("SGX", 3, 0)
    assert tcb.fmspc.hex() == "00a067110000"
    assert tcb.tdx_module is None and tcb.tdx_module_identities == ()
    assert all(level.tdx_components is None for level in tcb.tcb_levels)
    assert all(len(level.sgx_components) == 16 for level in tcb.tcb_levels)
    assert tcb.issue_date.tzinfo is not None


def test_tdx_tcb_info_model(load_vector: Loader) -> None:
    tcb = load_vector(TDX).collateral().tcb_info
    assert tcb.id == "TDX"
    assert tcb.tdx_module is not None and len(tcb.tdx_module.mr_signer) == 48
    assert {m.id for m in tcb.tdx_module_identities} == {"TDX_01", "TDX_03"}
    assert all(
        level.tdx_components is not None and len(level.tdx_components) == 16
        for level in tcb.tcb_levels
    )


@pytest.mark.parametrize(("name", "qe_id"), [(SGX, "QE"), (TDX, "TD_QE")])
def test_qe_identity_model(load_vector: Loader, name: str, qe_id: str) -> None:
    qe = load_vector(name).collateral().qe_identity
    assert qe.id == qe_id
    assert (len(qe.mr_signer), len(qe.attributes), len(qe.miscselect)) == (32, 16, 4)
    assert qe.tcb_levels and all(level.isv_svn >= 0 for level in qe.tcb_levels)


def test_replace_does_not_share_verified_state(load_vector: Loader) -> None:
    """``dataclasses.replace`` builds an unverified copy, not one that inherits trust."""
    v = load_vector(SGX)
    collateral = v.collateral()
    verify_quote(v.quote, collateral, now=v.verification_time, policy=ACCEPT_ALL)
    forged = dataclasses.replace(collateral, tcb_info_signature=bytes(64))
    with pytest.raises(CollateralError) as caught:
        verify_quote(v.quote, forged, now=v.verification_time, policy=ACCEPT_ALL)
    assert caught.value.code == "tcb_info.signature"


# -- malformed collateral ------------------------------------------------------------

Edit = Callable[[dict[str, Any]], Any]


def _set(key: str, value: object) -> Edit:
    def edit(obj: dict[str, Any]) -> Any:
        return {**obj, key: value}

    return edit


def _drop(key: str) -> Edit:
    def edit(obj: dict[str, Any]) -> Any:
        return {k: v for k, v in obj.items() if k != key}

    return edit


def _chain_times(key: str, n: int) -> Edit:
    def edit(obj: dict[str, Any]) -> Any:
        first = obj[key].split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        return {**obj, key: first * n}

    return edit


COLLATERAL_MALFORMED: list[tuple[str, Edit]] = [
    ("a list, not an object", lambda obj: [obj]),
    ("missing pck_crl", _drop("pck_crl")),
    ("missing tcb_info", _drop("tcb_info")),
    ("pck_crl not a string", _set("pck_crl", 7)),
    ("pck_crl not hex", _set("pck_crl", "zz")),
    ("root_ca_crl not DER", _set("root_ca_crl", "3000")),
    ("tcb_info_signature not hex", _set("tcb_info_signature", "0g" * 64)),
    ("tcb_info_signature of 65 bytes", _set("tcb_info_signature", "00" * 65)),
    ("qe_identity_signature empty", _set("qe_identity_signature", "")),
    ("tcb_info_issuer_chain not PEM", _set("tcb_info_issuer_chain", "not a certificate")),
    ("pck_crl_issuer_chain empty", _set("pck_crl_issuer_chain", "")),
    ("qe_identity_issuer_chain of 5 certificates", _chain_times("qe_identity_issuer_chain", 5)),
    ("tcb_info not JSON", _set("tcb_info", "{")),
    ("qe_identity a JSON list", _set("qe_identity", "[]")),
]


@pytest.mark.parametrize(
    ("name", "edit"), COLLATERAL_MALFORMED, ids=[m[0] for m in COLLATERAL_MALFORMED]
)
def test_malformed_collateral_raises_format_error(
    load_vector: Loader, name: str, edit: Edit
) -> None:
    text = json.dumps(edit(_json(load_vector(SGX).collateral_json)))
    with pytest.raises(FormatError) as caught:
        Collateral.from_json(text)
    assert caught.value.code == "collateral.format"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("not JSON", "not json"),
        ("empty", ""),
        ("not UTF-8", b"\xff\xfe{}"),
        ("deeply nested", "[" * 100_000 + "]" * 100_000),
        ("over the size limit", " " * (MAX_COLLATERAL_SIZE + 1)),
    ],
)
def test_unparseable_collateral_raises_format_error(name: str, text: str | bytes) -> None:
    with pytest.raises(FormatError) as caught:
        Collateral.from_json(text)
    assert caught.value.code == "collateral.format"


def test_a_repeated_key_is_refused_not_read_as_the_last(load_vector: Loader) -> None:
    """Two readers may take different copies of a repeated key: strict JSON refuses it."""
    text = load_vector(SGX).collateral_json
    obj = _json(text)
    tcb_info = obj["tcb_info"].replace("{", '{"version":2,', 1)
    for doubled in (
        text.replace("{", '{"pck_crl": "00",', 1),
        json.dumps({**obj, "tcb_info": tcb_info}),
    ):
        with pytest.raises(FormatError, match="duplicate key") as caught:
            Collateral.from_json(doubled)
        assert caught.value.code == "collateral.format"
    with pytest.raises(FormatError, match="duplicate key"):
        TcbInfo.from_json(tcb_info)


def test_a_collateral_of_exactly_the_size_limit_is_read(load_vector: Loader) -> None:
    text = load_vector(SGX).collateral_json
    padded = text + " " * (MAX_COLLATERAL_SIZE - len(text))
    assert Collateral.from_json(padded) == load_vector(SGX).collateral()


def test_a_lone_surrogate_in_signed_json_is_a_format_error(load_vector: Loader) -> None:
    """The signature covers UTF-8 bytes; text without any must fail as ours, not as Unicode."""
    v = load_vector(SGX)
    obj = _json(v.collateral_json)
    obj["tcb_info"] = obj["tcb_info"].replace("INTEL-SA-00289", "INTEL-SA-00289\ud800", 1)
    with pytest.raises(FormatError) as caught:
        Collateral.from_json(json.dumps(obj))
    assert caught.value.code == "collateral.format"
    with pytest.raises(FormatError):
        QeIdentity.from_json(v.text("qe_identity.json").replace('"QE"', '"QE\ud800"'))


# -- malformed TCB info and QE identity -------------------------------------------------


def _tcb(edit: Callable[[dict[str, Any]], None], name: str = SGX) -> str:
    root = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
    obj = json.loads((root / name / "tcb_info.json").read_text())
    edit(obj)
    return json.dumps(obj)


def _qe(edit: Callable[[dict[str, Any]], None]) -> str:
    root = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
    obj = json.loads((root / SGX / "qe_identity.json").read_text())
    edit(obj)
    return json.dumps(obj)


def _level(obj: dict[str, Any], **changes: object) -> None:
    obj["tcbLevels"][0].update(changes)


def _svn(obj: dict[str, Any], value: object) -> None:
    obj["tcbLevels"][0]["tcb"]["sgxtcbcomponents"][0]["svn"] = value


TCB_MALFORMED: list[tuple[str, str, str]] = [
    ("version 1", _tcb(lambda o: o.update(version=1)), "collateral.version"),
    ("version 4", _tcb(lambda o: o.update(version=4)), "collateral.version"),
    ("id XYZ", _tcb(lambda o: o.update(id="XYZ")), "collateral.version"),
    ("version as a string", _tcb(lambda o: o.update(version="3")), "collateral.format"),
    ("version true", _tcb(lambda o: o.update(version=True)), "collateral.format"),
    ("tcbType 1", _tcb(lambda o: o.update(tcbType=1)), "collateral.format"),
    ("no fmspc", _tcb(lambda o: o.pop("fmspc")), "collateral.format"),
    ("fmspc of 7 bytes", _tcb(lambda o: o.update(fmspc="00" * 7)), "collateral.format"),
    ("pceId not hex", _tcb(lambda o: o.update(pceId="zzzz")), "collateral.format"),
    ("issueDate not a time", _tcb(lambda o: o.update(issueDate="yesterday")), "collateral.format"),
    (
        "nextUpdate without a timezone",
        _tcb(lambda o: o.update(nextUpdate="2025-07-19T10:56:11")),
        "collateral.format",
    ),
    (
        "tcbEvaluationDataNumber negative",
        _tcb(lambda o: o.update(tcbEvaluationDataNumber=-1)),
        "collateral.format",
    ),
    ("tcbLevels not a list", _tcb(lambda o: o.update(tcbLevels={})), "collateral.format"),
    (
        "too many tcbLevels",
        _tcb(lambda o: o.update(tcbLevels=o["tcbLevels"][:1] * (MAX_TCB_LEVELS + 1))),
        "collateral.format",
    ),
    ("a level not an object", _tcb(lambda o: o.update(tcbLevels=[1])), "collateral.format"),
    ("an unknown status", _tcb(lambda o: _level(o, tcbStatus="Fine")), "collateral.format"),
    ("an advisory not a string", _tcb(lambda o: _level(o, advisoryIDs=[1])), "collateral.format"),
    ("an SVN of 256", _tcb(lambda o: _svn(o, 256)), "collateral.format"),
    ("an SVN as float", _tcb(lambda o: _svn(o, 1.0)), "collateral.format"),
    (
        "15 SGX components",
        _tcb(lambda o: o["tcbLevels"][0]["tcb"]["sgxtcbcomponents"].pop()),
        "collateral.format",
    ),
    ("TDX without tdxModule", _tcb(lambda o: o.pop("tdxModule"), TDX), "collateral.format"),
    (
        "TDX without tdxtcbcomponents",
        _tcb(lambda o: o["tcbLevels"][0]["tcb"].pop("tdxtcbcomponents"), TDX),
        "collateral.format",
    ),
    (
        "TDX module mrsigner of 32 bytes",
        _tcb(lambda o: o["tdxModule"].update(mrsigner="00" * 32), TDX),
        "collateral.format",
    ),
    (
        "TDX module identity without attributes",
        _tcb(lambda o: o["tdxModuleIdentities"][0].pop("attributes"), TDX),
        "collateral.format",
    ),
]


@pytest.mark.parametrize(("name", "text", "code"), TCB_MALFORMED, ids=[m[0] for m in TCB_MALFORMED])
def test_malformed_tcb_info_raises_format_error(name: str, text: str, code: str) -> None:
    with pytest.raises(FormatError) as caught:
        TcbInfo.from_json(text)
    assert caught.value.code == code


def _v2(obj: dict[str, Any]) -> None:
    """Rewrite a v3 SGX TCB info in the v2 layout (flat sgxtcbcompNNsvn, no id)."""
    obj["version"] = 2
    obj.pop("id")
    for level in obj["tcbLevels"]:
        comps = level["tcb"].pop("sgxtcbcomponents")
        for n, comp in enumerate(comps, start=1):
            level["tcb"][f"sgxtcbcomp{n:02d}svn"] = comp["svn"]


def test_version_2_sgx_tcb_info_parses_like_version_3(load_vector: Loader) -> None:
    v3 = load_vector(SGX).collateral().tcb_info
    v2 = TcbInfo.from_json(_tcb(_v2))
    assert (v2.id, v2.version) == ("SGX", 2)
    assert v2.tcb_levels == v3.tcb_levels


QE_MALFORMED: list[tuple[str, str, str]] = [
    ("version 1", _qe(lambda o: o.update(version=1)), "collateral.version"),
    ("id TD_QE2", _qe(lambda o: o.update(id="QE3")), "collateral.version"),
    ("mrsigner of 31 bytes", _qe(lambda o: o.update(mrsigner="00" * 31)), "collateral.format"),
    ("attributes missing", _qe(lambda o: o.pop("attributes")), "collateral.format"),
    ("isvprodid of 65536", _qe(lambda o: o.update(isvprodid=65536)), "collateral.format"),
    ("no tcbLevels", _qe(lambda o: o.pop("tcbLevels")), "collateral.format"),
    (
        "a level without tcb",
        _qe(lambda o: o["tcbLevels"][0].pop("tcb")),
        "collateral.format",
    ),
    (
        "an isvsvn as a string",
        _qe(lambda o: o["tcbLevels"][0]["tcb"].update(isvsvn="8")),
        "collateral.format",
    ),
]


@pytest.mark.parametrize(("name", "text", "code"), QE_MALFORMED, ids=[m[0] for m in QE_MALFORMED])
def test_malformed_qe_identity_raises_format_error(name: str, text: str, code: str) -> None:
    with pytest.raises(FormatError) as caught:
        QeIdentity.from_json(text)
    assert caught.value.code == code


def test_tcb_status_parse() -> None:
    assert TcbStatus.parse("OutOfDate", "here") is TcbStatus.OUT_OF_DATE
    with pytest.raises(FormatError) as caught:
        TcbStatus.parse("outofdate", "here")
    assert caught.value.code == "collateral.format"


@contextmanager
def cryptography_parse_warnings_ignored() -> Iterator[None]:
    """Random bytes in a certificate can make ``cryptography`` warn while parsing it (a
    negative serial number, a country name of three letters). Those are warnings, not
    errors, outside the test suite; the properties here are about exceptions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # CryptographyDeprecationWarning too
        yield


# -- hypothesis ---------------------------------------------------------------------------

_ALPHABET = st.sampled_from('{}[]",:0123456789abcdefABCDEF-TZ.\\ \n\ud800xé')


def _mutate(text: str, data: st.DataObject) -> str:
    """Replace, insert or delete one character, or cut the text short."""
    index = data.draw(st.integers(0, len(text)))
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    if kind == "truncate":
        return text[:index]
    char = data.draw(_ALPHABET)
    if kind == "insert":
        return text[:index] + char + text[index:]
    if kind == "delete":
        return text[:index] + text[index + 1 :]
    return text[:index] + char + text[index + 1 :]


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_mutated_tcb_info_parses_or_raises_format_error(which: int, data: st.DataObject) -> None:
    text = _mutate(_texts("tcb_info.json")[which], data)
    try:
        TcbInfo.from_json(text)
    except FormatError as exc:
        assert exc.code.startswith("collateral.")


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_mutated_qe_identity_parses_or_raises_format_error(which: int, data: st.DataObject) -> None:
    text = _mutate(_texts("qe_identity.json")[which], data)
    try:
        QeIdentity.from_json(text)
    except FormatError as exc:
        assert exc.code.startswith("collateral.")


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_mutated_collateral_parses_or_raises_format_error(which: int, data: st.DataObject) -> None:
    text = _mutate(_texts("collateral.json")[which], data)
    try:
        with cryptography_parse_warnings_ignored():
            collateral = Collateral.from_json(text)
    except FormatError as exc:
        assert exc.code.startswith("collateral.")
        return
    with cryptography_parse_warnings_ignored():
        assert Collateral.from_json(collateral.to_json()) == collateral


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_mutated_collateral_items_parse_or_raise_format_error(
    which: int, data: st.DataObject
) -> None:
    """Mutate inside one item (the PEM, hex and signed JSON), not just the outer JSON."""
    obj = _json(_texts("collateral.json")[which])
    key = data.draw(st.sampled_from(sorted(obj)))
    obj[key] = _mutate(obj[key], data)
    try:
        with cryptography_parse_warnings_ignored():
            collateral = Collateral.from_json(json.dumps(obj))
    except FormatError as exc:
        assert exc.code.startswith("collateral.")
        return
    with cryptography_parse_warnings_ignored():
        assert Collateral.from_json(collateral.to_json()) == collateral


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    for parse in (Collateral.from_json, TcbInfo.from_json, QeIdentity.from_json):
        try:
            with cryptography_parse_warnings_ignored():
                parse(text)
        except FormatError:
            pass


def test_replace_cannot_swap_the_parsed_models(load_vector: Loader) -> None:
    """The parsed TCB info and QE identity always come from the signed raw JSON."""
    import dataclasses

    collateral = load_vector("sgx-dcapqvl-00A067110000").collateral()
    other = load_vector("tdx-dcapqvl-B0C06F000000").collateral()
    with pytest.raises(ValueError, match="init=False"):
        dataclasses.replace(collateral, tcb_info=other.tcb_info)
    copy = dataclasses.replace(collateral, tcb_info_signature=bytes(64))
    assert copy.tcb_info == collateral.tcb_info
