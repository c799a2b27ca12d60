"""Using an enclave after the windows its verification relied on (issue 9, point 5).

- A proxy pinned to an enclave's certificate: 40 s after the certificate's
  notAfter, a request (on a kept-alive connection, then on a new one) must not
  reach the enclave. The proxy's clock is a parameter, so no time passes.
- The runtime itself: at its measured ``--ratls`` expiry it stops serving and
  exits with ``EXIT_EXPIRED`` and one line on stderr (a few seconds of real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confide.attestation import (
    Policy,
    RatlsVerified,
    create_ratls_certificate,
    ratls_report_data,
    verify_ratls_certificate,
)
from confide.client import (
    CertificatePin,
    ProxyApp,
    ProxySettings,
    bind_loopback,
    loopback_hosts,
    serve_proxy,
)
from confide.runtime import EXIT_EXPIRED
from confide.tee import SimulatedPlatform
from support.runtimes import (
    EXAMPLES,
    CodeUnderTest,
    Launch,
    client,
    new_platform,
    running,
    sealed_secrets,
    trusting,
    verify_enclave,
)

LIMIT = 10.0
MEASUREMENT = bytes(range(32))


class EnclaveServer:
    """A TLS server with an RA-TLS certificate; answers every request, counting them."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, tmp: Path) -> None:
        (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(LIMIT)
            with self._context.wrap_socket(conn, server_side=True) as tls:
                buffer = b""
                while chunk := tls.recv(65536):
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        _, buffer = buffer.split(b"\r\n\r\n", 1)
                        self.requests += 1
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHello")


@contextlib.contextmanager
def enclave(tmp: Path) -> Iterator[tuple[EnclaveServer, SimulatedPlatform, x509.Certificate]]:
    now = datetime.now(UTC)
    platform = SimulatedPlatform.open(tmp / "sim", now=now)
    key = ec.generate_private_key(ec.SECP256R1())
    quote = platform.quote(
        ratls_report_data(key.public_key(), bytes(32)), mr_enclave=MEASUREMENT, mr_signer=bytes(32)
    )
    cert = create_ratls_certificate(
        key,
        quote,
        subject="app.example",
        sans=("app.example",),
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(minutes=10),
    )
    server = EnclaveServer(cert, key, tmp)
    try:
        yield server, platform, cert
    finally:
        server.close()


def test_a_pinned_proxy_refuses_an_expired_enclave(tmp_path: Path) -> None:
    with enclave(tmp_path) as (server, platform, cert):
        clock_now = [datetime.now(UTC)]
        collateral = platform.collateral(clock_now[0], validity=timedelta(days=30))

        def verify(c: x509.Certificate) -> RatlsVerified:
            return verify_ratls_certificate(
                c,
                collateral,
                now=clock_now[0],
                policy=Policy(mr_enclave=MEASUREMENT, allow_simulation=True),
                trust_anchor=platform.root_certificate,
            )

        verified = verify(cert)
        assert verified.valid_until == cert.not_valid_after_utc  # the shortest window here
        der = cert.public_bytes(serialization.Encoding.DER)

        async def attack() -> None:
            listener = bind_loopback("127.0.0.1", 0)
            port = listener.getsockname()[1]
            pin = CertificatePin(
                der,
                verify=verify,
                log=lambda line: None,
                valid_until=verified.valid_until,
                clock=lambda: clock_now[0],
            )
            settings = ProxySettings(
                domain="app.example",
                upstream=("127.0.0.1", server.port),
                timeout=LIMIT,
                allowed_hosts=loopback_hosts("127.0.0.1", port),
            )
            stop = asyncio.Event()
            proxy = ProxyApp(settings, pin, log=lambda line: None)
            task = asyncio.create_task(serve_proxy(proxy, listener, shutdown_trigger=stop.wait))
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=LIMIT
                ) as browser:
                    assert (await browser.get("/")).text == "Hello"
                    assert server.requests == 1
                    # 40 s after notAfter: the kept-alive upstream connection, then new ones.
                    clock_now[0] = cert.not_valid_after_utc + timedelta(seconds=40)
                    for _ in range(2):
                        refused = await browser.post("/", content=b"transfer=all")
                        assert refused.status_code == 502, refused.text
                        assert "has expired" in refused.text
                        assert (await browser.get("/")).status_code == 502
                    assert server.requests == 1
            finally:
                stop.set()
                await asyncio.wait_for(task, LIMIT)
                listener.close()

        asyncio.run(asyncio.wait_for(attack(), 4 * LIMIT))


@pytest.mark.slow
def test_the_runtime_stops_serving_at_its_measured_expiry(tmp_path: Path) -> None:
    platform = new_platform(tmp_path / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    assert code.key is not None
    # Enough time to launch and configure on a loaded machine, and no more.
    expiry = int((datetime.now(UTC) + timedelta(seconds=12)).timestamp())
    launch = Launch(code, tmp_path / "state", tmp_path / "sim", ratls_expiry=expiry)
    with running(launch.args()) as runtime:
        port = runtime.port()
        cert, verified = verify_enclave(port, platform, launch.measurement())
        assert cert.not_valid_after_utc == datetime.fromtimestamp(expiry, UTC)
        with client(port, trusting(cert)) as owner:
            payload = {
                "uuid": str(launch.app_id),
                "app_sealed_secrets": sealed_secrets(
                    {"code_secret_key": code.key.hex()}, verified.extra
                ),
            }
            assert owner.post("/", json=payload).status_code == 200
        runtime.wait_for("serving app:app on https://")
        with client(port, trusting(cert)) as user:
            assert user.get("/").text == "Hello world"

        assert runtime.wait_exit(timeout=30) == EXIT_EXPIRED
        assert datetime.now(UTC).timestamp() >= expiry
        lines = [line for line in runtime.text.splitlines() if line.startswith("expired:")]
        assert len(lines) == 1, runtime.text
        assert "has passed; the runtime stopped serving (exit 3)" in lines[0]
        assert "Traceback" not in runtime.text
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
