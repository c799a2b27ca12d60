"""The DER encoder of the SGX extension: byte-exact with Intel, round trip through our parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from confide.attestation import PckExtensions
from confide.tee._der import encode_sgx_extension

VECTORS = Path(__file__).resolve().parents[4] / "shared" / "vectors"
SGX_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")


def test_encodes_exactly_as_intel() -> None:
    # A PCK certificate of Intel's Processor CA, the layout the simulator issues
    # (Platform CA certificates add .6 PlatformInstanceID and .7 Configuration).
    pem = (VECTORS / "sgx-dcapqvl-00A067110000" / "pck_cert_chain.pem").read_bytes()
    chain = x509.load_pem_x509_certificates(pem)
    ext = chain[0].extensions.get_extension_for_oid(SGX_OID).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    parsed = PckExtensions.from_der(ext.value)
    encoded = encode_sgx_extension(
        ppid=parsed.ppid,
        tcb_components=parsed.tcb_components,
        pce_svn=parsed.pce_svn,
        cpu_svn=parsed.cpu_svn,
        pce_id=parsed.pce_id,
        fmspc=parsed.fmspc,
        sgx_type=parsed.sgx_type,
    )
    assert encoded == ext.value


@given(
    ppid=st.binary(min_size=16, max_size=16),
    components=st.lists(st.integers(0, 255), min_size=16, max_size=16),
    pce_svn=st.integers(0, 0xFFFF),
    cpu_svn=st.binary(min_size=16, max_size=16),
    pce_id=st.binary(min_size=2, max_size=2),
    fmspc=st.binary(min_size=6, max_size=6),
    sgx_type=st.integers(0, 2),
)
def test_round_trips_through_the_parser(
    ppid: bytes,
    components: list[int],
    pce_svn: int,
    cpu_svn: bytes,
    pce_id: bytes,
    fmspc: bytes,
    sgx_type: int,
) -> None:
    raw = encode_sgx_extension(
        ppid=ppid,
        tcb_components=components,
        pce_svn=pce_svn,
        cpu_svn=cpu_svn,
        pce_id=pce_id,
        fmspc=fmspc,
        sgx_type=sgx_type,
    )
    assert PckExtensions.from_der(raw) == PckExtensions(
        ppid=ppid,
        tcb_components=tuple(components),
        pce_svn=pce_svn,
        cpu_svn=cpu_svn,
        pce_id=pce_id,
        fmspc=fmspc,
        sgx_type=sgx_type,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ppid", bytes(15)),
        ("fmspc", bytes(7)),
        ("tcb_components", (0,) * 15),
        ("tcb_components", (256,) + (0,) * 15),
        ("pce_svn", 0x10000),
        ("sgx_type", 3),
    ],
)
def test_rejects_out_of_range_fields(field: str, value: object) -> None:
    fields: dict[str, object] = {
        "ppid": bytes(16),
        "tcb_components": (0,) * 16,
        "pce_svn": 0,
        "cpu_svn": bytes(16),
        "pce_id": bytes(2),
        "fmspc": bytes(6),
        "sgx_type": 0,
        field: value,
    }
    with pytest.raises(ValueError, match=field.split("_")[0]):
        encode_sgx_extension(**fields)  # type: ignore[arg-type]
