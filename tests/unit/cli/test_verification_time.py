"""``confide verify`` reads its verification time after the collateral is fetched (issue 9, 12).

The operator here issues collateral at the second it answers, without
backdating, and answers just after a second boundary: a client that read its
clock before the fetch would find the CRLs "not yet valid" (seen on a loaded
machine: ``root ca crl is not yet valid: observed 07:10:44.995``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from confide.attestation import (
    CHALLENGE_PATH,
    NONCE_SIZE,
    create_ratls_certificate,
    fresh_report_data,
    ratls_report_data,
)
from confide.cli import app
from confide.tee import CollateralSpec, SimulatedPlatform
from confide.wire import LAUNCH_MANIFEST_OID, LaunchManifest, TlsMode

NAME = "app.example"
LIMIT = 10.0


def _manifest(now: datetime) -> LaunchManifest:
    return LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes(32),
        app_id=uuid.UUID(int=12),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int((now + timedelta(days=1)).timestamp()),
        certificate_sha256=None,
        san=(NAME,),
        subject=None,
    )


@contextlib.contextmanager
def enclave(tmp: Path, platform: SimulatedPlatform) -> Iterator[int]:
    """A TLS server presenting an RA-TLS certificate (with its launch manifest); its port."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    launch = _manifest(now)
    quote = platform.quote(
        ratls_report_data(key.public_key(), bytes(32)),
        mr_enclave=launch.measurement(),
        mr_signer=bytes(32),
    )
    cert = create_ratls_certificate(
        key,
        quote,
        subject=NAME,
        sans=(NAME,),
        not_before=now - timedelta(hours=1),
        not_after=now + timedelta(days=1),
        extensions=[x509.UnrecognizedExtension(LAUNCH_MANIFEST_OID, launch.to_json())],
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    server = socket.create_server(("127.0.0.1", 0))

    der = cert.public_bytes(serialization.Encoding.DER)

    def answer(tls: ssl.SSLSocket) -> None:
        """The fresh challenge, as the runtime answers it (ADR 0021); nothing else is served."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(4096)
            if not chunk:
                return  # a certificate fetch: the client leaves after the handshake
            data += chunk
        head, nonce = data.split(b"\r\n\r\n", 1)
        while len(nonce) < NONCE_SIZE:
            nonce += tls.recv(NONCE_SIZE - len(nonce))
        if not head.startswith(f"POST {CHALLENGE_PATH} ".encode()):
            return
        binding = tls.get_channel_binding("tls-unique")
        assert binding is not None
        body = platform.quote(
            fresh_report_data(nonce, der, binding),
            mr_enclave=launch.measurement(),
            mr_signer=bytes(32),
        )
        tls.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                conn.settimeout(LIMIT)
                with context.wrap_socket(conn, server_side=True) as tls:
                    answer(tls)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


@contextlib.contextmanager
def operator(platform: SimulatedPlatform) -> Iterator[str]:
    """``GET /api/v1/simulation``: collateral issued at the second of the answer, just after
    a second boundary."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            # Answer in the next second, as a loaded operator may.
            time.sleep(1.05 - time.time() % 1)
            issued = datetime.now(UTC).replace(microsecond=0)
            window = (issued, issued + timedelta(days=30))
            spec = CollateralSpec(
                tcb_info_window=window,
                qe_identity_window=window,
                root_ca_crl_window=window,
                pck_crl_window=window,
            )
            body = json.dumps(
                {
                    "simulated": True,
                    "root_ca_pem": platform.root_certificate.public_bytes(
                        serialization.Encoding.PEM
                    ).decode(),
                    "collateral": json.loads(platform.collateral(issued, spec=spec).to_json()),
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_verify_reads_the_time_after_the_collateral_is_fetched(tmp_path: Path) -> None:
    platform = SimulatedPlatform.open(tmp_path / "sim", now=datetime.now(UTC) - timedelta(days=1))
    with enclave(tmp_path, platform) as port, operator(platform) as url:
        done = CliRunner().invoke(
            app,
            ["verify", NAME, "--connect", f"127.0.0.1:{port}", "--operator", url]
            + ["--allow-simulation", "--timeout", str(LIMIT)],
        )
    assert done.exit_code == 0, done.output
    assert "not yet valid" not in done.output
