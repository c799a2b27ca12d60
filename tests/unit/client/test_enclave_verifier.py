"""The one verifier (ADR 0015): a mandatory policy, one simulation refusal, the verification
time read after the evidence, and one pinning technique (the exact DER, after the handshake).

Each refusal table has a row that must pass, so a verifier that refuses everything fails too.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confide.attestation import (
    Collateral,
    Policy,
    Quote,
    create_ratls_certificate,
    ratls_report_data,
)
from confide.client import (
    SIMULATION_REFUSED,
    CollateralEvidence,
    DeployOptions,
    EnclavePolicy,
    EnclaveVerifier,
    EvidenceSource,
    OperatorClient,
    SimulationEvidence,
    SimulationInfo,
    check_before_upload,
    pinned_client,
)
from confide.client._verify import enclave_tls_context
from confide.errors import AttestationError, SimulationError, UsageError
from confide.tee import SimulatedPlatform
from confide.wire import LAUNCH_MANIFEST_OID, HostPort, LaunchManifest, TlsMode
from confide.wire.api import Account, DeployManifest, Plan

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
#: Before the platform, its collateral and the certificate existed: nothing verifies then.
BEFORE = CREATED - timedelta(days=400)
KEY = ec.derive_private_key(4243, ec.SECP256R1())
APP = "app.example"
LAUNCH = LaunchManifest(
    runtime_sha256=bytes(32),
    package_sha256=bytes(range(32)),
    app_id=uuid.UUID(int=9),
    application="app:app",
    tls=TlsMode.RATLS,
    ratls_expiry=int((NOW + timedelta(days=1)).timestamp()),
    certificate_sha256=None,
    san=(APP,),
    subject=None,
)
FP = LAUNCH.measurement()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("verifier") / "sim", now=CREATED)


@pytest.fixture(scope="module")
def collateral(platform: SimulatedPlatform) -> Collateral:
    return platform.collateral(NOW)


def certificate(
    platform: SimulatedPlatform, *, not_before: datetime = CREATED, days: int = 1
) -> x509.Certificate:
    quote = platform.quote(
        ratls_report_data(KEY.public_key(), bytes(32)), mr_enclave=FP, mr_signer=bytes(32)
    )
    return create_ratls_certificate(
        KEY,
        quote,
        subject=APP,
        sans=(APP,),
        not_before=not_before,
        not_after=not_before + timedelta(days=days),
        extensions=[x509.UnrecognizedExtension(LAUNCH_MANIFEST_OID, LAUNCH.to_json())],
    )


# -- the policy is mandatory -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"fingerprint": None, "name": APP}, "fingerprint"),
        ({"fingerprint": FP, "name": None}, "name"),
        ({"fingerprint": FP, "name": APP, "checks": Policy(mr_enclave=FP)}, "policy's"),
        ({"fingerprint": FP, "name": APP, "checks": Policy(allow_simulation=True)}, "policy's"),
    ],
    ids=["no fingerprint", "no name", "fingerprint hidden in checks", "simulation in checks"],
)
def test_leaving_a_check_out_needs_an_explicit_allow(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        EnclavePolicy(**fields)


def test_the_explicit_allows_are_accepted() -> None:
    policy = EnclavePolicy(None, None, allow_any_code=True, allow_any_name=True)
    assert policy.fingerprint is None and policy.name is None


# -- one refusal of a simulated TEE, before anything is fetched --------------------------------


@dataclass
class Fetches:
    """A collateral source that records when it was asked."""

    collateral: Collateral
    at: list[datetime]

    def __call__(self, quote: Quote, now: datetime) -> Collateral:
        self.at.append(now)
        return self.collateral


SourceMaker = Callable[[SimulatedPlatform, Fetches], EvidenceSource]


def _operator(platform: SimulatedPlatform, fetches: Fetches) -> EvidenceSource:
    info = SimulationInfo(platform.root_certificate, fetches.collateral)
    return SimulationEvidence(lambda: info, collateral=fetches)


SOURCES: list[tuple[str, SourceMaker]] = [
    ("simulation root as anchor", lambda p, f: CollateralEvidence(f, p.root_certificate)),
    ("the quote's chain ends at a simulation root", lambda p, f: CollateralEvidence(f)),
    ("the operator's simulation endpoint", _operator),
]


@pytest.mark.parametrize("make", [m for _, m in SOURCES], ids=[n for n, _ in SOURCES])
def test_a_simulated_tee_is_refused_with_one_code_before_any_fetch(
    make: SourceMaker, platform: SimulatedPlatform, collateral: Collateral
) -> None:
    fetches = Fetches(collateral, [])
    cert = certificate(platform)
    verifier = EnclaveVerifier(
        make(platform, fetches), EnclavePolicy(FP, APP, allow_stale=True), clock=lambda: NOW
    )
    with pytest.raises(SimulationError) as caught:
        verifier.verify(cert)
    assert caught.value.code == "simulation.not_allowed"
    assert str(caught.value).startswith(SIMULATION_REFUSED)
    assert fetches.at == []


@pytest.mark.parametrize("make", [m for _, m in SOURCES[::2]], ids=[n for n, _ in SOURCES[::2]])
def test_the_same_source_verifies_when_simulation_is_allowed(
    make: SourceMaker, platform: SimulatedPlatform, collateral: Collateral
) -> None:
    fetches = Fetches(collateral, [])
    policy = EnclavePolicy(FP, APP, allow_simulation=True, allow_stale=True)
    enclave = EnclaveVerifier(make(platform, fetches), policy, clock=lambda: NOW).verify(
        certificate(platform)
    )
    assert (enclave.simulated, enclave.measurement, enclave.name) == (True, FP, APP)
    assert enclave.launch == LAUNCH
    assert enclave.valid_until > NOW
    assert fetches.at == [NOW]


def test_deploy_refuses_a_simulated_operator_with_the_same_code(
    platform: SimulatedPlatform,
) -> None:
    """``confide deploy``'s check before the upload says the same refusal, same code."""

    class Operator:
        def plans(self) -> list[Plan]:
            return [Plan("small", 512, 1)]

        def simulation(self) -> SimulationInfo:
            return SimulationInfo(platform.root_certificate, None)

        def me(self) -> Account:
            raise AssertionError("asked for the account after a refusal")

    asked = DeployManifest(
        name="app",  # a DNS label (APP is the domain the enclave is launched for)
        application="app:app",
        plan="small",
        expires_at=NOW + timedelta(days=1),
        tls=TlsMode.RATLS,
    )
    with pytest.raises(SimulationError) as caught:
        check_before_upload(
            cast(OperatorClient, Operator()), asked, DeployOptions(TlsMode.RATLS), now=NOW
        )
    assert caught.value.code == "simulation.not_allowed"
    assert str(caught.value).startswith(SIMULATION_REFUSED)


# -- the verification time is read after the evidence is fetched -------------------------------


def test_the_time_is_read_after_the_evidence(
    platform: SimulatedPlatform, collateral: Collateral
) -> None:
    """The clock reads BEFORE (nothing valid yet) while fetching, NOW after: it verifies."""
    fetches = Fetches(collateral, [])
    times = iter([BEFORE, NOW])
    source = CollateralEvidence(fetches, platform.root_certificate)
    policy = EnclavePolicy(FP, APP, allow_simulation=True, allow_stale=True)
    EnclaveVerifier(source, policy, clock=lambda: next(times)).verify(certificate(platform))
    assert fetches.at == [BEFORE]


def test_the_time_after_the_evidence_is_the_one_checked(
    platform: SimulatedPlatform, collateral: Collateral
) -> None:
    """Guard: the other way round, the second reading (BEFORE) is what fails."""
    times = iter([NOW, BEFORE])
    source = CollateralEvidence(Fetches(collateral, []), platform.root_certificate)
    policy = EnclavePolicy(FP, APP, allow_simulation=True, allow_stale=True)
    with pytest.raises(AttestationError):
        EnclaveVerifier(source, policy, clock=lambda: next(times)).verify(certificate(platform))


# -- one pinning technique: the exact DER, right after the handshake ---------------------------


@dataclass
class TlsServer:
    port: int
    received: list[bytes]


@pytest.fixture
def enclave_server(
    platform: SimulatedPlatform, tmp_path: Path
) -> Iterator[tuple[TlsServer, x509.Certificate]]:
    """A TLS server presenting the enclave's certificate; it records every byte it gets."""
    cert = certificate(platform, not_before=datetime.now(UTC) - timedelta(hours=1))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    server = TlsServer(listener.getsockname()[1], [])

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.settimeout(5)
                    data = tls.recv(65536)
                    server.received.append(data)
                    if data:
                        tls.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        )
            except (OSError, ssl.SSLError):
                server.received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server, cert
    finally:
        listener.close()
        thread.join(10)


def test_the_pinned_client_talks_only_to_the_verified_certificate(
    enclave_server: tuple[TlsServer, x509.Certificate], platform: SimulatedPlatform
) -> None:
    """Another certificate, even of the same key and name, fails the handshake: nothing is sent."""
    server, cert = enclave_server
    address = HostPort("127.0.0.1", server.port)
    with pinned_client(address, APP, cert, timeout=10) as good:
        assert good.get("/").text == "ok"  # guard: the pinned certificate is accepted
    assert server.received[-1].startswith(b"GET / ")
    other = certificate(platform, not_before=datetime.now(UTC) - timedelta(hours=2), days=2)
    assert other.public_key() == cert.public_key() and other != cert
    sent = len(server.received)
    with pinned_client(address, APP, other, timeout=10) as bad, pytest.raises(httpx.ConnectError):
        bad.post("/", json={"secret": "never sent"})
    assert all(b"never sent" not in data for data in server.received[sent:])


def test_the_pinned_context_holds_for_asyncio_too(
    enclave_server: tuple[TlsServer, x509.Certificate], platform: SimulatedPlatform
) -> None:
    server, cert = enclave_server
    other = certificate(platform, not_before=datetime.now(UTC) - timedelta(hours=2), days=2)

    async def connect(pinned: x509.Certificate) -> None:
        der = pinned.public_bytes(serialization.Encoding.DER)
        _, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=enclave_tls_context(der), server_hostname=APP
        )
        writer.close()
        await writer.wait_closed()

    asyncio.run(connect(cert))  # guard: the pinned certificate is accepted
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(connect(other))


def test_a_verifier_without_a_fresh_challenge_must_say_so() -> None:
    """No fresh source and no ``allow_stale``: refused before anything is fetched (ADR 0021)."""
    source = SimulationEvidence(lambda: None)
    with pytest.raises(UsageError, match="no fresh challenge"):
        EnclaveVerifier(source, EnclavePolicy(FP, APP))
    assert EnclaveVerifier(source, EnclavePolicy(FP, APP, allow_stale=True)).fresh is None
