"""Fresh attestation's pure core: each wrong answer is refused with its own code.

One enclave (a simulated platform's quote binding an RA-TLS certificate's key)
and one honest answer; each row changes one thing about the answer, and a guard
checks the row really differs from the honest answer and that the honest answer
passes (so no row passes vacuously).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.attestation import (
    NONCE_SIZE,
    Collateral,
    FreshAnswer,
    Policy,
    VerifiedQuote,
    create_ratls_certificate,
    fresh_report_data,
    ratls_report_data,
    verify_fresh_answer,
    verify_ratls_certificate,
)
from confide.errors import AttestationError, UsageError
from confide.tee import SimulatedPlatform

MEASUREMENT = bytes(range(32))
SIGNER = bytes(32)
NOW = datetime.now(UTC)
NONCE = b"n" * NONCE_SIZE
BINDING = b"b" * 48  # a TLS 1.3 Finished with SHA-384


@dataclasses.dataclass(frozen=True)
class Enclave:
    platform: SimulatedPlatform
    collateral: Collateral
    certificate: x509.Certificate
    verified: VerifiedQuote

    def quote(self, report_data: bytes, mr_enclave: bytes = MEASUREMENT) -> bytes:
        return self.platform.quote(report_data, mr_enclave=mr_enclave, mr_signer=SIGNER)

    def answer(
        self,
        nonce: bytes = NONCE,
        binding: bytes = BINDING,
        der: bytes | None = None,
        mr_enclave: bytes = MEASUREMENT,
    ) -> bytes:
        der = der if der is not None else self.certificate.public_bytes(Encoding.DER)
        return self.quote(fresh_report_data(nonce, der, binding), mr_enclave)


def _certificate(platform: SimulatedPlatform) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    quote = platform.quote(
        ratls_report_data(key.public_key(), bytes(32)), mr_enclave=MEASUREMENT, mr_signer=SIGNER
    )
    return create_ratls_certificate(
        key,
        quote,
        subject="app.example",
        sans=["app.example"],
        not_before=NOW - timedelta(minutes=1),
        not_after=NOW + timedelta(days=1),
    )


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> Enclave:
    platform = SimulatedPlatform.open(Path(tmp_path_factory.mktemp("fresh")) / "sim", now=NOW)
    collateral = platform.collateral(NOW)
    cert = _certificate(platform)
    verified = verify_ratls_certificate(
        cert,
        collateral,
        now=NOW,
        policy=Policy(allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )
    return Enclave(platform, collateral, cert, verified.quote)


def _verify(enclave: Enclave, answer: FreshAnswer) -> None:
    verify_fresh_answer(
        answer,
        certificate=enclave.certificate,
        enclave=enclave.verified,
        collateral=enclave.collateral,
        now=NOW,
        policy=Policy(allow_simulation=True),
        trust_anchor=enclave.platform.root_certificate,
    )


def _honest(enclave: Enclave) -> FreshAnswer:
    return FreshAnswer(NONCE, BINDING, enclave.answer(), "TLSv1.3")


Tamper = Callable[[Enclave, FreshAnswer], FreshAnswer]

CASES: list[tuple[str, Tamper, str]] = [
    (
        "an answer to another nonce, on this connection",
        lambda e, a: dataclasses.replace(a, quote=e.answer(nonce=b"m" * NONCE_SIZE)),
        "fresh.nonce",
    ),
    (
        "an answer relayed from another connection",
        lambda e, a: dataclasses.replace(a, quote=e.answer(binding=b"c" * 48)),
        "fresh.relayed",
    ),
    (
        "an answer made for another certificate of the same code",
        lambda e, a: dataclasses.replace(
            a, quote=e.answer(der=_certificate(e.platform).public_bytes(Encoding.DER))
        ),
        "fresh.relayed",
    ),
    (
        "an earlier answer replayed (another nonce, another connection)",
        lambda e, a: dataclasses.replace(
            a, quote=e.answer(nonce=b"m" * NONCE_SIZE, binding=b"c" * 32)
        ),
        "fresh.replayed",
    ),
    (
        "the certificate's own quote replayed as the answer",
        lambda e, a: dataclasses.replace(a, quote=e.verified.quote.to_bytes()),
        "fresh.replayed",
    ),
    (
        "an answer of another enclave, for this nonce on this connection",
        lambda e, a: dataclasses.replace(a, quote=e.answer(mr_enclave=b"\x01" * 32)),
        "fresh.enclave",
    ),
    (
        "an answer on a TLS 1.2 connection",
        lambda e, a: dataclasses.replace(a, tls_version="TLSv1.2"),
        "fresh.tls_version",
    ),
    ("an empty answer", lambda e, a: dataclasses.replace(a, quote=b""), "fresh.format"),
    (
        "an answer that is not a quote",
        lambda e, a: dataclasses.replace(a, quote=b'{"error": "x"}'),
        "fresh.format",
    ),
]


def test_the_honest_answer_passes_and_says_so(enclave: Enclave) -> None:
    answer = _honest(enclave)
    fresh = verify_fresh_answer(
        answer,
        certificate=enclave.certificate,
        enclave=enclave.verified,
        collateral=enclave.collateral,
        now=NOW,
        policy=Policy(allow_simulation=True),
        trust_anchor=enclave.platform.root_certificate,
    )
    assert fresh.nonce == NONCE and fresh.binding == BINDING
    assert fresh.quote.checks[-1].name.startswith("fresh quote binds")
    assert fresh.quote.checks[-1].outcome == "passed"


@pytest.mark.parametrize(("name", "tamper", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_wrong_answer_has_its_own_error(
    enclave: Enclave, name: str, tamper: Tamper, code: str
) -> None:
    honest = _honest(enclave)
    _verify(enclave, honest)  # guard: the row's starting point passes
    answer = tamper(enclave, honest)
    assert answer != honest, name  # guard: the row changes something
    with pytest.raises(AttestationError) as caught:
        _verify(enclave, answer)
    assert caught.value.code == code, caught.value


def test_the_codes_are_distinct() -> None:
    codes = {code for _, _, code in CASES}
    assert {"fresh.nonce", "fresh.relayed", "fresh.replayed"} <= codes


def test_the_quote_is_still_verified(enclave: Enclave) -> None:
    """An answer that binds everything but is signed by another platform is refused."""
    with pytest.raises(AttestationError) as caught:
        verify_fresh_answer(
            _honest(enclave),
            certificate=enclave.certificate,
            enclave=enclave.verified,
            collateral=enclave.collateral,
            now=NOW,
            policy=Policy(),  # simulation not allowed
            trust_anchor=enclave.platform.root_certificate,
        )
    assert caught.value.code.startswith("simulation.")


@given(st.binary(max_size=80))
def test_a_nonce_of_another_size_is_a_usage_error(nonce: bytes) -> None:
    if len(nonce) == NONCE_SIZE:
        assert len(fresh_report_data(nonce, b"der", BINDING)) == 64
        return
    with pytest.raises(UsageError):
        fresh_report_data(nonce, b"der", BINDING)


@given(st.binary(max_size=100))
def test_a_binding_out_of_bounds_is_a_usage_error(binding: bytes) -> None:
    if 32 <= len(binding) <= 64:
        assert len(fresh_report_data(NONCE, b"der", binding)) == 64
        return
    with pytest.raises(UsageError):
        fresh_report_data(NONCE, b"der", binding)


def test_any_answer_bytes_give_our_own_error(enclave: Enclave) -> None:
    """Whatever the body of an answer, the verifier raises an AttestationError, nothing else."""

    @settings(max_examples=50, deadline=None)
    @given(st.binary(max_size=2048))
    def check(body: bytes) -> None:
        with pytest.raises(AttestationError):
            _verify(enclave, FreshAnswer(NONCE, BINDING, body, "TLSv1.3"))

    check()
