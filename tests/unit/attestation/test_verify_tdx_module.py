"""The verifier's TDX module checks and ratings, on the real TDX vector.

There is no TDX simulator, so nothing here can sign a TDX TCB info or a TD
report. Each row takes the parsed evidence of ``tdx-dcapqvl-B0C06F000000``
(TD report, TEE_TCB_SVN ``06 01 03 ..``: module TDX_01 at SVN 6) and changes
the TD report or the parsed :class:`TcbInfo` with ``dataclasses.replace``
(the collateral's parsed models always come from its signed raw JSON, so the
changed TCB info is kept beside it). A changed TCB info is no longer what its
signature covers, and a changed TD report breaks the quote's signature, so the
rows call the verifier's internals directly (``_rate_tdx_module``,
``rate_platform``, ``converge``, ``_check_qe_identity``), never ``verify_quote``.
:func:`test_untouched_evidence_rates_as_verify_quote_does` ties the two together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509

from confide.attestation import (
    Collateral,
    PckExtensions,
    Policy,
    QeTcbLevel,
    Quote,
    TcbInfo,
    TcbStatus,
    TdReportBody,
    verify_quote,
)
from confide.attestation._tcb import Rating, converge, rate_platform
from confide.attestation._verify import _check_qe_identity, _rate_tdx_module
from confide.errors import AttestationError, CollateralError, TcbError
from support.vectors import VectorSet

TDX = "tdx-dcapqvl-B0C06F000000"
S = TcbStatus

TcbEdit = Callable[[TcbInfo], TcbInfo]
TdEdit = Callable[[TdReportBody], TdReportBody]


@dataclass(frozen=True)
class Evidence:
    collateral: Collateral
    tcb: TcbInfo
    td: TdReportBody
    pck: PckExtensions
    quote: Quote


def _evidence(v: VectorSet) -> Evidence:
    quote = Quote.from_bytes(v.quote)
    assert isinstance(quote.body, TdReportBody)
    leaf = x509.load_pem_x509_certificates(quote.certification.pck_cert_chain.rstrip(b"\x00"))[0]
    collateral = v.collateral()
    return Evidence(
        collateral, collateral.tcb_info, quote.body, PckExtensions.from_certificate(leaf), quote
    )


def _rate(e: Evidence) -> Rating:
    """The ratings as ``verify_quote`` combines them: platform, TDX module, then QE."""
    rating = rate_platform(e.tcb, e.pck.tcb_components, e.pck.pce_svn, e.td)
    module = _rate_tdx_module(e.tcb, e.td)
    if module is not None:
        rating = converge(rating, module)
    return converge(rating, _check_qe_identity(e.collateral, e.quote.certification.qe_report))


def _apply(e: Evidence, tcb: TcbEdit | None, td: TdEdit | None) -> Evidence:
    return dataclasses.replace(e, tcb=tcb(e.tcb) if tcb else e.tcb, td=td(e.td) if td else e.td)


# -- edits --------------------------------------------------------------------


def tee_tcb_svn(index: int, value: int) -> TdEdit:
    """Set one byte of TEE_TCB_SVN: 0 is the module's SVN, 1 its version (TDX_<version>)."""

    def edit(td: TdReportBody) -> TdReportBody:
        svn = bytearray(td.tee_tcb_svn)
        svn[index] = value
        return dataclasses.replace(td, tee_tcb_svn=bytes(svn))

    return edit


def td_field(name: str, value: bytes) -> TdEdit:
    def edit(td: TdReportBody) -> TdReportBody:
        return dataclasses.replace(td, **{name: value})

    return edit


def module(module_id: str, **changes: Any) -> TcbEdit:
    """Change one identity of ``tdxModuleIdentities``."""

    def edit(tcb: TcbInfo) -> TcbInfo:
        ids = tcb.tdx_module_identities
        assert any(m.id == module_id for m in ids), module_id
        return dataclasses.replace(
            tcb,
            tdx_module_identities=tuple(
                dataclasses.replace(m, **changes) if m.id == module_id else m for m in ids
            ),
        )

    return edit


def base_module(**changes: Any) -> TcbEdit:
    """Change the TCB info's ``tdxModule`` (what a TD report of module version 0 is held to)."""

    def edit(tcb: TcbInfo) -> TcbInfo:
        assert tcb.tdx_module is not None
        return dataclasses.replace(tcb, tdx_module=dataclasses.replace(tcb.tdx_module, **changes))

    return edit


def only_modules(*keep: str) -> TcbEdit:
    def edit(tcb: TcbInfo) -> TcbInfo:
        ids = tuple(m for m in tcb.tdx_module_identities if m.id in keep)
        return dataclasses.replace(tcb, tdx_module_identities=ids)

    return edit


def platform_status(status: TcbStatus) -> TcbEdit:
    """Every platform TCB level rated ``status``."""

    def edit(tcb: TcbInfo) -> TcbInfo:
        levels = tuple(dataclasses.replace(lv, status=status) for lv in tcb.tcb_levels)
        return dataclasses.replace(tcb, tcb_levels=levels)

    return edit


def module_levels(module_id: str, *levels: tuple[int, TcbStatus, tuple[str, ...]]) -> TcbEdit:
    def edit(tcb: TcbInfo) -> TcbInfo:
        date = tcb.issue_date
        return module(
            module_id,
            tcb_levels=tuple(QeTcbLevel(svn, date, st, adv) for svn, st, adv in levels),
        )(tcb)

    return edit


def then(*edits: TcbEdit) -> TcbEdit:
    def edit(tcb: TcbInfo) -> TcbInfo:
        for step in edits:
            tcb = step(tcb)
        return tcb

    return edit


def no_tdx_module(tcb: TcbInfo) -> TcbInfo:
    return dataclasses.replace(tcb, tdx_module=None)


# -- failures -----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    error: type[AttestationError]
    code: str
    tcb: TcbEdit | None = None
    td: TdEdit | None = None


ONES_48 = b"\x01" * 48
FAILURES = [
    Row(
        "module version 2: no TDX_02 identity",
        TcbError,
        "tdx_module.identity",
        td=tee_tcb_svn(1, 0x02),
    ),
    Row(
        "TCB info rates TDX_03 only",
        TcbError,
        "tdx_module.identity",
        tcb=only_modules("TDX_03"),
    ),
    Row(
        "module signer (TD report)",
        TcbError,
        "tdx_module.mrsigner",
        td=td_field("mr_signer_seam", ONES_48),
    ),
    Row(
        "module signer (TDX_01 identity)",
        TcbError,
        "tdx_module.mrsigner",
        tcb=module("TDX_01", mr_signer=ONES_48),
    ),
    # Version 0: no identity is looked up; the TD report is held to tdxModule.
    Row(
        "module version 0, signer (tdxModule)",
        TcbError,
        "tdx_module.mrsigner",
        tcb=base_module(mr_signer=ONES_48),
        td=tee_tcb_svn(1, 0),
    ),
    Row(
        "module attributes (TD report)",
        TcbError,
        "tdx_module.attributes",
        td=td_field("seam_attributes", b"\x01" + bytes(7)),
    ),
    Row(
        "module attributes (TDX_01 identity)",
        TcbError,
        "tdx_module.attributes",
        tcb=module("TDX_01", attributes=bytes(7) + b"\x80"),
    ),
    Row(
        "module version 0, attributes (tdxModule)",
        TcbError,
        "tdx_module.attributes",
        tcb=base_module(attributes=b"\x01" + bytes(7)),
        td=tee_tcb_svn(1, 0),
    ),
    Row(
        "module SVN 1, below every TDX_01 level",
        TcbError,
        "tdx_module.no_level",
        td=tee_tcb_svn(0, 1),
    ),
    Row(
        "TDX TCB info without tdxModule",
        CollateralError,
        "tcb_info.tdx_module",
        tcb=no_tdx_module,
    ),
]


@pytest.mark.parametrize("row", FAILURES, ids=[r.name for r in FAILURES])
def test_tdx_module_failure(load_vector: Callable[[str], VectorSet], row: Row) -> None:
    base = _evidence(load_vector(TDX))
    changed = _apply(base, row.tcb, row.td)
    assert (changed.tcb, changed.td) != (base.tcb, base.td)
    with pytest.raises(AttestationError) as caught:
        _rate(changed)
    err = caught.value
    assert (type(err), err.code) == (row.error, row.code), str(err)


# -- ratings and Intel's convergence ------------------------------------------


@dataclass(frozen=True)
class Rated:
    name: str
    status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    tcb: TcbEdit | None = None
    td: TdEdit | None = None


RATINGS = [
    Rated("untouched: TDX_01 at SVN 6 is UpToDate", S.UP_TO_DATE),
    # TDX_01 rates SVN 4 and up UpToDate, 2 and 3 OutOfDate.
    Rated("module OutOfDate turns UpToDate into OutOfDate", S.OUT_OF_DATE, td=tee_tcb_svn(0, 3)),
    Rated(
        "module OutOfDate turns SWHardeningNeeded into OutOfDate",
        S.OUT_OF_DATE,
        tcb=platform_status(S.SW_HARDENING_NEEDED),
        td=tee_tcb_svn(0, 3),
    ),
    Rated(
        "module OutOfDate turns ConfigurationNeeded into OutOfDateConfigurationNeeded",
        S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        tcb=platform_status(S.CONFIGURATION_NEEDED),
        td=tee_tcb_svn(0, 3),
    ),
    Rated(
        "module OutOfDate turns ConfigurationAndSWHardeningNeeded into "
        "OutOfDateConfigurationNeeded",
        S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        tcb=platform_status(S.CONFIGURATION_AND_SW_HARDENING_NEEDED),
        td=tee_tcb_svn(0, 3),
    ),
    Rated(
        "module UpToDate leaves ConfigurationNeeded",
        S.CONFIGURATION_NEEDED,
        tcb=platform_status(S.CONFIGURATION_NEEDED),
    ),
    # verify_quote turns a Revoked rating into TcbError tcb.revoked.
    Rated(
        "module Revoked revokes the whole",
        S.REVOKED,
        ("SA-MODULE",),
        tcb=module_levels("TDX_01", (4, S.REVOKED, ("SA-MODULE",))),
    ),
    Rated(
        "advisories: platform first, then the module's",
        S.OUT_OF_DATE,
        ("SA-PLATFORM", "SA-MODULE"),
        tcb=then(
            lambda t: dataclasses.replace(
                t,
                tcb_levels=tuple(
                    dataclasses.replace(lv, advisory_ids=("SA-PLATFORM",)) for lv in t.tcb_levels
                ),
            ),
            module_levels("TDX_01", (4, S.UP_TO_DATE, ()), (2, S.OUT_OF_DATE, ("SA-MODULE",))),
        ),
        td=tee_tcb_svn(0, 3),
    ),
    # Version 0: the module is not rated (only held to tdxModule); the platform
    # level then also compares the first two TEE_TCB_SVN bytes (6 >= 5, 0 >= 0).
    Rated("module version 0 is not rated", S.UP_TO_DATE, td=tee_tcb_svn(1, 0)),
]


@pytest.mark.parametrize("case", RATINGS, ids=[r.name for r in RATINGS])
def test_tdx_module_rating_converges(load_vector: Callable[[str], VectorSet], case: Rated) -> None:
    rating = _rate(_apply(_evidence(load_vector(TDX)), case.tcb, case.td))
    assert (rating.status, rating.advisory_ids) == (case.status, case.advisory_ids)


def test_untouched_evidence_rates_as_verify_quote_does(
    load_vector: Callable[[str], VectorSet],
) -> None:
    """The internals called above give what ``verify_quote`` gives on the same vector."""
    v = load_vector(TDX)
    result = verify_quote(
        v.quote,
        v.collateral(),
        now=v.verification_time,
        policy=Policy.accepting([S.UP_TO_DATE.value]),
    )
    rating = _rate(_evidence(v))
    assert (rating.status, rating.advisory_ids) == (result.tcb_status, result.advisory_ids)


def test_the_rows_premise(load_vector: Callable[[str], VectorSet]) -> None:
    """The vector is what the rows assume: module TDX_01 at SVN 6, rated from SVN 4 and 2."""
    e = _evidence(load_vector(TDX))
    assert e.td.tee_tcb_svn[:2] == b"\x06\x01"
    tcb = e.tcb
    (tdx_01,) = (m for m in tcb.tdx_module_identities if m.id == "TDX_01")
    assert [(lv.isv_svn, lv.status) for lv in tdx_01.tcb_levels] == [
        (4, S.UP_TO_DATE),
        (2, S.OUT_OF_DATE),
    ]
    assert tdx_01.attributes_mask == b"\xff" * 8
    assert {lv.status for lv in tcb.tcb_levels} == {S.UP_TO_DATE, S.OUT_OF_DATE}
