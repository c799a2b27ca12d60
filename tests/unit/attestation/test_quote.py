"""Quote parsing: byte-exact round trips, v5 bodies, limits, and FormatError for anything else."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.attestation import Quote, QuoteHeader, SgxReportBody, TdReportBody
from confide.attestation._quote import MAX_QUOTE_SIZE
from confide.errors import FormatError
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
AUTOMATA = "sgx-automata-00606A000000"
TDX = "tdx-dcapqvl-B0C06F000000"
NEGATIVE = "tdx-gotdxguest-50806F000000-negative"
NEGATIVE_TRAILER = b"\nextra bytes(only for testing purpose)\n"
Loader = Callable[[str], "VectorSet"]

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@cache
def _real_quotes() -> tuple[bytes, ...]:
    """The real quotes (the negative one without its non-zero trailer), for hypothesis."""
    root = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
    out = []
    for name in (SGX, AUTOMATA, TDX, NEGATIVE):
        out.append((root / name / "quote.bin").read_bytes().removesuffix(NEGATIVE_TRAILER))
    return tuple(out)


def _parses_exactly_or_format_error(data: bytes) -> None:
    """The parser's contract: an exact round trip, or our FormatError and nothing else."""
    try:
        quote = Quote.from_bytes(data)
    except FormatError as exc:
        assert exc.code.startswith("quote."), exc.code
        assert "\n" not in str(exc)
        return
    assert quote.to_bytes() == data
    assert Quote.from_bytes(quote.to_bytes()) == quote


# -- real vectors ----------------------------------------------------------------


@pytest.mark.parametrize("name", [SGX, AUTOMATA, TDX])
def test_real_quotes_round_trip(load_vector: Loader, name: str) -> None:
    raw = load_vector(name).quote
    quote = Quote.from_bytes(raw)
    assert quote.to_bytes() == raw
    assert Quote.from_bytes(bytearray(raw)) == quote  # type: ignore[arg-type]
    assert Quote.from_bytes(memoryview(raw)) == quote  # type: ignore[arg-type]


def test_negative_quote_round_trips_without_its_trailer(load_vector: Loader) -> None:
    raw = load_vector(NEGATIVE).quote
    with pytest.raises(FormatError) as caught:
        Quote.from_bytes(raw)
    assert caught.value.code == "quote.trailing"
    stripped = raw.removesuffix(NEGATIVE_TRAILER)
    assert len(raw) - len(stripped) == 39
    assert Quote.from_bytes(stripped).to_bytes() == stripped


def test_tdx_zero_padding_is_kept(load_vector: Loader) -> None:
    raw = load_vector(TDX).quote
    quote = Quote.from_bytes(raw)
    assert quote.padding == 70
    assert raw.endswith(bytes(70))
    unpadded = dataclasses.replace(quote, padding=0).to_bytes()
    assert unpadded == raw[:-70]
    assert Quote.from_bytes(unpadded) == dataclasses.replace(quote, padding=0)


@pytest.mark.parametrize(("name", "version", "tdx"), [(SGX, 3, False), (TDX, 4, True)])
def test_model_shape(load_vector: Loader, name: str, version: int, tdx: bool) -> None:
    raw = load_vector(name).quote
    quote = Quote.from_bytes(raw)
    assert quote.header.version == version
    assert quote.is_tdx is tdx
    assert quote.body_type is None
    assert isinstance(quote.body, TdReportBody if tdx else SgxReportBody)
    assert quote.certification.wrapped is (version != 3)
    assert quote.report_data == quote.body.report_data
    body_end = 48 + (584 if tdx else 384)
    assert quote.signed_bytes == raw[:body_end]
    assert quote.signed_bytes == quote.header.to_bytes() + quote.body.to_bytes()
    report = quote.certification.qe_report
    assert SgxReportBody.from_bytes(report.to_bytes()) == report
    assert quote.certification.qe_report_bytes == report.to_bytes()


def test_a_replaced_model_serializes_its_new_fields(load_vector: Loader) -> None:
    """Bytes kept from parsing never outlive a change to the fields (dataclasses.replace)."""
    raw = load_vector(SGX).quote
    quote = Quote.from_bytes(raw)
    assert isinstance(quote.body, SgxReportBody)
    body = dataclasses.replace(quote.body, mr_enclave=b"\xee" * 32)
    changed = dataclasses.replace(quote, body=body)
    assert changed.signed_bytes == quote.header.to_bytes() + body.to_bytes()
    assert Quote.from_bytes(changed.to_bytes()).body == body
    report = dataclasses.replace(quote.certification.qe_report, isv_svn=99)
    cert = dataclasses.replace(quote.certification, qe_report=report)
    assert cert.qe_report_bytes == report.to_bytes()
    reparsed = Quote.from_bytes(dataclasses.replace(quote, certification=cert).to_bytes())
    assert reparsed.certification.qe_report.isv_svn == 99


# -- v5 quotes built from the v4 one ---------------------------------------------


def _v5(v4: Quote, body_type: int, body: SgxReportBody | TdReportBody, tee_type: int) -> Quote:
    header = dataclasses.replace(v4.header, version=5, tee_type=tee_type)
    return Quote(
        header=header,
        body=body,
        body_type=body_type,
        signature=v4.signature,
        attestation_key=v4.attestation_key,
        certification=dataclasses.replace(v4.certification, wrapped=True),
        padding=0,
    )


def _td15(body: TdReportBody) -> TdReportBody:
    return dataclasses.replace(body, tee_tcb_svn2=bytes(range(16)), mr_service_td=b"\x5a" * 48)


@pytest.mark.parametrize(("body_type", "size"), [(2, 584), (3, 648)])
def test_v5_td_bodies_round_trip(load_vector: Loader, body_type: int, size: int) -> None:
    v4 = Quote.from_bytes(load_vector(TDX).quote)
    assert isinstance(v4.body, TdReportBody)
    body = v4.body if body_type == 2 else _td15(v4.body)
    quote = _v5(v4, body_type, body, 0x81)
    raw = quote.to_bytes()
    assert struct.unpack_from("<HHI", raw, 0)[0] == 5
    assert struct.unpack_from("<HI", raw, 48) == (body_type, size)
    assert raw[54 : 54 + size] == body.to_bytes()
    parsed = Quote.from_bytes(raw)
    assert parsed == quote
    assert parsed.to_bytes() == raw
    assert parsed.signed_bytes == raw[: 54 + size]
    assert isinstance(parsed.body, TdReportBody)
    assert parsed.body.is_td15 is (body_type == 3)
    assert parsed.body.rtmrs == v4.body.rtmrs


def test_v5_sgx_body_round_trips(load_vector: Loader) -> None:
    v4 = Quote.from_bytes(load_vector(TDX).quote)
    sgx_body = Quote.from_bytes(load_vector(SGX).quote).body
    quote = _v5(v4, 1, sgx_body, 0x0)
    raw = quote.to_bytes()
    assert struct.unpack_from("<HI", raw, 48) == (1, 384)
    assert Quote.from_bytes(raw) == quote
    assert Quote.from_bytes(raw).to_bytes() == raw


def _v5_raw(load_vector: Loader, body_type: int = 2) -> bytes:
    v4 = Quote.from_bytes(load_vector(TDX).quote)
    assert isinstance(v4.body, TdReportBody)
    body = v4.body if body_type == 2 else _td15(v4.body)
    return _v5(v4, body_type, body, 0x81).to_bytes()


def _patch(raw: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


# -- malformed quotes ------------------------------------------------------------

Build = Callable[[Loader], bytes]

SGX_SIG_LEN_AT = 48 + 384
TDX_SIG_LEN_AT = 48 + 584


def _sgx(lv: Loader) -> bytes:
    return lv(SGX).quote


def _tdx(lv: Loader) -> bytes:
    return lv(TDX).quote.rstrip(b"\x00") + b"\x00"  # keep the chain's own NUL, no padding


MALFORMED: list[tuple[str, Build, str]] = [
    ("empty", lambda lv: b"", "quote.format"),
    ("header cut short", lambda lv: _sgx(lv)[:47], "quote.format"),
    ("body cut short", lambda lv: _sgx(lv)[:300], "quote.format"),
    ("over the size limit", lambda lv: bytes(MAX_QUOTE_SIZE + 1), "quote.format"),
    (
        "over the size limit with real content",
        lambda lv: _tdx(lv) + bytes(MAX_QUOTE_SIZE + 1 - len(_tdx(lv))),
        "quote.format",
    ),
    ("version 2", lambda lv: _patch(_sgx(lv), 0, "<H", 2), "quote.version"),
    ("version 6", lambda lv: _patch(_sgx(lv), 0, "<H", 6), "quote.version"),
    ("attestation key type 3 (P-384)", lambda lv: _patch(_sgx(lv), 2, "<H", 3), "quote.key_type"),
    ("unknown TEE type", lambda lv: _patch(_sgx(lv), 4, "<I", 0x80), "quote.tee_type"),
    ("v3 claiming TDX", lambda lv: _patch(_sgx(lv), 4, "<I", 0x81), "quote.tee_type"),
    (
        "signature data longer than the quote",
        lambda lv: _patch(_sgx(lv), SGX_SIG_LEN_AT, "<I", len(_sgx(lv))),
        "quote.format",
    ),
    (
        "signature data shorter than its content",
        lambda lv: _patch(_sgx(lv), SGX_SIG_LEN_AT, "<I", 200),
        "quote.trailing",
    ),
    ("a non-zero trailing byte", lambda lv: _sgx(lv) + b"\x01", "quote.trailing"),
    ("zero padding then a non-zero byte", lambda lv: lv(TDX).quote + b"\x01", "quote.trailing"),
    (
        "v4 outer certification type 5",
        lambda lv: _patch(_tdx(lv), TDX_SIG_LEN_AT + 4 + 128, "<H", 5),
        "quote.cert_type",
    ),
    (
        "v4 outer certification size off by one",
        lambda lv: _patch(
            _tdx(lv),
            TDX_SIG_LEN_AT + 4 + 128 + 2,
            "<I",
            len(_tdx(lv)) - (TDX_SIG_LEN_AT + 4 + 128 + 6) - 1,
        ),
        "quote.format",
    ),
    (
        "inner certification type 3 (encrypted PPID)",
        lambda lv: _patch(_sgx(lv), SGX_SIG_LEN_AT + 4 + 128 + 384 + 64 + 2 + 32, "<H", 3),
        "quote.cert_type",
    ),
    (
        "inner PCK chain size beyond the data",
        lambda lv: _patch(_sgx(lv), SGX_SIG_LEN_AT + 4 + 128 + 384 + 64 + 2 + 32 + 2, "<I", 9999),
        "quote.format",
    ),
    (
        "inner PCK chain size one short (a byte left over)",
        lambda lv: _patch(
            _sgx(lv),
            SGX_SIG_LEN_AT + 4 + 128 + 384 + 64 + 2 + 32 + 2,
            "<I",
            len(_sgx(lv)) - (SGX_SIG_LEN_AT + 4 + 128 + 384 + 64 + 2 + 32 + 6) - 1,
        ),
        "quote.format",
    ),
    ("v5 unknown body type", lambda lv: _patch(_v5_raw(lv), 48, "<H", 4), "quote.format"),
    ("v5 body size wrong", lambda lv: _patch(_v5_raw(lv), 50, "<I", 648), "quote.format"),
    ("v5 TD 1.5 size on TD 1.0", lambda lv: _patch(_v5_raw(lv, 3), 50, "<I", 584), "quote.format"),
    ("v5 SGX body type on TDX", lambda lv: _patch(_v5_raw(lv), 48, "<HI", 1, 384), "quote.format"),
]


@pytest.mark.parametrize(("name", "build", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_quotes_raise_format_error(
    load_vector: Loader, name: str, build: Build, code: str
) -> None:
    data = build(load_vector)
    with pytest.raises(FormatError) as caught:
        Quote.from_bytes(data)
    assert caught.value.code == code
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["a string", 42, None], ids=["str", "int", "None"])
def test_non_bytes_input_raises_format_error(value: object) -> None:
    with pytest.raises(FormatError) as caught:
        Quote.from_bytes(value)  # type: ignore[arg-type]
    assert caught.value.code == "quote.format"


def test_a_quote_of_exactly_the_size_limit_is_accepted(load_vector: Loader) -> None:
    raw = load_vector(TDX).quote
    padded = raw + bytes(MAX_QUOTE_SIZE - len(raw))
    assert len(padded) == MAX_QUOTE_SIZE
    assert Quote.from_bytes(padded).to_bytes() == padded
    with pytest.raises(FormatError):
        Quote.from_bytes(padded + b"\x00")


def test_sgx_report_must_be_384_bytes() -> None:
    with pytest.raises(FormatError) as caught:
        SgxReportBody.from_bytes(bytes(383))
    assert caught.value.code == "quote.format"
    assert SgxReportBody.from_bytes(bytes(384)).to_bytes() == bytes(384)


def test_header_round_trips(load_vector: Loader) -> None:
    raw = load_vector(SGX).quote
    header = Quote.from_bytes(raw).header
    assert isinstance(header, QuoteHeader)
    assert header.to_bytes() == raw[:48]


# -- hypothesis ------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    _parses_exactly_or_format_error(data)


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_arbitrary_bytes_after_a_real_header(which: int, data: st.DataObject) -> None:
    real = _real_quotes()[which]
    cut = data.draw(st.integers(0, 700))
    tail = data.draw(st.binary(max_size=2048))
    _parses_exactly_or_format_error(real[:cut] + tail)


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_single_byte_mutations_of_real_quotes(which: int, data: st.DataObject) -> None:
    real = _real_quotes()[which]
    index = data.draw(st.integers(0, len(real) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = bytearray(real)
    mutated[index] = value
    _parses_exactly_or_format_error(bytes(mutated))


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_mutations_of_the_structural_fields(which: int, data: st.DataObject) -> None:
    """Lengths and types live in the first bytes of each region: hit them harder."""
    real = _real_quotes()[which]
    quote = Quote.from_bytes(real)
    starts = [0, 2, 4, len(quote.signed_bytes), len(quote.signed_bytes) + 4 + 128]
    index = data.draw(st.sampled_from(starts)) + data.draw(st.integers(0, 7))
    mutated = bytearray(real)
    mutated[index] = data.draw(st.integers(0, 255))
    _parses_exactly_or_format_error(bytes(mutated))


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_truncations_of_real_quotes(which: int, data: st.DataObject) -> None:
    real = _real_quotes()[which]
    _parses_exactly_or_format_error(real[: data.draw(st.integers(0, len(real)))])


@FUZZ
@given(st.sampled_from(range(4)), st.binary(min_size=1, max_size=64))
def test_extensions_of_real_quotes(which: int, tail: bytes) -> None:
    real = _real_quotes()[which]
    _parses_exactly_or_format_error(real + tail)
    if any(tail):
        with pytest.raises(FormatError):
            Quote.from_bytes(real + tail)


@FUZZ
@given(
    st.sampled_from([2, 3]),
    st.binary(min_size=48, max_size=48),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 4096),
)
def test_v5_models_round_trip(body_type: int, mr_td: bytes, svn2: bytes, padding: int) -> None:
    v4 = Quote.from_bytes(_real_quotes()[2])
    assert isinstance(v4.body, TdReportBody)
    body = dataclasses.replace(v4.body, mr_td=mr_td)
    if body_type == 3:
        body = dataclasses.replace(body, tee_tcb_svn2=svn2, mr_service_td=mr_td[::-1])
    quote = dataclasses.replace(_v5(v4, body_type, body, 0x81), padding=padding)
    raw = quote.to_bytes()
    assert Quote.from_bytes(raw) == quote
    assert Quote.from_bytes(raw).to_bytes() == raw
