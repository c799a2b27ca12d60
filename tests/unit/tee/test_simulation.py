"""The simulated platform: state folder, quotes, collateral, and verification outcomes.

Every simulated quote goes through the same ``verify_quote`` as real ones, and
through dcap-qvl as an independent oracle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import (
    Collateral,
    PckExtensions,
    Policy,
    QeTcbLevel,
    Quote,
    SgxReportBody,
    TcbStatus,
    is_simulation_root,
    verify_quote,
)
from confide.attestation._quote import INTEL_QE_VENDOR_ID
from confide.errors import (
    AttestationError,
    CertificateError,
    CollateralError,
    PolicyError,
    RevocationError,
    SignatureError,
    SimulationError,
    TcbError,
    TeeError,
    UsageError,
)
from confide.tee import (
    SIM_FMSPC,
    SIM_PCE_SVN,
    SIM_QE_ISV_SVN,
    SIM_TCB_COMPONENTS,
    CollateralSpec,
    SimulatedPck,
    SimulatedPlatform,
    SimulationTee,
    Tee,
    TeeKind,
)
from confide.tee._simcollateral import COLLATERAL_BACKDATE

MR_ENCLAVE = hashlib.sha256(b"enclave").digest()
MR_SIGNER = hashlib.sha256(b"signer").digest()
REPORT_DATA = bytes(range(64))
ALL_STATUSES = [s.value for s in TcbStatus if s is not TcbStatus.REVOKED]
ANY_STATUS = Policy.accepting(ALL_STATUSES, allow_simulation=True)


def _quote(
    platform: SimulatedPlatform,
    *,
    pck: SimulatedPck | None = None,
    debug: bool = False,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    qe_debug: bool = False,
) -> bytes:
    return platform.quote(
        REPORT_DATA,
        mr_enclave=MR_ENCLAVE,
        mr_signer=MR_SIGNER,
        pck=pck,
        debug=debug,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        qe_debug=qe_debug,
    )


def _oracle(quote: bytes, collateral: Collateral, root_der: bytes, now: datetime) -> Any:
    return dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()),
        root_der,
        int(now.timestamp()),
    )


#: When the simulated platform of this module is created.
CREATED = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("simulation") / "state", now=CREATED)


@pytest.fixture(scope="module")
def now() -> datetime:
    """The verification time of the tests: an hour after the platform was created."""
    return CREATED + timedelta(hours=1)


@pytest.fixture(scope="module")
def oracle_root_der(platform: SimulatedPlatform) -> bytes:
    """The platform's own root, as the trust anchor dcap-qvl is given."""
    return platform.root_certificate.public_bytes(Encoding.DER)


# -- state folder -----------------------------------------------------------


def test_state_folder_is_private_and_reloads(tmp_path: Path, now: datetime) -> None:
    state = tmp_path / "sim"
    created = SimulatedPlatform.open(state, now=now)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.iterdir():
        if path.suffix in (".key", ".secret"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    loaded = SimulatedPlatform.open(state, now=now + timedelta(days=400))
    assert loaded.root_certificate == created.root_certificate
    assert loaded.pck.certificate == created.pck.certificate
    assert loaded.sealing_key(MR_ENCLAVE) == created.sealing_key(MR_ENCLAVE)
    # The loaded platform's quotes verify against the same collateral.
    verify_quote(
        _quote(loaded),
        created.collateral(now),
        now=now,
        policy=ANY_STATUS,
        trust_anchor=created.root_certificate,
    )


def test_secrets_stay_out_of_repr(platform: SimulatedPlatform) -> None:
    text = repr(platform)
    assert platform.secret.hex() not in text
    assert "private_key" not in repr(platform.pck) and "secret" not in text


def test_refuses_a_folder_that_is_not_a_platform(tmp_path: Path, now: datetime) -> None:
    (tmp_path / "other.txt").write_text("mine")
    with pytest.raises(TeeError, match="not an empty folder"):
        SimulatedPlatform.open(tmp_path, now=now)
    assert (tmp_path / "other.txt").read_text() == "mine"


def test_creates_in_an_empty_folder(tmp_path: Path, now: datetime) -> None:
    SimulatedPlatform.open(tmp_path, now=now)
    assert (tmp_path / "platform.json").exists()


def test_incomplete_state_is_an_error(tmp_path: Path, now: datetime) -> None:
    SimulatedPlatform.open(tmp_path / "sim", now=now)
    (tmp_path / "sim" / "pck.key").unlink()
    with pytest.raises(TeeError, match=r"incomplete .* pck\.key"):
        SimulatedPlatform.open(tmp_path / "sim", now=now)


def test_readable_private_key_is_an_error(tmp_path: Path, now: datetime) -> None:
    SimulatedPlatform.open(tmp_path / "sim", now=now)
    (tmp_path / "sim" / "root.key").chmod(0o644)
    with pytest.raises(TeeError, match="accessible to other users"):
        SimulatedPlatform.open(tmp_path / "sim", now=now)


def test_creation_needs_an_aware_time(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        SimulatedPlatform.open(tmp_path / "sim", now=datetime(2025, 1, 1))


# -- certificates -----------------------------------------------------------


def test_root_is_a_marked_simulation_ca(platform: SimulatedPlatform) -> None:
    root = platform.root_certificate
    assert is_simulation_root(root)
    assert "Simulated TEE" in root.subject.rfc4514_string()
    assert "NOT A REAL TEE" in root.subject.rfc4514_string()
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)


def test_pck_certificate_carries_intel_sgx_extension(platform: SimulatedPlatform) -> None:
    ext = PckExtensions.from_certificate(platform.pck.certificate)
    assert ext.tcb_components == SIM_TCB_COMPONENTS
    assert ext.pce_svn == SIM_PCE_SVN
    assert ext.cpu_svn == bytes(SIM_TCB_COMPONENTS)
    assert ext.fmspc == SIM_FMSPC
    assert ext.pce_id == bytes(2)
    assert ext.sgx_type == 0
    assert len(ext.ppid) == 16
    # dcap-qvl reads the same values out of it.
    pem = platform.pck.certificate.public_bytes(Encoding.PEM)
    theirs = dcap_qvl.parse_pck_extension_from_pem(pem)
    assert (theirs.fmspc, theirs.pce_svn, theirs.cpu_svn) == (SIM_FMSPC, SIM_PCE_SVN, ext.cpu_svn)
    platform.pck.certificate.verify_directly_issued_by(platform.pck_ca_certificate)
    platform.pck_ca_certificate.verify_directly_issued_by(platform.root_certificate)
    platform.tcb_signing_certificate.verify_directly_issued_by(platform.root_certificate)


# -- quotes -----------------------------------------------------------------


def test_quote_has_intel_format(platform: SimulatedPlatform) -> None:
    raw = _quote(platform, isv_prod_id=3, isv_svn=7)
    quote = Quote.from_bytes(raw)
    assert quote.to_bytes() == raw
    assert quote.header.version == 3
    assert quote.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert quote.header.qe_svn == SIM_QE_ISV_SVN
    assert isinstance(quote.body, SgxReportBody)
    assert quote.body.mr_enclave == MR_ENCLAVE
    assert quote.body.mr_signer == MR_SIGNER
    assert (quote.body.isv_prod_id, quote.body.isv_svn) == (3, 7)
    assert quote.report_data == REPORT_DATA
    assert not quote.body.debug
    cert = quote.certification
    binding = hashlib.sha256(quote.attestation_key + cert.qe_auth_data).digest() + bytes(32)
    assert cert.qe_report.report_data == binding
    chain = x509.load_pem_x509_certificates(cert.pck_cert_chain)
    assert chain == [
        platform.pck.certificate,
        platform.pck_ca_certificate,
        platform.root_certificate,
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mr_enclave": bytes(31)},
        {"mr_signer": bytes(33)},
        {"isv_prod_id": -1},
        {"isv_svn": 0x10000},
    ],
)
def test_quote_rejects_bad_arguments(
    platform: SimulatedPlatform, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {"mr_enclave": MR_ENCLAVE, "mr_signer": MR_SIGNER, **kwargs}
    with pytest.raises(UsageError):
        platform.quote(REPORT_DATA, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_quote_needs_64_bytes_of_report_data(platform: SimulatedPlatform, size: int) -> None:
    with pytest.raises(TeeError, match="64 bytes"):
        SimulationTee(platform, MR_ENCLAVE).get_quote(bytes(size))


# -- verification: allowed only when asked ---------------------------------


def test_verifies_with_its_root_and_allow_simulation(
    platform: SimulatedPlatform, now: datetime
) -> None:
    result = verify_quote(
        _quote(platform),
        platform.collateral(now),
        now=now,
        policy=Policy(allow_simulation=True, mr_enclave=MR_ENCLAVE, report_data=REPORT_DATA),
        trust_anchor=platform.root_certificate,
    )
    assert result.simulated
    assert not result.production_root
    assert result.tcb_status == TcbStatus.UP_TO_DATE
    assert result.mr_enclave == MR_ENCLAVE
    assert result.fmspc == SIM_FMSPC


def test_rejected_without_allow_simulation(platform: SimulatedPlatform, now: datetime) -> None:
    with pytest.raises(SimulationError) as info:
        verify_quote(
            _quote(platform),
            platform.collateral(now),
            now=now,
            policy=Policy(),
            trust_anchor=platform.root_certificate,
        )
    assert info.value.code == "simulation.not_allowed"


@pytest.mark.parametrize("allow", [False, True])
def test_rejected_under_the_intel_anchor(
    platform: SimulatedPlatform, now: datetime, allow: bool
) -> None:
    with pytest.raises(SimulationError, match="simulat") as info:
        verify_quote(
            _quote(platform),
            platform.collateral(now),
            now=now,
            policy=Policy(allow_simulation=allow),
        )
    assert info.value.code == "simulation.root"
    assert "simulator" in str(info.value)


def test_simulation_tee(platform: SimulatedPlatform, now: datetime) -> None:
    tee = SimulationTee(platform, MR_ENCLAVE)
    assert isinstance(tee, Tee)
    assert tee.kind is TeeKind.SIMULATION
    assert tee.measurement == MR_ENCLAVE
    result = verify_quote(
        tee.get_quote(REPORT_DATA),
        platform.collateral(now),
        now=now,
        policy=Policy(allow_simulation=True, mr_enclave=MR_ENCLAVE, report_data=REPORT_DATA),
        trust_anchor=platform.root_certificate,
    )
    assert result.mr_enclave == MR_ENCLAVE


def test_sealing_key_is_bound_to_measurement_and_platform(
    platform: SimulatedPlatform, tmp_path: Path, now: datetime
) -> None:
    key = SimulationTee(platform, MR_ENCLAVE).sealing_key()
    assert len(key) == 32
    assert SimulationTee(platform, MR_ENCLAVE).sealing_key() == key
    assert SimulationTee(platform, bytes(32)).sealing_key() != key
    other = SimulatedPlatform.open(tmp_path / "other", now=now)
    assert SimulationTee(other, MR_ENCLAVE).sealing_key() != key
    with pytest.raises(UsageError):
        SimulationTee(platform, bytes(31))


# -- the dcap-qvl oracle ----------------------------------------------------


@pytest.mark.parametrize(
    ("first_component", "qe_uptodate_from", "status"),
    [
        (5, SIM_QE_ISV_SVN, TcbStatus.UP_TO_DATE),
        (4, SIM_QE_ISV_SVN, TcbStatus.SW_HARDENING_NEEDED),
        (3, SIM_QE_ISV_SVN, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED),
        (2, SIM_QE_ISV_SVN, TcbStatus.OUT_OF_DATE),
        # An out-of-date QE turns the platform's ratings as Intel converges them.
        (5, SIM_QE_ISV_SVN + 1, TcbStatus.OUT_OF_DATE),
        (3, SIM_QE_ISV_SVN + 1, TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED),
    ],
)
def test_status_agrees_with_dcap_qvl(
    platform: SimulatedPlatform,
    now: datetime,
    oracle_root_der: bytes,
    first_component: int,
    qe_uptodate_from: int,
    status: TcbStatus,
) -> None:
    pck = platform.issue_pck(components=(first_component, *SIM_TCB_COMPONENTS[1:]))
    quote = _quote(platform, pck=pck)
    tcb_date = platform.root_certificate.not_valid_before_utc
    qe_levels = (
        QeTcbLevel(qe_uptodate_from, tcb_date, TcbStatus.UP_TO_DATE, ()),
        QeTcbLevel(1, tcb_date, TcbStatus.OUT_OF_DATE, ("SIM-SA-QE",)),
    )
    collateral = platform.collateral(now, spec=CollateralSpec(qe_tcb_levels=qe_levels))
    ours = verify_quote(
        quote, collateral, now=now, policy=ANY_STATUS, trust_anchor=platform.root_certificate
    )
    theirs = _oracle(quote, collateral, oracle_root_der, now)
    assert ours.tcb_status == status
    assert theirs.status == status.value
    assert sorted(theirs.advisory_ids) == sorted(ours.advisory_ids)


def test_dcap_qvl_accepts_the_simulation_root(
    platform: SimulatedPlatform, now: datetime, oracle_root_der: bytes
) -> None:
    """The simulation root is an ordinary certificate other verifiers parse."""
    quote = _quote(platform)
    collateral = platform.collateral(now)
    assert is_simulation_root(platform.root_certificate)
    assert _oracle(quote, collateral, oracle_root_der, now).status == "UpToDate"


# -- tamper matrix -----------------------------------------------------------

Build = Callable[[SimulatedPlatform, datetime], tuple[bytes, Collateral]]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    error: type[AttestationError]
    code: str
    #: dcap-qvl rejects it too; False where Confide is stricter than the oracle.
    oracle_rejects: bool = True


SpecOf = Callable[[SimulatedPlatform, datetime], CollateralSpec]


def _spec(spec_of: SpecOf) -> Build:
    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        return _quote(p), p.collateral(now, spec=spec_of(p, now))

    return build


def _with_pck(
    *,
    components: tuple[int, ...] = SIM_TCB_COMPONENTS,
    pce_svn: int = SIM_PCE_SVN,
    valid: tuple[timedelta, timedelta] | None = None,
) -> Build:
    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        if valid is None:
            pck = p.issue_pck(components=components, pce_svn=pce_svn)
        else:
            pck = p.issue_pck(
                components=components,
                pce_svn=pce_svn,
                not_before=now + valid[0],
                not_after=now + valid[1],
            )
        return _quote(p, pck=pck), p.collateral(now)

    return build


def _tampered(offset: int) -> Build:
    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        raw = bytearray(_quote(p))
        raw[offset] ^= 0x01
        return bytes(raw), p.collateral(now)

    return build


def _debug(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
    return _quote(p, debug=True), p.collateral(now)


def _qe_identity(**fields: str) -> Build:
    """A validly signed QE identity with these JSON members changed."""
    return _spec(lambda p, now: CollateralSpec(qe_identity_fields=fields))


#: The simulated QE identity's ATTRIBUTES mask with the DEBUG bit (bit 1) cleared.
MASK_WITHOUT_DEBUG = "F9FFFFFFFFFFFFFF0000000000000000"


def _debug_qe(*, attributes_mask: str | None = None) -> Build:
    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        fields = {} if attributes_mask is None else {"attributesMask": attributes_mask}
        spec = CollateralSpec(qe_identity_fields=fields)
        return _quote(p, qe_debug=True), p.collateral(now, spec=spec)

    return build


def _reissued(
    cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    valid: tuple[datetime, datetime] | None = None,
    ca: bool | None = None,
    public_key: CertificatePublicKeyTypes | None = None,
) -> x509.Certificate:
    """``cert`` issued again by its issuer with a new serial number, as Intel re-issues
    certificates under the same name: optionally with another window, CA flag or key."""
    key = public_key or cert.public_key()
    not_before, not_after = valid or (cert.not_valid_before_utc, cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in cert.extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints) and ca is not None:
            value = x509.BasicConstraints(ca=ca, path_length=0 if ca else None)
        elif isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key)
        builder = builder.add_extension(value, critical=ext.critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _valid(now: datetime, days: tuple[int, int]) -> tuple[datetime, datetime]:
    return now + days[0] * DAY, now + days[1] * DAY


def _pck_ca_reissued(
    *,
    valid: tuple[int, int] | None = None,
    ca: bool | None = None,
    in_quote: bool = True,
    in_collateral: bool = False,
    revoked: bool = False,
) -> Build:
    """A re-issued PCK CA (same name and key, so the PCK and the PCK CRL still verify)
    in the quote's PCK chain and/or the PCK CRL issuer chain; ``revoked`` lists it in
    the root CA CRL. ``valid`` is in days from ``now``."""

    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        window = None if valid is None else _valid(now, valid)
        pck_ca = _reissued(p.pck_ca_certificate, p.root_key, valid=window, ca=ca)
        other = dataclasses.replace(p, pck_ca_certificate=pck_ca)
        spec = CollateralSpec(root_crl_revoked=frozenset({pck_ca.serial_number} if revoked else ()))
        return (
            _quote(other if in_quote else p),
            (other if in_collateral else p).collateral(now, spec=spec),
        )

    return build


def _qe_identity_signer(*, valid: tuple[int, int] | None = None, revoked: bool = False) -> Build:
    """The QE identity's issuer chain with a re-issued TCB signing certificate (same key),
    the TCB info's chain unchanged."""

    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        window = None if valid is None else _valid(now, valid)
        signer = _reissued(p.tcb_signing_certificate, p.root_key, valid=window)
        spec = CollateralSpec(root_crl_revoked=frozenset({signer.serial_number} if revoked else ()))
        collateral = dataclasses.replace(
            p.collateral(now, spec=spec),
            qe_identity_issuer_chain=(signer, p.root_certificate),
        )
        return _quote(p), collateral

    return build


def _rsa_signer(*, tcb_info: bool) -> Build:
    """A signing certificate with an RSA key, issued by the root, for one signed item."""

    def build(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        signer = _reissued(p.tcb_signing_certificate, p.root_key, public_key=key)
        chain = (signer, p.root_certificate)
        collateral = p.collateral(now)
        if tcb_info:
            return _quote(p), dataclasses.replace(collateral, tcb_info_issuer_chain=chain)
        return _quote(p), dataclasses.replace(collateral, qe_identity_issuer_chain=chain)

    return build


def _p384_pck(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
    # A PCK certificate for a P-384 key; the QE report is signed with the (P-256) PCK key.
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    cert = _reissued(p.pck.certificate, p.pck_ca_key, public_key=key)
    return _quote(p, pck=SimulatedPck(cert, p.pck.private_key)), p.collateral(now)


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _attestation_key_off_the_curve(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
    # The QE report binds (and the PCK signs) an attestation key that is not a P-256 point.
    quote = Quote.from_bytes(_quote(p))
    cert = quote.certification
    key = bytes(64)
    binding = hashlib.sha256(key + cert.qe_auth_data).digest() + bytes(32)
    report = dataclasses.replace(cert.qe_report, report_data=binding)
    cert = dataclasses.replace(
        cert,
        qe_report=report,
        qe_report_signature=_raw_signature(p.pck.private_key, report.to_bytes()),
    )
    quote = dataclasses.replace(quote, attestation_key=key, certification=cert)
    return quote.to_bytes(), p.collateral(now)


def _pck_signed_elsewhere(p: SimulatedPlatform, now: datetime) -> tuple[bytes, Collateral]:
    # The QE report signed by another PCK key than the one in the chain.
    other = p.issue_pck()
    forged = dataclasses.replace(p.pck, private_key=other.private_key)
    return _quote(p, pck=forged), p.collateral(now)


DAY = timedelta(days=1)
CASES = [
    Case(
        "other FMSPC",
        _spec(lambda p, now: CollateralSpec(fmspc=bytes(6))),
        CollateralError,
        "tcb_info.fmspc",
    ),
    # dcap-qvl matches the TCB info by FMSPC only.
    Case(
        "other PCE-ID",
        _spec(lambda p, now: CollateralSpec(pce_id=b"\x00\x01")),
        CollateralError,
        "tcb_info.pce_id",
        False,
    ),
    Case(
        "PCK revoked",
        _spec(
            lambda p, now: CollateralSpec(
                pck_crl_revoked=frozenset({p.pck.certificate.serial_number})
            )
        ),
        RevocationError,
        "pck.revoked",
    ),
    Case(
        "PCK CA revoked",
        _spec(
            lambda p, now: CollateralSpec(
                root_crl_revoked=frozenset({p.pck_ca_certificate.serial_number})
            )
        ),
        RevocationError,
        # The PCK CA is also the PCK CRL's issuer, whose revocation is found first.
        "pck_crl_issuer.revoked",
    ),
    Case(
        "TCB signer revoked",
        _spec(
            lambda p, now: CollateralSpec(
                root_crl_revoked=frozenset({p.tcb_signing_certificate.serial_number})
            )
        ),
        RevocationError,
        "tcb_signing_cert.revoked",
    ),
    Case(
        "TCB info expired",
        _spec(lambda p, now: CollateralSpec(tcb_info_window=(now - 30 * DAY, now - DAY))),
        CollateralError,
        "tcb_info.expired",
    ),
    Case(
        "TCB info not yet valid",
        _spec(lambda p, now: CollateralSpec(tcb_info_window=(now + DAY, now + 30 * DAY))),
        CollateralError,
        "tcb_info.not_yet_valid",
    ),
    Case(
        "QE identity expired",
        _spec(lambda p, now: CollateralSpec(qe_identity_window=(now - 30 * DAY, now - DAY))),
        CollateralError,
        "qe_identity.expired",
    ),
    Case(
        "root CA CRL expired",
        _spec(lambda p, now: CollateralSpec(root_ca_crl_window=(now - 30 * DAY, now - DAY))),
        CollateralError,
        "root_ca_crl.expired",
    ),
    Case(
        "PCK CRL not yet valid",
        _spec(lambda p, now: CollateralSpec(pck_crl_window=(now + DAY, now + 30 * DAY))),
        CollateralError,
        "pck_crl.not_yet_valid",
        # dcap-qvl (webpki) enforces a CRL's nextUpdate but not its thisUpdate.
        False,
    ),
    Case(
        "PCK expired",
        _with_pck(valid=(-30 * DAY, -DAY)),
        CertificateError,
        "pck.expired",
    ),
    Case(
        "PCK not yet valid",
        _with_pck(valid=(DAY, 30 * DAY)),
        CertificateError,
        "pck.not_yet_valid",
    ),
    Case(
        "QE not Intel's (MRSIGNER)",
        _spec(lambda p, now: CollateralSpec(qe_mr_signer=bytes(32))),
        CollateralError,
        "qe_identity.mrsigner",
    ),
    Case(
        "QE ISVPRODID",
        _spec(lambda p, now: CollateralSpec(qe_isv_prod_id=2)),
        CollateralError,
        "qe_identity.isvprodid",
    ),
    Case(
        "QE below every level",
        _spec(
            lambda p, now: CollateralSpec(
                qe_tcb_levels=(QeTcbLevel(SIM_QE_ISV_SVN + 1, now, TcbStatus.UP_TO_DATE, ()),)
            )
        ),
        TcbError,
        "qe_identity.no_level",
    ),
    Case(
        "TCB revoked",
        _with_pck(components=(1, *SIM_TCB_COMPONENTS[1:])),
        TcbError,
        "tcb.revoked",
    ),
    Case(
        "TCB below every level",
        _with_pck(components=(0, *SIM_TCB_COMPONENTS[1:])),
        TcbError,
        "tcb.no_level",
    ),
    Case(
        "PCESVN below every level",
        _with_pck(pce_svn=SIM_PCE_SVN - 1),
        TcbError,
        "tcb.no_level",
    ),
    Case("quote body tampered", _tampered(48 + 64), SignatureError, "quote.signature"),
    Case("report data tampered", _tampered(48 + 320), SignatureError, "quote.signature"),
    Case(
        "QE report tampered",
        _tampered(48 + 384 + 4 + 128 + 320),
        SignatureError,
        "qe_report.signature",
    ),
    Case(
        "QE report signed by another PCK",
        _pck_signed_elsewhere,
        SignatureError,
        "qe_report.signature",
    ),
    Case("debug enclave", _debug, PolicyError, "policy.debug"),
    # -- the QE against a validly signed QE identity
    Case(
        "QE MISCSELECT",
        _qe_identity(miscselect="00000001"),
        CollateralError,
        "qe_identity.miscselect",
    ),
    Case(
        "QE ATTRIBUTES under the mask",
        _qe_identity(attributes="01000000000000000000000000000000"),
        CollateralError,
        "qe_identity.attributes",
    ),
    # Intel's mask covers DEBUG, so a debug QE first fails the ATTRIBUTES match ...
    Case(
        "debug QE (DEBUG under the attributes mask)",
        _debug_qe(),
        CollateralError,
        "qe_identity.attributes",
    ),
    # ... and with a mask that ignores it, the explicit debug check still refuses it.
    Case(
        "debug QE (DEBUG outside the attributes mask)",
        _debug_qe(attributes_mask=MASK_WITHOUT_DEBUG),
        CollateralError,
        "qe_identity.debug",
    ),
    # -- windows, revocation and CA flags of re-issued intermediates
    Case(
        "PCK CA expired (a re-issue in the quote's chain)",
        _pck_ca_reissued(valid=(-30, -1)),
        CertificateError,
        "pck_ca.expired",
    ),
    Case(
        "PCK CA not yet valid (a re-issue in the quote's chain)",
        _pck_ca_reissued(valid=(1, 30)),
        CertificateError,
        "pck_ca.not_yet_valid",
    ),
    Case(
        "PCK CA revoked (a re-issue in the quote's chain)",
        _pck_ca_reissued(revoked=True),
        RevocationError,
        "pck_ca.revoked",
    ),
    Case(
        "PCK CA not a CA (a re-issue in the quote's chain)",
        _pck_ca_reissued(ca=False),
        CertificateError,
        "pck.issuer_not_ca",
    ),
    # The collateral's windows are checked before the quote's PCK chain.
    Case(
        "PCK CA expired (in both chains)",
        _pck_ca_reissued(valid=(-30, -1), in_collateral=True),
        CertificateError,
        "pck_crl_issuer.expired",
    ),
    Case(
        "PCK CRL issuer not yet valid",
        _pck_ca_reissued(valid=(1, 30), in_quote=False, in_collateral=True),
        CertificateError,
        "pck_crl_issuer.not_yet_valid",
        # dcap-qvl checks the windows of the quote's PCK chain, not of this issuer chain.
        False,
    ),
    Case(
        "QE identity signer not yet valid",
        _qe_identity_signer(valid=(1, 30)),
        CertificateError,
        "qe_identity_signing_cert.not_yet_valid",
    ),
    Case(
        "QE identity signer revoked",
        _qe_identity_signer(revoked=True),
        RevocationError,
        "qe_identity_signing_cert.revoked",
    ),
    # -- keys and CRL fields the verifier requires
    Case(
        "TCB info signer key RSA",
        _rsa_signer(tcb_info=True),
        CertificateError,
        "tcb_info.key",
    ),
    Case(
        "QE identity signer key RSA",
        _rsa_signer(tcb_info=False),
        CertificateError,
        "qe_identity.key",
    ),
    Case("PCK key P-384", _p384_pck, CertificateError, "pck.key"),
    Case(
        "attestation key not on the curve",
        _attestation_key_off_the_curve,
        SignatureError,
        "quote.attestation_key",
    ),
    # dcap-qvl (webpki) cannot parse a CRL without nextUpdate at all.
    Case(
        "root CA CRL without nextUpdate",
        _spec(lambda p, now: CollateralSpec(root_ca_crl_without_next_update=True)),
        CollateralError,
        "root_ca_crl.next_update",
    ),
    Case(
        "PCK CRL without nextUpdate",
        _spec(lambda p, now: CollateralSpec(pck_crl_without_next_update=True)),
        CollateralError,
        "pck_crl.next_update",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tampered_evidence_is_rejected(
    platform: SimulatedPlatform, now: datetime, oracle_root_der: bytes, case: Case
) -> None:
    quote, collateral = case.build(platform, now)
    with pytest.raises(case.error) as info:
        verify_quote(
            quote, collateral, now=now, policy=ANY_STATUS, trust_anchor=platform.root_certificate
        )
    assert info.value.code == case.code
    if case.oracle_rejects:
        with pytest.raises(ValueError, match="erif"):
            _oracle(quote, collateral, oracle_root_der, now)
    else:
        _oracle(quote, collateral, oracle_root_der, now)


def test_collateral_fields_override_the_signed_json(
    platform: SimulatedPlatform, now: datetime
) -> None:
    collateral = platform.collateral(
        now, spec=CollateralSpec(tcb_info_fields={"tcbEvaluationDataNumber": 99})
    )
    assert collateral.tcb_info.tcb_evaluation_data_number == 99
    verify_quote(
        _quote(platform),
        collateral,
        now=now,
        policy=ANY_STATUS,
        trust_anchor=platform.root_certificate,
    )


def test_collateral_from_another_platform_fails(
    platform: SimulatedPlatform, tmp_path: Path, now: datetime
) -> None:
    other = SimulatedPlatform.open(tmp_path / "other", now=now)
    with pytest.raises(SimulationError):
        # The other platform's collateral ends at another (simulation) root.
        verify_quote(
            _quote(platform),
            other.collateral(now),
            now=now,
            policy=ANY_STATUS,
            trust_anchor=platform.root_certificate,
        )


def test_collateral_round_trips_through_json(platform: SimulatedPlatform, now: datetime) -> None:
    collateral = platform.collateral(now, validity=timedelta(days=7))
    again = Collateral.from_json(collateral.to_json())
    assert again.tcb_info == collateral.tcb_info
    assert again.qe_identity == collateral.qe_identity
    assert collateral.tcb_info.issue_date == now - COLLATERAL_BACKDATE
    assert collateral.tcb_info.next_update == now + timedelta(days=7)


def test_collateral_verifies_with_a_clock_read_before_it_was_made(
    platform: SimulatedPlatform, now: datetime
) -> None:
    """A client reads its clock, then fetches collateral made a moment later (issue 9, 12).

    Observed on a loaded machine: the CRL was "not yet valid" at 07:10:44.995 because it
    was issued at 07:10:45. Backdated issue times, as real CAs use, leave room for that.
    """
    made_at = now + timedelta(seconds=1, microseconds=5000)
    collateral = platform.collateral(made_at)
    verify_quote(
        _quote(platform),
        collateral,
        now=now,
        policy=ANY_STATUS,
        trust_anchor=platform.root_certificate,
    )
    assert collateral.root_ca_crl.last_update_utc < now  # the case this test is about
