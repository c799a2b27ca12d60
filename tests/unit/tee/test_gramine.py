"""GramineTee against a fake /dev/attestation tree holding a real Intel quote."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from confide.attestation import Quote, SgxReportBody
from confide.errors import TeeError
from confide.tee import GramineTee, Tee, TeeKind

VECTOR = Path(__file__).resolve().parents[4] / "shared" / "vectors" / "sgx-dcapqvl-00A067110000"
SEALING_KEY = bytes(range(100, 116))


@pytest.fixture
def real_quote() -> bytes:
    return (VECTOR / "quote.bin").read_bytes()


@pytest.fixture
def gramine(tmp_path: Path, real_quote: bytes) -> Path:
    root = tmp_path / "attestation"
    (root / "keys").mkdir(parents=True)
    (root / "attestation_type").write_bytes(b"dcap")
    (root / "user_report_data").write_bytes(bytes(64))
    (root / "quote").write_bytes(real_quote)
    (root / "keys" / "_sgx_mrenclave").write_bytes(SEALING_KEY)
    return root


def test_quote_binds_written_report_data(gramine: Path, real_quote: bytes) -> None:
    tee = GramineTee(gramine)
    assert isinstance(tee, Tee)
    assert tee.kind is TeeKind.SGX
    report_data = Quote.from_bytes(real_quote).report_data
    assert tee.get_quote(report_data) == real_quote
    assert (gramine / "user_report_data").read_bytes() == report_data


def test_quote_binding_other_report_data_is_refused(gramine: Path) -> None:
    with pytest.raises(TeeError, match="other report data"):
        GramineTee(gramine).get_quote(b"\x01" * 64)


@pytest.mark.parametrize("size", [0, 63, 65])
def test_report_data_must_be_64_bytes(gramine: Path, size: int) -> None:
    with pytest.raises(TeeError, match="exactly 64 bytes"):
        GramineTee(gramine).get_quote(bytes(size))
    assert (gramine / "user_report_data").read_bytes() == bytes(64)


def test_measurement_is_the_quote_mrenclave(gramine: Path, real_quote: bytes) -> None:
    body = Quote.from_bytes(real_quote).body
    assert isinstance(body, SgxReportBody)
    tee = GramineTee(gramine)
    assert tee.measurement == body.mr_enclave
    (gramine / "quote").write_bytes(b"gone")  # taken once, then kept
    assert tee.measurement == body.mr_enclave


def test_sealing_key_is_hkdf_of_the_mrenclave_key(gramine: Path) -> None:
    key = GramineTee(gramine).sealing_key()
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"confide/tee/sealing-key/v1"
    ).derive(SEALING_KEY)
    assert key == expected
    assert len(key) == 32


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_sealing_key_of_wrong_size(gramine: Path, size: int) -> None:
    (gramine / "keys" / "_sgx_mrenclave").write_bytes(bytes(size))
    with pytest.raises(TeeError, match="expected 16"):
        GramineTee(gramine).sealing_key()


@pytest.mark.parametrize("found", [b"none", b"epid", b"", b"dcapx"])
def test_attestation_type_must_be_dcap(gramine: Path, found: bytes) -> None:
    (gramine / "attestation_type").write_bytes(found)
    with pytest.raises(TeeError, match=repr(found.decode())):
        GramineTee(gramine)


def test_attestation_type_with_newline(gramine: Path) -> None:
    (gramine / "attestation_type").write_bytes(b"dcap\n")
    GramineTee(gramine)


def test_missing_tree(tmp_path: Path) -> None:
    with pytest.raises(TeeError, match="cannot read .*attestation_type"):
        GramineTee(tmp_path / "absent")


def test_malformed_quote(gramine: Path) -> None:
    (gramine / "quote").write_bytes(b"\x03\x00" + bytes(100))
    with pytest.raises(TeeError, match="malformed quote"):
        GramineTee(gramine).get_quote(bytes(64))


def test_missing_key_file(gramine: Path) -> None:
    (gramine / "keys" / "_sgx_mrenclave").unlink()
    with pytest.raises(TeeError, match="_sgx_mrenclave"):
        GramineTee(gramine).sealing_key()
