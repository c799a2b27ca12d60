"""Deploying an app: package, upload, attest the enclave, then hand it the keys.

The owner never takes the operator's word for what runs. The steps of
:func:`deploy`:

0. check with the operator all that can be checked before anything is
   uploaded (:func:`check_before_upload`: the plan and its longest lifetime,
   a simulated TEE only when allowed, room for one more app);
1. lock the app's declared requirements (:func:`lock_for_deploy`: a committed
   ``requirements.lock`` is reused as is) and say what was locked; package and
   encrypt the code folder with a fresh key (never reused), and check it is
   within the operator's size limit;
2. upload it with the manifest asked for (:func:`requested_manifest`) and wait
   for the app to be ``initializing``. From here on, a failure (or Ctrl-C)
   stops the app created, so that it does not wait for a configuration that
   never comes;
3. check that the operator states exactly the manifest asked for
   (:func:`check_stated_manifest`: application, TLS mode, expiry, domain,
   certificate) and recompute the fingerprint here
   (:func:`expected_launch`) from this Confide's own runtime code hash and the
   package's own digest; when the operator launches with Gramine (its app record
   says ``tee: gramine`` and the enclave size and thread count it renders), the
   fingerprint is the MRENCLAVE predicted here with Gramine's own signer
   (:func:`gramine_fingerprint`, as ``confide fingerprint --tee gramine``);
4. fetch the configuration endpoint's RA-TLS certificate through the router
   and verify it with the one verifier (:class:`EnclaveVerifier`: that
   fingerprint, launched for that name):
   on any mismatch nothing is sent;
4b. sign the release (an in-toto statement in a DSSE envelope: the fingerprint,
   the launch manifest, a validity window) with the owner key and append it to
   the operator's transparency log; the answer's checkpoint and inclusion proof
   are verified here, so a statement not logged stops the deploy before the
   code key is sent (ADR 0019);
5. send the configuration over a connection pinned to that certificate: the
   code key sealed to the enclave's X25519 key (in its own field, never
   among the secrets the app reads), the app secrets, and in owner
   mode the certificate's private key; wait for ``running``;
6. write the app context (no secret) into the workspace.

Example::

    >>> from confide.client import OperatorClient, ProjectConfig, DeployOptions, deploy
    >>> config = ProjectConfig.load("confide.toml")  # doctest: +SKIP
    >>> with OperatorClient(url, token) as client:  # doctest: +SKIP
    ...     done = deploy(client, config, DeployOptions(tls=TlsMode.RATLS), events, pcs)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import httpx
from cryptography import x509

from confide.attestation import Quote, TdReference, quote_from_certificate
from confide.crypto import PackageInfo, PackageKey, encrypt_package, public_key_from_report_data
from confide.crypto import seal as seal_box
from confide.errors import Error, PolicyError, UsageError
from confide.release import OwnerKey, Release
from confide.runtime import CodeSource, OwnerCertificate, runtime_code_hash
from confide.wire import (
    BUILD,
    SDIST,
    AppStatus,
    HostPort,
    LaunchManifest,
    RequirementsLock,
    TlsMode,
    configuration_body,
)

from ._api import OperatorClient
from ._config import MAX_PEM_SIZE, MAX_SECRETS_SIZE, ProjectConfig
from ._context import AppContext
from ._releases import CheckpointStore, LoggedStatement, log_statement
from ._requirements import LockChoice, lock_for_deploy
from ._verify import (
    ChallengeClient,
    CollateralEvidence,
    CollateralSource,
    EnclavePolicy,
    EnclaveVerifier,
    SimulationEvidence,
    VerifiedEnclave,
    fetch_enclave_certificate,
    has_quote,
    pinned_client,
    refuse_simulation,
)

if TYPE_CHECKING:  # the API bodies are imported when used (they slow the CLI's start)
    from confide.wire.api import Account, AppRecord, DeployManifest

#: The workspace folder made beside the project file.
CONTEXT_FOLDER: Final = ".confide"
#: How long an app lives when the project file gives no expiration date (nor certificate).
DEFAULT_LIFETIME: Final = timedelta(days=30)
#: Seconds between two looks at the app's status after it changed (and after the first look).
POLL_INTERVAL: Final = 0.2
#: The wait doubles while the status stays the same, up to this (100 owners deploying at
#: once would otherwise ask the operator 500 times a second, issue 14).
POLL_INTERVAL_MAX: Final = 2.0
#: Seconds the operator may hold each look until the app changes (a long-poll; an operator
#: without them answers at once); at most half the network timeout.
LONG_POLL: Final = 10.0
#: How long a release statement is valid by default.
DEFAULT_RELEASE_VALIDITY: Final = timedelta(days=90)
#: A release statement's window starts this long before the deploy (users' clocks lag).
RELEASE_BACKDATE: Final = timedelta(hours=1)

_FAILED: Final = frozenset({AppStatus.ON_ERROR, AppStatus.STOPPED, AppStatus.EXPIRED})


class DeployEvents(Protocol):
    """What :func:`deploy` tells as it goes (the CLI prints it on stderr)."""

    def step(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def upload(self, sent: int, total: int) -> None: ...

    def status(self, status: AppStatus, detail: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class DeployOptions:
    tls: TlsMode
    #: Accept an enclave on a simulated TEE (its root from the operator): tests only.
    allow_simulation: bool = False
    #: MRTD and RTMR0-2 a TD must report (the operator's published guest image values);
    #: ``None``: only a simulated TD verifies (ADR 0020, 0022).
    td_reference: TdReference | None = None
    #: Send the configuration without attesting the enclave first.
    unsafe_skip_attestation: bool = False
    #: The router's address, instead of the one the operator states.
    connect: HostPort | None = None
    #: Seconds to wait for the app to reach each status.
    wait: float = 600.0
    #: Seconds each network call may take.
    timeout: float = 30.0
    #: Where the context file goes (default ``.confide`` beside the project file).
    workspace: Path | None = None
    #: The package index (PEP 503) the sdists in ``allow_sdists`` are taken from: the
    #: owner's pip index (``PIP_INDEX_URL``, read by the CLI); ``None``: PyPI's.
    index_url: str | None = None
    #: The owner key that signs the release statement logged before the code key is sent.
    owner_key: OwnerKey | None = None
    #: Deploy without signing and logging a release (users then cannot check it by owner key).
    unsafe_skip_release: bool = False
    #: How long the release statement is valid (at most ``confide.release.MAX_VALIDITY``).
    release_validity: timedelta = DEFAULT_RELEASE_VALIDITY
    #: The release's optional version label and source reference.
    release_version: str | None = None
    release_source: str | None = None
    #: The last checkpoints seen of each operator's log (``None``: not kept).
    logs: CheckpointStore | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployed, configured app, and what was proven about it."""

    record: AppRecord
    #: The launch manifest recomputed here; its measurement is the fingerprint.
    launch: LaunchManifest
    context: AppContext
    context_path: Path
    #: ``None`` only when attestation was skipped.
    verified: VerifiedEnclave | None
    server_name: str
    router: HostPort
    #: The enclave's configuration certificate (RA-TLS), as verified.
    certificate: x509.Certificate
    #: The signed release as logged (``None`` only with ``unsafe_skip_release``).
    release: LoggedStatement | None = None
    #: The predicted MRENCLAVE of a Gramine enclave (``None``: the launch's own measurement).
    gramine_mrenclave: bytes | None = None

    @property
    def fingerprint(self) -> bytes:
        """The MRENCLAVE verified: the Gramine prediction, or the launch's measurement."""
        return self.gramine_mrenclave or self.launch.measurement()


def choose_tls(config: ProjectConfig, *, untrusted_ssl: bool) -> TlsMode:
    """Zero trust by default; the owner's certificate with ``[cloud.ssl]``; else the operator's."""
    if untrusted_ssl:
        if config.ssl is not None:
            raise UsageError(
                "--untrusted-ssl and [cloud.ssl] exclude each other",
                hint="remove [cloud.ssl] from the project file, or drop --untrusted-ssl",
            )
        return TlsMode.OPERATOR
    return TlsMode.OWNER if config.ssl is not None else TlsMode.RATLS


def read_bounded(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path``, at most ``limit`` of them (more is a usage error)."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UsageError(f"the {what} {path} is larger than {limit} bytes")
    return data


def requested_manifest(config: ProjectConfig, tls: TlsMode, now: datetime) -> DeployManifest:
    """What is asked of the operator (whole seconds: the RA-TLS expiry is in seconds)."""
    from confide.wire.api import DeployManifest

    expires = config.cloud.expiration_date or (now + DEFAULT_LIFETIME)
    expires = expires.astimezone(UTC).replace(microsecond=0)
    domain = certificate = None
    if tls == TlsMode.OWNER:
        ssl = config.ssl
        if ssl is None:
            raise UsageError("owner TLS needs [cloud.ssl] in the project file")
        domain = ssl.domain_name
        certificate = read_bounded(ssl.certificate, "certificate", MAX_PEM_SIZE).decode("ascii")
    return DeployManifest(
        name=config.name,
        application=config.python_application,
        plan=config.cloud.hardware,
        expires_at=expires,
        tls=tls,
        project=config.cloud.project,
        healthcheck=config.healthcheck_endpoint,
        domain=domain,
        certificate=certificate,
    )


def check_before_upload(
    client: OperatorClient, asked: DeployManifest, options: DeployOptions, *, now: datetime
) -> Account:
    """Refuse, before anything is uploaded, a deployment the operator would refuse or that
    this deploy would abandon after the upload; the account (its package size limit).

    The manifest's own fields (name, application, health check, sizes, TLS options) were
    checked with the operator's definitions when the project file was loaded and ``asked``
    was built (a past expiry too). Checks here: the plan exists and allows the expiry
    asked for; a simulated TEE is accepted only with ``allow_simulation`` (or with
    attestation skipped, which takes the enclave on trust anyway); the account has room
    for one more app.
    The TLS mode's own inputs (certificate, key, domain) were checked when the
    project file was loaded.
    """
    plans = {p.name: p for p in client.plans()}
    plan = plans.get(asked.plan)
    if plan is None:
        raise UsageError(
            f"the operator has no plan {asked.plan!r}: its plans are {', '.join(sorted(plans))}",
            hint="set [cloud] hardware in the project file to one of them; nothing was uploaded",
        )
    if plan.max_lifetime_days is not None:
        latest = now + timedelta(days=plan.max_lifetime_days)
        if asked.expires_at > latest:
            raise UsageError(
                f"the app would expire at {asked.expires_at.isoformat()}, but plan {plan.name} "
                f"allows at most {plan.max_lifetime_days} days (until {latest.isoformat()})",
                hint="set an earlier [cloud] expiration_date; nothing was uploaded",
            )
    simulated = client.simulation() is not None
    if simulated and not options.allow_simulation and not options.unsafe_skip_attestation:
        raise refuse_simulation(
            "nothing was uploaded; --allow-simulation deploys on it (tests only)"
        )
    account = client.me()
    if account.apps >= account.max_apps:
        raise UsageError(
            f"the account {account.account} has {account.apps} apps, the most it may have "
            f"({account.max_apps})",
            hint="delete one first (confide app delete); nothing was uploaded",
        )
    return account


def package_code(code_dir: Path, out: Path) -> tuple[PackageKey, PackageInfo]:
    """Encrypt ``code_dir`` into ``out`` under a key made for this package alone."""
    key = PackageKey.generate()
    try:
        with out.open("xb") as f:
            info = encrypt_package(code_dir, f, key)
    except OSError as exc:
        raise UsageError(f"cannot write the package {out}: {exc.strerror or exc}") from None
    return key, info


def _owner_certificate(asked: DeployManifest) -> OwnerCertificate | None:
    if asked.certificate is None:
        return None
    return OwnerCertificate.from_pem(asked.certificate.encode("ascii"), "the certificate")


def server_name(record: AppRecord, asked: DeployManifest) -> str:
    """The name the enclave answers to: the owner's domain (its only SAN), else the app's."""
    return asked.domain if asked.tls == TlsMode.OWNER and asked.domain else record.domains[0]


def check_stated_manifest(
    record: AppRecord, asked: DeployManifest, requirements_sha256: bytes | None = None
) -> None:
    """Refuse an app whose stated manifest is not exactly what was asked for (with the
    requirements lock whose SHA-256 is ``requirements_sha256``, or none)."""
    launch = record.launch
    cert = _owner_certificate(asked)
    ratls_expiry = int(asked.expires_at.timestamp()) if asked.tls == TlsMode.RATLS else None
    expected: list[tuple[str, object, object]] = [
        ("application", record.application, asked.application),
        ("launch application", launch.application, asked.application),
        ("tls", record.tls.value, asked.tls.value),
        ("launch tls", launch.tls.launch, asked.tls.launch),
        ("expires_at", record.expires_at.timestamp(), asked.expires_at.timestamp()),
        ("ratls_expiry", launch.ratls_expiry, ratls_expiry),
        ("domain", record.domain, asked.domain),
        (
            "certificate_sha256",
            launch.certificate_sha256.hex() if launch.certificate_sha256 else None,
            cert.sha256.hex() if cert is not None else None,
        ),
        (
            "requirements_sha256",
            launch.requirements_sha256.hex() if launch.requirements_sha256 else None,
            requirements_sha256.hex() if requirements_sha256 is not None else None,
        ),
    ]
    for name, observed, wanted in expected:
        if observed != wanted:
            raise PolicyError(
                "deploy.manifest",
                f"the operator states {name} {observed!r}, but {wanted!r} was asked for",
                hint="nothing was sent to the enclave, and deploy stopped the app it created",
            )
    name = server_name(record, asked)
    if name not in launch.san:
        raise PolicyError(
            "deploy.manifest",
            f"the enclave's certificate would not name {name}: SANs {', '.join(launch.san)}",
            hint="nothing was sent to the enclave, and deploy stopped the app it created",
        )


def expected_launch(
    record: AppRecord,
    asked: DeployManifest,
    package: Path,
    package_digest: bytes,
    runtime_sha256: bytes,
    requirements_sha256: bytes | None = None,
) -> LaunchManifest:
    """The launch manifest recomputed here: our runtime hash, package digest and lock
    digest, the operator's app id, SANs and subject (checked by
    :func:`check_stated_manifest`)."""
    cert = _owner_certificate(asked)
    return LaunchManifest.for_app(
        app_id=record.id,
        application=asked.application,
        tls=asked.tls,
        expires_at=asked.expires_at,
        certificate_sha256=cert.sha256 if cert is not None else None,
        san=record.launch.san,
        subject=record.launch.subject,
        package_sha256=package_digest,
        runtime_sha256=runtime_sha256,
        requirements_sha256=requirements_sha256,
    )


def announce_lock(choice: LockChoice, events: DeployEvents) -> None:
    """Say which requirement set was used and every wheel locked (one line each)."""
    lock = choice.lock
    how = "reused as is" if choice.reused else "written"
    events.step(
        f"requirements: {choice.declared.description}, locked in {choice.path} ({how}): "
        f"{len(lock.requirements)} wheel(s) for Python {lock.python} on {lock.platform}, "
        f"lock sha256 {lock.digest().hex()}"
    )
    for r in lock.requirements:
        if r.kind == SDIST:
            events.step(
                f"  locked {r.pin} sha256:{r.sha256.hex()} as a SOURCE DISTRIBUTION: its build "
                "code will run in the enclave (allowed by allow_sdists)"
            )
        elif r.kind == BUILD:
            events.step(f"  locked {r.pin} sha256:{r.sha256.hex()} (build-only: a build backend)")
        else:
            events.step(f"  locked {r.pin} sha256:{r.sha256.hex()}")
    if lock.allow_sdists:
        events.step(
            f"  build code will run in the enclave: {', '.join(lock.allow_sdists)} "
            "(allow_sdists) are built from source there, with the locked build backends; "
            "the fingerprint covers their sdists and backends, not the wheels they build"
        )


def _runtime_distributions() -> tuple[str, ...]:
    from confide.gramine import runtime_environment

    return runtime_environment().distributions


#: The operator's ``tee`` when it launches enclaves with Gramine (``AppRecord.tee``).
GRAMINE_TEE: Final = "gramine"


def throwaway_sgx_signer() -> bytes:
    """A fresh SGX signing key (RSA-3072, exponent 3: the SIGSTRUCT's) in PEM, to predict a
    MRENCLAVE with ``gramine-sgx-sign`` (MRENCLAVE does not depend on the signer)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def gramine_fingerprint(
    record: AppRecord,
    launch: LaunchManifest,
    asked: DeployManifest,
    folder: Path,
    lock: RequirementsLock | None = None,
) -> tuple[bytes, tuple[str, int]]:
    """MRENCLAVE of the Gramine enclave the operator launches for ``launch``, predicted here
    from public inputs only (the launch manifest recomputed here, this machine's runtime
    environment, the enclave size and thread count the operator says it renders) with
    Gramine's signer on PATH; and that size and count. A wrong size or count stated by the
    operator only makes the prediction differ from the quote: the deploy then fails closed."""
    from confide.gramine import predict_app_mrenclave, runtime_environment

    shape = record.gramine
    if shape is None:
        raise PolicyError(
            "deploy.gramine",
            "the operator launches with Gramine but does not say the enclave size and thread "
            "count it renders, so its MRENCLAVE cannot be predicted",
            hint="nothing was sent to the enclave, and deploy stopped the app it created",
        )
    certificate = None
    if asked.certificate is not None:
        certificate = folder / "owner-certificate.pem"
        certificate.write_text(asked.certificate, encoding="ascii")
    mrenclave = predict_app_mrenclave(
        launch,
        runtime_environment(),
        enclave_size=shape.enclave_size,
        max_threads=shape.max_threads,
        signer_pem=throwaway_sgx_signer(),
        certificate=certificate,
        lock=lock,
    )
    return mrenclave, (shape.enclave_size, shape.max_threads)


def configuration_payload(
    record: AppRecord,
    key: PackageKey,
    enclave_public_key: bytes,
    *,
    app_secrets: dict[str, Any] | None,
    ssl_private_key: str | None,
) -> dict[str, Any]:
    """The runtime's configuration body.

    The code key travels only sealed to the enclave's X25519 key, in its own
    field (``sealed_code_secret_key``): never among the sealed secrets the app
    reads (ADR 0011).
    """
    return configuration_body(
        record.id,
        sealed_code_secret_key=seal_box(key.hex().encode("ascii"), enclave_public_key),
        app_secrets=app_secrets,
        ssl_private_key=ssl_private_key,
    )


def poll_interval(unchanged: int) -> float:
    """Seconds to wait before the next look, after ``unchanged`` looks that saw no change:
    :data:`POLL_INTERVAL` doubling up to :data:`POLL_INTERVAL_MAX`."""
    return min(POLL_INTERVAL * float(2 ** min(unchanged, 16)), POLL_INTERVAL_MAX)


def _wait_for(
    client: OperatorClient,
    record: AppRecord,
    target: AppStatus,
    events: DeployEvents,
    wait: float,
    *,
    long_poll: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> AppRecord:
    deadline = time.monotonic() + wait
    last: tuple[AppStatus, str | None] | None = None
    unchanged = 0
    while True:
        if (record.status, record.status_detail) != last:
            last = (record.status, record.status_detail)
            events.status(record.status, record.status_detail)
            unchanged = 0
        else:
            unchanged += 1
        if record.status == target:
            return record
        if record.status in _FAILED or record.delete_requested:
            detail = f": {record.status_detail}" if record.status_detail else ""
            raise UsageError(
                f"the app {record.id} is {record.status.value}{detail}",
                hint=f"see its output with `confide logs {record.id}`",
            )
        if time.monotonic() > deadline:
            raise UsageError(
                f"the app {record.id} is still {record.status.value} after {wait:.0f} s, "
                f"expected {target.value}",
                hint="raise --timeout, or look at `confide logs`",
            )
        sleep(poll_interval(unchanged))
        held = min(long_poll, max(deadline - time.monotonic(), 0.0))
        record = client.get_app(record.id, wait=held, seen=record.updated_at)


def _secrets(config: ProjectConfig) -> dict[str, Any] | None:
    if config.cloud.secrets is None:
        return None
    raw = read_bounded(config.cloud.secrets, "secrets file", MAX_SECRETS_SIZE)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"the secrets file {config.cloud.secrets} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"the secrets file {config.cloud.secrets} is not a JSON object")
    return value


class _StopOnFailure:
    """Stop the app created (if any) when the deployment fails after the upload."""

    def __init__(self, client: OperatorClient, events: DeployEvents) -> None:
        self._client = client
        self._events = events
        self.app: AppRecord | None = None

    def __enter__(self) -> _StopOnFailure:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self.app is None or kind is None:
            return
        if not issubclass(kind, Exception | KeyboardInterrupt):
            return
        try:
            self._client.stop_app(self.app.id)
        except Error as exc:
            self._events.warn(f"the app {self.app.id} could not be stopped: {exc}")
            return
        self._events.warn(f"the deployment failed: the app {self.app.id} was stopped")


def _log_release(
    client: OperatorClient,
    launch: LaunchManifest,
    options: DeployOptions,
    events: DeployEvents,
    now: datetime,
    gramine: tuple[bytes, str, int] | None = None,
) -> LoggedStatement:
    """Sign the release of ``launch`` with the owner key and check the operator logged it;
    ``gramine``: (MRENCLAVE, enclave size, threads) of a Gramine enclave, the fingerprint
    signed over (what users check)."""
    if options.owner_key is None:  # pragma: no cover - deploy() refused it first
        raise UsageError("no owner key")
    release = Release.of(
        launch,
        not_before=now - RELEASE_BACKDATE,
        validity=options.release_validity,
        version=options.release_version,
        source_ref=options.release_source,
        gramine=gramine,
    )
    owner = options.owner_key.public_key
    envelope = release.sign(options.owner_key).to_json()
    events.step(f"signing the release with owner key {owner.key_id} and logging it")
    logged = log_statement(client, envelope, owner, store=options.logs)
    events.step(
        f"release logged at index {logged.index} (log {logged.checkpoint.origin}, "
        f"size {logged.checkpoint.size}), valid until {release.not_after.isoformat()}"
    )
    return logged


def _save_context(context: AppContext, folder: Path) -> Path:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the workspace {folder}: {exc.strerror or exc}") from None
    path = folder / f"{context.app_id}.json"
    context.save(path)
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot protect {path}: {exc.strerror or exc}") from None
    return path


def deploy(
    client: OperatorClient,
    config: ProjectConfig,
    options: DeployOptions,
    events: DeployEvents,
    collateral: CollateralSource,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    runtime_sha256: bytes | None = None,
) -> Deployment:
    """Run the whole deployment (see the module's description); raise on any failure.

    ``collateral`` fetches the collateral of a real TEE's quote (Intel PCS);
    ``runtime_sha256`` defaults to this Confide's own code hash, never the operator's.
    """
    if options.owner_key is None and not options.unsafe_skip_release:
        raise UsageError(
            "no owner key: the release would not be signed nor logged",
            hint="give an owner key (confide keys create), or skip the release explicitly",
        )
    ours = runtime_sha256 if runtime_sha256 is not None else runtime_code_hash()
    asked = requested_manifest(config, options.tls, clock())
    secrets = _secrets(config)
    ssl_key = None
    if options.tls == TlsMode.OWNER and config.ssl is not None:
        ssl_key = read_bounded(config.ssl.private_key, "private key", MAX_PEM_SIZE).decode("ascii")

    account = check_before_upload(client, asked, options, now=clock())
    choice = lock_for_deploy(config, provided=_runtime_distributions, index_url=options.index_url)
    if choice is not None:
        announce_lock(choice, events)
    # A lock of nothing (the runtime environment has every requirement): no lock launched.
    lock = choice.lock if choice is not None and choice.lock.requirements else None

    with (
        tempfile.TemporaryDirectory(prefix="confide-deploy-") as tmp,
        _StopOnFailure(client, events) as created,
    ):
        package = Path(tmp) / f"{config.name}.pkg"
        events.step(f"packaging and encrypting {config.cloud.code} with a fresh key")
        key, info = package_code(config.cloud.code, package)
        events.step(
            f"package: {info.size} bytes, {info.archive.entries} entries, "
            f"sha256 {info.digest.hex()}"
        )
        if info.size > account.max_package_size:
            raise UsageError(
                f"the package is {info.size} bytes, more than the operator's limit of "
                f"{account.max_package_size}",
                hint="leave out what the app does not need (.confideignore); nothing was uploaded",
            )
        events.step(f"uploading to {client.base_url}")
        record = created.app = client.create_app(
            package,
            asked,
            progress=events.upload,
            requirements=lock.to_bytes() if lock is not None else None,
        )
        events.step(f"app {record.id} created")
        long_poll = min(LONG_POLL, options.timeout / 2)
        record = _wait_for(
            client, record, AppStatus.INITIALIZING, events, options.wait, long_poll=long_poll
        )

        locked = lock.digest() if lock is not None else None
        check_stated_manifest(record, asked, locked)
        launch = expected_launch(record, asked, package, info.digest, ours, locked)
        fingerprint = launch.measurement()
        gramine: tuple[bytes, str, int] | None = None
        if record.tee == GRAMINE_TEE:
            events.step("predicting the Gramine enclave's MRENCLAVE with gramine-sgx-sign")
            fingerprint, (size, threads) = gramine_fingerprint(
                record, launch, asked, Path(tmp), lock
            )
            gramine = (fingerprint, size, threads)
        events.step(f"expected fingerprint (recomputed here): {fingerprint.hex()}")
        if launch.runtime_sha256 != record.launch.runtime_sha256:
            events.warn(
                "the operator states another runtime "
                f"({record.launch.runtime_sha256.hex()}) than this Confide's "
                f"({ours.hex()}): the enclave must prove it runs this Confide's"
            )

        router = options.connect or record.router
        name = server_name(record, asked)
        events.step(f"fetching the enclave's RA-TLS certificate from {router} as {name}")
        cert = fetch_enclave_certificate(router, name, timeout=options.timeout)
        verified: VerifiedEnclave | None = None
        if options.unsafe_skip_attestation:
            events.warn(
                "--no-verify: the enclave is NOT attested: its code, its TEE and its key are "
                "taken on trust, and the code key is sent to whatever answers"
            )
            if not has_quote(cert):
                raise PolicyError(
                    "ratls.absent", f"{name} serves no RA-TLS certificate: no key to seal to"
                )
        else:
            verified = EnclaveVerifier(
                SimulationEvidence(client.simulation, real=CollateralEvidence(collateral)),
                EnclavePolicy(
                    fingerprint,
                    name,
                    allow_simulation=options.allow_simulation,
                    mismatch_hint="nothing was sent; the operator runs other code than yours",
                    td_reference=options.td_reference,
                ),
                clock=clock,
                # The enclave answers a nonce now, on a connection pinned to it (ADR 0021).
                fresh=ChallengeClient(router, name, timeout=options.timeout),
            ).verify(cert)
            events.step(
                f"enclave verified: fingerprint {fingerprint.hex()}"
                + (" (SIMULATED TEE)" if verified.quote.simulated else "")
            )
        logged: LoggedStatement | None = None
        if options.owner_key is not None:
            logged = _log_release(client, launch, options, events, clock(), gramine)
        else:
            events.warn("unsafe_skip_release: no release statement is signed nor logged")
        report_data = Quote.from_bytes(quote_from_certificate(cert)).report_data
        payload = configuration_payload(
            record,
            key,
            public_key_from_report_data(report_data),
            app_secrets=secrets,
            ssl_private_key=ssl_key,
        )
        del key
        events.step("sending the configuration over the verified channel")
        with pinned_client(router, name, cert, timeout=options.timeout) as channel:
            try:
                response = channel.post("/", json=payload)
            except httpx.HTTPError as exc:
                raise UsageError(f"sending the configuration to {name} failed: {exc}") from None
        if response.status_code != 200:
            raise UsageError(
                f"the enclave refused the configuration ({response.status_code}): "
                f"{response.text[:200].strip()}"
            )
        record = _wait_for(
            client,
            client.get_app(record.id),
            AppStatus.RUNNING,
            events,
            options.wait,
            long_poll=long_poll,
        )

    context = AppContext(
        app_id=record.id,
        name=record.name,
        project=record.project,
        operator_url=client.base_url,
        domains=record.domains,
        router=record.router,
        tls=record.tls,
        tee=record.tee,
        expires_at=record.expires_at,
        launch=launch,
        code_sha256=CodeSource.plaintext_folder(config.cloud.code).digest,
        gramine_mrenclave=gramine[0] if gramine is not None else None,
    )
    workspace = options.workspace or config.path.parent / CONTEXT_FOLDER
    path = _save_context(context, workspace)
    return Deployment(
        record=record,
        launch=launch,
        context=context,
        context_path=path,
        verified=verified,
        server_name=name,
        router=router,
        certificate=cert,
        release=logged,
        gramine_mrenclave=gramine[0] if gramine is not None else None,
    )
