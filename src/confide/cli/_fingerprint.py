"""``confide fingerprint``: recompute the measurement of a launch, with no TEE.

The same inputs as ``confide runtime`` give the same fingerprint (ADR 0005).
The runtime code hash is the digest of this machine's runtime environment
(ADR 0017: interpreter, standard library, Confide and its dependencies) unless
given with ``--runtime-sha256`` (an operator running another environment); a
manifest read with ``--manifest`` (from the operator's API or a context file) is
recomputed, and its runtime hash is accepted only when it is ours or given
explicitly. ``--requirements`` names the app's requirements lock (ADR 0024): its
SHA-256 is measured; with ``--manifest`` it is checked against the manifest's.

``--tee simulation`` (the default) prints the simulated TEE's measurement of the
launch manifest. ``--tee gramine`` renders the Gramine manifest of the launch in
this environment and predicts its MRENCLAVE with Gramine's own
``gramine-sgx-sign`` and ``gramine-sgx-sigstruct-view``; where they are not on
PATH it says which are missing, in one line, and exits 2.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import typer

from confide.client import throwaway_sgx_signer
from confide.errors import UsageError
from confide.gramine import (
    DEFAULT_ENCLAVE_SIZE,
    DEFAULT_MAX_THREADS,
    predict_app_mrenclave,
    runtime_environment,
)
from confide.runtime import (
    CodeSource,
    OwnerCertificate,
    launch_manifest,
    read_lock,
    runtime_code_hash,
)
from confide.wire import LaunchManifest, TlsMode

from ._app import app, handle_errors
from ._gramine import (
    EnclaveSizeOpt,
    MaxThreadsOpt,
    RequirementOpt,
    read_launch_manifest,
)
from ._launch_options import (
    AppDirOpt,
    CertificateOpt,
    NoSslOpt,
    PackageOpt,
    PlaincodeOpt,
    RatlsOpt,
    SanOpt,
    SubjectOpt,
    parse_app_id,
)
from ._output import Output
from ._tdx import TdReferenceOpt, load_td_reference, print_td_registers
from ._verify_options import JsonOpt, parse_hex


@app.command("fingerprint")
@handle_errors
def fingerprint_command(
    ctx: typer.Context,
    app_id: Annotated[str | None, typer.Option("--app-id", help="The app's UUID.")] = None,
    application: Annotated[
        str | None, typer.Option("--application", help="The app, module:attribute.")
    ] = None,
    package: PackageOpt = None,
    app_dir: AppDirOpt = None,
    plaincode: PlaincodeOpt = False,
    ratls: RatlsOpt = None,
    certificate: CertificateOpt = None,
    no_ssl: NoSslOpt = False,
    san: SanOpt = None,
    subject: SubjectOpt = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="Recompute a launch manifest (JSON) instead of building one from options; "
            "with --package, its package digest is checked against the file.",
        ),
    ] = None,
    runtime_sha256: Annotated[
        str | None,
        typer.Option(
            "--runtime-sha256",
            help="Digest of the runtime environment the operator runs (default: this "
            "machine's: interpreter, standard library, Confide and its dependencies).",
            envvar="CONFIDE_RUNTIME_SHA256",
        ),
    ] = None,
    tee: Annotated[
        Literal["simulation", "gramine", "tdx"],
        typer.Option(
            "--tee",
            help="simulation: the simulated TEE's measurement; gramine: predict MRENCLAVE "
            "with gramine-sgx-sign and gramine-sgx-sigstruct-view (Gramine installed); "
            "tdx: MRTD and RTMR0-2 of the guest image, RTMR3 of this launch.",
        ),
    ] = "simulation",
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements",
            help="The app's requirements lock (requirements.lock, as confide deploy wrote "
            "it): its SHA-256 is measured.",
        ),
    ] = None,
    requirement: RequirementOpt = None,
    enclave_size: EnclaveSizeOpt = DEFAULT_ENCLAVE_SIZE,
    max_threads: MaxThreadsOpt = DEFAULT_MAX_THREADS,
    td_reference: TdReferenceOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print the fingerprint (MRENCLAVE) an enclave launched with these inputs must report."""
    own = runtime_code_hash()
    runtime = parse_hex(runtime_sha256, "--runtime-sha256", 32) or own
    lock = read_lock(requirements) if requirements is not None else None
    if manifest is not None:
        result = _from_manifest(manifest, package, runtime, explicit=runtime_sha256 is not None)
        locked = lock.digest() if lock is not None else None
        if requirements is not None and result.requirements_sha256 != locked:
            stated = result.requirements_sha256.hex() if result.requirements_sha256 else "none"
            raise UsageError(
                f"requirements lock mismatch: the manifest says {stated}, "
                f"{requirements} is {locked.hex() if locked else 'none'}"
            )
    else:
        result = _from_options(
            app_id, application, package, app_dir, plaincode, ratls, certificate, no_ssl,
            tuple(san or ()), subject, runtime,
        )  # fmt: skip
        if lock is not None:
            result = dataclasses.replace(result, requirements_sha256=lock.digest())
    if tee == "tdx":
        if requirement:
            raise UsageError("--requirement is for --tee gramine")
        print_td_registers(result, json_mode=json_, image=load_td_reference(td_reference))
        return
    if td_reference is not None:
        raise UsageError("--td-reference is for --tee tdx")
    if tee == "gramine":
        if result.requirements_sha256 is not None and lock is None:
            raise UsageError(
                "the launch has locked requirements: give their lock with --requirements "
                "(Gramine trusts the lock and each of its wheels)"
            )
        if result.tls == TlsMode.OWNER and certificate is None:
            raise UsageError("give --certificate: a certificate-mode enclave trusts that file")
        if runtime_sha256 is not None:
            raise UsageError(
                "--runtime-sha256 cannot predict a Gramine MRENCLAVE: Gramine hashes every "
                "file, so run this in the operator's runtime image instead"
            )
        # The same prediction as ``confide deploy`` makes against a Gramine operator.
        fingerprint = predict_app_mrenclave(
            result,
            runtime_environment(tuple(requirement or ())),
            enclave_size=enclave_size,
            max_threads=max_threads,
            signer_pem=throwaway_sgx_signer(),
            certificate=certificate,
            lock=lock,
        ).hex()
    else:
        if requirement:
            raise UsageError("--requirement is for --tee gramine (the simulated runtime "
                             "measures Confide's own requirements)")  # fmt: skip
        fingerprint = result.measurement().hex()
    out = Output(json_mode=json_)
    if json_:
        out.json({"fingerprint": fingerprint, "tee": tee, "manifest": result.to_dict()})
        return
    out.out.print(fingerprint)
    if result.runtime_sha256 != own:
        out.warn(
            "the runtime environment's digest is not this machine's own: you vouch for that "
            "environment (its Python, Confide and dependencies)"
        )


def _from_options(
    app_id: str | None,
    application: str | None,
    package: Path | None,
    app_dir: Path | None,
    plaincode: bool,
    ratls: int | None,
    certificate: Path | None,
    no_ssl: bool,
    san: tuple[str, ...],
    subject: str | None,
    runtime: bytes,
) -> LaunchManifest:
    if app_id is None or application is None:
        raise UsageError("give --app-id and --application (or --manifest FILE)")
    if sum((ratls is not None, certificate is not None, no_ssl)) != 1:
        raise UsageError("give exactly one of --ratls EXPIRY, --certificate PEM or --no-ssl")
    if package is not None and app_dir is None and not plaincode:
        code = CodeSource.encrypted(package)
    elif app_dir is not None and package is None and plaincode:
        code = CodeSource.plaintext_folder(app_dir)
    else:
        raise UsageError("give exactly one of --package PATH or --app-dir DIR --plaincode")
    return launch_manifest(
        app_id=parse_app_id(app_id),
        application=application,
        code=code,
        ratls_expiry=ratls,
        certificate=OwnerCertificate.read(certificate) if certificate is not None else None,
        san=san,
        subject=subject,
        runtime_sha256=runtime,
    )


def _from_manifest(
    path: Path, package: Path | None, runtime: bytes, *, explicit: bool
) -> LaunchManifest:
    manifest = read_launch_manifest(path)
    if manifest.runtime_sha256 != runtime:
        raise UsageError(
            f"the manifest's runtime code hash {manifest.runtime_sha256.hex()} is not "
            + ("the one given with --runtime-sha256" if explicit else "this Confide's own")
            + f" ({runtime.hex()})",
            hint="install the release the operator runs, or pass its hash with "
            "--runtime-sha256 if you have checked that release yourself",
        )
    if package is not None:
        digest = CodeSource.encrypted(package).digest
        if digest != manifest.package_sha256:
            raise UsageError(
                f"package digest mismatch: the manifest says {manifest.package_sha256.hex()}, "
                f"{package} hashes to {digest.hex()}"
            )
    return manifest
