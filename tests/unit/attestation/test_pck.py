"""The SGX extension of PCK certificates: real leaves, built DER, and FormatError otherwise."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.attestation import PckExtensions
from confide.attestation._pck import SGX_EXTENSION_OID
from confide.errors import FormatError
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
AUTOMATA = "sgx-automata-00606A000000"
TDX = "tdx-dcapqvl-B0C06F000000"
NEGATIVE = "tdx-gotdxguest-50806F000000-negative"
Loader = Callable[[str], "VectorSet"]
BASE = "1.2.840.113741.1.13.1"

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# -- a minimal DER writer, to build extensions field by field ---------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def integer(value: int, tag: int = 0x02) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def octets(value: bytes) -> bytes:
    return tlv(0x04, value)


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def pair(name: str, value: bytes) -> bytes:
    return seq(oid(name), value)


def tcb(components: list[int], pce_svn: int, cpu_svn: bytes) -> bytes:
    return seq(
        *(pair(f"{BASE}.2.{i + 1}", integer(svn)) for i, svn in enumerate(components)),
        pair(f"{BASE}.2.17", integer(pce_svn)),
        pair(f"{BASE}.2.18", octets(cpu_svn)),
    )


def extension(
    *,
    ppid: bytes = bytes(range(16)),
    components: list[int] | None = None,
    pce_svn: int = 13,
    cpu_svn: bytes | None = None,
    pce_id: bytes = b"\x00\x00",
    fmspc: bytes = bytes.fromhex("00a067110000"),
    sgx_type: int = 0,
    sgx_type_tag: int = 0x0A,
    tcb_value: bytes | None = None,
    drop: tuple[str, ...] = (),
    extra: tuple[bytes, ...] = (),
) -> bytes:
    """The SGX extension, DER; ``drop`` leaves out entries by their last OID arc."""
    comps = components if components is not None else [11, 11, 2, 2, 255, 1] + [0] * 10
    if tcb_value is None:
        tcb_value = tcb(comps, pce_svn, cpu_svn if cpu_svn is not None else bytes(comps))
    entries = {
        "1": octets(ppid),
        "2": tcb_value,
        "3": octets(pce_id),
        "4": octets(fmspc),
        "5": integer(sgx_type, tag=sgx_type_tag),
    }
    return seq(
        *(pair(f"{BASE}.{arc}", value) for arc, value in entries.items() if arc not in drop),
        *extra,
    )


def _leaf(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem)[0]


def _ext_der(cert: x509.Certificate) -> bytes:
    value = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


@cache
def _real_ders() -> tuple[bytes, ...]:
    root = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
    return tuple(
        _ext_der(_leaf((root / name / "pck_cert_chain.pem").read_bytes()))
        for name in (SGX, AUTOMATA, TDX, NEGATIVE)
    )


def _parses_or_format_error(data: bytes) -> None:
    try:
        ext = PckExtensions.from_der(data)
    except FormatError as exc:
        assert exc.code == "pck.extension"
        return
    assert len(ext.tcb_components) == 16
    assert all(0 <= c <= 255 for c in ext.tcb_components)
    assert (len(ext.ppid), len(ext.cpu_svn), len(ext.pce_id), len(ext.fmspc)) == (16, 16, 2, 6)
    assert 0 <= ext.pce_svn <= 0xFFFF


# -- real leaves -------------------------------------------------------------------


@pytest.mark.parametrize("name", [SGX, AUTOMATA, TDX, NEGATIVE])
def test_real_pck_leaves(load_vector: Loader, name: str) -> None:
    v = load_vector(name)
    leaf = _leaf(v.data("pck_cert_chain.pem"))
    ext = PckExtensions.from_certificate(leaf)
    assert PckExtensions.from_der(_ext_der(leaf)) == ext
    want = v.expected["pck"]
    assert ext.fmspc.hex().upper() == want["fmspc"]
    assert ext.pce_svn == want["pce_svn"]
    assert ext.cpu_svn.hex() == want["cpu_svn"]
    assert ext.pce_id.hex() == want["pce_id"]
    assert ext.sgx_type == want["sgx_type"]
    assert ext.ppid.hex() == want["ppid"]
    assert list(ext.tcb_components) == list(ext.cpu_svn)


def test_platform_ca_leaves_carry_extra_entries_that_are_ignored(load_vector: Loader) -> None:
    """Platform CA leaves add PlatformInstanceID and Configuration (OIDs .6 and .7)."""
    der = _ext_der(_leaf(load_vector(AUTOMATA).data("pck_cert_chain.pem")))
    assert oid(f"{BASE}.6") in der
    assert PckExtensions.from_der(der).sgx_type == 1


def test_built_extension_parses() -> None:
    ext = PckExtensions.from_der(extension(extra=(pair(f"{BASE}.6", octets(bytes(16))),)))
    assert ext.tcb_components == (11, 11, 2, 2, 255, 1, *([0] * 10))
    assert (ext.pce_svn, ext.sgx_type, ext.fmspc.hex()) == (13, 0, "00a067110000")


# -- malformed -----------------------------------------------------------------------


def _tcb_without(arc: int) -> bytes:
    comps = [11, 11, 2, 2, 255, 1] + [0] * 10
    entries = [pair(f"{BASE}.2.{i + 1}", integer(svn)) for i, svn in enumerate(comps)]
    entries += [pair(f"{BASE}.2.17", integer(13)), pair(f"{BASE}.2.18", octets(bytes(comps)))]
    return seq(*(e for i, e in enumerate(entries, start=1) if i != arc))


_GOOD = extension()

MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("one byte", b"\x30"),
    ("not a SEQUENCE", tlv(0x31, _GOOD[4:])),
    ("a trailing byte", _GOOD + b"\x00"),
    ("a byte short", _GOOD[:-1]),
    ("indefinite length", b"\x30\x80" + _GOOD[4:] + b"\x00\x00"),
    ("length of length 4", b"\x30\x84" + (len(_GOOD) - 4).to_bytes(4, "big") + _GOOD[4:]),
    ("length of length 0", b"\x30\x80"),
    ("an element that is not a pair", seq(integer(1))),
    ("a pair of three", seq(seq(oid(f"{BASE}.1"), octets(bytes(16)), integer(1)))),
    ("a pair without an OID", seq(seq(integer(1), octets(bytes(16))))),
    ("an empty OID", seq(seq(tlv(0x06, b""), octets(bytes(16))))),
    ("a truncated OID", seq(seq(tlv(0x06, b"\x2a\x86"), octets(bytes(16))))),
    ("a duplicate PPID", extension(extra=(pair(f"{BASE}.1", octets(bytes(16))),))),
    *((f"no entry .{arc}", extension(drop=(arc,))) for arc in ("1", "2", "3", "4", "5")),
    *(
        (f"no TCB entry .2.{arc}", extension(tcb_value=_tcb_without(arc)))
        for arc in (1, 16, 17, 18)
    ),
    ("a PPID of 15 bytes", extension(ppid=bytes(15))),
    ("an FMSPC of 7 bytes", extension(fmspc=bytes(7))),
    ("a PCE-ID of 3 bytes", extension(pce_id=bytes(3))),
    ("a CPUSVN of 15 bytes", extension(cpu_svn=bytes(15))),
    ("a TCB component of 256", extension(components=[256] + [0] * 15, cpu_svn=bytes(16))),
    ("a negative TCB component", extension(components=[-1] + [0] * 15, cpu_svn=bytes(16))),
    ("a PCESVN of 65536", extension(pce_svn=0x10000)),
    ("a negative PCESVN", extension(pce_svn=-1)),
    ("a PCESVN of 9 bytes", extension(pce_svn=2**64)),
    ("the SGX type as INTEGER", extension(sgx_type_tag=0x02)),
    ("the TCB as an OCTET STRING", extension(tcb_value=octets(bytes(16)))),
    ("a TCB pair of the wrong shape", extension(tcb_value=seq(seq(integer(1))))),
]


@pytest.mark.parametrize(("name", "der"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_extensions_raise_format_error(name: str, der: bytes) -> None:
    with pytest.raises(FormatError) as caught:
        PckExtensions.from_der(der)
    assert caught.value.code == "pck.extension"
    assert "\n" not in str(caught.value)


def _self_signed(extensions: list[x509.ExtensionType]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not a PCK")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256())


def test_a_certificate_without_the_extension_raises_format_error() -> None:
    with pytest.raises(FormatError) as caught:
        PckExtensions.from_certificate(_self_signed([]))
    assert caught.value.code == "pck.extension"


def test_a_certificate_with_a_built_extension_parses() -> None:
    cert = _self_signed([x509.UnrecognizedExtension(SGX_EXTENSION_OID, extension(sgx_type=1))])
    assert PckExtensions.from_certificate(cert).sgx_type == 1


# -- hypothesis ------------------------------------------------------------------------


@FUZZ
@given(
    st.binary(min_size=16, max_size=16),
    st.lists(st.integers(0, 255), min_size=16, max_size=16),
    st.integers(0, 0xFFFF),
    st.binary(min_size=2, max_size=2),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 2),
)
def test_built_extensions_round_trip(
    ppid: bytes, components: list[int], pce_svn: int, pce_id: bytes, fmspc: bytes, sgx_type: int
) -> None:
    der = extension(
        ppid=ppid,
        components=components,
        pce_svn=pce_svn,
        pce_id=pce_id,
        fmspc=fmspc,
        sgx_type=sgx_type,
    )
    assert PckExtensions.from_der(der) == PckExtensions(
        ppid=ppid,
        tcb_components=tuple(components),
        pce_svn=pce_svn,
        cpu_svn=bytes(components),
        pce_id=pce_id,
        fmspc=fmspc,
        sgx_type=sgx_type,
    )


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data: bytes) -> None:
    _parses_or_format_error(data)


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_single_byte_mutations_of_real_extensions(which: int, data: st.DataObject) -> None:
    real = _real_ders()[which]
    mutated = bytearray(real)
    mutated[data.draw(st.integers(0, len(real) - 1))] = data.draw(st.integers(0, 255))
    _parses_or_format_error(bytes(mutated))


@FUZZ
@given(st.sampled_from(range(4)), st.data())
def test_truncations_and_extensions_of_real_extensions(which: int, data: st.DataObject) -> None:
    real = _real_ders()[which]
    cut = data.draw(st.integers(0, len(real)))
    tail = data.draw(st.binary(max_size=16))
    changed = real[:cut] + tail
    _parses_or_format_error(changed)
    if len(changed) != len(real):  # the outer SEQUENCE's length no longer fits
        with pytest.raises(FormatError):
            PckExtensions.from_der(changed)
