"""DCAP quote verification: the core, with no I/O and no clock.

``verify_quote(quote, collateral, now=..., policy=...)`` checks, in order:

1. the quote parses (v3 SGX, v4/v5 TDX, ECDSA P-256, PCK chain inside) and its
   QE vendor is Intel;
2. the collateral: every issuer chain ends at the trust anchor, every
   certificate is signed by its issuer, the root CA CRL and PCK CRL are signed
   by the right issuers, no issuer is revoked, and the TCB info and QE identity
   signatures hold; each item's validity window contains ``now``;
3. the PCK chain in the quote: leaf -> PCK CA -> trust anchor, signatures,
   windows, revocation of leaf and CA, and the leaf's FMSPC and PCE-ID match
   the TCB info;
4. the QE report is signed by the PCK key and binds the attestation key
   (SHA-256(attestation key || QE auth data) || 32 zero bytes); the quote is
   signed by the attestation key;
5. the QE matches Intel's QE identity (MRSIGNER, ISVPRODID, MISCSELECT and
   ATTRIBUTES under their masks, not debug) and is rated by its ISVSVN;
6. the platform (and the TDX module) is rated against the TCB info, the
   ratings converge, and a Revoked TCB fails;
7. the caller's :class:`Policy`.

Collateral and PCK chains are verified once and the result is kept on the
:class:`Collateral` object keyed by content and trust anchor (ADR 0002): a
repeated verification re-checks only the time windows, the per-quote
signatures and bindings, and the ratings. (Example: :mod:`confide.attestation`.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from confide.errors import (
    AttestationError,
    CertificateError,
    CollateralError,
    FormatError,
    RevocationError,
    SignatureError,
    SimulationError,
    TcbError,
    UsageError,
)

from ._collateral import X509_ERRORS, Collateral, TcbInfo, TcbStatus, parse_lazy_fields
from ._pck import PckExtensions
from ._policy import Check, Policy, VerifiedQuote
from ._quote import INTEL_QE_VENDOR_ID, Quote, SgxReportBody, TdReportBody
from ._tcb import Rating, converge, rate_module, rate_platform, rate_qe

#: Organization (O) of every certificate of a Confide simulated platform; a
#: self-issued CA with it is a simulation root (ADR 0003). A name, not a custom
#: extension, so that other verifiers (dcap-qvl, intel-sgx-ra) parse the root.
SIMULATION_ORGANIZATION: Final = "Confide simulated TEE (not a real TEE)"
#: SHA-256 of Intel's SGX Root CA certificate (DER), the production trust anchor.
INTEL_ROOT_SHA256: Final = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
#: Verified PCK chains kept per collateral object before the cache is emptied.
MAX_CACHED_CHAINS: Final = 256
#: Certified attestation keys kept per PCK before that cache is emptied.
MAX_CACHED_KEYS: Final = 64
_PCK_CHAIN_LENGTH: Final = 3
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())


@cache
def intel_root_ca() -> x509.Certificate:
    """Intel's SGX Root CA, embedded in the package (checked against its pinned SHA-256)."""
    raw = resources.files("confide.attestation").joinpath("data/intel_sgx_root_ca.der").read_bytes()
    if hashlib.sha256(raw).hexdigest() != INTEL_ROOT_SHA256:
        raise UsageError("the embedded Intel SGX Root CA does not match its pinned hash; reinstall")
    return x509.load_der_x509_certificate(raw)


def is_simulation_root(cert: x509.Certificate) -> bool:
    """True for a self-issued certificate named as a Confide simulated platform's root.

    Only a hint for clear errors and for the ``simulated`` flag: trust itself
    always comes from the trust anchor the caller passes.
    """
    if cert.subject != cert.issuer:
        return False
    orgs = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return any(attr.value == SIMULATION_ORGANIZATION for attr in orgs)


@dataclass(frozen=True, slots=True)
class _Window:
    item: str
    not_before: datetime
    not_after: datetime
    error: type[AttestationError]


@dataclass(frozen=True, slots=True)
class _TrustedCollateral:
    windows: tuple[_Window, ...]
    lo: datetime
    hi: datetime
    root_revoked: frozenset[int]
    pck_revoked: frozenset[int]
    simulated: bool
    production: bool


@dataclass(frozen=True, slots=True)
class _TrustedPck:
    ext: PckExtensions
    key: ec.EllipticCurvePublicKey
    windows: tuple[_Window, ...]
    lo: datetime
    hi: datetime
    #: Attestation keys this PCK certified through a verified QE report, keyed by
    #: the exact bytes checked (QE report, its signature, auth data, attestation key).
    certified: dict[bytes, ec.EllipticCurvePublicKey] = field(default_factory=dict)


def _windows(windows: list[_Window]) -> tuple[tuple[_Window, ...], datetime, datetime]:
    return (
        tuple(windows),
        max(w.not_before for w in windows),
        min(w.not_after for w in windows),
    )


def _check_time(windows: tuple[_Window, ...], lo: datetime, hi: datetime, now: datetime) -> None:
    if lo <= now <= hi:
        return
    for w in windows:
        if now < w.not_before:
            raise w.error(
                f"{w.item}.not_yet_valid",
                f"{w.item.replace('_', ' ')} is not yet valid",
                observed=now.isoformat(),
                expected=f">= {w.not_before.isoformat()}",
            )
        if now > w.not_after:
            raise w.error(
                f"{w.item}.expired",
                f"{w.item.replace('_', ' ')} has expired",
                observed=now.isoformat(),
                expected=f"<= {w.not_after.isoformat()}",
                hint="fetch fresh collateral" if w.error is CollateralError else None,
            )
    raise AssertionError("unreachable: a window must have failed")  # pragma: no cover


def _cert_window(cert: x509.Certificate, item: str) -> _Window:
    return _Window(item, cert.not_valid_before_utc, cert.not_valid_after_utc, CertificateError)


def _crl_window(crl: x509.CertificateRevocationList, item: str) -> _Window:
    next_update = crl.next_update_utc
    if next_update is None:
        raise CollateralError(f"{item}.next_update", f"{item} has no nextUpdate")
    return _Window(item, crl.last_update_utc, next_update, CollateralError)


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, item: str) -> None:
    if not _is_ca(issuer):
        raise CertificateError(
            f"{item}.issuer_not_ca",
            f"the issuer of the {item.replace('_', ' ')} is not a CA",
            observed=_cn(issuer.subject),
        )
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, *X509_ERRORS) as exc:
        raise CertificateError(
            f"{item}.signature",
            f"{item.replace('_', ' ')} is not signed by its issuer",
            observed=_cn(cert.issuer),
            expected=_cn(issuer.subject),
            detail=type(exc).__name__ if isinstance(exc, InvalidSignature) else str(exc),
        ) from exc


def _check_anchor(
    chain_root: x509.Certificate, anchor: x509.Certificate, anchor_der: bytes, item: str
) -> None:
    if chain_root.public_bytes(Encoding.DER) == anchor_der:
        return
    if is_simulation_root(chain_root):
        raise SimulationError(
            "simulation.root",
            f"the {item.replace('_', ' ')} ends at a simulated TEE's root, not at the trust anchor",
            observed=_cn(chain_root.subject),
            expected=_cn(anchor.subject),
            hint="the quote comes from a simulator; pass its simulation root with "
            "allow-simulation only for tests",
        )
    raise CertificateError(
        f"{item}.root",
        f"the {item.replace('_', ' ')} does not end at the trust anchor",
        observed=_cn(chain_root.subject),
        expected=_cn(anchor.subject),
    )


def _signed_chain(
    chain: tuple[x509.Certificate, ...], anchor: x509.Certificate, anchor_der: bytes, item: str
) -> list[_Window]:
    """A collateral issuer chain ``[signer, root]``; returns its windows."""
    if len(chain) != 2:
        raise CertificateError(
            f"{item}.length",
            f"{item.replace('_', ' ')} must be [signer, root]",
            observed=len(chain),
            expected=2,
        )
    _check_anchor(chain[1], anchor, anchor_der, item)
    _issued_by(chain[0], anchor, item)
    return [_cert_window(chain[0], item)]


def _verify_json_signature(
    signer: x509.Certificate, signature: bytes, raw: str, code: str, what: str
) -> None:
    key = signer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(f"{code}.key", f"the {what} signer key is not ECDSA")
    if not _ecdsa_ok(key, signature, raw.encode()):
        raise CollateralError(
            f"{code}.signature",
            f"the {what} signature does not verify",
            observed=_cn(signer.subject),
        )


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, rs: bytes, data: bytes) -> bool:
    if len(rs) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    try:
        key.verify(der, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if crl.issuer != issuer.subject or not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        return crl.is_signature_valid(key)
    except X509_ERRORS:
        return False


def _trust_collateral(collateral: Collateral, anchor: x509.Certificate) -> _TrustedCollateral:
    key = ("collateral", anchor)
    cached = collateral._cache.get(key)
    if isinstance(cached, _TrustedCollateral):
        return cached
    anchor_der = anchor.public_bytes(Encoding.DER)
    # The anchor itself: self-signed, a CA.
    _issued_by(anchor, anchor, "root_ca")
    # Issuer chains of the PCK CRL, the TCB info and the QE identity. Checked
    # before the root CA CRL so that collateral from another root (a simulator's,
    # or a wrong anchor) is reported as such (``*.root``, ``simulation.root``)
    # rather than as a bad CRL signature.
    chain_windows = _signed_chain(
        collateral.pck_crl_issuer_chain, anchor, anchor_der, "pck_crl_issuer"
    )
    chain_windows += _signed_chain(
        collateral.tcb_info_issuer_chain, anchor, anchor_der, "tcb_signing_cert"
    )
    chain_windows += _signed_chain(
        collateral.qe_identity_issuer_chain, anchor, anchor_der, "qe_identity_signing_cert"
    )
    # Root CA CRL, signed by the anchor.
    root_crl = collateral.root_ca_crl
    if not _crl_signed_by(root_crl, anchor):
        raise CollateralError(
            "root_ca_crl.signature",
            "the root CA CRL is not signed by the trust anchor",
            observed=_cn(root_crl.issuer),
            expected=_cn(anchor.subject),
        )
    windows = [_cert_window(anchor, "root_ca"), _crl_window(root_crl, "root_ca_crl")]
    windows += chain_windows
    root_revoked = frozenset(r.serial_number for r in root_crl)
    for item, cert in (
        ("pck_crl_issuer", collateral.pck_crl_issuer_chain[0]),
        ("tcb_signing_cert", collateral.tcb_info_issuer_chain[0]),
        ("qe_identity_signing_cert", collateral.qe_identity_issuer_chain[0]),
    ):
        if cert.serial_number in root_revoked:
            raise RevocationError(
                f"{item}.revoked",
                f"the {item.replace('_', ' ')} is revoked by the root CA CRL",
                observed=hex(cert.serial_number),
            )
    # PCK CRL, signed by the PCK CA of its issuer chain (which must be a CA).
    pck_ca = collateral.pck_crl_issuer_chain[0]
    if not _is_ca(pck_ca):
        raise CertificateError(
            "pck_crl_issuer.not_ca", "the PCK CRL issuer is not a CA", observed=_cn(pck_ca.subject)
        )
    pck_crl = collateral.pck_crl
    if not _crl_signed_by(pck_crl, pck_ca):
        raise CollateralError(
            "pck_crl.signature",
            "the PCK CRL is not signed by its issuer chain's PCK CA",
            observed=_cn(pck_crl.issuer),
            expected=_cn(pck_ca.subject),
        )
    windows.append(_crl_window(pck_crl, "pck_crl"))
    # Signed JSON.
    _verify_json_signature(
        collateral.tcb_info_issuer_chain[0],
        collateral.tcb_info_signature,
        collateral.tcb_info_raw,
        "tcb_info",
        "TCB info",
    )
    _verify_json_signature(
        collateral.qe_identity_issuer_chain[0],
        collateral.qe_identity_signature,
        collateral.qe_identity_raw,
        "qe_identity",
        "QE identity",
    )
    tcb, qe = collateral.tcb_info, collateral.qe_identity
    windows.append(_Window("tcb_info", tcb.issue_date, tcb.next_update, CollateralError))
    windows.append(_Window("qe_identity", qe.issue_date, qe.next_update, CollateralError))
    all_windows, lo, hi = _windows(windows)
    trusted = _TrustedCollateral(
        windows=all_windows,
        lo=lo,
        hi=hi,
        root_revoked=root_revoked,
        pck_revoked=frozenset(r.serial_number for r in pck_crl),
        simulated=is_simulation_root(anchor),
        production=hashlib.sha256(anchor_der).hexdigest() == INTEL_ROOT_SHA256,
    )
    collateral._cache[key] = trusted
    return trusted


def _trust_pck(
    collateral: Collateral, tc: _TrustedCollateral, anchor: x509.Certificate, chain_pem: bytes
) -> _TrustedPck:
    key = ("pck", anchor, chain_pem)
    cached = collateral._cache.get(key)
    if isinstance(cached, _TrustedPck):
        return cached
    anchor_der = anchor.public_bytes(Encoding.DER)
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.rstrip(b"\x00"))
        for cert in certs:
            parse_lazy_fields(cert)
    except X509_ERRORS as exc:
        raise FormatError(
            "pck.format", "the PCK certificate chain in the quote is not PEM", detail=str(exc)
        ) from None
    if len(certs) != _PCK_CHAIN_LENGTH:
        raise CertificateError(
            "pck.length",
            "the PCK chain must be [PCK, PCK CA, root]",
            observed=len(certs),
            expected=_PCK_CHAIN_LENGTH,
        )
    leaf, ca, root = certs
    _check_anchor(root, anchor, anchor_der, "pck_chain")
    _issued_by(ca, anchor, "pck_ca")
    _issued_by(leaf, ca, "pck")
    if collateral.pck_crl.issuer != ca.subject:
        raise CollateralError(
            "pck_crl.issuer",
            "the PCK CRL is not the CRL of the CA that issued the PCK",
            observed=_cn(collateral.pck_crl.issuer),
            expected=_cn(ca.subject),
            hint="fetch the PCK CRL for this CA (processor or platform)",
        )
    if ca.serial_number in tc.root_revoked:
        raise RevocationError(
            "pck_ca.revoked",
            "the PCK CA is revoked by the root CA CRL",
            observed=hex(ca.serial_number),
        )
    if leaf.serial_number in tc.pck_revoked:
        raise RevocationError(
            "pck.revoked",
            "the PCK certificate is revoked by the PCK CRL",
            observed=hex(leaf.serial_number),
        )
    ext = PckExtensions.from_certificate(leaf)
    tcb = collateral.tcb_info
    if ext.fmspc != tcb.fmspc:
        raise CollateralError(
            "tcb_info.fmspc",
            "the TCB info is for another platform (FMSPC)",
            observed=tcb.fmspc.hex(),
            expected=ext.fmspc.hex(),
            hint="fetch the TCB info for the PCK certificate's FMSPC",
        )
    if ext.pce_id != tcb.pce_id:
        raise CollateralError(
            "tcb_info.pce_id",
            "the TCB info is for another PCE (PCE-ID)",
            observed=tcb.pce_id.hex(),
            expected=ext.pce_id.hex(),
        )
    pck_key = leaf.public_key()
    if not isinstance(pck_key, ec.EllipticCurvePublicKey) or pck_key.curve.name != "secp256r1":
        raise CertificateError("pck.key", "the PCK key is not ECDSA P-256")
    windows, lo, hi = _windows([_cert_window(leaf, "pck"), _cert_window(ca, "pck_ca")])
    trusted = _TrustedPck(ext=ext, key=pck_key, windows=windows, lo=lo, hi=hi)
    pck_entries = [k for k in collateral._cache if isinstance(k, tuple) and k[0] == "pck"]
    if len(pck_entries) >= MAX_CACHED_CHAINS:
        for k in pck_entries:
            del collateral._cache[k]
    collateral._cache[key] = trusted
    return trusted


def _certified_attestation_key(pck: _TrustedPck, quote: Quote) -> ec.EllipticCurvePublicKey:
    """Check the QE report's PCK signature and its binding of the attestation key; return the key.

    The result depends only on the bytes compared and on the PCK key, so it is
    kept on the verified PCK keyed by exactly those bytes.
    """
    cert = quote.certification
    qe_report = cert.qe_report_bytes
    key = qe_report + cert.qe_report_signature + cert.qe_auth_data + quote.attestation_key
    cached = pck.certified.get(key)
    if cached is not None:
        return cached
    if not _ecdsa_ok(pck.key, cert.qe_report_signature, qe_report):
        raise SignatureError("qe_report.signature", "the QE report is not signed by the PCK key")
    binding = hashlib.sha256(quote.attestation_key + cert.qe_auth_data).digest() + bytes(32)
    if cert.qe_report.report_data != binding:
        raise SignatureError(
            "qe_report.binding",
            "the QE report does not bind the attestation key",
            observed=cert.qe_report.report_data.hex(),
            expected=binding.hex(),
        )
    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + quote.attestation_key
        )
    except ValueError as exc:
        raise SignatureError(
            "quote.attestation_key", "the attestation key is not a P-256 point"
        ) from exc
    if len(pck.certified) >= MAX_CACHED_KEYS:
        pck.certified.clear()
    pck.certified[key] = att_key
    return att_key


def _check_qe_identity(collateral: Collateral, qe: SgxReportBody) -> Rating:
    ident = collateral.qe_identity
    if qe.mr_signer != ident.mr_signer:
        raise CollateralError(
            "qe_identity.mrsigner",
            "the quoting enclave is not Intel's (MRSIGNER)",
            observed=qe.mr_signer.hex(),
            expected=ident.mr_signer.hex(),
        )
    if qe.isv_prod_id != ident.isv_prod_id:
        raise CollateralError(
            "qe_identity.isvprodid",
            "the quoting enclave has another ISVPRODID",
            observed=qe.isv_prod_id,
            expected=ident.isv_prod_id,
        )
    misc = qe.misc_select.to_bytes(4, "little")
    if _masked(misc, ident.miscselect_mask) != _masked(ident.miscselect, ident.miscselect_mask):
        raise CollateralError(
            "qe_identity.miscselect",
            "the quoting enclave's MISCSELECT does not match",
            observed=misc.hex(),
            expected=f"{ident.miscselect.hex()} under {ident.miscselect_mask.hex()}",
        )
    if _masked(qe.attributes, ident.attributes_mask) != _masked(
        ident.attributes, ident.attributes_mask
    ):
        raise CollateralError(
            "qe_identity.attributes",
            "the quoting enclave's ATTRIBUTES do not match",
            observed=qe.attributes.hex(),
            expected=f"{ident.attributes.hex()} under {ident.attributes_mask.hex()}",
        )
    if qe.debug:
        raise CollateralError("qe_identity.debug", "the quoting enclave runs in debug mode")
    return rate_qe(ident.tcb_levels, qe.isv_svn)


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def _rate_tdx_module(tcb: TcbInfo, td: TdReportBody) -> Rating | None:
    module = tcb.tdx_module
    if module is None:
        raise CollateralError("tcb_info.tdx_module", "the TDX TCB info has no tdxModule")
    version = td.tee_tcb_svn[1]
    rated = None
    if version > 0 and tcb.tdx_module_identities:
        wanted = f"TDX_{version:02X}"
        found = [m for m in tcb.tdx_module_identities if m.id.upper() == wanted]
        if not found:
            raise TcbError(
                "tdx_module.identity",
                "the TCB info does not rate this TDX module version",
                observed=wanted,
                expected=", ".join(m.id for m in tcb.tdx_module_identities),
            )
        module = rated = found[0]
    if td.mr_signer_seam != module.mr_signer:
        raise TcbError(
            "tdx_module.mrsigner",
            "the TDX module is not signed by the expected signer",
            observed=td.mr_signer_seam.hex(),
            expected=module.mr_signer.hex(),
        )
    mask = module.attributes_mask
    if _masked(td.seam_attributes, mask) != _masked(module.attributes, mask):
        raise TcbError(
            "tdx_module.attributes",
            "the TDX module attributes do not match",
            observed=td.seam_attributes.hex(),
            expected=module.attributes.hex(),
        )
    if rated is None or not rated.tcb_levels:
        return None
    return rate_module(rated, td.tee_tcb_svn[0])


def verify_quote(
    quote: bytes | Quote,
    collateral: Collateral,
    *,
    now: datetime,
    policy: Policy | None = None,
    trust_anchor: x509.Certificate | None = None,
) -> VerifiedQuote:
    """Verify a DCAP quote against its collateral at time ``now``, then apply ``policy``.

    ``trust_anchor`` defaults to Intel's SGX Root CA; a simulation root is
    accepted only when ``policy.allow_simulation`` is set. Raises an
    :class:`AttestationError` subclass naming the failed check; its ``checks``
    attribute lists what passed before.
    """
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    policy = policy if policy is not None else Policy()
    done: list[Check] = []
    try:
        return _verify(quote, collateral, now, policy, trust_anchor or intel_root_ca(), done)
    except AttestationError as exc:
        exc.checks = tuple(done)
        raise


def _verify(
    raw: bytes | Quote,
    collateral: Collateral,
    now: datetime,
    policy: Policy,
    anchor: x509.Certificate,
    done: list[Check],
) -> VerifiedQuote:
    quote = raw if isinstance(raw, Quote) else Quote.from_bytes(raw)
    done.append(Check("quote format", "passed", f"v{quote.header.version}"))
    if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise FormatError(
            "quote.qe_vendor_id",
            "the quote was not produced by Intel's quoting enclave",
            observed=quote.header.qe_vendor_id.hex(),
            expected=INTEL_QE_VENDOR_ID.hex(),
        )

    tc = _trust_collateral(collateral, anchor)
    if tc.simulated and not policy.allow_simulation:
        raise SimulationError(
            "simulation.not_allowed",
            "the quote comes from a simulated TEE, not real hardware",
            observed="simulation root",
            expected="Intel SGX Root CA",
            hint="allow simulation only for tests",
        )
    _check_time(tc.windows, tc.lo, tc.hi, now)
    done.append(Check("collateral signatures, chains and CRLs", "passed"))
    done.append(Check("collateral validity windows", "passed", f"at {now.isoformat()}"))

    tcb, ident = collateral.tcb_info, collateral.qe_identity
    want = ("TDX", "TD_QE") if quote.is_tdx else ("SGX", "QE")
    if (tcb.id, ident.id) != want:
        raise CollateralError(
            "collateral.tee_type",
            "the collateral is for another TEE type",
            observed=f"{tcb.id}/{ident.id}",
            expected="/".join(want),
        )

    pck = _trust_pck(collateral, tc, anchor, quote.certification.pck_cert_chain)
    _check_time(pck.windows, pck.lo, pck.hi, now)
    done.append(Check("PCK chain to the trust anchor, not revoked", "passed"))
    done.append(Check("FMSPC and PCE-ID match the TCB info", "passed", pck.ext.fmspc.hex()))

    att_key = _certified_attestation_key(pck, quote)
    done.append(Check("QE report signed by the PCK", "passed"))
    done.append(Check("QE report binds the attestation key", "passed"))
    if not _ecdsa_ok(att_key, quote.signature, quote.signed_bytes):
        raise SignatureError("quote.signature", "the quote is not signed by the attestation key")
    done.append(Check("quote signed by the attestation key", "passed"))

    cert = quote.certification
    qe_rating = _check_qe_identity(collateral, cert.qe_report)
    done.append(Check("QE identity", "passed", f"QE TCB {qe_rating.status}"))

    body = quote.body
    td = body if isinstance(body, TdReportBody) else None
    platform = rate_platform(tcb, pck.ext.tcb_components, pck.ext.pce_svn, td)
    rating = platform
    if td is not None:
        module = _rate_tdx_module(tcb, td)
        if module is not None:
            rating = converge(rating, module)
    rating = converge(rating, qe_rating)
    if rating.status == TcbStatus.REVOKED:
        raise TcbError(
            "tcb.revoked",
            "the platform TCB is revoked",
            observed=rating.status.value,
            expected="not Revoked",
        )
    done.append(Check("TCB level", "passed", rating.status.value))

    checks = policy.apply(body, rating.status, rating.advisory_ids)
    common = {
        "quote_version": quote.header.version,
        "tcb_status": rating.status,
        "advisory_ids": rating.advisory_ids,
        "platform_tcb_status": platform.status,
        "qe_tcb_status": qe_rating.status,
        "report_data": body.report_data,
        "debug": body.debug,
        "simulated": tc.simulated,
        "production_root": tc.production,
        "fmspc": pck.ext.fmspc,
        "pce_id": pck.ext.pce_id,
        "verified_at": now,
        "valid_until": min(tc.hi, pck.hi),
        "quote": quote,
        "checks": (*done, *checks),
    }
    result: VerifiedQuote
    if isinstance(body, SgxReportBody):
        result = VerifiedQuote(
            tee="sgx",
            mr_enclave=body.mr_enclave,
            mr_signer=body.mr_signer,
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            **common,  # type: ignore[arg-type]
        )
    else:
        result = VerifiedQuote(
            tee="tdx",
            mr_td=body.mr_td,
            mr_seam=body.mr_seam,
            rtmrs=body.rtmrs,
            **common,  # type: ignore[arg-type]
        )
    return result
