"""Policy: each expectation passes, fails with its PolicyError code, or is "not requested"."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from confide.attestation import (
    Check,
    Policy,
    Quote,
    SgxReportBody,
    TcbStatus,
    TdReportBody,
    verify_quote,
)
from confide.errors import PolicyError
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
TDX = "tdx-dcapqvl-B0C06F000000"
Loader = Callable[[str], "VectorSet"]
UP = TcbStatus.UP_TO_DATE
ALL_BUT_REVOKED = [s.value for s in TcbStatus if s is not TcbStatus.REVOKED]


@pytest.fixture
def sgx_body(load_vector: Loader) -> SgxReportBody:
    body = Quote.from_bytes(load_vector(SGX).quote).body
    assert isinstance(body, SgxReportBody)
    return body


@pytest.fixture
def td_body(load_vector: Loader) -> TdReportBody:
    body = Quote.from_bytes(load_vector(TDX).quote).body
    assert isinstance(body, TdReportBody)
    return body


def _outcomes(checks: tuple[Check, ...]) -> dict[str, str]:
    return {c.name: c.outcome for c in checks}


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x01]) + value[1:]


# -- SGX expectations ----------------------------------------------------------------

SgxCase = Callable[[SgxReportBody], Policy]

SGX_PASSING: list[tuple[str, SgxCase, str]] = [
    ("mr_enclave", lambda b: Policy(mr_enclave=b.mr_enclave), "MRENCLAVE"),
    ("mr_signer", lambda b: Policy(mr_signer=b.mr_signer), "MRSIGNER"),
    ("isv_prod_id", lambda b: Policy(isv_prod_id=b.isv_prod_id), "ISVPRODID"),
    ("min_isv_svn equal", lambda b: Policy(min_isv_svn=b.isv_svn), "ISVSVN minimum"),
    ("report_data", lambda b: Policy(report_data=b.report_data), "report data"),
]

SGX_FAILING: list[tuple[str, SgxCase, str]] = [
    ("mr_enclave", lambda b: Policy(mr_enclave=_flip(b.mr_enclave)), "policy.mrenclave"),
    ("mr_signer", lambda b: Policy(mr_signer=_flip(b.mr_signer)), "policy.mrsigner"),
    ("isv_prod_id", lambda b: Policy(isv_prod_id=b.isv_prod_id + 1), "policy.isv_prod_id"),
    ("min_isv_svn above", lambda b: Policy(min_isv_svn=b.isv_svn + 1), "policy.isv_svn"),
    ("report_data", lambda b: Policy(report_data=_flip(b.report_data)), "policy.report_data"),
    ("mr_td on SGX", lambda b: Policy(mr_td=bytes(48)), "policy.mr_td"),
    ("rtmrs on SGX", lambda b: Policy(rtmrs=(bytes(48), None, None, None)), "policy.rtmrs"),
    (
        "TCB status",
        lambda b: Policy(accepted_tcb_statuses=frozenset({"SWHardeningNeeded"})),
        "policy.tcb_status",
    ),
    (
        "debug enclave",
        lambda b: Policy(mr_enclave=b.mr_enclave),
        "policy.debug",
    ),
]


@pytest.mark.parametrize(("name", "make", "check"), SGX_PASSING, ids=[c[0] for c in SGX_PASSING])
def test_sgx_expectation_met(sgx_body: SgxReportBody, name: str, make: SgxCase, check: str) -> None:
    checks = make(sgx_body).apply(sgx_body, UP, ())
    assert _outcomes(checks)[check] == "passed"


@pytest.mark.parametrize(("name", "make", "code"), SGX_FAILING, ids=[c[0] for c in SGX_FAILING])
def test_sgx_expectation_not_met(
    sgx_body: SgxReportBody, name: str, make: SgxCase, code: str
) -> None:
    body = sgx_body
    if name == "debug enclave":
        body = dataclasses.replace(
            body, attributes=bytes([body.attributes[0] | 0x02]) + body.attributes[1:]
        )
        assert body.debug
    with pytest.raises(PolicyError) as caught:
        make(sgx_body).apply(body, UP, ())
    assert caught.value.code == code
    assert "\n" not in str(caught.value)


def test_sgx_mismatch_names_observed_and_expected(sgx_body: SgxReportBody) -> None:
    want = _flip(sgx_body.mr_enclave)
    with pytest.raises(PolicyError) as caught:
        Policy(mr_enclave=want).apply(sgx_body, UP, ())
    err = caught.value
    assert (err.observed, err.expected) == (sgx_body.mr_enclave, want)
    assert str(err) == f"MRENCLAVE: observed {sgx_body.mr_enclave.hex()}, expected {want.hex()}"


def test_sgx_unrequested_expectations_are_reported(sgx_body: SgxReportBody) -> None:
    checks = Policy().apply(sgx_body, UP, ())
    assert _outcomes(checks) == {
        "TCB status accepted": "passed",
        "debug mode": "passed",
        "MRENCLAVE": "not requested",
        "MRSIGNER": "not requested",
        "ISVPRODID": "not requested",
        "ISVSVN minimum": "not requested",
        "report data": "not requested",
    }


def test_debug_allowed_by_name(sgx_body: SgxReportBody) -> None:
    debug = dataclasses.replace(sgx_body, attributes=b"\x07" + sgx_body.attributes[1:])
    checks = Policy(allow_debug=True).apply(debug, UP, ())
    assert [c for c in checks if c.name == "debug mode"] == [
        Check("debug mode", "passed", "allowed")
    ]


# -- TDX expectations ------------------------------------------------------------------

TdCase = Callable[[TdReportBody], Policy]

TD_PASSING: list[tuple[str, TdCase, str]] = [
    ("mr_td", lambda b: Policy(mr_td=b.mr_td), "MRTD"),
    ("rtmr0 only", lambda b: Policy(rtmrs=(b.rtmr0, None, None, None)), "RTMR0"),
    ("all rtmrs", lambda b: Policy(rtmrs=b.rtmrs), "RTMR3"),
    ("report_data", lambda b: Policy(report_data=b.report_data), "report data"),
]

TD_FAILING: list[tuple[str, TdCase, str]] = [
    ("mr_td", lambda b: Policy(mr_td=_flip(b.mr_td)), "policy.mr_td"),
    ("rtmr2", lambda b: Policy(rtmrs=(None, None, _flip(b.rtmr2), None)), "policy.rtmr2"),
    (
        "rtmr0 right, rtmr1 wrong",
        lambda b: Policy(rtmrs=(b.rtmr0, _flip(b.rtmr1), None, None)),
        "policy.rtmr1",
    ),
    ("report_data", lambda b: Policy(report_data=bytes(64)), "policy.report_data"),
    ("mr_enclave on TDX", lambda b: Policy(mr_enclave=bytes(32)), "policy.mr_enclave"),
    ("mr_signer on TDX", lambda b: Policy(mr_signer=bytes(32)), "policy.mr_signer"),
    ("isv_prod_id on TDX", lambda b: Policy(isv_prod_id=0), "policy.isv_prod_id"),
    ("min_isv_svn on TDX", lambda b: Policy(min_isv_svn=0), "policy.min_isv_svn"),
    (
        "TCB status",
        lambda b: Policy(accepted_tcb_statuses=frozenset({"OutOfDate"})),
        "policy.tcb_status",
    ),
]


@pytest.mark.parametrize(("name", "make", "check"), TD_PASSING, ids=[c[0] for c in TD_PASSING])
def test_td_expectation_met(td_body: TdReportBody, name: str, make: TdCase, check: str) -> None:
    checks = make(td_body).apply(td_body, UP, ())
    assert _outcomes(checks)[check] == "passed"


@pytest.mark.parametrize(("name", "make", "code"), TD_FAILING, ids=[c[0] for c in TD_FAILING])
def test_td_expectation_not_met(td_body: TdReportBody, name: str, make: TdCase, code: str) -> None:
    with pytest.raises(PolicyError) as caught:
        make(td_body).apply(td_body, UP, ())
    assert caught.value.code == code


def test_td_unrequested_expectations_are_reported(td_body: TdReportBody) -> None:
    checks = Policy(rtmrs=(td_body.rtmr0, None, None, None)).apply(td_body, UP, ())
    assert _outcomes(checks) == {
        "TCB status accepted": "passed",
        "TD attributes": "passed",
        "debug mode": "passed",
        "MRTD": "not requested",
        "RTMR0": "passed",
        "RTMR1": "not requested",
        "RTMR2": "not requested",
        "RTMR3": "not requested",
        "report data": "not requested",
    }


def test_debug_td_is_rejected(td_body: TdReportBody) -> None:
    debug = dataclasses.replace(td_body, td_attributes=b"\x01" + td_body.td_attributes[1:])
    with pytest.raises(PolicyError) as caught:
        Policy().apply(debug, UP, ())
    assert caught.value.code == "policy.td_attributes.debug"


# -- TCB statuses ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [s for s in TcbStatus if s is not TcbStatus.REVOKED])
def test_only_up_to_date_by_default(sgx_body: SgxReportBody, status: TcbStatus) -> None:
    if status is UP:
        Policy().apply(sgx_body, status, ())
        return
    with pytest.raises(PolicyError) as caught:
        Policy().apply(sgx_body, status, ("INTEL-SA-00615",))
    err = caught.value
    assert (err.code, err.observed, err.expected) == ("policy.tcb_status", status.value, "UpToDate")
    assert err.hint is not None and "INTEL-SA-00615" in err.hint
    Policy.accepting([status.value]).apply(sgx_body, status, ())


def test_accepting_keeps_up_to_date_and_passes_options(sgx_body: SgxReportBody) -> None:
    policy = Policy.accepting(["OutOfDate"], mr_enclave=sgx_body.mr_enclave)
    assert policy.accepted_tcb_statuses == frozenset({"UpToDate", "OutOfDate"})
    assert policy.mr_enclave == sgx_body.mr_enclave
    policy.apply(sgx_body, TcbStatus.OUT_OF_DATE, ())


def test_default_policy_is_strict() -> None:
    policy = Policy()
    assert policy.accepted_tcb_statuses == frozenset({"UpToDate"})
    assert (policy.allow_debug, policy.allow_simulation) == (False, False)


# -- invalid construction --------------------------------------------------------------

INVALID: list[tuple[str, Callable[[], Policy]]] = [
    ("Revoked accepted", lambda: Policy(accepted_tcb_statuses=frozenset({"UpToDate", "Revoked"}))),
    ("Revoked via accepting", lambda: Policy.accepting(["Revoked"])),
    ("an unknown status", lambda: Policy.accepting(["Fine"])),
    ("a status in the wrong case", lambda: Policy.accepting(["uptodate"])),
    ("mr_enclave of 31 bytes", lambda: Policy(mr_enclave=bytes(31))),
    ("mr_signer of 33 bytes", lambda: Policy(mr_signer=bytes(33))),
    ("mr_td of 32 bytes", lambda: Policy(mr_td=bytes(32))),
    ("report_data of 32 bytes", lambda: Policy(report_data=bytes(32))),
    ("an rtmr of 47 bytes", lambda: Policy(rtmrs=(None, bytes(47), None, None))),
    ("three rtmrs", lambda: Policy(rtmrs=(None, None, None))),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "make"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_policy_raises_value_error(name: str, make: Callable[[], Policy]) -> None:
    with pytest.raises(ValueError):
        make()


# -- through verify_quote ----------------------------------------------------------------


def test_policy_applies_after_verification(load_vector: Loader) -> None:
    v = load_vector(SGX)
    body = Quote.from_bytes(v.quote).body
    assert isinstance(body, SgxReportBody)
    ok = Policy.accepting(ALL_BUT_REVOKED, mr_enclave=body.mr_enclave, mr_signer=body.mr_signer)
    result = verify_quote(v.quote, v.collateral(), now=v.verification_time, policy=ok)
    assert _outcomes(result.checks)["MRENCLAVE"] == "passed"
    assert _outcomes(result.checks)["quote signed by the attestation key"] == "passed"
    wrong = dataclasses.replace(ok, mr_signer=_flip(body.mr_signer))
    with pytest.raises(PolicyError) as caught:
        verify_quote(v.quote, v.collateral(), now=v.verification_time, policy=wrong)
    assert caught.value.code == "policy.mrsigner"
    # What passed before the policy is on the error.
    assert "TCB level" in [c.name for c in caught.value.checks if isinstance(c, Check)]


def test_tdx_expectation_on_the_sgx_vector_fails(load_vector: Loader) -> None:
    v = load_vector(SGX)
    policy = Policy.accepting(ALL_BUT_REVOKED, mr_td=bytes(48))
    with pytest.raises(PolicyError) as caught:
        verify_quote(v.quote, v.collateral(), now=v.verification_time, policy=policy)
    assert caught.value.code == "policy.mr_td"
