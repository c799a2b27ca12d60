"""A verification is about the name asked for: the measured launch manifest lists it.

The certificate carries the launch manifest; :func:`verify_launch` holds it to
the quote's MRENCLAVE and to the name. One row per way it can be wrong, each
with its own error code; the good row guards against a check that refuses all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from confide.attestation import (
    Collateral,
    Policy,
    RatlsVerified,
    create_ratls_certificate,
    ratls_report_data,
    verify_ratls_certificate,
)
from confide.client import (
    EnclavePolicy,
    TrustMaterial,
    VerifiedEnclave,
    check_owner_release,
    verify_enclave,
    verify_launch,
)
from confide.errors import AttestationError, FormatError, PolicyError, ReleaseError
from confide.release import Checkpoint, OwnerKey, OwnerPublicKey, Release, VerifiedRelease
from confide.tee import SimulatedPlatform
from confide.wire import LAUNCH_MANIFEST_OID, MAX_MANIFEST_SIZE, LaunchManifest, TlsMode

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
NOW = CREATED + timedelta(hours=1)
KEY = ec.derive_private_key(4242, ec.SECP256R1())
APP_A = "a.apps.example"
APP_B = "b.apps.example"


def manifest(*names: str) -> LaunchManifest:
    return LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes(range(32)),
        app_id=uuid.UUID(int=7),
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int((NOW + timedelta(days=1)).timestamp()),
        certificate_sha256=None,
        san=names,
        subject=None,
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.open(tmp_path_factory.mktemp("launch") / "sim", now=CREATED)


@pytest.fixture(scope="module")
def collateral(platform: SimulatedPlatform) -> Collateral:
    return platform.collateral(NOW)


def certificate(
    platform: SimulatedPlatform, measured: bytes, carried: bytes | None
) -> x509.Certificate:
    """An RA-TLS certificate whose quote measures ``measured`` and carries ``carried``."""
    quote = platform.quote(
        ratls_report_data(KEY.public_key(), bytes(32)), mr_enclave=measured, mr_signer=bytes(32)
    )
    extensions = (
        [] if carried is None else [x509.UnrecognizedExtension(LAUNCH_MANIFEST_OID, carried)]
    )
    return create_ratls_certificate(
        KEY,
        quote,
        subject="enclave",
        sans=("enclave",),
        not_before=CREATED,
        not_after=NOW + timedelta(days=1),
        extensions=extensions,
    )


def verified(
    cert: x509.Certificate, platform: SimulatedPlatform, collateral: Collateral
) -> RatlsVerified:
    return verify_ratls_certificate(
        cert,
        collateral,
        now=NOW,
        policy=Policy(allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )


A = manifest(APP_A, "www.a.example")
B = manifest(APP_B)
#: What a Gramine enclave of A reports: the MRENCLAVE of its Gramine manifest, not A's own.
GRAMINE_A = bytes.fromhex("6a" * 32)


@dataclass(frozen=True)
class Row:
    name: str
    #: (measured, carried bytes or None) of the enclave's certificate.
    make: Callable[[], tuple[bytes, bytes | None]]
    asked: str
    error: type[AttestationError] | None
    code: str | None = None
    #: What the caller says of the code: pinned (fingerprint or owner), not pinned, or nothing.
    pinned: bool | None = None


ROWS = [
    Row("launched for the name", lambda: (A.measurement(), A.to_json()), APP_A, None),
    Row("another of its names", lambda: (A.measurement(), A.to_json()), "www.a.example", None),
    Row("names compare case-blind", lambda: (A.measurement(), A.to_json()), "A.Apps.Example", None),
    Row(
        "A's name routed to B's enclave",
        lambda: (B.measurement(), B.to_json()),
        APP_A,
        PolicyError,
        "launch.name",
    ),
    Row(
        "no manifest in the certificate",
        lambda: (A.measurement(), None),
        APP_A,
        PolicyError,
        "launch.absent",
    ),
    Row(
        "B's enclave carrying A's manifest",
        lambda: (B.measurement(), A.to_json()),
        APP_A,
        PolicyError,
        "launch.measurement",
    ),
    Row(
        "A's manifest with a name added",
        lambda: (A.measurement(), manifest(APP_A, "www.a.example", APP_B).to_json()),
        APP_B,
        PolicyError,
        "launch.measurement",
    ),
    Row(
        "the measured manifest, not in canonical form",
        lambda: (A.measurement(), A.to_json().replace(b",", b", ")),
        APP_A,
        PolicyError,
        "launch.measurement",
    ),
    # A Gramine enclave: its MRENCLAVE is not the carried manifest's own measurement.
    Row("gramine, code pinned", lambda: (GRAMINE_A, A.to_json()), APP_A, None, pinned=True),
    Row(
        "gramine, no code pinned",
        lambda: (GRAMINE_A, A.to_json()),
        APP_A,
        PolicyError,
        "launch.unpinned",
        pinned=False,
    ),
    Row(
        "gramine, code pinned, the manifest names another name",
        lambda: (GRAMINE_A, B.to_json()),
        APP_A,
        PolicyError,
        "launch.name",
        pinned=True,
    ),
    Row(
        "gramine, code pinned, the manifest not in canonical form",
        lambda: (GRAMINE_A, A.to_json().replace(b",", b", ")),
        APP_A,
        PolicyError,
        "launch.measurement",
        pinned=True,
    ),
    Row(
        "gramine, the caller says nothing of a pin",
        lambda: (GRAMINE_A, A.to_json()),
        APP_A,
        PolicyError,
        "launch.measurement",
    ),
    # The simulated launch path, with and without a pin: unchanged.
    Row("simulated, code pinned", lambda: (A.measurement(), A.to_json()), APP_A, None, pinned=True),
    Row("simulated, no pin", lambda: (A.measurement(), A.to_json()), APP_A, None, pinned=False),
    Row(
        "simulated, no pin, B's enclave carrying A's manifest",
        lambda: (B.measurement(), A.to_json()),
        APP_A,
        PolicyError,
        "launch.unpinned",
        pinned=False,
    ),
    Row(
        "not a manifest",
        lambda: (A.measurement(), b"{not json"),
        APP_A,
        FormatError,
        "launch.format",
    ),
    Row(
        "too large",
        lambda: (A.measurement(), b" " * (MAX_MANIFEST_SIZE + 1)),
        APP_A,
        FormatError,
        "launch.format",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_verify_launch(row: Row, platform: SimulatedPlatform, collateral: Collateral) -> None:
    measured, carried = row.make()
    cert = certificate(platform, measured, carried)
    result = verified(cert, platform, collateral)  # the quote itself is fine in every row
    if row.error is None:
        assert verify_launch(cert, result, row.asked, code_pinned=row.pinned) == A
        return
    with pytest.raises(row.error) as caught:
        verify_launch(cert, result, row.asked, code_pinned=row.pinned)
    assert caught.value.code == row.code
    assert "\n" not in str(caught.value)


def test_the_table_covers_every_code() -> None:
    assert {r.code for r in ROWS} == {
        None,
        "launch.name",
        "launch.absent",
        "launch.measurement",
        "launch.unpinned",
        "launch.format",
    }


def test_verify_enclave_checks_the_name_without_a_fingerprint(
    platform: SimulatedPlatform, collateral: Collateral
) -> None:
    cert = certificate(platform, B.measurement(), B.to_json())
    material = TrustMaterial(collateral, platform.root_certificate, simulated=True)

    def verify(name: str) -> VerifiedEnclave:
        policy = EnclavePolicy(None, name, allow_any_code=True, allow_simulation=True)
        return verify_enclave(cert, material, now=NOW, policy=policy)

    good = verify(APP_B)
    assert good.quote.checks[-1].name == "launch manifest measured, for this name"
    assert good.quote.checks[-1].detail == APP_B
    with pytest.raises(PolicyError) as caught:
        verify(APP_A)
    assert caught.value.code == "launch.name"
    assert APP_A in str(caught.value) and APP_B in str(caught.value)
    assert caught.value.checks  # what passed before the refusal is kept for the report


@pytest.mark.parametrize(
    ("policy", "code"),
    [
        (EnclavePolicy(GRAMINE_A, APP_A, allow_simulation=True), None),
        (EnclavePolicy(None, APP_A, allow_any_code=True, allow_simulation=True), "launch.unpinned"),
        (EnclavePolicy(GRAMINE_A, APP_B, allow_simulation=True), "launch.name"),
        (EnclavePolicy(A.measurement(), APP_A, allow_simulation=True), "policy.mrenclave"),
    ],
    ids=["pinned", "unpinned", "pinned, other name", "pinned to the manifest's own"],
)
def test_verify_enclave_takes_a_gramine_launch_only_on_a_pinned_code(
    platform: SimulatedPlatform, collateral: Collateral, policy: EnclavePolicy, code: str | None
) -> None:
    """The front door says whether the code was pinned: a Gramine enclave of A verifies
    against its MRENCLAVE, and with no pin it is refused with a hint naming the pins."""
    cert = certificate(platform, GRAMINE_A, A.to_json())
    material = TrustMaterial(collateral, platform.root_certificate, simulated=True)
    if code is None:
        enclave = verify_enclave(cert, material, now=NOW, policy=policy)
        assert enclave.launch == A and enclave.measurement == GRAMINE_A
        return
    with pytest.raises(PolicyError) as caught:
        verify_enclave(cert, material, now=NOW, policy=policy)
    assert caught.value.code == code
    if code == "launch.unpinned":
        assert "--fingerprint" in (caught.value.hint or "") and "--owner" in (
            caught.value.hint or ""
        )


@pytest.mark.parametrize(
    ("released", "code"),
    [(A, None), (manifest(APP_A, "www.a.example", "extra.example"), "release.launch")],
    ids=["the release names the enclave's launch", "the release names another launch"],
)
def test_an_owner_pin_holds_the_release_to_the_carried_launch(
    platform: SimulatedPlatform,
    collateral: Collateral,
    released: LaunchManifest,
    code: str | None,
) -> None:
    """Pinned by an owner key, a Gramine enclave's carried manifest must be the launch the
    owner's release of that MRENCLAVE names (the one its fingerprint was predicted from)."""
    key = OwnerKey(bytes(32)).public_key
    release = Release.of(
        released, not_before=CREATED, validity=timedelta(days=2),
        gramine=(GRAMINE_A, "512M", 32),
    )  # fmt: skip

    def releases(owner: OwnerPublicKey, fingerprint: bytes, now: datetime) -> VerifiedRelease:
        assert (owner, fingerprint) == (key, GRAMINE_A)
        return VerifiedRelease(owner, release, 0, Checkpoint("log.example", 1, bytes(32)), b"")

    cert = certificate(platform, GRAMINE_A, A.to_json())
    material = TrustMaterial(collateral, platform.root_certificate, simulated=True)
    policy = EnclavePolicy(None, APP_A, owner=key, allow_simulation=True)
    enclave = verify_enclave(cert, material, now=NOW, policy=policy)
    assert enclave.launch == A  # taken on the owner's pin, which the next step enforces
    if code is None:
        assert check_owner_release(enclave, key, releases, NOW).release is not None
        return
    with pytest.raises(ReleaseError) as caught:
        check_owner_release(enclave, key, releases, NOW)
    assert caught.value.code == code
