"""The one front door for verifying an app's enclave from outside (ADR 0015).

``confide deploy``, ``verify``, ``proxy``, ``test``, ``seal --cert`` and
``attest cert`` each build one :class:`EnclaveVerifier` from an injected
:class:`EvidenceSource` (Intel PCS or a PCCS with its cache, or a collateral
file: :class:`CollateralEvidence`; the operator's simulation endpoint:
:class:`SimulationEvidence`) and a mandatory :class:`EnclavePolicy` (the
fingerprint and the name launched for, :func:`verify_launch`; leaving one out
takes ``allow_any_code``/``allow_any_name``; a :class:`FreshSource` asks the
enclave a new quote for a nonce on a pinned connection after the quote and the
name, ADR 0021, and only ``allow_stale`` goes without one; an ``owner`` key instead of a
fingerprint accepts the code of any release that owner signed and the operator
logged, valid and not revoked, checked through an injected
:class:`ReleaseSource` after the quote and the name, ADR 0019). A simulated TEE
is refused before any collateral is fetched unless allowed, always as
``simulation.not_allowed``. The time is read after the evidence is fetched. The
frozen :class:`VerifiedEnclave` says what was proven (real TEE or simulation,
measurement, name, ``valid_until``); its
:meth:`~VerifiedEnclave.pinned_context` is the one pinning technique: the exact
DER of the verified certificate, compared right after the handshake, before a
byte is sent (the proxy's ``CertificatePin`` compares the same way, per
connection, and verifies a new certificate with the same verifier).

Example::

    >>> verifier = EnclaveVerifier(CollateralEvidence.service(INTEL_PCS_URL, cache),
    ...                            EnclavePolicy(expected, "app.example"),
    ...                            fresh=ChallengeClient(router, "app.example", timeout=10))
    ... # doctest: +SKIP
    >>> enclave = verifier.verify(fetch_enclave_certificate(router, "app.example", timeout=10))
    ... # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import (
    CHALLENGE_PATH,
    MAX_ANSWER_SIZE,
    NONCE_SIZE,
    RATLS_QUOTE_OID,
    Check,
    Collateral,
    CollateralCache,
    CollateralClient,
    FreshAnswer,
    FreshVerified,
    HttpxFetcher,
    Policy,
    Quote,
    RatlsVerified,
    TdReference,
    VerifiedQuote,
    fetch_peer_certificate,
    is_simulation_root,
    launch_rtmr3,
    quote_from_certificate,
    verify_fresh_answer,
    verify_ratls_certificate,
)
from confide.errors import (
    AttestationError,
    FetchError,
    FormatError,
    FreshnessError,
    PolicyError,
    ReleaseError,
    SimulationError,
    UsageError,
)
from confide.release import OwnerPublicKey, VerifiedRelease
from confide.tee import SIM_GUEST_IMAGE
from confide.wire import LAUNCH_MANIFEST_OID, MAX_MANIFEST_SIZE, HostPort, LaunchManifest

from ._api import SimulationInfo

#: What is said when an enclave runs on a simulated TEE and that was not allowed.
SIMULATION_REFUSED: Final = (
    "the enclave runs in simulation mode: pass --allow-simulation only for tests"
)

#: Fetches the collateral for a quote at a time (Intel PCS, a PCCS, a file).
CollateralSource = Callable[[Quote, datetime], Collateral]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def refuse_simulation(
    hint: str = "a simulated TEE proves nothing about the hardware",
) -> SimulationError:
    """The one refusal of a simulated TEE (the attestation core's code)."""
    return SimulationError("simulation.not_allowed", SIMULATION_REFUSED, hint=hint)


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """The collateral and trust anchor a certificate's quote is verified with."""

    collateral: Collateral
    #: ``None``: Intel's SGX Root CA.
    trust_anchor: x509.Certificate | None
    #: The anchor is a simulation root (only with ``allow_simulation``).
    simulated: bool


class EvidenceSource(Protocol):
    """The trust material for a quote, fetched at ``now`` (the only I/O of a verification);
    a simulated TEE is refused (:func:`refuse_simulation`) before any fetch unless allowed."""

    def __call__(self, quote: Quote, now: datetime, *, allow_simulation: bool) -> TrustMaterial: ...


@dataclass(frozen=True, slots=True)
class CollateralEvidence:
    """Collateral from Intel PCS, a PCCS or a file, verified up to ``trust_anchor``."""

    fetch: CollateralSource
    #: ``None``: Intel's SGX Root CA.
    trust_anchor: x509.Certificate | None = None

    @classmethod
    def service(
        cls, url: str, cache: Path, trust_anchor: x509.Certificate | None = None
    ) -> CollateralEvidence:
        """Intel PCS or a PCCS (v4 API) at ``url``, cached in the folder ``cache``."""

        def fetch(quote: Quote, now: datetime) -> Collateral:  # a client only when used
            client = CollateralClient(url, HttpxFetcher(), cache=CollateralCache(cache))
            return client.fetch(quote, now=now)

        return cls(fetch, trust_anchor)

    def __call__(self, quote: Quote, now: datetime, *, allow_simulation: bool) -> TrustMaterial:
        anchor = self.trust_anchor
        simulated = anchor is not None and is_simulation_root(anchor)
        if (simulated or _chain_ends_at_simulation_root(quote)) and not allow_simulation:
            # Said before any collateral is fetched: Intel's PCS knows no simulated platform.
            raise refuse_simulation()
        return TrustMaterial(self.fetch(quote, now), anchor, simulated=simulated)


@dataclass(frozen=True, slots=True)
class SimulationEvidence:
    """The operator's simulation endpoint (``info``: ``GET /simulation``; ``None``: its TEE is
    real, then ``real`` is used); ``collateral`` and ``trust_anchor`` replace its own."""

    info: Callable[[], SimulationInfo | None]
    real: EvidenceSource | None = None
    collateral: CollateralSource | None = None
    trust_anchor: x509.Certificate | None = None

    def __call__(self, quote: Quote, now: datetime, *, allow_simulation: bool) -> TrustMaterial:
        info = self.info()
        if info is None:
            if self.real is None:
                raise UsageError(
                    "the operator publishes no simulated TEE's collateral: its TEE is real, "
                    "so give --pccs-url URL or --collateral FILE"
                )
            return self.real(quote, now, allow_simulation=allow_simulation)
        if not allow_simulation:
            raise refuse_simulation()
        if self.collateral is not None:
            found = self.collateral(quote, now)
        elif info.collateral is not None:
            found = info.collateral
        else:
            raise SimulationError(
                "simulation.collateral",
                "the operator's TEE is simulated but it publishes no collateral",
                hint="give --collateral FILE",
            )
        return TrustMaterial(found, self.trust_anchor or info.root_ca, simulated=True)


def _chain_ends_at_simulation_root(quote: Quote) -> bool:
    """Whether the quote's own PCK chain names a simulation root (a hint, not trust)."""
    try:
        chain = x509.load_pem_x509_certificates(quote.certification.pck_cert_chain.rstrip(b"\x00"))
    except ValueError:
        return False  # the verifier reports a malformed chain itself
    return bool(chain) and is_simulation_root(chain[-1])


@dataclass(frozen=True, slots=True)
class EnclavePolicy:
    """The enclave's code (``fingerprint``) and the name it was launched for: leaving one out
    takes ``allow_any_code``/``allow_any_name``. ``checks``: the quote's other expectations
    (TCB statuses, debug, MRSIGNER), without ``mr_enclave`` and ``allow_simulation``."""

    fingerprint: bytes | None
    name: str | None
    #: The owner whose logged, valid, unrevoked release the enclave's code must be (ADR 0019);
    #: it decides which code is acceptable, with or without ``fingerprint``.
    owner: OwnerPublicKey | None = None
    allow_any_code: bool = False
    allow_any_name: bool = False
    allow_simulation: bool = False
    #: Accept the certificate's launch-time quote with no fresh challenge (a certificate file,
    #: with no connection to the enclave): whether it answers now is then not checked.
    allow_stale: bool = False
    checks: Policy = field(default_factory=Policy)
    #: Given (``confide deploy``, ``confide verify``): a fingerprint mismatch is said as
    #: "code fingerprint mismatch: expected ..., the enclave reports ...", with this hint.
    mismatch_hint: str | None = None
    #: MRTD and RTMR0-2 a TD must report (ADR 0020); ``None``: the simulated Confide guest
    #: image's when the evidence is simulated, and a TDX quote is refused otherwise.
    td_reference: TdReference | None = None

    def __post_init__(self) -> None:
        if self.fingerprint is None and self.owner is None and not self.allow_any_code:
            raise UsageError(
                "no expected fingerprint nor owner key: which code runs would not be checked"
            )
        if self.name is None and not self.allow_any_name:
            raise UsageError("no name: what the enclave was launched for would not be checked")
        if self.checks.mr_enclave is not None or self.checks.allow_simulation:
            raise UsageError("the fingerprint and simulation are the policy's, not its checks'")

    def quote_policy(self, material: TrustMaterial, quote: Quote | None = None) -> Policy:
        """The quote's policy: on SGX the fingerprint is MRENCLAVE; on TDX (``quote`` a TD's)
        MRTD and RTMR0-2 are the guest image's and RTMR3 the fingerprint's launch event."""
        allow = self.allow_simulation and material.simulated
        if quote is None or not quote.is_tdx:
            return dataclasses.replace(
                self.checks, mr_enclave=self.fingerprint, allow_simulation=allow
            )
        image = self.td_reference or (SIM_GUEST_IMAGE if material.simulated else None)
        if image is None:
            raise PolicyError(
                "policy.td_reference",
                "no reference values of a TDX guest image to check MRTD and RTMR0-2 against",
                expected="the published MRTD and RTMR0-2 of the Confide guest image",
                hint="give the reference values the operator publishes with its guest image "
                "(--td-reference FILE); without them only a simulated TD verifies",
            )
        rtmr3 = launch_rtmr3(self.fingerprint) if self.fingerprint is not None else None
        return dataclasses.replace(
            self.checks,
            mr_td=image.mr_td,
            rtmrs=(image.rtmr0, image.rtmr1, image.rtmr2, rtmr3),
            allow_simulation=allow,
        )


@dataclass(frozen=True, slots=True)
class VerifiedEnclave:
    """What a verification proved about one enclave (its certificate as verified)."""

    certificate: x509.Certificate
    #: The RA-TLS verification: quote, key binding, the checks that passed.
    ratls: RatlsVerified
    #: The name it was proven to be launched for (``None``: not asked, ``allow_any_name``).
    name: str | None
    #: Its launch manifest, measured to MRENCLAVE (``None`` when no name was asked).
    launch: LaunchManifest | None
    #: The owner's release it runs, logged and valid (``None`` when no owner was asked).
    release: VerifiedRelease | None = None
    #: Its answer to a fresh challenge on a pinned connection (``None``: none was asked).
    fresh: FreshVerified | None = None

    @property
    def quote(self) -> VerifiedQuote:
        return self.ratls.quote

    @property
    def simulated(self) -> bool:  # a simulated TEE, accepted only with allow_simulation
        return self.ratls.quote.simulated

    @property
    def measurement(self) -> bytes | None:  # MRENCLAVE (None: a TDX quote)
        return self.ratls.quote.mr_enclave

    @property
    def valid_until(self) -> datetime:  # the end of the shortest window relied on
        return self.ratls.valid_until

    def pinned_context(self) -> ssl.SSLContext:
        """A TLS client context that accepts only this certificate (:func:`enclave_tls_context`)."""
        return enclave_tls_context(self.certificate.public_bytes(Encoding.DER))


class ReleaseSource(Protocol):
    """Proves ``owner`` released ``fingerprint`` at ``now`` in an operator's transparency log
    (fetching the evidence, then :func:`confide.release.verify_release`); raises if not."""

    def __call__(
        self, owner: OwnerPublicKey, fingerprint: bytes, now: datetime
    ) -> VerifiedRelease: ...


class FreshSource(Protocol):
    """Asks the enclave of ``certificate`` a fresh challenge, over a connection pinned to
    it (a random nonce, :mod:`confide.attestation._fresh`); returns the answer unverified."""

    def __call__(self, certificate: x509.Certificate, /) -> FreshAnswer: ...


#: Bytes of a refusal's body shown in an error.
_MAX_REFUSAL_SHOWN: Final = 200


@dataclass(frozen=True, slots=True)
class ChallengeClient:
    """The challenge over HTTPS to ``address`` as ``server_name`` (:func:`pinned_client`)."""

    address: HostPort
    server_name: str
    timeout: float

    def __call__(self, certificate: x509.Certificate) -> FreshAnswer:
        nonce = secrets.token_bytes(NONCE_SIZE)
        where = f"{self.address.host}:{self.address.port}"
        try:
            with (
                pinned_client(
                    self.address, self.server_name, certificate, timeout=self.timeout
                ) as client,
                client.stream(
                    "POST",
                    CHALLENGE_PATH,
                    content=nonce,
                    headers={"Content-Type": "application/octet-stream"},
                ) as response,
            ):
                # The connection the answer comes on, read before its body: a server may
                # close it as soon as the body is sent.
                tls = response.extensions["network_stream"].get_extra_info("ssl_object")
                binding = tls.get_channel_binding("tls-unique") if tls is not None else None
                version = tls.version() if tls is not None else None
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_SIZE:
                        break
        except httpx.HTTPError as exc:
            raise FetchError(where, f"the challenge failed: {exc}") from exc
        if response.status_code != httpx.codes.OK:
            raise FreshnessError(
                "fresh.unanswered",
                "the enclave did not answer the fresh challenge",
                observed=f"HTTP {response.status_code} "
                + body[:_MAX_REFUSAL_SHOWN].decode("utf-8", "replace").strip(),
                expected="200 and a quote",
                hint="the enclave runs a Confide runtime older than this client, or serves "
                "the owner's certificate",
            )
        if binding is None or version is None:
            raise FreshnessError("fresh.tls_version", "the challenge connection has no TLS")
        return FreshAnswer(nonce=nonce, binding=binding, quote=body, tls_version=version)


@dataclass(frozen=True, slots=True)
class EnclaveVerifier:
    """Verifies enclaves with one evidence source and one policy (see the module's description)."""

    evidence: EvidenceSource
    policy: EnclavePolicy
    #: The verification time, read after the evidence is fetched (``--at`` fixes it).
    clock: Callable[[], datetime] = _utc_now
    #: The operator's release log, needed when the policy names an owner.
    releases: ReleaseSource | None = None
    #: Asks the enclave a fresh challenge (ADR 0021); ``None`` only with ``allow_stale``.
    fresh: FreshSource | None = None

    def __post_init__(self) -> None:
        if self.policy.owner is not None and self.releases is None:
            raise UsageError(
                "an owner key is checked in the operator's release log: give the operator's URL"
            )
        if self.fresh is None and not self.policy.allow_stale:
            raise UsageError(
                "no fresh challenge: whether the enclave answers now, on this connection, would "
                "not be checked",
                hint="give fresh=ChallengeClient(...), or allow_stale=True in the policy",
            )

    def verify(self, cert: x509.Certificate) -> VerifiedEnclave:
        """Verify ``cert``; raise an :class:`~confide.errors.Error` naming the failed check."""
        quote = Quote.from_bytes(quote_from_certificate(cert))
        material = self.evidence(quote, self.clock(), allow_simulation=self.policy.allow_simulation)
        # After the fetch: collateral made during it is valid at this time.
        verified = verify_enclave(cert, material, now=self.clock(), policy=self.policy)
        if self.fresh is not None:
            answer = self.fresh(cert)
            verified = check_fresh(verified, answer, material, self.clock(), self.policy)
        if self.policy.owner is None or self.releases is None:
            return verified
        return check_owner_release(verified, self.policy.owner, self.releases, self.clock())


def check_fresh(
    verified: VerifiedEnclave,
    answer: FreshAnswer,
    material: TrustMaterial,
    now: datetime,
    policy: EnclavePolicy,
) -> VerifiedEnclave:
    """The fresh step of :meth:`EnclaveVerifier.verify`: ``answer`` is a genuine quote of
    the verified enclave binding the nonce, the connection and the certificate
    (:func:`~confide.attestation.verify_fresh_answer`; the ``fresh.*`` codes)."""
    try:
        fresh = verify_fresh_answer(
            answer,
            certificate=verified.certificate,
            enclave=verified.quote,
            collateral=material.collateral,
            now=now,
            policy=policy.quote_policy(
                material, Quote.from_bytes(quote_from_certificate(verified.certificate))
            ),
            trust_anchor=material.trust_anchor,
        )
    except AttestationError as exc:
        exc.checks = verified.quote.checks
        raise
    check = fresh.quote.checks[-1]
    quote = dataclasses.replace(verified.quote, checks=(*verified.quote.checks, check))
    ratls = dataclasses.replace(verified.ratls, quote=quote)
    return dataclasses.replace(verified, ratls=ratls, fresh=fresh)


def check_owner_release(
    verified: VerifiedEnclave, owner: OwnerPublicKey, releases: ReleaseSource, now: datetime
) -> VerifiedEnclave:
    """The release step of :meth:`EnclaveVerifier.verify`: the verified enclave's MRENCLAVE
    must be a release of ``owner``, logged, valid at ``now`` and not revoked (the
    ``release.*`` and ``log.*`` codes of :func:`confide.release.verify_release`)."""
    measurement = verified.measurement
    try:
        if measurement is None:
            raise ReleaseError(
                "release.fingerprint",
                "the enclave reports no MRENCLAVE, so no release can name its code",
                expected="an SGX enclave",
            )
        release = releases(owner, measurement, now)
        if verified.launch is not None and release.release.manifest != verified.launch:
            # The release names the launch its fingerprint was computed from (for a Gramine
            # enclave, the one fixed in its measured environment): the enclave's must be it.
            raise ReleaseError(
                "release.launch",
                "the enclave's launch manifest is not the one the owner's release names",
                observed=verified.launch.to_json().decode(),
                expected=release.release.manifest.to_json().decode(),
                hint="nothing was sent; the operator runs this code for another launch",
            )
    except AttestationError as exc:
        exc.checks = verified.quote.checks
        raise
    check = Check(
        "release signed by the owner, logged, valid, not revoked",
        "passed",
        f"owner {owner.key_id}, log index {release.log_index}",
    )
    quote = dataclasses.replace(verified.quote, checks=(*verified.quote.checks, check))
    ratls = dataclasses.replace(verified.ratls, quote=quote)
    return dataclasses.replace(verified, ratls=ratls, release=release)


def has_quote(cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries an RA-TLS quote (an owner's or operator's certificate does not)."""
    try:
        cert.extensions.get_extension_for_oid(RATLS_QUOTE_OID)
    except x509.ExtensionNotFound:
        return False
    return True


def fetch_enclave_certificate(
    address: HostPort, server_name: str, *, timeout: float
) -> x509.Certificate:
    """The certificate served for ``server_name`` (SNI) at ``address`` (not trusted yet)."""
    return fetch_peer_certificate(
        address.host, address.port, server_name=server_name, timeout=timeout
    )


def launch_manifest_bytes(cert: x509.Certificate) -> bytes:
    """The launch manifest bytes ``cert`` carries (not trusted: see :func:`verify_launch`)."""
    try:
        ext = cert.extensions.get_extension_for_oid(LAUNCH_MANIFEST_OID)
    except x509.ExtensionNotFound:
        raise PolicyError(
            "launch.absent",
            "the enclave's certificate carries no launch manifest, so which names it was "
            "launched for cannot be checked",
            expected=f"extension {LAUNCH_MANIFEST_OID.dotted_string}",
            hint="the enclave runs a Confide runtime older than this client",
        ) from None
    except ValueError as exc:
        raise FormatError(
            "launch.format", "the certificate's extensions are malformed", detail=str(exc)
        ) from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - our OID
        raise FormatError("launch.format", "the launch manifest extension has an unexpected type")
    if len(value.value) > MAX_MANIFEST_SIZE:
        raise FormatError(
            "launch.format",
            "the launch manifest in the certificate is too large",
            observed=f"{len(value.value)} bytes",
            expected=f"at most {MAX_MANIFEST_SIZE}",
        )
    return value.value


def verify_launch(
    cert: x509.Certificate,
    verified: RatlsVerified,
    name: str,
    *,
    code_pinned: bool | None = None,
) -> LaunchManifest:
    """The launch manifest of a verified enclave, proven to be about ``name``.

    ``verified`` is :func:`~confide.attestation.verify_ratls_certificate`'s
    result for ``cert``; it proved *a real TEE* (or an allowed simulation) and,
    when the policy had a fingerprint, *this code*; its freshness (*now*) is the
    certificate's and collateral's validity at the verification time. This step
    proves *this name*: the manifest the certificate carries is the one the
    enclave was launched with (whoever delivered it) and lists ``name`` among its
    names, so an operator that routes one app's name to another app's enclave is
    caught here. How the manifest is bound to the enclave:

    * its own measurement is the quote's MRENCLAVE (simulated TEE; a TD's RTMR3
      replays it): the binding holds with or without a pinned code;
    * otherwise, on SGX, the enclave measures something else, such as the Gramine
      manifest rendered from the launch manifest (ADR 0018). The carried manifest
      is then accepted only when ``code_pinned`` is true, i.e. the caller pinned
      MRENCLAVE to code it trusts (an explicit fingerprint matched, or it will
      require an owner's logged release of this MRENCLAVE: :func:`check_owner_release`
      must follow): that code is Confide's runtime, whose measured argv and fixed
      environment give it the launch manifest it refuses to run without
      (``confide runtime`` checks its computed manifest against the Gramine
      manifest's fixed copy), and the certificate carrying it is signed with the
      key the quote binds, so the enclave itself wrote this manifest. With
      ``code_pinned`` false (no pin: ``allow_any_code``) it is refused as
      ``launch.unpinned``; with ``None`` (the caller says nothing of a pin) as
      ``launch.measurement``.

    Raises :class:`PolicyError` ``launch.absent``, ``launch.measurement``,
    ``launch.unpinned`` or ``launch.name``, or :class:`FormatError` ``launch.format``.
    """
    raw = launch_manifest_bytes(cert)
    try:
        manifest = LaunchManifest.from_json(raw)
    except UsageError as exc:
        raise FormatError(
            "launch.format", "the launch manifest in the certificate is malformed", detail=str(exc)
        ) from None
    # The measurement of the bytes as carried: from_json accepts only canonical bytes.
    measured = manifest.measurement()
    quote = verified.quote
    if quote.tee == "tdx":  # a TD measures its launch into RTMR3 (ADR 0020)
        observed, expected = (quote.rtmrs or (None,) * 4)[3], launch_rtmr3(measured)
    else:
        observed, expected = quote.mr_enclave, measured
    pinned_sgx = bool(code_pinned) and quote.tee != "tdx" and observed is not None
    if manifest.to_json() != raw or (observed != expected and not pinned_sgx):
        if manifest.to_json() == raw and code_pinned is False and quote.tee != "tdx":
            raise PolicyError(
                "launch.unpinned",
                "the enclave's MRENCLAVE is not its launch manifest's own measurement (a Gramine "
                "enclave measures its Gramine manifest), and no code was pinned to vouch for it",
                observed=observed,
                expected=expected,
                hint="nothing was sent; give the owner's fingerprint (--fingerprint) or owner "
                "key (--owner)",
            )
        raise PolicyError(
            "launch.measurement",
            "the launch manifest in the certificate is not the one the enclave measured",
            observed=observed,
            expected=expected,
            hint="nothing was sent; the certificate's manifest was altered, or it is another "
            "launch's",
        )
    wanted = name.lower().rstrip(".")
    if wanted not in (san.lower() for san in manifest.san):
        raise PolicyError(
            "launch.name",
            f"the enclave was not launched for {name}",
            observed=list(manifest.san),
            expected=name,
            hint="nothing was sent; the operator routes this name to another app's enclave",
        )
    return manifest


def verify_enclave(
    cert: x509.Certificate, material: TrustMaterial, *, now: datetime, policy: EnclavePolicy
) -> VerifiedEnclave:
    """The pure core of :meth:`EnclaveVerifier.verify`: ``cert`` against ``material`` at ``now``.

    Verifies the quote (its fingerprint, when ``policy`` has one) and, when
    ``policy`` has a name, that the enclave was launched for it
    (:func:`verify_launch`). A fingerprint mismatch raises :class:`PolicyError`
    ``policy.mrenclave``, in the attestation core's words, or with
    ``policy.mismatch_hint`` as ``code fingerprint mismatch: expected ..., the
    enclave reports ...``.
    """
    try:
        verified = verify_ratls_certificate(
            cert,
            material.collateral,
            now=now,
            policy=policy.quote_policy(material, Quote.from_bytes(quote_from_certificate(cert))),
            trust_anchor=material.trust_anchor,
        )
    except PolicyError as exc:
        if exc.code != "policy.mrenclave" or policy.mismatch_hint is None or not policy.fingerprint:
            raise
        observed = exc.observed.hex() if isinstance(exc.observed, bytes) else str(exc.observed)
        err = PolicyError(
            "policy.mrenclave",
            f"code fingerprint mismatch: expected {policy.fingerprint.hex()}, "
            f"the enclave reports {observed}",
            hint=policy.mismatch_hint,
        )
        err.checks = exc.checks
        raise err from None
    if policy.name is None:
        return VerifiedEnclave(cert, verified, None, None)
    pinned = policy.fingerprint is not None or policy.owner is not None
    try:
        manifest = verify_launch(cert, verified, policy.name, code_pinned=pinned)
    except AttestationError as exc:
        exc.checks = verified.quote.checks
        raise
    check = Check("launch manifest measured, for this name", "passed", ", ".join(manifest.san))
    quote = dataclasses.replace(verified.quote, checks=(*verified.quote.checks, check))
    return VerifiedEnclave(cert, dataclasses.replace(verified, quote=quote), policy.name, manifest)


def enclave_tls_context(pinned: bytes | None = None) -> ssl.SSLContext:
    """The TLS client context of every connection to an enclave; ``pinned``: the DER it accepts.

    - TLS 1.2 at least: RFC 8996 deprecates TLS 1.0 and 1.1.
    - ``CERT_NONE`` and no hostname check: the enclave's certificate is
      self-signed, and its identity is not a name but the quote inside it,
      bound to its key. The one pinning technique is the exact DER of the
      verified certificate, compared right after the handshake (which proves
      the peer holds that certificate's key) and before any byte is sent: by
      this context when ``pinned`` is given (the handshake then fails with
      :class:`ssl.SSLCertVerificationError` on any other certificate), or by
      the proxy's :class:`~confide.client.CertificatePin` on each connection.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_COMPRESSION
    if pinned is not None:

        def check(peer: bytes | None) -> None:
            if peer != pinned:
                raise ssl.SSLCertVerificationError(
                    "the peer's certificate is not the verified enclave's"
                )

        class PinnedSocket(ssl.SSLSocket):  # blocking sockets (httpx's sync client)
            def do_handshake(self, block: bool = False) -> None:
                super().do_handshake(block)
                check(self.getpeercert(binary_form=True))

        class PinnedObject(ssl.SSLObject):  # memory BIOs (asyncio, anyio)
            def do_handshake(self) -> None:
                super().do_handshake()
                check(self.getpeercert(binary_form=True))

        context.sslsocket_class = PinnedSocket
        context.sslobject_class = PinnedObject
    return context


def pinned_client(
    address: HostPort, server_name: str, cert: x509.Certificate, *, timeout: float
) -> httpx.Client:
    """HTTPS to ``address`` with SNI and Host ``server_name``, to the enclave of ``cert`` only
    (:func:`enclave_tls_context` pinned to it)."""

    def sni(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = server_name

    host = f"[{address.host}]" if ":" in address.host else address.host
    return httpx.Client(
        base_url=f"https://{host}:{address.port}",
        headers={"Host": server_name},
        verify=enclave_tls_context(cert.public_bytes(Encoding.DER)),
        timeout=timeout,
        follow_redirects=False,
        event_hooks={"request": [sni]},
    )
