"""``confide fingerprint``: recompute the measurement of a launch, with no TEE.

The same inputs as ``confide runtime`` give the same fingerprint (ADR 0005).
The runtime code hash is the installed Confide's own unless given with
``--runtime-sha256`` (an operator running another release); a manifest read
with ``--manifest`` (from the operator's API or a context file) is recomputed,
and its runtime hash is accepted only when it is ours or given explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from confide.errors import UsageError
from confide.runtime import CodeSource, OwnerCertificate, launch_manifest, runtime_code_hash
from confide.wire import LaunchManifest

from ._app import app, handle_errors
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
from ._verify_options import JsonOpt, parse_hex, read_file

__all__ = ["fingerprint_command"]

MAX_MANIFEST_FILE = 64 * 1024


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
            help="Code hash of the Confide release the operator runs (default: this one's).",
            envvar="CONFIDE_RUNTIME_SHA256",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Print the fingerprint (MRENCLAVE) an enclave launched with these inputs must report."""
    own = runtime_code_hash()
    runtime = parse_hex(runtime_sha256, "--runtime-sha256", 32) or own
    if manifest is not None:
        result = _from_manifest(manifest, package, runtime, explicit=runtime_sha256 is not None)
    else:
        result = _from_options(
            app_id, application, package, app_dir, plaincode, ratls, certificate, no_ssl,
            tuple(san or ()), subject, runtime,
        )  # fmt: skip
    fingerprint = result.measurement().hex()
    out = Output(json_mode=json_)
    if json_:
        out.json({"fingerprint": fingerprint, "manifest": result.to_dict()})
        return
    out.out.print(fingerprint)
    if result.runtime_sha256 != own:
        out.warn("the runtime code hash is not this Confide's own: you vouch for that release")


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
    raw = read_file(path, "launch manifest")
    if len(raw) > MAX_MANIFEST_FILE:
        raise UsageError(f"{path} is larger than {MAX_MANIFEST_FILE} bytes")
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    # An operator's app record or a context file holds the manifest under "manifest".
    if isinstance(obj, dict) and isinstance(obj.get("manifest"), dict):
        obj = obj["manifest"]
    manifest = LaunchManifest.from_json(json.dumps(obj))
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
