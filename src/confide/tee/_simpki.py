"""The simulated Intel PKI of one simulated SGX machine, and its platform identity.

A root CA generated per platform (organization
:data:`~confide.attestation.SIMULATION_ORGANIZATION`), a PCK CA, PCK certificates
carrying the SGX extension as Intel encodes it, a TCB signing certificate and CRLs.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from confide.attestation import SGX_EXTENSION_OID, SIMULATION_ORGANIZATION, PckExtensions
from confide.crypto import key_usage
from confide.errors import UsageError

from ._der import (
    TAG_BIT_STRING,
    TAG_GENERALIZED_TIME,
    TAG_SEQUENCE,
    TAG_UTC_TIME,
    der_children,
    encode_sgx_extension,
    tlv,
)

if TYPE_CHECKING:
    from ._simulation import SimulatedPlatform

#: The simulated platform's FMSPC (family-model-stepping-platform-custom SKU).
SIM_FMSPC: Final = bytes.fromhex("00C0F1DE0000")
SIM_PCE_ID: Final = bytes.fromhex("0000")
#: The simulated platform's TCB: the 16 SGX component SVNs and the PCE SVN.
SIM_TCB_COMPONENTS: Final = (5, 5, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
SIM_PCE_SVN: Final = 13
#: The simulated quoting enclave: its signer (not Intel's), product ID and SVN.
SIM_QE_MR_SIGNER: Final = hashlib.sha256(b"confide simulated quoting enclave signer").digest()
SIM_QE_MR_ENCLAVE: Final = hashlib.sha256(b"confide simulated quoting enclave").digest()
SIM_QE_ISV_PROD_ID: Final = 1
SIM_QE_ISV_SVN: Final = 8
#: The simulated TD quoting enclave (same signer and SVN as the QE; product ID 2 as Intel's TD QE).
SIM_TD_QE_MR_ENCLAVE: Final = hashlib.sha256(b"confide simulated TD quoting enclave").digest()
SIM_TD_QE_ISV_PROD_ID: Final = 2
#: The simulated TD's TEE_TCB_SVN: byte 0 the TDX module's SVN, byte 1 its major version
#: (rated by the TCB info's ``TDX_01`` module identity), bytes 2..15 the TDX TCB components.
SIM_TEE_TCB_SVN: Final = bytes((3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
#: The simulated TDX module's signer (Intel's module signer is 48 zero bytes too).
SIM_TDX_MODULE_MR_SIGNER: Final = bytes(48)
#: The simulated QE report's ATTRIBUTES (as its QE identity states them).
QE_ATTRIBUTES: Final = bytes.fromhex("11000000000000000000000000000000")
_CERT_LIFETIME: Final = timedelta(days=3650)
_CLOCK_SKEW: Final = timedelta(days=1)
_ORG: Final = SIMULATION_ORGANIZATION
PLATFORM_SECRET_SIZE: Final = 32
_CA_USAGE: Final = key_usage("key_cert_sign", "crl_sign")
_SIGNER_USAGE: Final = key_usage("digital_signature", "content_commitment")

Window = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class SimulatedPck:
    """A PCK certificate and its private key (the key signs QE reports)."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def extensions(self) -> PckExtensions:
        return PckExtensions.from_certificate(self.certificate)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
        ]
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def pem_chain(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def whole_seconds(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(microsecond=0)


def new_platform(cls: type[SimulatedPlatform], state: Path, now: datetime) -> SimulatedPlatform:
    """A new platform for ``state``: its PKI (valid from a day before ``now`` for ten years),
    attestation key and secret. Not saved yet (``save_platform`` does).
    """
    if now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    not_before = whole_seconds(now) - _CLOCK_SKEW
    not_after = not_before + _CERT_LIFETIME
    root_key, pck_ca_key, tcb_key, pck_key, att_key = (new_key() for _ in range(5))

    root_name = _name("Confide Simulated TEE Root CA - NOT A REAL TEE")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(_ski(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pck_ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Confide Simulated SGX PCK Processor CA"))
        .issuer_name(root.subject)
        .public_key(pck_ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(_ski(pck_ca_key.public_key()), critical=False)
        .add_extension(_aki(root), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    tcb_signer = (
        x509.CertificateBuilder()
        .subject_name(_name("Confide Simulated SGX TCB Signing"))
        .issuer_name(root.subject)
        .public_key(tcb_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGNER_USAGE, critical=True)
        .add_extension(_ski(tcb_key.public_key()), critical=False)
        .add_extension(_aki(root), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pck_cert = issue_pck_certificate(
        pck_ca,
        pck_ca_key,
        pck_key.public_key(),
        ppid=secrets.token_bytes(16),
        components=SIM_TCB_COMPONENTS,
        pce_svn=SIM_PCE_SVN,
        fmspc=SIM_FMSPC,
        not_before=not_before,
        not_after=not_after,
    )
    return cls(
        state=state,
        root_certificate=root,
        pck_ca_certificate=pck_ca,
        tcb_signing_certificate=tcb_signer,
        pck=SimulatedPck(pck_cert, pck_key),
        root_key=root_key,
        pck_ca_key=pck_ca_key,
        tcb_signing_key=tcb_key,
        attestation_key=att_key,
        secret=secrets.token_bytes(PLATFORM_SECRET_SIZE),
    )


def issue_pck_certificate(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    *,
    ppid: bytes,
    components: Sequence[int],
    pce_svn: int,
    fmspc: bytes,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    try:
        sgx = encode_sgx_extension(
            ppid=ppid,
            tcb_components=components,
            pce_svn=pce_svn,
            # CPUSVN carries the component SVNs, as on the platforms Intel rates.
            cpu_svn=bytes(components),
            pce_id=SIM_PCE_ID,
            fmspc=fmspc,
            sgx_type=0,
        )
    except ValueError as exc:
        raise UsageError(f"cannot issue a PCK certificate: {exc}") from exc
    return (
        x509.CertificateBuilder()
        .subject_name(_name("Confide Simulated SGX PCK Certificate"))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGNER_USAGE, critical=True)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(_aki(ca), critical=False)
        .add_extension(x509.UnrecognizedExtension(SGX_EXTENSION_OID, sgx), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def issue_crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[int],
    window: Window,
    *,
    next_update: bool = True,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(window[0])
        .next_update(window[1])
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    for serial in sorted(revoked):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(window[0])
            .build()
        )
    crl = builder.sign(key, hashes.SHA256())
    if not next_update:
        return _without_next_update(crl, key)
    return crl.public_bytes(serialization.Encoding.DER)


def _without_next_update(
    crl: x509.CertificateRevocationList, key: ec.EllipticCurvePrivateKey
) -> bytes:
    """``crl`` re-signed without nextUpdate (``cryptography`` refuses to build such a CRL).

    TBSCertList is ``version, signature, issuer, thisUpdate, nextUpdate OPTIONAL, ...``:
    the second time in it is nextUpdate.
    """
    tbs = der_children(crl.tbs_certlist_bytes)
    times = [i for i, item in enumerate(tbs) if item[0] in (TAG_UTC_TIME, TAG_GENERALIZED_TIME)]
    tbs_der = tlv(TAG_SEQUENCE, b"".join(tbs[: times[1]] + tbs[times[1] + 1 :]))
    algorithm = der_children(crl.public_bytes(serialization.Encoding.DER))[1]
    signature = key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    return tlv(TAG_SEQUENCE, tbs_der + algorithm + tlv(TAG_BIT_STRING, b"\x00" + signature))
