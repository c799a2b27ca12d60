"""An attacker holding a copy of the enclave's RA-TLS key answers the user's challenge.

The key is taken out of the runtime's sealed state with the simulated
platform's sealing key (what a side channel or a debug platform would give).
The attacker serves the enclave's own certificate with it, so the user's
pinned TLS handshake succeeds; then, for the challenge, it either forwards the
user's nonce to the live enclave over its own connection and hands the answer
back (a relay), or plays back an answer it recorded earlier (a replay), or the
certificate's own quote (no live enclave at all). Each is refused with its own
code. Guard: a plain TCP relay (no key, the TLS session end to end) passes.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import CHALLENGE_PATH, Collateral, Quote, quote_from_certificate
from confide.client import (
    ChallengeClient,
    CollateralEvidence,
    EnclavePolicy,
    EnclaveVerifier,
    fetch_enclave_certificate,
    pinned_client,
)
from confide.errors import AttestationError
from confide.runtime import StateStore
from confide.wire import HostPort
from support.runtimes import EXAMPLES, HOST, CodeUnderTest, Launch, new_platform, running

pytestmark = pytest.mark.slow

NAME = "localhost"
#: Longest the attacker waits on a socket (seconds).
LIMIT = 10.0

#: What the attacker answers a challenge with, given the user's nonce.
Answer = Callable[[bytes], bytes]


def _read_request(tls: ssl.SSLSocket) -> tuple[str, bytes]:
    """One HTTP/1.1 request's path and body (Content-Length bodies only)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            raise ConnectionError("the client left")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        body += tls.recv(length - len(body))
    return lines[0].split(" ")[1], body


@contextmanager
def _impostor(cert_pem: bytes, key_pem: bytes, answer: Answer) -> Iterator[HostPort]:
    """A TLS server with the enclave's certificate and key, answering challenges by ``answer``."""
    with tempfile.TemporaryDirectory() as tmp:
        chain = Path(tmp) / "chain.pem"
        chain.write_bytes(cert_pem + key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(chain)
    listener = socket.create_server((HOST, 0))
    listener.settimeout(LIMIT)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(sock, server_side=True) as tls:
                    tls.settimeout(LIMIT)
                    path, body = _read_request(tls)
                    content = answer(body) if path == CHALLENGE_PATH else b""
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        + f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
                        + content
                    )
            except (OSError, ConnectionError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield HostPort(HOST, listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(LIMIT)


@contextmanager
def _tcp_relay(target: HostPort) -> Iterator[HostPort]:
    """Bytes forwarded both ways, nothing read: the TLS session stays the enclave's."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(LIMIT)

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            dst.close()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((target.host, target.port), timeout=LIMIT)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield HostPort(HOST, listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(LIMIT)


@dataclass(frozen=True)
class Stolen:
    """A live enclave, what the user verifies it with, and the key the attacker took."""

    address: HostPort
    cert: x509.Certificate
    key_pem: bytes
    evidence: CollateralEvidence
    policy: EnclavePolicy

    def verifier(self, via: HostPort) -> EnclaveVerifier:
        """The user's verifier, its challenge sent to ``via``."""
        return EnclaveVerifier(
            self.evidence, self.policy, fresh=ChallengeClient(via, NAME, timeout=LIMIT)
        )


@pytest.fixture(scope="module")
def stolen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stolen]:
    tmp = tmp_path_factory.mktemp("fresh-relay")
    platform = new_platform(tmp / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp / "app.pkg")
    launch = Launch(code, tmp / "state", tmp / "sim")
    with running(launch.args()) as runtime:
        address = HostPort(HOST, runtime.port())
        cert = fetch_enclave_certificate(address, NAME, timeout=LIMIT)
        key = platform.sealing_key(launch.measurement())
        state = StateStore(launch.state_dir, sealing_key=key).load()
        assert state is not None

        def collateral(quote: Quote, now: datetime) -> Collateral:
            return platform.collateral(now)

        evidence = CollateralEvidence(collateral, platform.root_certificate)
        policy = EnclavePolicy(launch.measurement(), NAME, allow_simulation=True)
        yield Stolen(address, cert, state.tls_key_pem, evidence, policy)


def _forward(enclave: HostPort, cert: x509.Certificate) -> Answer:
    def answer(nonce: bytes) -> bytes:
        with pinned_client(enclave, NAME, cert, timeout=LIMIT) as client:
            return client.post(CHALLENGE_PATH, content=nonce).content

    return answer


def _recorded(enclave: HostPort, cert: x509.Certificate) -> Answer:
    earlier = _forward(enclave, cert)(b"\x07" * 32)
    return lambda nonce: earlier


def _certificates_own(enclave: HostPort, cert: x509.Certificate) -> Answer:
    own = quote_from_certificate(cert)
    return lambda nonce: own


ATTACKS = [
    ("relays the nonce to the live enclave", _forward, "fresh.relayed"),
    ("replays an answer recorded earlier", _recorded, "fresh.replayed"),
    ("replays the certificate's quote (no live enclave)", _certificates_own, "fresh.replayed"),
]


def test_guard_a_plain_tcp_relay_passes(stolen: Stolen) -> None:
    with _tcp_relay(stolen.address) as via:
        verified = stolen.verifier(via).verify(stolen.cert)
    assert verified.fresh is not None


@pytest.mark.parametrize(("name", "attack", "code"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_an_impostor_with_the_key_is_refused(
    stolen: Stolen,
    name: str,
    attack: Callable[[HostPort, x509.Certificate], Answer],
    code: str,
) -> None:
    cert = stolen.cert
    answer = attack(stolen.address, cert)
    with _impostor(cert.public_bytes(Encoding.PEM), stolen.key_pem, answer) as via:
        # Guard: the impostor's handshake passes the user's pin (it holds the real key).
        assert fetch_enclave_certificate(via, NAME, timeout=LIMIT) == cert
        with pytest.raises(AttestationError) as caught:
            stolen.verifier(via).verify(cert)
    assert caught.value.code == code, caught.value
