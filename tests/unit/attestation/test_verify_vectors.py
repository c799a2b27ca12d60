"""The real vectors: what verifies, when, with which TCB status, and what is parsed.

Expectations come from each set's ``expected.json`` (dcap-qvl 0.7.0's results
and the parsed fields); the windows are inclusive at both ends, and one second
outside either end names the item that is not (yet) valid.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import (
    Check,
    Collateral,
    PckExtensions,
    Policy,
    Quote,
    SgxReportBody,
    TcbStatus,
    TdReportBody,
    VerifiedQuote,
    verify_quote,
)
from confide.errors import (
    AttestationError,
    CollateralError,
    FormatError,
    PolicyError,
    TcbError,
    UsageError,
)
from support.vectors import VectorSet

SGX = "sgx-dcapqvl-00A067110000"
AUTOMATA = "sgx-automata-00606A000000"
TDX = "tdx-dcapqvl-B0C06F000000"
NEGATIVE = "tdx-gotdxguest-50806F000000-negative"
ALL_SETS = [SGX, AUTOMATA, TDX, NEGATIVE]
VALID_SETS = [SGX, AUTOMATA, TDX]
ONE_SECOND = timedelta(seconds=1)
#: Bytes the negative set's quote carries after its signature data (go-tdx-guest's test).
NEGATIVE_TRAILER = b"\nextra bytes(only for testing purpose)\n"

ACCEPT_ALL = Policy.accepting(s.value for s in TcbStatus if s is not TcbStatus.REVOKED)

#: (status, advisory IDs, platform status, QE status) of each valid set.
EXPECTED_TCB: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    SGX: (
        "ConfigurationAndSWHardeningNeeded",
        ("INTEL-SA-00289", "INTEL-SA-00615"),
        "ConfigurationAndSWHardeningNeeded",
        "UpToDate",
    ),
    AUTOMATA: ("SWHardeningNeeded", ("INTEL-SA-00615",), "SWHardeningNeeded", "UpToDate"),
    TDX: ("UpToDate", (), "UpToDate", "UpToDate"),
}

#: The first item outside its window one second before the window and one second after.
OUTSIDE_WINDOW: dict[str, dict[str, tuple[type[AttestationError], str]]] = {
    SGX: {
        "before": (CollateralError, "tcb_info.not_yet_valid"),
        "after": (CollateralError, "qe_identity.expired"),
    },
    # The window starts at the PCK CRL's thisUpdate (dcap-qvl does not check it).
    AUTOMATA: {
        "before": (CollateralError, "pck_crl.not_yet_valid"),
        "after": (CollateralError, "qe_identity.expired"),
    },
    # The window ends at the PCK CRL's nextUpdate, inclusive here.
    TDX: {
        "before": (CollateralError, "qe_identity.not_yet_valid"),
        "after": (CollateralError, "pck_crl.expired"),
    },
}

Loader = Callable[[str], "VectorSet"]


def _verify(v: VectorSet, now: datetime, policy: Policy = ACCEPT_ALL) -> VerifiedQuote:
    return verify_quote(v.quote, v.collateral(), now=now, policy=policy)


def _assert_tcb(result: VerifiedQuote, name: str) -> None:
    status, advisories, platform, qe = EXPECTED_TCB[name]
    assert result.tcb_status == TcbStatus(status)
    assert result.advisory_ids == advisories
    assert result.platform_tcb_status == TcbStatus(platform)
    assert result.qe_tcb_status == TcbStatus(qe)


@pytest.mark.parametrize("name", VALID_SETS)
def test_expected_tcb_table_matches_expected_json(load_vector: Loader, name: str) -> None:
    want = load_vector(name).expected["dcap_qvl_0_7_0_result"]
    status, advisories, platform, qe = EXPECTED_TCB[name]
    assert want["ok"] is True
    assert (want["status"], tuple(want["advisory_ids"])) == (status, advisories)
    assert (want["platform_status"], want["qe_status"]) == (platform, qe)


@pytest.mark.parametrize("name", VALID_SETS)
@pytest.mark.parametrize("point", ["verification_time", "window_start", "window_end"])
def test_valid_set_verifies_inside_its_window(load_vector: Loader, name: str, point: str) -> None:
    v = load_vector(name)
    now: datetime = getattr(v, point)
    result = _verify(v, now)
    _assert_tcb(result, name)
    assert result.verified_at == now
    # The shortest window relied on ends where the set's window ends: re-verify after it.
    assert result.valid_until == v.window_end
    assert result.production_root is True
    assert result.simulated is False
    assert result.debug is False
    assert result.fmspc.hex().upper() == v.expected["pck"]["fmspc"].upper()
    assert result.pce_id.hex() == v.expected["pck"]["pce_id"]
    assert result.tee == v.expected["kind"].lower()
    assert result.quote_version == v.expected["quote"]["version"]
    assert result.report_data.hex() == v.expected["quote"]["report_data"]
    assert all(check.outcome != "failed" for check in result.checks)


@pytest.mark.parametrize("name", VALID_SETS)
@pytest.mark.parametrize("side", ["before", "after"])
def test_valid_set_fails_one_second_outside_its_window(
    load_vector: Loader, name: str, side: str
) -> None:
    v = load_vector(name)
    now = v.window_start - ONE_SECOND if side == "before" else v.window_end + ONE_SECOND
    error, code = OUTSIDE_WINDOW[name][side]
    with pytest.raises(error) as caught:
        _verify(v, now)
    assert caught.value.code == code
    assert caught.value.observed == now.isoformat()


def test_older_collateral_epoch_verifies_at_its_own_time(load_vector: Loader) -> None:
    v = load_vector(SGX)
    (alt,) = v.expected["alternative_collateral"]
    assert alt["file"] == "collateral_2023-11.json"
    collateral = v.collateral(alt["file"])
    start, end = (datetime.fromtimestamp(t, UTC) for t in alt["validity_window"])
    for now in (datetime.fromtimestamp(alt["verification_time"], UTC), start, end):
        result = verify_quote(v.quote, collateral, now=now, policy=ACCEPT_ALL)
        want = alt["dcap_qvl_0_7_0_result"]
        assert result.tcb_status == TcbStatus(want["status"])
        assert list(result.advisory_ids) == want["advisory_ids"]
        assert result.platform_tcb_status == TcbStatus(want["platform_status"])
        assert result.qe_tcb_status == TcbStatus(want["qe_status"])
    for now, code in (
        (start - ONE_SECOND, "qe_identity.not_yet_valid"),
        (end + ONE_SECOND, "tcb_info.expired"),
    ):
        with pytest.raises(CollateralError) as caught:
            verify_quote(v.quote, collateral, now=now, policy=ACCEPT_ALL)
        assert caught.value.code == code


def test_current_collateral_does_not_verify_at_the_older_epoch(load_vector: Loader) -> None:
    v = load_vector(SGX)
    (alt,) = v.expected["alternative_collateral"]
    with pytest.raises(CollateralError) as caught:
        _verify(v, datetime.fromtimestamp(alt["verification_time"], UTC))
    assert caught.value.code == "root_ca_crl.not_yet_valid"


def test_a_cached_collateral_still_checks_the_time(load_vector: Loader) -> None:
    """Trust decisions are cached on the Collateral; the windows are re-checked every call."""
    v = load_vector(SGX)
    collateral = v.collateral()
    verify_quote(v.quote, collateral, now=v.verification_time, policy=ACCEPT_ALL)
    with pytest.raises(CollateralError) as caught:
        verify_quote(v.quote, collateral, now=v.window_end + ONE_SECOND, policy=ACCEPT_ALL)
    assert caught.value.code == "qe_identity.expired"
    again = verify_quote(v.quote, collateral, now=v.window_start, policy=ACCEPT_ALL)
    _assert_tcb(again, SGX)


# -- the negative TDX set -------------------------------------------------------

NEGATIVE_POINTS = ["verification_time", "window_start", "window_end", "before", "after"]


def _point(v: VectorSet, point: str) -> datetime:
    if point == "before":
        return v.window_start - ONE_SECOND
    if point == "after":
        return v.window_end + ONE_SECOND
    moment: datetime = getattr(v, point)
    return moment


@pytest.mark.parametrize("point", NEGATIVE_POINTS)
def test_negative_set_as_published_is_rejected_for_its_trailing_bytes(
    load_vector: Loader, point: str
) -> None:
    v = load_vector(NEGATIVE)
    assert v.quote.endswith(NEGATIVE_TRAILER)
    with pytest.raises(FormatError) as caught:
        _verify(v, _point(v, point))
    assert caught.value.code == "quote.trailing"
    assert caught.value.observed == f"{len(NEGATIVE_TRAILER)} trailing bytes"


@pytest.mark.parametrize(
    ("point", "error", "code"),
    [
        ("verification_time", TcbError, "tcb.no_level"),
        ("window_start", TcbError, "tcb.no_level"),
        ("window_end", TcbError, "tcb.no_level"),
        ("before", CollateralError, "tcb_info.not_yet_valid"),
        ("after", CollateralError, "qe_identity.expired"),
    ],
)
def test_negative_set_without_its_trailer_has_no_tcb_level(
    load_vector: Loader, point: str, error: type[AttestationError], code: str
) -> None:
    v = load_vector(NEGATIVE)
    stripped = v.quote.removesuffix(NEGATIVE_TRAILER)
    with pytest.raises(error) as caught:
        verify_quote(stripped, v.collateral(), now=_point(v, point), policy=ACCEPT_ALL)
    assert caught.value.code == code
    if code == "tcb.no_level":
        # Every cryptographic check passed before the TCB evaluation.
        assert [c.name for c in caught.value.checks if isinstance(c, Check)][-1] == "QE identity"


# -- parsed fields -------------------------------------------------------------


def _quote_fields(raw: bytes, quote: Quote) -> dict[str, Any]:
    """The parsed quote in expected.json's ``quote`` vocabulary."""
    h, body, qe = quote.header, quote.body, quote.certification.qe_report
    out: dict[str, Any] = {
        "version": h.version,
        "tee_type": hex(h.tee_type),
        "qe_svn": h.qe_svn,
        "pce_svn": h.pce_svn,
        "user_data": h.user_data.hex(),
    }
    if isinstance(body, SgxReportBody):
        out |= {
            "cpusvn": body.cpu_svn.hex(),
            "miscselect": body.misc_select,
            "attributes": body.attributes.hex(),
            "debug": body.debug,
            "mrenclave": body.mr_enclave.hex(),
            "mrsigner": body.mr_signer.hex(),
            "isvprodid": body.isv_prod_id,
            "isvsvn": body.isv_svn,
        }
    else:
        assert isinstance(body, TdReportBody)
        out |= {
            "tee_tcb_svn": body.tee_tcb_svn.hex(),
            "mrseam": body.mr_seam.hex(),
            "td_attributes": body.td_attributes.hex(),
            "debug": body.debug,
            "xfam": body.xfam.hex(),
            "mrtd": body.mr_td.hex(),
            "mrconfigid": body.mr_config_id.hex(),
            "mrowner": body.mr_owner.hex(),
            "mrownerconfig": body.mr_owner_config.hex(),
            **{f"rtmr{i}": r.hex() for i, r in enumerate(body.rtmrs)},
        }
    out |= {
        "report_data": body.report_data.hex(),
        "qe_report": {
            "qe_mrsigner": qe.mr_signer.hex(),
            "qe_isvprodid": qe.isv_prod_id,
            "qe_isvsvn": qe.isv_svn,
        },
        "trailing_bytes_after_quote": len(raw) - len(quote.to_bytes()) + quote.padding,
        # Only a PCK chain in the quote (type 5) is supported; anything else fails to parse.
        "certification_data_type": 5,
    }
    return out


def _parse(v: VectorSet) -> tuple[bytes, Quote]:
    """Parse a set's quote; the negative set's non-zero trailer is cut off first."""
    raw = v.quote.removesuffix(NEGATIVE_TRAILER) if v.name == NEGATIVE else v.quote
    return raw, Quote.from_bytes(raw)


@pytest.mark.parametrize("name", ALL_SETS)
def test_parsed_quote_fields_equal_expected_json(load_vector: Loader, name: str) -> None:
    v = load_vector(name)
    raw, quote = _parse(v)
    fields = _quote_fields(raw, quote)
    if name == NEGATIVE:
        fields["trailing_bytes_after_quote"] = len(NEGATIVE_TRAILER)
    assert fields == v.expected["quote"]


@pytest.mark.parametrize("name", ALL_SETS)
def test_parsed_pck_extensions_equal_expected_json(load_vector: Loader, name: str) -> None:
    v = load_vector(name)
    _, quote = _parse(v)
    chain = quote.certification.pck_cert_chain
    assert chain.rstrip(b"\x00") == v.data("pck_cert_chain.pem")
    leaf, ca, root = x509.load_pem_x509_certificates(chain.rstrip(b"\x00"))
    ext = PckExtensions.from_certificate(leaf)
    issuer = leaf.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    fields = {
        "fmspc": ext.fmspc.hex().upper(),
        "ca": {"Intel SGX PCK Processor CA": "processor", "Intel SGX PCK Platform CA": "platform"}[
            str(issuer)
        ],
        "pce_svn": ext.pce_svn,
        "cpu_svn": ext.cpu_svn.hex(),
        "pce_id": ext.pce_id.hex(),
        "sgx_type": ext.sgx_type,
        "ppid": ext.ppid.hex(),
    }
    assert fields == v.expected["pck"]
    # CPUSVN is the 16 TCB components, byte by byte.
    assert bytes(ext.tcb_components) == ext.cpu_svn
    assert root.public_bytes(Encoding.DER) == v.data("intel_sgx_root_ca.der")
    assert ca.subject == leaf.issuer


@pytest.mark.parametrize("name", ALL_SETS)
def test_parsed_collateral_identity_equals_expected_json(load_vector: Loader, name: str) -> None:
    v = load_vector(name)
    collateral = v.collateral()
    tcb, qe = collateral.tcb_info, collateral.qe_identity
    want_tcb, want_qe = v.expected["tcb_info"], v.expected["qe_identity"]

    def iso(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert {
        "id": tcb.id,
        "version": tcb.version,
        "issueDate": iso(tcb.issue_date),
        "nextUpdate": iso(tcb.next_update),
        "fmspc": tcb.fmspc.hex(),
        "tcbEvaluationDataNumber": tcb.tcb_evaluation_data_number,
    } == {**want_tcb, "fmspc": want_tcb["fmspc"].lower()}
    assert {
        "id": qe.id,
        "version": qe.version,
        "issueDate": iso(qe.issue_date),
        "nextUpdate": iso(qe.next_update),
        "tcbEvaluationDataNumber": qe.tcb_evaluation_data_number,
    } == want_qe
    # The split-out files are the same items as the collateral JSON.
    assert collateral.tcb_info_raw == v.text("tcb_info.json")
    assert collateral.qe_identity_raw == v.text("qe_identity.json")
    assert collateral.tcb_info_signature.hex() == v.text("tcb_info_signature.hex").strip()
    assert collateral.qe_identity_signature.hex() == v.text("qe_identity_signature.hex").strip()


def test_collateral_split_files_build_the_same_collateral(load_vector: Loader) -> None:
    v = load_vector(SGX)
    parts = Collateral.from_parts(
        pck_crl_issuer_chain=v.text("pck_crl_issuer_chain.pem"),
        root_ca_crl=v.data("root_ca_crl.der"),
        pck_crl=v.data("pck_crl.der"),
        tcb_info_issuer_chain=v.text("tcb_info_issuer_chain.pem"),
        tcb_info=v.text("tcb_info.json"),
        tcb_info_signature=bytes.fromhex(v.text("tcb_info_signature.hex")),
        qe_identity_issuer_chain=v.text("qe_identity_issuer_chain.pem"),
        qe_identity=v.text("qe_identity.json"),
        qe_identity_signature=bytes.fromhex(v.text("qe_identity_signature.hex")),
    )
    assert parts == v.collateral()
    result = verify_quote(v.quote, parts, now=v.verification_time, policy=ACCEPT_ALL)
    _assert_tcb(result, SGX)


# -- results, policy, entry point ----------------------------------------------


def test_sgx_result_carries_the_enclave_identity(load_vector: Loader) -> None:
    v = load_vector(SGX)
    result = _verify(v, v.verification_time)
    q = v.expected["quote"]
    assert result.tee == "sgx"
    assert result.mr_enclave is not None and result.mr_enclave.hex() == q["mrenclave"]
    assert result.mr_signer is not None and result.mr_signer.hex() == q["mrsigner"]
    assert (result.isv_prod_id, result.isv_svn) == (q["isvprodid"], q["isvsvn"])
    assert (result.mr_td, result.mr_seam, result.rtmrs) == (None, None, None)
    summary = result.to_dict()
    assert summary["verified"] is True and summary["error"] is None
    assert summary["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert summary["verified_at"] == v.expected["verification_time"]


def test_tdx_result_carries_the_td_identity(load_vector: Loader) -> None:
    v = load_vector(TDX)
    result = _verify(v, v.verification_time)
    q = v.expected["quote"]
    assert result.tee == "tdx"
    assert result.mr_td is not None and result.mr_td.hex() == q["mrtd"]
    assert result.mr_seam is not None and result.mr_seam.hex() == q["mrseam"]
    assert result.rtmrs is not None
    assert [r.hex() for r in result.rtmrs] == [q[f"rtmr{i}"] for i in range(4)]
    assert (result.mr_enclave, result.mr_signer, result.isv_svn) == (None, None, None)


def test_default_policy_rejects_a_non_up_to_date_sgx_tcb(load_vector: Loader) -> None:
    v = load_vector(SGX)
    with pytest.raises(PolicyError) as caught:
        verify_quote(v.quote, v.collateral(), now=v.verification_time)
    err = caught.value
    assert err.code == "policy.tcb_status"
    assert err.observed == "ConfigurationAndSWHardeningNeeded"
    assert err.expected == "UpToDate"
    assert err.hint is not None and "INTEL-SA-00289, INTEL-SA-00615" in err.hint
    # The verification itself passed: the policy is the only failed check.
    assert "TCB level" in [c.name for c in err.checks if isinstance(c, Check)]


def test_accepting_the_status_by_name_passes(load_vector: Loader) -> None:
    v = load_vector(SGX)
    result = verify_quote(
        v.quote,
        v.collateral(),
        now=v.verification_time,
        policy=Policy.accepting(["ConfigurationAndSWHardeningNeeded"]),
    )
    _assert_tcb(result, SGX)
    with pytest.raises(PolicyError) as caught:
        verify_quote(
            v.quote,
            v.collateral(),
            now=v.verification_time,
            policy=Policy.accepting(["ConfigurationNeeded", "SWHardeningNeeded"]),
        )
    assert caught.value.code == "policy.tcb_status"


def test_default_policy_accepts_an_up_to_date_tdx_tcb(load_vector: Loader) -> None:
    v = load_vector(TDX)
    result = verify_quote(v.quote, v.collateral(), now=v.verification_time)
    _assert_tcb(result, TDX)


def test_a_parsed_quote_verifies_like_its_bytes(load_vector: Loader) -> None:
    v = load_vector(TDX)
    quote = Quote.from_bytes(v.quote)
    result = verify_quote(quote, v.collateral(), now=v.verification_time)
    assert result.quote == quote
    assert result == verify_quote(v.quote, v.collateral(), now=v.verification_time)


@pytest.mark.parametrize(
    "now",
    [datetime(2025, 7, 4, 10), "2025-07-04T10:00:00Z", 1751623200],
    ids=["naive", "string", "int"],
)
def test_the_time_must_be_an_aware_datetime(load_vector: Loader, now: object) -> None:
    v = load_vector(SGX)
    with pytest.raises(UsageError):
        verify_quote(v.quote, v.collateral(), now=now)  # type: ignore[arg-type]
