"""End to end: a real runtime answers fresh challenges; replayed, relayed and misdirected
answers are each refused with their own code (ADR 0021).

The user's side is the one verifier (:class:`EnclaveVerifier` with a
:class:`ChallengeClient`): the runtime's certificate is verified, then a nonce
is sent over a connection pinned to it and the new quote checked. The attacks
use real answers of the same enclave, each got on its own connection, and hand
them to the verifier as a man in the middle would.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import (
    CHALLENGE_PATH,
    MAX_CHALLENGES_PER_CONNECTION,
    NONCE_SIZE,
    Collateral,
    FreshAnswer,
    Quote,
)
from confide.client import (
    ChallengeClient,
    CollateralEvidence,
    EnclavePolicy,
    EnclaveVerifier,
    fetch_enclave_certificate,
    pinned_client,
)
from confide.client._verify import enclave_tls_context
from confide.errors import AttestationError
from confide.tee import SimulatedPlatform
from confide.wire import HostPort
from support.runtimes import (
    EXAMPLES,
    HOST,
    CodeUnderTest,
    Launch,
    RuntimeProcess,
    new_platform,
    running,
)

pytestmark = pytest.mark.slow

NAME = "localhost"


@dataclass(frozen=True)
class Enclave:
    runtime: RuntimeProcess
    platform: SimulatedPlatform
    measurement: bytes
    address: HostPort
    certificate: x509.Certificate

    def verifier(self, fresh: Callable[[x509.Certificate], FreshAnswer]) -> EnclaveVerifier:
        platform = self.platform

        def collateral(quote: Quote, now: datetime) -> Collateral:
            return platform.collateral(now)

        return EnclaveVerifier(
            CollateralEvidence(collateral, platform.root_certificate),
            EnclavePolicy(self.measurement, NAME, allow_simulation=True),
            fresh=fresh,
        )

    def ask(self) -> FreshAnswer:
        """One honest challenge, on a connection of its own."""
        return ChallengeClient(self.address, NAME, timeout=10.0)(self.certificate)


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enclave]:
    tmp: Path = tmp_path_factory.mktemp("fresh")
    platform = new_platform(tmp / "sim")
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp / "app.pkg")
    launch = Launch(code, tmp / "state", tmp / "sim")
    with running(launch.args()) as runtime:
        address = HostPort(HOST, runtime.port())
        cert = fetch_enclave_certificate(address, NAME, timeout=10.0)
        yield Enclave(runtime, platform, launch.measurement(), address, cert)


def test_the_verifier_asks_a_fresh_quote_and_reports_it(enclave: Enclave) -> None:
    verified = enclave.verifier(ChallengeClient(enclave.address, NAME, timeout=10.0)).verify(
        enclave.certificate
    )
    assert verified.fresh is not None
    assert verified.fresh.quote.report_data != verified.quote.report_data
    names = [check.name for check in verified.quote.checks]
    assert names[-1] == "fresh quote binds this nonce, this connection and this certificate"
    assert names.index("launch manifest measured, for this name") < len(names) - 1


def _relayed(enclave: Enclave) -> Callable[[x509.Certificate], FreshAnswer]:
    """A man in the middle forwards the user's nonce over its own connection to the enclave
    and hands its answer back on the user's connection."""

    def fresh(cert: x509.Certificate) -> FreshAnswer:
        theirs = enclave.ask()
        users = enclave.ask()
        return dataclasses.replace(users, quote=theirs.quote, nonce=theirs.nonce)

    return fresh


def _replayed(enclave: Enclave) -> Callable[[x509.Certificate], FreshAnswer]:
    """An answer recorded earlier (another nonce, another connection) is played back."""
    recorded = enclave.ask()

    def fresh(cert: x509.Certificate) -> FreshAnswer:
        users = enclave.ask()
        return dataclasses.replace(users, quote=recorded.quote)

    return fresh


def _other_nonce(enclave: Enclave) -> Callable[[x509.Certificate], FreshAnswer]:
    """The answer on the user's connection is for another nonce than the user sent."""

    def fresh(cert: x509.Certificate) -> FreshAnswer:
        users = enclave.ask()
        return dataclasses.replace(users, nonce=secrets.token_bytes(NONCE_SIZE))

    return fresh


ATTACKS = [
    ("relayed from another connection", _relayed, "fresh.relayed"),
    ("replayed", _replayed, "fresh.replayed"),
    ("for another nonce", _other_nonce, "fresh.nonce"),
]


@pytest.mark.parametrize(("name", "attack", "code"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_each_attack_on_the_answer_is_refused_with_its_own_code(
    enclave: Enclave,
    name: str,
    attack: Callable[[Enclave], Callable[[x509.Certificate], FreshAnswer]],
    code: str,
) -> None:
    fresh = attack(enclave)
    with pytest.raises(AttestationError) as caught:
        enclave.verifier(fresh).verify(enclave.certificate)
    assert caught.value.code == code, caught.value
    # What passed before it: the quote and the name (the fresh step comes after them).
    passed = [getattr(check, "name", "") for check in caught.value.checks]
    assert "launch manifest measured, for this name" in passed


def test_the_challenge_is_answered_over_http2(enclave: Enclave) -> None:
    def over_h2(cert: x509.Certificate) -> FreshAnswer:
        nonce = secrets.token_bytes(NONCE_SIZE)
        der = cert.public_bytes(Encoding.DER)
        with (
            httpx.Client(http2=True, verify=enclave_tls_context(der), timeout=10.0) as client,
            client.stream(
                "POST",
                f"https://{HOST}:{enclave.address.port}{CHALLENGE_PATH}",
                content=nonce,
                extensions={"sni_hostname": NAME},
            ) as response,
        ):
            assert response.http_version == "HTTP/2"
            tls = response.extensions["network_stream"].get_extra_info("ssl_object")
            binding, version = tls.get_channel_binding("tls-unique"), tls.version()
            assert response.status_code == 200
            return FreshAnswer(nonce, binding, response.read(), version)

    assert enclave.verifier(over_h2).verify(enclave.certificate).fresh is not None


def _post(client: httpx.Client, body: bytes, method: str = "POST") -> httpx.Response:
    return client.request(method, CHALLENGE_PATH, content=body)


def test_the_runtime_bounds_the_challenge(enclave: Enclave) -> None:
    """Run last: it spends this source's challenges (the limits' own tests are in
    tests/unit/runtime/test_challenge.py, with time as a parameter)."""
    with pinned_client(enclave.address, NAME, enclave.certificate, timeout=10.0) as client:
        assert _post(client, b"", "GET").status_code == 405
        for size in (0, NONCE_SIZE - 1, NONCE_SIZE + 1):
            response = _post(client, bytes(size))
            assert response.status_code == 400, size
            assert response.json()["error"] == "challenge.nonce_size"
        statuses = [
            _post(client, bytes(NONCE_SIZE)).status_code
            for _ in range(MAX_CHALLENGES_PER_CONNECTION + 1)
        ]
        # At most MAX_CHALLENGES_PER_CONNECTION answers, then refused (per connection, or
        # sooner by this source's rate, spent by the tests above).
        assert statuses[-1] == 429
        response = _post(client, bytes(NONCE_SIZE))
        assert response.status_code == 429
        assert response.json()["error"] in ("challenge.per_connection", "challenge.rate")
        # The app is still served on this connection.
        assert client.get("/").status_code == 200
