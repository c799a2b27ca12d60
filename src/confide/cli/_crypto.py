"""``confide package``, ``confide seal`` and ``confide unseal``: code packages and sealed boxes.

Exit codes: 0 done; 1 the input was rejected (wrong key, a package or sealed
box that was altered or truncated, an archive entry that would escape its
directory, an RA-TLS certificate that does not verify); 2 the command could
not run (bad argument, unreadable file, output already there).

Keys are never printed, unless ``--show-key`` asks for the package key.

Example::

    $ confide package encrypt ./app --out app.pkg --key-out app.key
    $ confide package decrypt app.pkg --key-file app.key --out ./app-copy
    $ confide seal secrets.json --public-key 3f1c...e2 --out secrets.json.sealed
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Final, ParamSpec, TypeVar

import typer

from confide.client import EnclavePolicy, EnclaveVerifier, read_bounded
from confide.crypto import (
    KEY_FILE_MAX_SIZE,
    MAX_SEALED_SIZE,
    SEAL_OVERHEAD,
    X25519_KEY_SIZE,
    PackageKey,
    X25519KeyPair,
    decrypt_package,
    encrypt_package,
    package_digest,
    public_key_from_report_data,
    seal,
    unseal,
)
from confide.errors import UsageError

from ._app import app, handle_errors
from ._output import Output
from ._verify_options import (
    AcceptOpt,
    AtOpt,
    CollateralOpt,
    DebugEnclaveOpt,
    JsonOpt,
    MrenclaveOpt,
    MrsignerOpt,
    PccsOpt,
    RootOpt,
    SimOpt,
    build_policy,
    evidence_source,
    load_certificate,
    parse_hex,
    verification_time,
)

P = ParamSpec("P")
R = TypeVar("R")

#: Largest RA-TLS certificate file read.
_MAX_CERT_FILE: Final = 64 * 1024

package_app = typer.Typer(
    help=(
        "Encrypt an app folder into a code package, or open one "
        "(exit 0 done, 1 rejected: wrong key, altered or unsafe package, 2 unusable)."
    ),
    no_args_is_help=True,
)
app.add_typer(package_app, name="package")


# -- files -----------------------------------------------------------------------------------


@contextmanager
def _atomic_output(path: Path, *, mode: int, force: bool) -> Iterator[IO[bytes]]:
    """A file that appears at ``path`` (with ``mode``) only if the block succeeds."""
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"{path} already exists; pass --force to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise UsageError(f"cannot write in {parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)
            yield f
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def _write_new_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; never replaces an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists; a key file is never replaced", hint="give a new path"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)
        f.write(data)


def _package_key(path: Path) -> PackageKey:
    return PackageKey.from_file_bytes(read_bounded(path, "key file", KEY_FILE_MAX_SIZE))


# -- package ---------------------------------------------------------------------------------

KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="The package key: 32 bytes, raw or in hex (as Cosmian's code_secret_key).",
        envvar="CONFIDE_PACKAGE_KEY_FILE",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]


@package_app.command("encrypt")
@handle_errors
def package_encrypt(
    ctx: typer.Context,
    app_dir: Annotated[Path, typer.Argument(help="The app folder to package.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the encrypted package.")],
    key_file: KeyFileOpt = None,
    key_out: Annotated[
        Path | None,
        typer.Option(
            "--key-out",
            help="Generate a fresh key and write it here in hex (mode 0600, never replaced).",
        ),
    ] = None,
    show_key: Annotated[
        bool, typer.Option("--show-key", help="Also print the package key (a secret) on stdout.")
    ] = False,
    force: ForceOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Archive APP_DIR (honouring .confideignore / .mseignore) and encrypt it; print its SHA-256."""
    output = Output(json_mode=json_)
    if (key_file is None) == (key_out is None):
        raise UsageError(
            "give exactly one of --key-file FILE (a key) or --key-out FILE (a new key)"
        )
    if not app_dir.is_dir():
        raise UsageError(f"{app_dir} is not a directory")
    if key_file is not None:
        key = _package_key(key_file)
    else:
        key = PackageKey.generate()
    created_key = False
    try:
        with _atomic_output(out, mode=0o644, force=force) as f:
            if key_out is not None:
                _write_new_secret(key_out, (key.hex() + "\n").encode("ascii"))
                created_key = True
            info = encrypt_package(app_dir, f, key)
    except BaseException:
        if created_key and key_out is not None:
            key_out.unlink(missing_ok=True)
        raise
    result: dict[str, object] = {
        "package": str(out),
        "sha256": info.digest_hex,
        "size": info.size,
        "files": info.archive.files,
        "directories": info.archive.directories,
        "content_bytes": info.archive.total_size,
    }
    if key_out is not None:
        result["key_file"] = str(key_out)
    if show_key:
        result["key"] = key.hex()
    if json_:
        output.json(result)
        return
    output.out.print(f"sha256 {info.digest_hex}")
    if show_key:
        output.out.print(f"key    {key.hex()}")
    output.info(
        f"wrote {out}: {info.size} bytes, {info.archive.files} files, "
        f"{info.archive.directories} directories"
        + (f"; new key in {key_out}" if key_out is not None else "")
    )


@package_app.command("decrypt")
@handle_errors
def package_decrypt(
    ctx: typer.Context,
    package: Annotated[Path, typer.Argument(help="The encrypted package.")],
    out: Annotated[
        Path, typer.Option("--out", help="Directory to extract into; it must not exist.")
    ],
    key_file: KeyFileOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Authenticate, decrypt and extract PACKAGE into a new directory (no plaintext on disk)."""
    output = Output(json_mode=json_)
    if key_file is None:
        raise UsageError("give the package key with --key-file FILE")
    key = _package_key(key_file)
    try:
        with package.open("rb") as f:
            summary = decrypt_package(f, out, key)
    except OSError as exc:
        raise UsageError(f"cannot read the package {package}: {exc.strerror or exc}") from None
    if json_:
        output.json(
            {
                "out": str(out),
                "files": summary.files,
                "directories": summary.directories,
                "content_bytes": summary.total_size,
            }
        )
        return
    output.out.print(
        f"extracted {summary.files} files, {summary.directories} directories "
        f"({summary.total_size} bytes) into {out}"
    )


@package_app.command("digest")
@handle_errors
def package_digest_cmd(
    package: Annotated[Path, typer.Argument(help="The encrypted package.")],
) -> None:
    """Print the SHA-256 of an encrypted package (what the enclave measurement includes)."""
    Output().out.print(package_digest(package).hex())


# -- sealed boxes ----------------------------------------------------------------------------


@app.command("seal")
@handle_errors
def seal_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The file to seal (at most 64 MiB).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the sealed box.")],
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="The recipient's X25519 public key (64 hex digits).",
            envvar="CONFIDE_SEAL_PUBLIC_KEY",
        ),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help=(
                "Seal to the enclave of this RA-TLS certificate (PEM or DER): it is verified "
                "like 'confide attest cert', then its key is report_data[32:64]."
            ),
        ),
    ] = None,
    collateral: CollateralOpt = None,
    pccs_url: PccsOpt = None,
    at: AtOpt = None,
    root_ca: RootOpt = None,
    allow_simulation: SimOpt = False,
    mrenclave: MrenclaveOpt = None,
    mrsigner: MrsignerOpt = None,
    accept_tcb: AcceptOpt = None,
    allow_debug: DebugEnclaveOpt = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="With --cert: also require that the enclave was launched for this domain "
            "(the launch manifest its certificate carries, checked against MRENCLAVE).",
        ),
    ] = None,
    unsafe_any_enclave: Annotated[
        bool,
        typer.Option(
            "--unsafe-any-enclave",
            help="With --cert and neither --mrenclave nor --name: seal to whatever genuine "
            "enclave the certificate is from, running any code.",
        ),
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Seal FILE for an enclave, as 'cenclave seal' (exit 1: certificate rejected, 2: unusable)."""
    output = Output()
    data = read_bounded(file, "file", MAX_SEALED_SIZE)
    if public_key is not None and cert is None:
        recipient = parse_hex(public_key.strip(), "--public-key", X25519_KEY_SIZE)
    elif cert is not None and public_key is None:
        if mrenclave is None and name is None and not unsafe_any_enclave:
            raise UsageError(
                "--cert needs --mrenclave HEX (the enclave's code) or --name DOMAIN (its launch): "
                "without either, any genuine enclave, running any code, could open the box",
                hint="pass --unsafe-any-enclave to seal to it anyway",
            )
        verifier = EnclaveVerifier(
            evidence_source(collateral, pccs_url, root_ca),
            EnclavePolicy(
                parse_hex(mrenclave, "--mrenclave", 32),
                name,
                allow_any_code=mrenclave is None,
                allow_any_name=name is None,
                allow_simulation=allow_simulation,
                allow_stale=True,  # a certificate file: no connection to challenge
                checks=build_policy(None, mrsigner, None, None, accept_tcb, allow_debug, False),
            ),
            clock=lambda: verification_time(at),
        )
        certificate = load_certificate(read_bounded(cert, "certificate", _MAX_CERT_FILE), str(cert))
        verified = verifier.verify(certificate)
        if name is None and mrenclave is None:
            output.warn(
                "--unsafe-any-enclave: the enclave is genuine, but neither its code nor its "
                "launch was checked: any code in any enclave on that platform could be it"
            )
        recipient = public_key_from_report_data(verified.quote.report_data)
        output.info(
            f"verified the RA-TLS certificate {cert} "
            f"(TCB {verified.quote.tcb_status.value}); sealing to {recipient.hex()}"
        )
    else:
        raise UsageError("give exactly one of --public-key HEX or --cert RATLS.pem")
    sealed = seal(data, recipient)
    with _atomic_output(out, mode=0o644, force=force) as f:
        f.write(sealed)
    output.info(f"sealed {file} into {out} ({len(sealed)} bytes)")


@app.command("unseal")
@handle_errors
def unseal_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The sealed box.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the plaintext (mode 0600).")],
    private_key_file: Annotated[
        Path,
        typer.Option(
            "--private-key-file",
            help=(
                "The X25519 private key: 32 bytes raw or in hex, or the 64-byte public||private "
                "pair 'cenclave keygen' writes."
            ),
            envvar="CONFIDE_UNSEAL_PRIVATE_KEY_FILE",
        ),
    ],
    force: ForceOpt = False,
) -> None:
    """Open a sealed box, as 'cenclave unseal' (exit 1: it does not open, 2: unusable)."""
    pair = X25519KeyPair.from_file_bytes(
        read_bounded(private_key_file, "key file", KEY_FILE_MAX_SIZE)
    )
    plain = unseal(read_bounded(file, "sealed box", MAX_SEALED_SIZE + SEAL_OVERHEAD), pair)
    with _atomic_output(out, mode=0o600, force=force) as f:
        f.write(plain)
    Output().info(f"unsealed {file} into {out} ({len(plain)} bytes)")
