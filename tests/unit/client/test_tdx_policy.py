"""EnclavePolicy on a TD's quote: the guest image's MRTD and RTMR0-2, and RTMR3 of the launch."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from confide.attestation import Quote, TdReference, launch_rtmr3
from confide.client import EnclavePolicy, TrustMaterial
from confide.errors import PolicyError
from confide.tee import SIM_GUEST_IMAGE, SimulatedPlatform

FINGERPRINT = hashlib.sha256(b"launch").digest()
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("p") / "sim", now=NOW)


def _material(platform: SimulatedPlatform, *, simulated: bool) -> TrustMaterial:
    anchor = platform.root_certificate if simulated else None
    return TrustMaterial(platform.collateral(NOW, tee="tdx"), anchor, simulated=simulated)


def test_simulated_td_expects_the_simulated_image_and_the_launch(
    platform: SimulatedPlatform,
) -> None:
    quote = Quote.from_bytes(platform.td_quote(bytes(64), mr_td=bytes(48)))
    policy = EnclavePolicy(FINGERPRINT, "a.example", allow_simulation=True)
    got = policy.quote_policy(_material(platform, simulated=True), quote)
    assert got.mr_td == SIM_GUEST_IMAGE.mr_td and got.mr_enclave is None
    assert got.rtmrs == (
        SIM_GUEST_IMAGE.rtmr0,
        SIM_GUEST_IMAGE.rtmr1,
        SIM_GUEST_IMAGE.rtmr2,
        launch_rtmr3(FINGERPRINT),
    )
    assert got.allow_simulation


def test_a_real_td_without_reference_values_is_refused(platform: SimulatedPlatform) -> None:
    quote = Quote.from_bytes(platform.td_quote(bytes(64), mr_td=bytes(48)))
    policy = EnclavePolicy(FINGERPRINT, "a.example")
    with pytest.raises(PolicyError) as info:
        policy.quote_policy(_material(platform, simulated=False), quote)
    assert info.value.code == "policy.td_reference"


def test_given_reference_values_are_used(platform: SimulatedPlatform) -> None:
    image = TdReference(*(hashlib.sha384(bytes([i])).digest() for i in range(4)))
    quote = Quote.from_bytes(platform.td_quote(bytes(64), mr_td=bytes(48)))
    policy = EnclavePolicy(FINGERPRINT, "a.example", td_reference=image)
    got = policy.quote_policy(_material(platform, simulated=False), quote)
    assert got.mr_td == image.mr_td and got.rtmrs is not None and got.rtmrs[0] == image.rtmr0
