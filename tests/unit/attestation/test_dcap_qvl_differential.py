"""Differential test against dcap-qvl 0.7.0 (Phala's Rust verifier, PyPI ``dcap-qvl``).

For every vector and every interesting time (the verification time, both ends of
the validity window and one second outside each), both verifiers run. Where both
accept, the TCB status and advisory IDs must match. Every row names what each
side is expected to do; where they disagree the row carries the documented
reason, so a new divergence (or a divergence that went away) fails the test.

Known, deliberate divergences:

* CRL ``thisUpdate``: dcap-qvl does not check it; we do (a CRL from the future
  is not valid yet).
* CRL ``nextUpdate``: dcap-qvl treats it as exclusive (rejects *at* nextUpdate);
  we are inclusive on every window, as for certificates, TCB info and QE identity.
* Trailing bytes: dcap-qvl ignores whatever follows the signature data; we accept
  only zero padding and reject anything else (``quote.trailing``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import dcap_qvl
import pytest

from confide.attestation import Collateral, Policy, TcbStatus, verify_quote
from confide.errors import AttestationError, CollateralError, FormatError, TcbError
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
AUTOMATA = "sgx-automata-00606A000000"
TDX = "tdx-dcapqvl-B0C06F000000"
NEGATIVE = "tdx-gotdxguest-50806F000000-negative"
NEGATIVE_TRAILER = b"\nextra bytes(only for testing purpose)\n"
ACCEPT_ALL = Policy.accepting(s.value for s in TcbStatus if s is not TcbStatus.REVOKED)

CRL_THIS_UPDATE = "dcap-qvl does not check a CRL's thisUpdate; we do"
CRL_NEXT_UPDATE = "dcap-qvl treats a CRL's nextUpdate as exclusive; we are inclusive on all windows"
TRAILING_BYTES = (
    "dcap-qvl ignores bytes after the signature data; we reject non-zero trailing bytes "
    "before any other check"
)


@dataclass(frozen=True)
class Accept:
    """Accepted; the status and advisories are compared between both sides."""


@dataclass(frozen=True)
class DcapReject:
    #: A fragment of dcap-qvl's error message.
    message: str


@dataclass(frozen=True)
class Reject:
    error: type[AttestationError]
    code: str


@dataclass(frozen=True)
class Case:
    set: str
    point: str
    dcap: Accept | DcapReject
    ours: Accept | Reject
    #: Why the two sides disagree (accept/reject, or reject for different reasons).
    divergence: str | None = None
    collateral: str = "collateral.json"
    strip_trailer: bool = False


OK = Accept()
POINTS = ("verification_time", "window_start", "window_end", "before", "after")

CASES = [
    # sgx-dcapqvl: full agreement.
    Case(SGX, "verification_time", OK, OK),
    Case(SGX, "window_start", OK, OK),
    Case(SGX, "window_end", OK, OK),
    Case(
        SGX,
        "before",
        DcapReject("TCBInfo issue date is in the future"),
        Reject(CollateralError, "tcb_info.not_yet_valid"),
    ),
    Case(
        SGX,
        "after",
        DcapReject("QE Identity expired"),
        Reject(CollateralError, "qe_identity.expired"),
    ),
    # The same quote with the 2023-11 collateral epoch.
    *(
        Case(SGX, point, OK, OK, collateral="collateral_2023-11.json")
        for point in ("verification_time", "window_start", "window_end")
    ),
    Case(
        SGX,
        "before",
        DcapReject("QE Identity issue date is in the future"),
        Reject(CollateralError, "qe_identity.not_yet_valid"),
        collateral="collateral_2023-11.json",
    ),
    Case(
        SGX,
        "after",
        DcapReject("TCBInfo expired"),
        Reject(CollateralError, "tcb_info.expired"),
        collateral="collateral_2023-11.json",
    ),
    # sgx-automata: the window starts at the PCK CRL's thisUpdate.
    Case(AUTOMATA, "verification_time", OK, OK),
    Case(AUTOMATA, "window_start", OK, OK),
    Case(AUTOMATA, "window_end", OK, OK),
    Case(
        AUTOMATA,
        "before",
        OK,
        Reject(CollateralError, "pck_crl.not_yet_valid"),
        divergence=CRL_THIS_UPDATE,
    ),
    Case(
        AUTOMATA,
        "after",
        DcapReject("QE Identity expired"),
        Reject(CollateralError, "qe_identity.expired"),
    ),
    # tdx-dcapqvl: the window ends at the PCK CRL's nextUpdate.
    Case(TDX, "verification_time", OK, OK),
    Case(TDX, "window_start", OK, OK),
    Case(TDX, "window_end", DcapReject("CrlExpired"), OK, divergence=CRL_NEXT_UPDATE),
    Case(
        TDX,
        "before",
        DcapReject("QE Identity issue date is in the future"),
        Reject(CollateralError, "qe_identity.not_yet_valid"),
    ),
    Case(TDX, "after", DcapReject("CrlExpired"), Reject(CollateralError, "pck_crl.expired")),
    # The negative set as published: both reject, we for the trailing bytes.
    Case(
        NEGATIVE,
        "verification_time",
        DcapReject("No matching TCB level found"),
        Reject(FormatError, "quote.trailing"),
        divergence=TRAILING_BYTES,
    ),
    Case(
        NEGATIVE,
        "window_start",
        DcapReject("No matching TCB level found"),
        Reject(FormatError, "quote.trailing"),
        divergence=TRAILING_BYTES,
    ),
    Case(
        NEGATIVE,
        "window_end",
        DcapReject("No matching TCB level found"),
        Reject(FormatError, "quote.trailing"),
        divergence=TRAILING_BYTES,
    ),
    Case(
        NEGATIVE,
        "before",
        DcapReject("TCBInfo issue date is in the future"),
        Reject(FormatError, "quote.trailing"),
        divergence=TRAILING_BYTES,
    ),
    Case(
        NEGATIVE,
        "after",
        DcapReject("QE Identity expired"),
        Reject(FormatError, "quote.trailing"),
        divergence=TRAILING_BYTES,
    ),
    # The negative set without its trailer: the same verdicts for the same reasons.
    *(
        Case(
            NEGATIVE,
            point,
            DcapReject("No matching TCB level found"),
            Reject(TcbError, "tcb.no_level"),
            strip_trailer=True,
        )
        for point in ("verification_time", "window_start", "window_end")
    ),
    Case(
        NEGATIVE,
        "before",
        DcapReject("TCBInfo issue date is in the future"),
        Reject(CollateralError, "tcb_info.not_yet_valid"),
        strip_trailer=True,
    ),
    Case(
        NEGATIVE,
        "after",
        DcapReject("QE Identity expired"),
        Reject(CollateralError, "qe_identity.expired"),
        strip_trailer=True,
    ),
]


def _id(case: Case) -> str:
    variant = case.collateral.removeprefix("collateral").removesuffix(".json")
    return f"{case.set}{variant}{'-stripped' if case.strip_trailer else ''}@{case.point}"


def _window(v: VectorSet, collateral: str) -> tuple[int, int, int]:
    if collateral == "collateral.json":
        e = v.expected
    else:
        (e,) = [a for a in v.expected["alternative_collateral"] if a["file"] == collateral]
    start, end = e["validity_window"]
    return e["verification_time"], start, end


def _unix(v: VectorSet, case: Case) -> int:
    now, start, end = _window(v, case.collateral)
    return {
        "verification_time": now,
        "window_start": start,
        "window_end": end,
        "before": start - 1,
        "after": end + 1,
    }[case.point]


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    status: str = ""
    advisory_ids: tuple[str, ...] = ()
    error: str = ""


def _run_dcap_qvl(quote: bytes, collateral_json: str, unix: int) -> Outcome:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    try:
        report = dcap_qvl.verify(quote, collateral, unix)
    except ValueError as exc:
        return Outcome(False, error=str(exc))
    return Outcome(True, str(report.status), tuple(report.advisory_ids))


def _run_ours(quote: bytes, collateral_json: str, unix: int) -> Outcome | AttestationError:
    try:
        result = verify_quote(
            quote,
            Collateral.from_json(collateral_json),
            now=datetime.fromtimestamp(unix, UTC),
            policy=ACCEPT_ALL,
        )
    except AttestationError as exc:
        return exc
    return Outcome(True, result.tcb_status.value, result.advisory_ids)


def test_every_set_and_point_has_exactly_one_case() -> None:
    keys = [(c.set, c.collateral, c.strip_trailer, c.point) for c in CASES]
    assert len(keys) == len(set(keys))
    variants = {(c.set, c.collateral, c.strip_trailer) for c in CASES}
    assert len(keys) == len(variants) * len(POINTS)
    assert {c.set for c in CASES} == {SGX, AUTOMATA, TDX, NEGATIVE}


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_against_dcap_qvl(load_vector: Callable[[str], VectorSet], case: Case) -> None:
    v = load_vector(case.set)
    quote = v.quote.removesuffix(NEGATIVE_TRAILER) if case.strip_trailer else v.quote
    if case.strip_trailer:
        assert quote != v.quote
    text = v.text(case.collateral)
    unix = _unix(v, case)

    dcap = _run_dcap_qvl(quote, text, unix)
    ours = _run_ours(quote, text, unix)

    # Each side does what its row says.
    if isinstance(case.dcap, DcapReject):
        assert not dcap.accepted, f"dcap-qvl now accepts: {dcap}"
        assert case.dcap.message in dcap.error
    else:
        assert dcap.accepted, f"dcap-qvl now rejects: {dcap.error}"
    if isinstance(case.ours, Reject):
        assert isinstance(ours, AttestationError), f"we now accept: {ours}"
        assert (type(ours), ours.code) == (case.ours.error, case.ours.code), str(ours)
    else:
        assert isinstance(ours, Outcome), f"we now reject: {ours}"

    # Where both accept they agree on the TCB; any disagreement is documented.
    if isinstance(ours, Outcome) and dcap.accepted:
        assert (ours.status, ours.advisory_ids) == (dcap.status, dcap.advisory_ids)
        assert case.divergence is None
    elif isinstance(ours, Outcome) != dcap.accepted:
        assert case.divergence, "an undocumented divergence"


def test_divergences_are_the_documented_ones() -> None:
    """Each documented divergence is used, and nothing else diverges."""
    used = {c.divergence for c in CASES if c.divergence}
    assert used == {CRL_THIS_UPDATE, CRL_NEXT_UPDATE, TRAILING_BYTES}


@pytest.mark.parametrize("name", [SGX, AUTOMATA, TDX])
def test_dcap_qvl_result_matches_expected_json(
    load_vector: Callable[[str], VectorSet], name: str
) -> None:
    """The oracle itself still says what the vectors recorded (guards a dcap-qvl upgrade)."""
    v = load_vector(name)
    want = v.expected["dcap_qvl_0_7_0_result"]
    got = _run_dcap_qvl(v.quote, v.collateral_json, v.expected["verification_time"])
    assert (got.accepted, got.status, list(got.advisory_ids)) == (
        want["ok"],
        want["status"],
        want["advisory_ids"],
    )
    assert dcap_qvl.__version__ == "0.7.0"
