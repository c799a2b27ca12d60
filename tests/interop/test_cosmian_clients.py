"""Cosmian Enclave's public clients against Confide's formats.

The seed system's clients (``intel-sgx-ra`` 2.3.3 and ``cenclave`` 1.0.0a11
from PyPI) pin ``cryptography<44``, so they live in their own virtual
environment, ``.venv-interop`` (``make`` builds it from
``requirements/interop.txt``), and run here as subprocesses:

- ``intel_sgx_ra.ratls.ratls_verify`` accepts our RA-TLS certificate and reads
  the same quote, measurement and report data;
- ``sgx-ra-utils extract`` writes out exactly the quote we put in;
- ``cenclave seal --receiver-enclave CERT`` seals to the X25519 key our
  certificate binds, and we open it; ``cenclave unseal`` opens what we seal.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import create_ratls_certificate, ratls_report_data
from confide.crypto import X25519KeyPair, seal, unseal
from confide.tee import SimulatedPlatform

ROOT = Path(__file__).resolve().parents[2]
INTEROP = ROOT / ".venv-interop" / "bin"
MRENCLAVE = bytes.fromhex("7e" * 32)


def _tool(name: str) -> str:
    path = INTEROP / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make .venv-interop/.installed` (make test does it)")
    return str(path)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """An RA-TLS certificate from a simulated enclave, with its X25519 key pair."""
    work = tmp_path_factory.mktemp("interop")
    now = datetime.now(UTC)
    platform = SimulatedPlatform.open(work / "platform", now=now)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    x25519 = X25519KeyPair.generate()
    report_data = ratls_report_data(tls_key.public_key(), x25519.public_key)
    quote = platform.quote(report_data, mr_enclave=MRENCLAVE, mr_signer=bytes(32))
    cert = create_ratls_certificate(
        tls_key,
        quote,
        subject="interop.confide.test",
        sans=["interop.confide.test"],
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(days=1),
    )
    pem = work / "ratls.pem"
    pem.write_bytes(cert.public_bytes(Encoding.PEM))
    return {"work": work, "pem": pem, "quote": quote, "x25519": x25519, "rd": report_data}


def test_intel_sgx_ra_ratls_verify_accepts_our_certificate(enclave: dict[str, object]) -> None:
    script = (
        "import sys, json; from pathlib import Path;"
        "from intel_sgx_ra.ratls import ratls_verify;"
        "q = ratls_verify(Path(sys.argv[1]));"
        "print(json.dumps({'mrenclave': bytes(q.report_body.mr_enclave).hex(),"
        " 'report_data': bytes(q.report_body.report_data).hex()}))"
    )
    proc = _run([_tool("python"), "-c", script, str(enclave["pem"])])
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    report_data = enclave["rd"]
    assert isinstance(report_data, bytes)
    assert seen == {"mrenclave": MRENCLAVE.hex(), "report_data": report_data.hex()}


def test_intel_sgx_ra_rejects_a_certificate_whose_key_is_not_bound(
    enclave: dict[str, object], tmp_path: Path
) -> None:
    """The same quote in a certificate for another key: their check must fail too."""
    now = datetime.now(UTC)
    quote = enclave["quote"]
    assert isinstance(quote, bytes)
    other = create_ratls_certificate(
        ec.generate_private_key(ec.SECP256R1()),
        quote,
        subject="interop.confide.test",
        sans=["interop.confide.test"],
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(days=1),
    )
    pem = tmp_path / "unbound.pem"
    pem.write_bytes(other.public_bytes(Encoding.PEM))
    script = (
        "import sys; from pathlib import Path; from intel_sgx_ra.ratls import ratls_verify;"
        "ratls_verify(Path(sys.argv[1]))"
    )
    proc = subprocess.run(
        [_tool("python"), "-c", script, str(pem)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0


def test_sgx_ra_utils_extract_writes_our_quote(enclave: dict[str, object], tmp_path: Path) -> None:
    out = tmp_path / "quote.bin"
    _run([_tool("sgx-ra-utils"), "extract", str(out), "--path", str(enclave["pem"])])
    assert out.read_bytes() == enclave["quote"]


def test_cenclave_seal_to_our_certificate_opens_in_the_enclave(
    enclave: dict[str, object], tmp_path: Path
) -> None:
    secrets = {"code_secret_key": "11" * 32, "db_password": "hunter2"}
    plain = tmp_path / "secrets.json"
    plain.write_text(json.dumps(secrets))
    sealed = tmp_path / "sealed.bin"
    _run(
        [
            _tool("cenclave"), "seal", "--input", str(plain),
            "--receiver-enclave", str(enclave["pem"]), "--output", str(sealed),
        ]
    )  # fmt: skip
    keys = enclave["x25519"]
    assert isinstance(keys, X25519KeyPair)
    assert json.loads(unseal(sealed.read_bytes(), keys.private_key)) == secrets


def test_cenclave_unseal_opens_what_we_seal(enclave: dict[str, object], tmp_path: Path) -> None:
    keys = enclave["x25519"]
    assert isinstance(keys, X25519KeyPair)
    sealed = tmp_path / "sealed.bin"
    sealed.write_bytes(seal(b"from confide", keys.public_key))
    private = tmp_path / "enclave.key"
    private.write_bytes(keys.private_key)
    out = tmp_path / "plain.bin"
    _run(
        [
            _tool("cenclave"), "unseal", "--input", str(sealed),
            "--private-key", str(private), "--output", str(out),
        ]
    )  # fmt: skip
    assert out.read_bytes() == b"from confide"
