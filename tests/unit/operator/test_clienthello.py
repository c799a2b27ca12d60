"""Reading the SNI from a ClientHello: real ones from Python's ssl, built ones, and any bytes."""

from __future__ import annotations

import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.operator._tlsparse import (
    MAX_EXTENSIONS,
    MAX_HELLO_RECORDS,
    MAX_HELLO_SIZE,
    MAX_PEEK_SIZE,
    ClientHello,
    NeedMore,
    Rejected,
    parse_host_name,
    peek_client_hello,
)

LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
HOST = (
    st.lists(LABEL, min_size=2, max_size=5)
    .map(".".join)
    # Python's ssl sends no SNI for anything inet_aton reads as an address
    # (0.0.0.0, 0.0.0.00, 1.0x2...): a real host name's last label starts with a letter.
    .filter(lambda name: name.rsplit(".", 1)[-1][:1].isalpha())
)


def real_hello(server_name: str | None, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The first flight of Python's TLS client (OpenSSL) for ``server_name``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.maximum_version = maximum
    if server_name is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(handshake: bytes, sizes: list[int] | None = None) -> bytes:
    """``handshake`` in TLS handshake records of the given fragment sizes (one record if None)."""
    out, pos = b"", 0
    for size in [*(sizes or []), len(handshake)]:
        fragment = handshake[pos : pos + size]
        if fragment:
            out += b"\x16\x03\x01" + struct.pack(">H", len(fragment)) + fragment
        pos += len(fragment)
    return out


def vec(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def sni(*names: tuple[int, bytes]) -> bytes:
    return vec(2, b"".join(bytes([kind]) + vec(2, name) for kind, name in names))


def extension(kind: int, data: bytes) -> bytes:
    return struct.pack(">H", kind) + vec(2, data)


def body(
    extensions: bytes | None = None,
    *,
    version: bytes = b"\x03\x03",
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01",
    compression: bytes = b"\x00",
    tail: bytes = b"",
) -> bytes:
    out = version + bytes(32) + vec(1, session_id) + vec(2, suites) + vec(1, compression)
    if extensions is not None:
        out += vec(2, extensions)
    return out + tail


def hello(hello_body: bytes) -> bytes:
    return records(b"\x01" + vec(3, hello_body))


def test_prefixes_of_a_real_hello_need_more_and_the_whole_parses() -> None:
    data = real_hello("app1.confide.test")
    for n in range(len(data)):
        assert peek_client_hello(data[:n]) == NeedMore(), n
    assert peek_client_hello(data) == ClientHello("app1.confide.test", len(data))
    # What follows the ClientHello (early data, the next read) is not looked at.
    assert peek_client_hello(data + b"\x17\x03\x03junk") == ClientHello(
        "app1.confide.test", len(data)
    )


@settings(max_examples=60, deadline=None)
@given(
    host=HOST,
    upper=st.booleans(),
    maximum=st.sampled_from([ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]),
)
def test_real_hellos_give_their_server_name(
    host: str, upper: bool, maximum: ssl.TLSVersion
) -> None:
    data = real_hello(host.upper() if upper else host, maximum)
    assert peek_client_hello(data) == ClientHello(host, len(data))


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_real_hello_without_sni_gives_none(maximum: ssl.TLSVersion) -> None:
    data = real_hello(None, maximum)
    assert peek_client_hello(data) == ClientHello(None, len(data))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_hello_split_across_records_and_reads_parses_the_same(data: st.DataObject) -> None:
    handshake = real_hello("app1.confide.test")[5:]
    sizes = data.draw(
        st.lists(st.integers(1, 400), min_size=1, max_size=MAX_HELLO_RECORDS - 1), label="sizes"
    )
    fragmented = records(handshake, sizes)
    cut = data.draw(st.integers(0, len(fragmented) - 1), label="cut")
    assert peek_client_hello(fragmented[:cut]) == NeedMore()
    assert peek_client_hello(fragmented) == ClientHello("app1.confide.test", len(fragmented))


def test_too_many_records_is_rejected() -> None:
    handshake = real_hello("app1.confide.test")[5:]
    fragmented = records(handshake, [1] * MAX_HELLO_RECORDS)
    result = peek_client_hello(fragmented)
    assert isinstance(result, Rejected) and "records" in result.reason


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_result_and_never_raise(data: bytes) -> None:
    result = peek_client_hello(data)
    assert isinstance(result, NeedMore | Rejected | ClientHello)
    if isinstance(result, NeedMore):
        assert len(data) < MAX_PEEK_SIZE


@settings(max_examples=300)
@given(st.binary(max_size=1024), st.sampled_from([0x0301, 0x0303]), st.integers(0, 2**14))
def test_bytes_behind_a_handshake_record_header_never_raise(
    data: bytes, version: int, length: int
) -> None:
    result = peek_client_hello(b"\x16" + struct.pack(">HH", version, length) + b"\x01" + data)
    assert isinstance(result, NeedMore | Rejected | ClientHello)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_real_hellos_never_raise_and_names_stay_host_names(data: st.DataObject) -> None:
    original = bytearray(real_hello("app1.confide.test"))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(original) - 1), label="at")
        original[at] = data.draw(st.integers(0, 255), label="byte")
    result = peek_client_hello(bytes(original))
    assert isinstance(result, NeedMore | Rejected | ClientHello)
    if isinstance(result, ClientHello) and result.server_name is not None:
        assert parse_host_name(result.server_name.encode()) == result.server_name


def test_a_hello_without_extensions_has_no_name() -> None:
    data = hello(body())
    assert peek_client_hello(data) == ClientHello(None, len(data))


def test_unknown_extensions_are_skipped() -> None:
    exts = extension(0xFAFA, b"") + extension(0, sni((0, b"a.example"))) + extension(43, b"x")
    assert peek_client_hello(hello(body(exts))) == ClientHello("a.example", len(hello(body(exts))))


NAME = extension(0, sni((0, b"a.example")))
MALFORMED: list[tuple[str, bytes, str]] = [
    ("record of application data", b"\x17\x03\x03\x00\x01x", "not a TLS handshake record"),
    ("record version 2", b"\x16\x02", "version major"),
    ("record version 3.5", b"\x16\x03\x05\x00\x01\x01", "record version"),
    ("empty record", b"\x16\x03\x01\x00\x00", "empty handshake record"),
    ("record over 2^14", b"\x16\x03\x01\x40\x01", "exceeds"),
    ("ServerHello", records(b"\x02\x00\x00\x00"), "not ClientHello"),
    ("hello over the limit", records(b"\x01" + (MAX_HELLO_SIZE + 1).to_bytes(3, "big")), "exceeds"),
    ("record past the hello", records(b"\x01\x00\x00\x00" + b"x"), "past the end"),
    ("hello version 2.0", hello(body(version=b"\x02\x00")), "is not TLS"),
    ("session id over 32", hello(body(session_id=bytes(33))), "legacy_session_id"),
    ("odd cipher suites", hello(body(suites=b"\x13")), "cipher_suites"),
    ("no cipher suites", hello(body(suites=b"")), "cipher_suites"),
    ("no compression", hello(body(compression=b"")), "compression"),
    ("truncated body", hello(body()[:20]), "runs past"),
    ("bytes after extensions", hello(body(NAME, tail=b"x")), "follow the extensions"),
    ("duplicate extension", hello(body(NAME + NAME)), "appears twice"),
    (
        "too many extensions",
        hello(body(b"".join(extension(100 + i, b"") for i in range(MAX_EXTENSIONS + 1)))),
        "more than",
    ),
    ("name type 1", hello(body(extension(0, sni((1, b"a.example"))))), "not a host_name"),
    (
        "two names",
        hello(body(extension(0, sni((0, b"a.example"), (0, b"b.example"))))),
        "more than one",
    ),
    ("trailing dot", hello(body(extension(0, sni((0, b"a.example."))))), "not a DNS host name"),
    ("space in name", hello(body(extension(0, sni((0, b"a b.example"))))), "not a DNS host name"),
    ("empty name", hello(body(extension(0, sni((0, b""))))), "not a DNS host name"),
    ("bytes after the list", hello(body(extension(0, sni((0, b"a.example")) + b"x"))), "follow"),
    ("empty SNI extension", hello(body(extension(0, b""))), "runs past"),
]


@pytest.mark.parametrize(
    ("case", "data", "reason"), MALFORMED, ids=[case for case, _, _ in MALFORMED]
)
def test_malformed_hellos_are_rejected_with_a_reason(case: str, data: bytes, reason: str) -> None:
    result = peek_client_hello(data)
    assert isinstance(result, Rejected), result
    assert reason in result.reason


HOST_NAMES: list[tuple[bytes, str | None]] = [
    (b"App1.Confide.TEST", "app1.confide.test"),
    (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
    (b"localhost", "localhost"),
    (b"a" * 63 + b".example", "a" * 63 + ".example"),
    (b"a" * 64 + b".example", None),
    (b"under_score.example", None),
    (b"-lead.example", None),
    (b"trail-.example", None),
    (b"a..b", None),
    (b"", None),
    ("bücher.example".encode(), None),
]


@pytest.mark.parametrize(("raw", "expected"), HOST_NAMES)
def test_host_names(raw: bytes, expected: str | None) -> None:
    assert parse_host_name(raw) == expected


def test_host_name_length_limit() -> None:
    longest = b".".join([b"a" * 63] * 3) + b"." + b"b" * 61  # 253 bytes
    assert len(longest) == 253 and parse_host_name(longest) is not None
    assert parse_host_name(longest + b"b") is None
