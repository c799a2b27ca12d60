"""End to end: launch ``confide runtime``, verify it, configure it, use the app, stop it.

One test per TLS mode of the app (RA-TLS, the owner's certificate, plain
HTTP), each with the simulated TEE and a real owner: the RA-TLS certificate is
verified against the measurement computed on the owner's side before any key
is sent, over a connection pinned to that certificate.
"""

from __future__ import annotations

import dataclasses
import signal
import stat
from pathlib import Path

import pytest

from confide.attestation import fetch_peer_certificate
from confide.runtime import (
    CODE_ROOT,
    STATE_FILE,
)
from confide.tee import SimulatedPlatform
from confide.wire import TlsMode
from support.runtimes import (
    EXAMPLES,
    CodeUnderTest,
    Launch,
    OwnerPki,
    assert_nowhere,
    client,
    new_platform,
    running,
    sealed_secrets,
    secret_fragments,
    trusting,
    verify_enclave,
)

pytestmark = pytest.mark.slow

DB_PASSWORD = "db-password-6d1f0c2e"
API_TOKEN = "api-token-b83a51f4"


def _state_bytes(state_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state_dir.rglob("*")) if p.is_file())


def test_ratls_mode_encrypted_flask_app(
    tmp_path: Path, sim_platform: SimulatedPlatform, runtime_launch: Launch
) -> None:
    platform, launch, code = sim_platform, runtime_launch, runtime_launch.code
    assert code.key is not None
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, verified = verify_enclave(port, platform, launch.measurement())
        pinned = trusting(cert)
        with client(port, pinned) as owner:
            waiting = owner.get("/")
            assert waiting.status_code == 200
            assert waiting.text.strip() == "waiting for configuration"
            assert waiting.headers["Confide-Status"] == "waiting"
            assert waiting.headers["Mse-Status"] == "Waiting"
            payload = {
                "uuid": str(launch.app_id),
                "app_secrets": {"db_password": DB_PASSWORD},
                # The code key travels inside the sealed box, as Cosmian Enclave allows.
                "app_sealed_secrets": sealed_secrets(
                    {"code_secret_key": code.key.hex(), "api_token": API_TOKEN}, verified.extra
                ),
            }
            configured = owner.post("/", json=payload)
            assert configured.status_code == 200, configured.text
            assert configured.json() == {"status": "configured"}
        runtime.wait_for("serving app:app on https://")

        # The app is served with the same, already verified, RA-TLS certificate.
        assert (
            fetch_peer_certificate("127.0.0.1", port, server_name="localhost", timeout=10) == cert
        )
        with client(port, pinned) as user:
            assert user.get("/").text == "Hello world"
            health = user.get("/health").json()
            assert health == {
                "status": "ok",
                "secrets": ["db_password"],
                # The code key opened the package; the app never sees it (ADR 0011).
                "sealed_secrets": ["api_token"],
            }
            # A late configuration reaches the app (Flask: 405), not the configuration code.
            late = user.post("/", json=payload)
            assert late.status_code == 405
            assert "configured" not in late.text
        with client(port, pinned, http2=True) as user2:
            response = user2.get("/")
            assert response.http_version == "HTTP/2"
            assert response.text == "Hello world"

        # The decrypted code and the secrets live in the private code folder, in RAM.
        code_dir = launch.code_dir()
        assert code_dir.parent == CODE_ROOT
        assert stat.S_IMODE(code_dir.stat().st_mode) == 0o700
        assert (code_dir / "app" / "app.py").is_file()
        assert stat.S_IMODE((code_dir / "private").stat().st_mode) == 0o700
        assert runtime.terminate(signal.SIGTERM) == 0
    assert not code_dir.exists() and not launch.code_folders()
    assert (tmp_path / "state" / STATE_FILE).is_file()
    secrets = secret_fragments(DB_PASSWORD, API_TOKEN, code.key.secret)
    assert_nowhere(runtime.output, secrets, "the runtime's output")
    assert_nowhere(
        _state_bytes(tmp_path / "state"),
        [*secrets, b"Hello world", b"def health", b"SECRETS_PATH"],
        "the state folder",
    )


def test_certificate_mode_fastapi_app(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    pki = OwnerPki.generate()
    cert_path = pki.write_certificate(tmp_path / "owner.pem")
    code = CodeUnderTest.folder(EXAMPLES / "fastapi_hello")
    launch = Launch(
        code, tmp_path / "state", tmp_path / "sim", tls=TlsMode.OWNER, certificate=cert_path
    )
    with running(launch.args()) as runtime:
        port = runtime.port()
        # Configuration is over RA-TLS in every mode.
        cert, _ = verify_enclave(port, platform, launch.measurement())
        with client(port, trusting(cert)) as owner:
            response = owner.post(
                "/",
                json={
                    "uuid": str(launch.app_id),
                    "ssl_private_key": pki.key_pem,
                    "app_secrets": {"db_password": DB_PASSWORD},
                },
            )
            assert response.status_code == 200, response.text
        runtime.wait_for("serving app:app on https://")
        served = fetch_peer_certificate("127.0.0.1", port, server_name="localhost", timeout=10)
        assert served == pki.certificate
        with client(port, trusting(pki.ca)) as user:
            assert user.get("/").json() == {"message": "Hello world"}
            assert user.get("/health").json()["secrets"] == ["db_password"]
        with client(port, trusting(pki.ca), http2=True) as user2:
            assert user2.get("/").http_version == "HTTP/2"
        assert runtime.terminate() == 0
    key_body = "".join(pki.key_pem.splitlines()[1:-1]).encode()
    fragments = [*secret_fragments(DB_PASSWORD), key_body]
    assert_nowhere(runtime.output, fragments, "the runtime's output")
    assert_nowhere(_state_bytes(tmp_path / "state"), fragments, "the state folder")


def test_no_ssl_mode_plain_http(
    tmp_path: Path, sim_platform: SimulatedPlatform, runtime_launch: Launch
) -> None:
    platform, code = sim_platform, runtime_launch.code
    assert code.key is not None
    launch = dataclasses.replace(runtime_launch, tls=TlsMode.OPERATOR)
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, verified = verify_enclave(port, platform, launch.measurement())
        with client(port, trusting(cert)) as owner:
            response = owner.post(
                "/",
                json={
                    "uuid": str(launch.app_id).upper(),
                    "code_secret_key": code.key.hex(),
                    # Padded base64url is accepted too.
                    "app_sealed_secrets": sealed_secrets(
                        {"api_token": API_TOKEN}, verified.extra, pad=True
                    ),
                },
            )
            assert response.status_code == 200, response.text
        runtime.wait_for("serving app:app on http://")
        with client(port, None) as user:
            assert user.get("/").text == "Hello world"
            assert user.get("/health").json()["sealed_secrets"] == ["api_token"]
            # Plain HTTP carries no certificate naming the app: Host must name it (a route
            # to an address another app's runtime now holds gets 421, not this app).
            assert launch.san[0] == "localhost"
            named = user.get("/", headers={"Host": f"LocalHost.:{port}"})
            assert named.text == "Hello world"
            misdirected = user.get("/", headers={"Host": "another-app.example"})
            assert misdirected.status_code == 421, misdirected.text
            assert "misdirected request" in misdirected.text
            assert "localhost" not in misdirected.text  # the app's names are not told
        assert runtime.terminate(signal.SIGINT) == 0
    assert_nowhere(
        runtime.output, secret_fragments(API_TOKEN, code.key.secret), "the runtime's output"
    )
