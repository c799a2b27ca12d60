"""TCB level evaluation and Intel's convergence of platform, QE and TDX module ratings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from confide.attestation import QeTcbLevel, TcbInfo, TcbLevel, TcbStatus, TdReportBody
from confide.attestation import TdxModuleIdentity as Module
from confide.attestation._tcb import Rating, converge, rate_module, rate_platform, rate_qe
from confide.errors import TcbError

S = TcbStatus
DATE = datetime(2025, 1, 1, tzinfo=UTC)


def level(
    sgx: int | list[int],
    pce: int,
    status: TcbStatus,
    *advisories: str,
    tdx: int | list[int] | None = None,
) -> TcbLevel:
    comps = [sgx] * 16 if isinstance(sgx, int) else sgx
    tdx_comps = None if tdx is None else ([tdx] * 16 if isinstance(tdx, int) else tdx)
    return TcbLevel(
        sgx_components=tuple(comps),
        pce_svn=pce,
        tdx_components=None if tdx_comps is None else tuple(tdx_comps),
        tcb_date=DATE,
        status=status,
        advisory_ids=advisories,
    )


def tcb_info(*levels: TcbLevel, tcb_id: str = "SGX") -> TcbInfo:
    return TcbInfo(
        id=tcb_id,
        version=3,
        issue_date=DATE,
        next_update=DATE,
        fmspc=bytes(6),
        pce_id=bytes(2),
        tcb_type=0,
        tcb_evaluation_data_number=17,
        tcb_levels=levels,
    )


def td_report(tee_tcb_svn: bytes) -> TdReportBody:
    z48 = bytes(48)
    return TdReportBody(
        tee_tcb_svn=tee_tcb_svn,
        mr_seam=z48,
        mr_signer_seam=z48,
        seam_attributes=bytes(8),
        td_attributes=bytes(8),
        xfam=bytes(8),
        mr_td=z48,
        mr_config_id=z48,
        mr_owner=z48,
        mr_owner_config=z48,
        rtmr0=z48,
        rtmr1=z48,
        rtmr2=z48,
        rtmr3=z48,
        report_data=bytes(64),
    )


SGX_LEVELS = (
    level(5, 13, S.UP_TO_DATE),
    level(4, 13, S.SW_HARDENING_NEEDED, "INTEL-SA-1"),
    level(3, 10, S.OUT_OF_DATE, "INTEL-SA-1", "INTEL-SA-2"),
)


@pytest.mark.parametrize(
    ("components", "pce_svn", "status"),
    [
        ([5] * 16, 13, S.UP_TO_DATE),
        ([9] * 16, 99, S.UP_TO_DATE),
        ([5] * 16, 12, S.OUT_OF_DATE),  # PCESVN below the first two levels
        ([4] * 16, 13, S.SW_HARDENING_NEEDED),
        ([5] * 15 + [4], 13, S.SW_HARDENING_NEEDED),  # one component below
        ([3] * 16, 10, S.OUT_OF_DATE),
        ([5, 3] + [5] * 14, 13, S.OUT_OF_DATE),
    ],
)
def test_rate_platform_takes_the_highest_level_at_or_below(
    components: list[int], pce_svn: int, status: TcbStatus
) -> None:
    rating = rate_platform(tcb_info(*SGX_LEVELS), components, pce_svn, None)
    (want,) = [lv for lv in SGX_LEVELS if lv.status is status]
    assert rating == Rating(status, want.advisory_ids)


def test_rate_platform_does_not_depend_on_the_order_of_levels() -> None:
    shuffled = [SGX_LEVELS[i] for i in (2, 0, 1)]
    for comps, pce in (([5] * 16, 13), ([4] * 16, 13), ([3] * 16, 11)):
        assert rate_platform(tcb_info(*shuffled), comps, pce, None) == rate_platform(
            tcb_info(*SGX_LEVELS), comps, pce, None
        )


@pytest.mark.parametrize(
    ("components", "pce_svn"),
    [([2] * 16, 13), ([3] * 16, 9), ([9] * 15 + [2], 99)],
)
def test_no_matching_level_raises_tcb_error(components: list[int], pce_svn: int) -> None:
    with pytest.raises(TcbError) as caught:
        rate_platform(tcb_info(*SGX_LEVELS), components, pce_svn, None)
    assert caught.value.code == "tcb.no_level"
    assert f"pcesvn {pce_svn}" in str(caught.value.observed)


def test_no_levels_at_all_raises_tcb_error() -> None:
    with pytest.raises(TcbError) as caught:
        rate_platform(tcb_info(), [255] * 16, 0xFFFF, None)
    assert caught.value.code == "tcb.no_level"


# -- TDX -----------------------------------------------------------------------------

# tdx components: [module SVN, module version, rest...]
TDX_LEVELS = (
    level(2, 11, S.UP_TO_DATE, tdx=[9, 9, 5] + [0] * 13),
    level(2, 11, S.OUT_OF_DATE, "INTEL-SA-T", tdx=[0, 0, 3] + [0] * 13),
)


@pytest.mark.parametrize(
    ("tee_tcb_svn", "status"),
    [
        # Module version 1: the first two bytes are rated by the module identity, not here.
        (bytes([1, 1, 5] + [0] * 13), S.UP_TO_DATE),
        (bytes([1, 1, 4] + [0] * 13), S.OUT_OF_DATE),
        # Module version 0: all 16 bytes count, so [1, 0, 5] is below [9, 9, 5].
        (bytes([1, 0, 5] + [0] * 13), S.OUT_OF_DATE),
        (bytes([9, 0, 5] + [0] * 13), S.OUT_OF_DATE),
        (bytes([9, 9, 5] + [0] * 13), S.UP_TO_DATE),
    ],
)
def test_tdx_module_version_decides_whether_the_first_two_bytes_count(
    tee_tcb_svn: bytes, status: TcbStatus
) -> None:
    info = tcb_info(*TDX_LEVELS, tcb_id="TDX")
    rating = rate_platform(info, [2] * 16, 11, td_report(tee_tcb_svn))
    assert rating.status is status


def test_tdx_below_every_level_raises_tcb_error() -> None:
    info = tcb_info(*TDX_LEVELS, tcb_id="TDX")
    with pytest.raises(TcbError) as caught:
        rate_platform(info, [2] * 16, 11, td_report(bytes([1, 1, 2] + [0] * 13)))
    assert caught.value.code == "tcb.no_level"
    assert "tee_tcb_svn 010102" in str(caught.value.observed)


def test_tdx_ignores_levels_without_tdx_components() -> None:
    info = tcb_info(level(2, 11, S.UP_TO_DATE), *TDX_LEVELS[1:], tcb_id="TDX")
    rating = rate_platform(info, [2] * 16, 11, td_report(bytes([9, 9, 9] + [0] * 13)))
    assert rating.status is S.OUT_OF_DATE


def test_sgx_components_still_count_for_tdx() -> None:
    info = tcb_info(*TDX_LEVELS, tcb_id="TDX")
    with pytest.raises(TcbError):
        rate_platform(info, [1] * 16, 11, td_report(bytes([9, 9, 9] + [0] * 13)))


# -- QE and TDX module ------------------------------------------------------------------

QE_LEVELS = (
    QeTcbLevel(8, DATE, S.UP_TO_DATE, ()),
    QeTcbLevel(6, DATE, S.OUT_OF_DATE, ("INTEL-SA-Q",)),
    QeTcbLevel(2, DATE, S.REVOKED, ("INTEL-SA-R",)),
)


@pytest.mark.parametrize(
    ("isv_svn", "status"),
    [(99, S.UP_TO_DATE), (8, S.UP_TO_DATE), (7, S.OUT_OF_DATE), (6, S.OUT_OF_DATE), (2, S.REVOKED)],
)
def test_rate_qe(isv_svn: int, status: TcbStatus) -> None:
    assert rate_qe(QE_LEVELS, isv_svn).status is status
    assert rate_qe(tuple(reversed(QE_LEVELS)), isv_svn).status is status


def test_rate_qe_below_every_level_raises_tcb_error() -> None:
    with pytest.raises(TcbError) as caught:
        rate_qe(QE_LEVELS, 1)
    err = caught.value
    assert (err.code, err.observed, err.expected) == ("qe_identity.no_level", 1, ">= 2")


def test_rate_module() -> None:
    module = Module("TDX_01", bytes(48), bytes(8), b"\xff" * 8, QE_LEVELS[:2])
    assert rate_module(module, 8) == Rating(S.UP_TO_DATE, ())
    assert rate_module(module, 6) == Rating(S.OUT_OF_DATE, ("INTEL-SA-Q",))
    with pytest.raises(TcbError) as caught:
        rate_module(module, 5)
    assert caught.value.code == "tdx_module.no_level"
    with pytest.raises(TcbError):
        rate_module(dataclasses.replace(module, tcb_levels=()), 99)


# -- convergence -------------------------------------------------------------------------

OOD = S.OUT_OF_DATE
OODCN = S.OUT_OF_DATE_CONFIGURATION_NEEDED

CONVERGENCE: list[tuple[TcbStatus, TcbStatus, TcbStatus]] = [
    # (platform, QE or module, converged)
    *((p, S.UP_TO_DATE, p) for p in S),
    (S.UP_TO_DATE, OOD, OOD),
    (S.SW_HARDENING_NEEDED, OOD, OOD),
    (S.CONFIGURATION_NEEDED, OOD, OODCN),
    (S.CONFIGURATION_AND_SW_HARDENING_NEEDED, OOD, OODCN),
    (OOD, OOD, OOD),
    (OODCN, OOD, OODCN),
    (S.REVOKED, OOD, S.REVOKED),
    *((p, S.REVOKED, S.REVOKED) for p in S),
]


@pytest.mark.parametrize(("platform", "other", "converged"), CONVERGENCE)
def test_converge_status(platform: TcbStatus, other: TcbStatus, converged: TcbStatus) -> None:
    assert converge(Rating(platform, ()), Rating(other, ())).status is converged


def test_converge_unions_advisories_platform_first_without_duplicates() -> None:
    merged = converge(
        Rating(S.CONFIGURATION_NEEDED, ("INTEL-SA-A", "INTEL-SA-B", "INTEL-SA-A")),
        Rating(OOD, ("INTEL-SA-B", "INTEL-SA-C", "INTEL-SA-C")),
    )
    assert merged == Rating(OODCN, ("INTEL-SA-A", "INTEL-SA-B", "INTEL-SA-C"))
    assert converge(Rating(S.UP_TO_DATE, ()), Rating(OOD, ("X",))).advisory_ids == ("X",)
