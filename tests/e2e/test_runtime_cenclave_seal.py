"""Cosmian Enclave's own client seals secrets that our runtime accepts.

``cenclave seal --receiver-enclave CERT`` (from ``.venv-interop``, see
tests/interop) verifies our RA-TLS certificate its own way, seals to the
X25519 key it binds, and the result, base64url-encoded as Cosmian's CLI sends
it in ``app_sealed_secrets``, configures our runtime: the code key inside it
decrypts the package, and the app starts; the key is taken out of the sealed
secrets before the app reads them (ADR 0011).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from confide.tee import SimulatedPlatform
from support.runtimes import (
    Launch,
    client,
    running,
    trusting,
    verify_enclave,
)

ROOT = Path(__file__).resolve().parents[2]
CENCLAVE = ROOT / ".venv-interop" / "bin" / "cenclave"


def test_cenclave_sealed_code_key_configures_the_runtime(
    tmp_path: Path, sim_platform: SimulatedPlatform, runtime_launch: Launch
) -> None:
    assert CENCLAVE.exists(), f"{CENCLAVE} is missing: run make test (it builds .venv-interop)"
    platform, launch, code = sim_platform, runtime_launch, runtime_launch.code
    assert code.key is not None
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, _ = verify_enclave(port, platform, launch.measurement())
        pem = tmp_path / "ratls.pem"
        pem.write_bytes(cert.public_bytes(Encoding.PEM))
        plain = tmp_path / "sealed-secrets.json"
        plain.write_text(json.dumps({"code_secret_key": code.key.hex(), "api_token": "t0k3n"}))
        sealed = tmp_path / "sealed.bin"
        proc = subprocess.run(
            [
                str(CENCLAVE), "seal", "--input", str(plain),
                "--receiver-enclave", str(pem), "--output", str(sealed),
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        payload = {
            "uuid": str(launch.app_id),
            "app_sealed_secrets": base64.urlsafe_b64encode(sealed.read_bytes()).decode(),
        }
        pinned = trusting(cert)
        with client(port, pinned) as owner:
            configured = owner.post("/", json=payload)
            assert configured.status_code == 200, configured.text
        runtime.wait_for("serving app:app on https://")
        with client(port, pinned) as user:
            assert user.get("/").text == "Hello world"
            assert user.get("/health").json()["sealed_secrets"] == ["api_token"]
