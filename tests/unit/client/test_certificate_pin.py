"""The proxy's pin holds until the windows its verification relied on end (issue 9, point 5).

The clock is a parameter: each case moves it, and a counting ``verify`` shows
when the certificate was verified again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import RatlsVerified
from confide.client import CertificatePin, PinRejected
from confide.errors import CertificateError, CollateralError, Error

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = timedelta(hours=1)


def _der(n: int) -> bytes:
    key = ec.derive_private_key(100 + n, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"enclave {n}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(n + 1)
        .not_valid_before(T0 - WINDOW)
        .not_valid_after(T0 + 10 * WINDOW)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


@dataclass
class Verifier:
    """Counts verifications; each answers with a window, or raises what it is told."""

    clock: Callable[[], datetime]
    fail: Error | None = None
    calls: list[datetime] = field(default_factory=list)

    def __call__(self, cert: x509.Certificate) -> RatlsVerified:
        self.calls.append(self.clock())
        if self.fail is not None:
            raise self.fail

        @dataclass(frozen=True)
        class Result:
            valid_until: datetime

        return cast(RatlsVerified, Result(self.clock() + WINDOW))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _pin(verifier: Verifier, clock: Clock, der: bytes) -> tuple[CertificatePin, list[str]]:
    lines: list[str] = []
    pin = CertificatePin(
        der, verify=verifier, log=lines.append, valid_until=T0 + WINDOW, clock=clock
    )
    return pin, lines


def test_inside_the_window_the_pin_is_not_verified_again() -> None:
    clock = Clock()
    verifier = Verifier(clock)
    der = _der(1)
    pin, _ = _pin(verifier, clock, der)
    clock.now = T0 + WINDOW  # the end is inclusive
    asyncio.run(pin.check(der))
    assert verifier.calls == []


def test_past_the_window_the_pinned_certificate_is_verified_again() -> None:
    clock = Clock()
    verifier = Verifier(clock)
    der = _der(1)
    pin, lines = _pin(verifier, clock, der)
    clock.now = T0 + WINDOW + timedelta(seconds=40)
    asyncio.run(pin.check(der))
    assert verifier.calls == [clock.now]
    assert pin.valid_until == clock.now + WINDOW
    assert any("ran out" in line for line in lines)
    asyncio.run(pin.check(der))  # the new window holds
    assert len(verifier.calls) == 1


def test_an_expired_certificate_is_refused_from_then_on() -> None:
    clock = Clock()
    verifier = Verifier(
        clock,
        fail=CertificateError("ratls.expired", "the RA-TLS certificate has expired"),
    )
    der = _der(1)
    pin, _ = _pin(verifier, clock, der)
    clock.now = T0 + WINDOW + timedelta(seconds=40)
    for _ in range(2):
        with pytest.raises(PinRejected, match="has expired"):
            asyncio.run(pin.check(der))
    assert len(verifier.calls) == 1  # remembered: refused at once the second time


def test_out_of_date_collateral_is_tried_again() -> None:
    clock = Clock()
    verifier = Verifier(clock, fail=CollateralError("tcb_info.expired", "tcb info has expired"))
    der = _der(1)
    pin, _ = _pin(verifier, clock, der)
    clock.now = T0 + 2 * WINDOW
    for _ in range(2):
        with pytest.raises(PinRejected, match="tcb info has expired"):
            asyncio.run(pin.check(der))
    assert len(verifier.calls) == 2  # fresh collateral may come: not remembered
    verifier.fail = None
    asyncio.run(pin.check(der))
    assert len(verifier.calls) == 3


def test_a_new_certificate_gets_its_own_window() -> None:
    clock = Clock()
    verifier = Verifier(clock)
    pin, _ = _pin(verifier, clock, _der(1))
    clock.now = T0 + timedelta(minutes=30)
    new = _der(2)
    asyncio.run(pin.check(new))
    assert pin.der == new and pin.valid_until == clock.now + WINDOW


def test_a_naive_window_is_refused() -> None:
    clock = Clock()
    with pytest.raises(Error):
        CertificatePin(
            _der(1),
            verify=Verifier(clock),
            log=print,
            valid_until=datetime(2026, 1, 1),
        )
