"""Simulated TDX quotes (v4, TD 1.0 body) under the simulated PKI.

Each outcome is checked twice: with :func:`verify_quote` and with dcap-qvl's
``verify_with_root_ca`` given the simulation root, which must return the same
TCB status (or both reject).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import Collateral, Policy, Quote, TcbStatus, TdReportBody, verify_quote
from confide.errors import CollateralError, PolicyError, SimulationError, TcbError, UsageError
from confide.tee import SIM_TCB_COMPONENTS, SimulatedPck, SimulatedPlatform

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
MR_TD = hashlib.sha384(b"confide guest image").digest()
RTMRS: tuple[bytes, bytes, bytes, bytes] = (
    hashlib.sha384(b"rtmr0").digest(),
    hashlib.sha384(b"rtmr1").digest(),
    hashlib.sha384(b"rtmr2").digest(),
    hashlib.sha384(b"rtmr3").digest(),
)
REPORT_DATA = bytes(range(64))
ALL = Policy.accepting(
    [s.value for s in TcbStatus if s is not TcbStatus.REVOKED], allow_simulation=True
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("tdx") / "state", now=CREATED)


@pytest.fixture(scope="module")
def collateral(platform: SimulatedPlatform) -> Collateral:
    return platform.collateral(NOW, tee="tdx")


def _td_quote(platform: SimulatedPlatform, pck: SimulatedPck | None = None) -> bytes:
    return platform.td_quote(REPORT_DATA, mr_td=MR_TD, rtmrs=RTMRS, pck=pck)


def _oracle(platform: SimulatedPlatform, quote: bytes, collateral: Collateral) -> Any:
    return dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()),
        platform.root_certificate.public_bytes(Encoding.DER),
        int(NOW.timestamp()),
    )


def test_td_quote_has_intel_v4_td10_format(platform: SimulatedPlatform) -> None:
    quote = Quote.from_bytes(_td_quote(platform))
    assert (quote.header.version, quote.header.tee_type, quote.body_type) == (4, 0x81, None)
    assert isinstance(quote.body, TdReportBody) and not quote.body.is_td15
    assert (quote.body.mr_td, quote.body.rtmrs, quote.report_data) == (MR_TD, RTMRS, REPORT_DATA)
    assert quote.certification.wrapped  # certification data type 6 around type 5
    assert quote.certification.qe_report.isv_prod_id == 2  # the TD quoting enclave
    assert not quote.body.debug


def test_verifies_and_dcap_qvl_agrees(platform: SimulatedPlatform, collateral: Collateral) -> None:
    quote = _td_quote(platform)
    ours = verify_quote(
        quote,
        collateral,
        now=NOW,
        policy=Policy(allow_simulation=True, mr_td=MR_TD, rtmrs=RTMRS, report_data=REPORT_DATA),
        trust_anchor=platform.root_certificate,
    )
    assert (ours.tee, ours.simulated, ours.quote_version) == ("tdx", True, 4)
    assert (ours.mr_td, ours.rtmrs) == (MR_TD, RTMRS)
    assert _oracle(platform, quote, collateral).status == ours.tcb_status.value == "UpToDate"


#: (first SGX TCB component of the PCK, the status both verifiers must return, advisories).
LEVELS = [
    (5, "UpToDate"),
    (4, "SWHardeningNeeded"),
    (3, "ConfigurationAndSWHardeningNeeded"),
    (2, "OutOfDate"),
]


@pytest.mark.parametrize(("first", "status"), LEVELS)
def test_tcb_levels_agree_with_dcap_qvl(
    platform: SimulatedPlatform, collateral: Collateral, first: int, status: str
) -> None:
    pck = platform.issue_pck(components=(first, *SIM_TCB_COMPONENTS[1:]))
    quote = _td_quote(platform, pck)
    ours = verify_quote(
        quote, collateral, now=NOW, policy=ALL, trust_anchor=platform.root_certificate
    )
    theirs = _oracle(platform, quote, collateral)
    assert ours.tcb_status.value == theirs.status == status
    assert list(ours.advisory_ids) == list(theirs.advisory_ids)


def test_levels_table_covers_distinct_statuses() -> None:
    # Guard against a vacuous table: every row aims at another status.
    assert len({status for _, status in LEVELS}) == len(LEVELS) == 4


@pytest.mark.parametrize("first", [1, 0])
def test_revoked_and_unrated_platforms_are_rejected_by_both(
    platform: SimulatedPlatform, collateral: Collateral, first: int
) -> None:
    quote = _td_quote(platform, platform.issue_pck(components=(first, *SIM_TCB_COMPONENTS[1:])))
    with pytest.raises(TcbError) as info:
        verify_quote(quote, collateral, now=NOW, policy=ALL, trust_anchor=platform.root_certificate)
    assert info.value.code == ("tcb.revoked" if first == 1 else "tcb.no_level")
    try:
        outcome = _oracle(platform, quote, collateral).status
    except ValueError:
        outcome = "rejected"
    assert outcome in ("Revoked", "rejected")


def test_rejected_without_allow_simulation(
    platform: SimulatedPlatform, collateral: Collateral
) -> None:
    with pytest.raises(SimulationError) as info:
        verify_quote(
            _td_quote(platform), collateral, now=NOW, trust_anchor=platform.root_certificate
        )
    assert info.value.code == "simulation.not_allowed"


def test_sgx_collateral_does_not_verify_a_td_quote(platform: SimulatedPlatform) -> None:
    with pytest.raises(CollateralError) as info:
        verify_quote(
            _td_quote(platform),
            platform.collateral(NOW),
            now=NOW,
            policy=ALL,
            trust_anchor=platform.root_certificate,
        )
    assert (info.value.code, info.value.observed, info.value.expected) == (
        "collateral.tee_type",
        "SGX/QE",
        "TDX/TD_QE",
    )


@pytest.mark.parametrize(
    ("policy", "code", "observed", "expected"),
    [
        (Policy(allow_simulation=True, mr_td=bytes(48)), "policy.mr_td", MR_TD, bytes(48)),
        (
            Policy(allow_simulation=True, rtmrs=(None, None, None, bytes(48))),
            "policy.rtmr3",
            RTMRS[3],
            bytes(48),
        ),
    ],
    ids=["mr_td", "rtmr3"],
)
def test_wrong_register_is_rejected_with_its_values(
    platform: SimulatedPlatform,
    collateral: Collateral,
    policy: Policy,
    code: str,
    observed: bytes,
    expected: bytes,
) -> None:
    with pytest.raises(PolicyError) as info:
        verify_quote(
            _td_quote(platform),
            collateral,
            now=NOW,
            policy=policy,
            trust_anchor=platform.root_certificate,
        )
    assert info.value.code == code
    assert observed.hex() in str(info.value) and expected.hex() in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"mr_td": bytes(32)}, {"mr_td": MR_TD, "rtmrs": (bytes(48),) * 3}],
    ids=["short-mr_td", "three-rtmrs"],
)
def test_td_quote_rejects_bad_arguments(
    platform: SimulatedPlatform, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(UsageError):
        platform.td_quote(REPORT_DATA, **kwargs)
