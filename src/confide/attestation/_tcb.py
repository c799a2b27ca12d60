"""TCB level evaluation: which TCB level the platform, its QE and its TDX module are at.

Follows Intel's appraisal (the DCAP quote verification library):

* platform: the first TCB level, in descending order, whose 16 SGX components
  and PCESVN are all at or below the PCK certificate's, and for TDX whose TDX
  components are at or below the TD report's TEE_TCB_SVN (the first two bytes,
  the module's own SVN and version, are skipped when the module version is
  non-zero, since the TDX module identities rate the module instead);
* QE: the first level whose ISVSVN is at or below the QE report's ISVSVN;
* TDX module: ``TDX_<version>`` from ``tdxModuleIdentities``, by ISVSVN;
* convergence: an OutOfDate QE or module turns UpToDate/SWHardeningNeeded into
  OutOfDate and the configuration statuses into OutOfDateConfigurationNeeded;
  a Revoked one revokes the whole; advisories are the union, platform first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confide.errors import TcbError

from ._collateral import QeTcbLevel, TcbInfo, TcbLevel, TcbStatus, TdxModuleIdentity
from ._quote import TdReportBody

_S = TcbStatus


@dataclass(frozen=True, slots=True)
class Rating:
    status: TcbStatus
    advisory_ids: tuple[str, ...]


def _sort_key(level: TcbLevel) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
    return (level.sgx_components, level.pce_svn, level.tdx_components or ())


def rate_platform(
    tcb_info: TcbInfo,
    components: Sequence[int],
    pce_svn: int,
    td: TdReportBody | None,
) -> Rating:
    levels = sorted(tcb_info.tcb_levels, key=_sort_key, reverse=True)
    tee = td.tee_tcb_svn if td is not None else b""
    start = 2 if td is not None and tee[1] > 0 else 0
    for level in levels:
        if pce_svn < level.pce_svn:
            continue
        if any(have < need for have, need in zip(components, level.sgx_components, strict=True)):
            continue
        if td is not None:
            if level.tdx_components is None:
                continue
            if any(tee[i] < level.tdx_components[i] for i in range(start, 16)):
                continue
        return Rating(level.status, level.advisory_ids)
    raise TcbError(
        "tcb.no_level",
        "no TCB level of the TCB info matches the platform",
        observed=f"components {list(components)} pcesvn {pce_svn}"
        + (f" tee_tcb_svn {tee.hex()}" if td is not None else ""),
        expected=f"at least the lowest of {len(levels)} levels",
        hint="the platform's TCB is below every level Intel still rates; update its microcode/BIOS",
    )


def _rate_isvsvn(levels: Sequence[QeTcbLevel], isv_svn: int, code: str, what: str) -> Rating:
    for level in sorted(levels, key=lambda lv: lv.isv_svn, reverse=True):
        if isv_svn >= level.isv_svn:
            return Rating(level.status, level.advisory_ids)
    raise TcbError(
        code,
        f"no TCB level matches the {what} ISVSVN",
        observed=isv_svn,
        expected=f">= {min((lv.isv_svn for lv in levels), default='any level')}",
    )


def rate_qe(levels: Sequence[QeTcbLevel], isv_svn: int) -> Rating:
    return _rate_isvsvn(levels, isv_svn, "qe_identity.no_level", "QE")


def rate_module(module: TdxModuleIdentity, isv_svn: int) -> Rating:
    return _rate_isvsvn(module.tcb_levels, isv_svn, "tdx_module.no_level", "TDX module")


def converge(platform: Rating, other: Rating) -> Rating:
    """Merge a QE or TDX module rating into the platform rating, as Intel does."""
    status = platform.status
    if other.status == _S.REVOKED:
        status = _S.REVOKED
    elif other.status == _S.OUT_OF_DATE:
        if platform.status in (_S.UP_TO_DATE, _S.SW_HARDENING_NEEDED):
            status = _S.OUT_OF_DATE
        elif platform.status in (
            _S.CONFIGURATION_NEEDED,
            _S.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        ):
            status = _S.OUT_OF_DATE_CONFIGURATION_NEEDED
    # Ordered union, platform first; dict keys drop repeats within either side too.
    advisories = dict.fromkeys((*platform.advisory_ids, *other.advisory_ids))
    return Rating(status, tuple(advisories))
