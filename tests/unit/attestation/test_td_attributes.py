"""TD_ATTRIBUTES policy (ADR 0022): each bad attribute fails with its own code, and dcap-qvl agrees.

Every row is a simulated TD quote whose only difference is its TD_ATTRIBUTES;
each is verified by :func:`verify_quote` and by dcap-qvl's ``verify_with_root_ca``
given the simulation root: a good row passes both, a bad row fails both, ours
with the row's code naming the attribute, its observed and expected values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import Collateral, Policy, verify_quote
from confide.attestation._policy import (
    TD_DEBUG,
    TD_MIGRATABLE,
    TD_SEPT_VE_DISABLE,
    check_td_attributes,
)
from confide.errors import PolicyError
from confide.tee import SimulatedPlatform

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
SEPT = TD_SEPT_VE_DISABLE
PKS, KL, PERFMON = 1 << 30, 1 << 31, 1 << 63

#: (name, TD_ATTRIBUTES, the code ours raises or None, the bit named in the message).
ROWS: list[tuple[str, int, str | None, str]] = [
    ("SEPT_VE_DISABLE only", SEPT, None, ""),
    ("with PKS, KL and PERFMON", SEPT | PKS | KL | PERFMON, None, ""),
    ("no SEPT_VE_DISABLE", 0, "policy.td_attributes.sept_ve_disable", "SEPT_VE_DISABLE"),
    ("DEBUG", SEPT | TD_DEBUG, "policy.td_attributes.debug", "DEBUG"),
    ("DEBUG without SEPT_VE_DISABLE", TD_DEBUG, "policy.td_attributes.debug", "DEBUG"),
    ("MIGRATABLE", SEPT | TD_MIGRATABLE, "policy.td_attributes.migratable", "MIGRATABLE"),
    ("TUD reserved bit 1", SEPT | 1 << 1, "policy.td_attributes.reserved", "0x2"),
    ("SEC reserved bit 8", SEPT | 1 << 8, "policy.td_attributes.reserved", "0x100"),
    ("OTHER reserved bit 32", SEPT | 1 << 32, "policy.td_attributes.reserved", "0x100000000"),
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("attrs") / "state", now=CREATED)


@pytest.fixture(scope="module")
def collateral(platform: SimulatedPlatform) -> Collateral:
    return platform.collateral(NOW, tee="tdx")


def _dcap_qvl(platform: SimulatedPlatform, quote: bytes, collateral: Collateral) -> str:
    try:
        result = dcap_qvl.verify_with_root_ca(
            quote,
            dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()),
            platform.root_certificate.public_bytes(Encoding.DER),
            int(NOW.timestamp()),
        )
    except ValueError as exc:
        return f"rejected: {exc}"
    return str(result.status)


@pytest.mark.parametrize(("name", "attributes", "code", "named"), ROWS, ids=[r[0] for r in ROWS])
def test_td_attributes_row(
    platform: SimulatedPlatform,
    collateral: Collateral,
    name: str,
    attributes: int,
    code: str | None,
    named: str,
) -> None:
    quote = platform.td_quote(bytes(64), mr_td=bytes(48), td_attributes=attributes)
    theirs = _dcap_qvl(platform, quote, collateral)
    policy = Policy(allow_simulation=True)
    if code is None:
        ours = verify_quote(
            quote, collateral, now=NOW, policy=policy, trust_anchor=platform.root_certificate
        )
        assert theirs == ours.tcb_status.value == "UpToDate"
        assert ("TD attributes", "passed") in [(c.name, c.outcome) for c in ours.checks]
        return
    with pytest.raises(PolicyError) as info:
        verify_quote(
            quote, collateral, now=NOW, policy=policy, trust_anchor=platform.root_certificate
        )
    assert info.value.code == code
    assert f"{attributes:#018x}" in str(info.value.observed)
    assert named in str(info.value)
    assert theirs.startswith("rejected: "), theirs


def test_rows_are_not_vacuous() -> None:
    # Two good rows, and every refusal code appears: a row cannot pass for another's reason.
    codes = {code for _, _, code, _ in ROWS}
    assert None in codes
    assert {
        "policy.td_attributes.sept_ve_disable",
        "policy.td_attributes.debug",
        "policy.td_attributes.migratable",
        "policy.td_attributes.reserved",
    } <= codes
    assert len({attributes for _, attributes, _, _ in ROWS}) == len(ROWS)


def test_allow_debug_is_the_only_opt_in() -> None:
    # allow_debug lets DEBUG through (as for SGX), never a TD without SEPT_VE_DISABLE.
    assert check_td_attributes((SEPT | TD_DEBUG).to_bytes(8, "little"), allow_debug=True)
    with pytest.raises(PolicyError) as info:
        check_td_attributes(TD_DEBUG.to_bytes(8, "little"), allow_debug=True)
    assert info.value.code == "policy.td_attributes.sept_ve_disable"


def test_td_attributes_of_another_size_are_refused() -> None:
    with pytest.raises(PolicyError) as info:
        check_td_attributes(bytes(7), allow_debug=False)
    assert info.value.code == "policy.td_attributes.size"
