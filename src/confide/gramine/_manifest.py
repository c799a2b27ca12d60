"""The Gramine manifest of a launch, and the simulated MRENCLAVE of a manifest.

:func:`gramine_manifest` renders a final manifest (no template left) in Gramine's
TOML syntax from a :class:`LaunchManifest`, the runtime's fixed argv, the
:class:`RuntimeEnvironment` and the plan's enclave size and thread count:

* ``libos.entrypoint`` is the interpreter; ``loader.argv`` is the given argv, fixed
  (never ``loader.insecure__use_cmdline_argv``); ``loader.env`` is fixed too
  (``PYTHONPATH`` to the environment's folders, no byte code written, no user site,
  and the launch manifest's canonical JSON as ``CONFIDE_LAUNCH_MANIFEST``), but for
  the two variables of :data:`PASSTHROUGH_ENV`, ``{ passthrough = true }``: the
  address and port the runtime listens on, which the host picks (ADR 0011: harmless,
  unmeasured) and which the runtime reads for nothing else;
* ``sgx.trusted_files`` lists every file of the environment with its SHA-256, and
  Gramine's own runtime folder (its signer hashes that one);
* the encrypted package is allowed (readable, not trusted) because its AEAD gives it
  integrity, and so are the distributions' ``RECORD`` lists, which the runtime reads
  to compute its environment's digest (data: a changed one changes that digest, which
  the launch manifest measures, or nothing); no code is ever allowed;
* the state folder is an encrypted mount keyed ``_sgx_mrenclave``; the code folder
  (``/dev/shm``) is an in-enclave ``tmpfs``;
* with locked requirements (ADR 0024), the lock and each of its wheels are trusted
  files whose SHA-256 is the lock's (Gramine checks them at open, the runtime again),
  mounted at :data:`ENCLAVE_REQUIREMENTS` and :data:`ENCLAVE_WHEELS` and named in the
  argv; the wheels are installed into the code folder, in the in-enclave tmpfs;
* ``sgx.debug = false`` and ``sgx.remote_attestation = "dcap"``.

The host paths of the package, the state folder and the certificate are rendered
as given and mounted at fixed in-enclave paths (:data:`ENCLAVE_PACKAGE`, ...): give
them relative to the folder ``gramine-sgx`` runs in (the app's folder, e.g.
``package``, ``state``) so an owner can predict the MRENCLAVE without knowing the
operator's layout. Gramine's MRENCLAVE depends on
every path written here (unlike the environment's digest), which is why a real
deployment runs a fixed runtime image (ADR 0017).

The simulated MRENCLAVE of a manifest (what Gramine's stand-in signer reports)::

    simulated_mrenclave = SHA-256("confide/gramine-manifest/v1" || 0x00 || manifest UTF-8 bytes)
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Final

from confide.errors import UsageError
from confide.wire import LaunchManifest, RequirementsLock, TlsMode

from ._environment import RuntimeEnvironment

_DOMAIN: Final = b"confide/gramine-manifest/v1\x00"
#: Where Debian/Ubuntu's ``gramine`` package installs its LibOS and its patched glibc.
DEFAULT_GRAMINE_LIBOS: Final = Path("/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so")
DEFAULT_GRAMINE_RUNTIME: Final = Path("/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc")
#: The in-enclave tmpfs holding the decrypted code (the runtime's fixed code folder is in it).
CODE_MOUNT: Final = "/dev/shm"  # noqa: S108 - an in-enclave tmpfs, not a host folder
#: Where the enclave sees the launch's files (mounted from the host paths given).
ENCLAVE_PACKAGE: Final = PurePosixPath("/confide/package")
ENCLAVE_STATE: Final = PurePosixPath("/confide/state")
ENCLAVE_CERTIFICATE: Final = PurePosixPath("/confide/certificate.pem")
#: The app's requirements lock and wheels (ADR 0024), as the enclave sees them.
ENCLAVE_REQUIREMENTS: Final = PurePosixPath("/confide/requirements.lock")
ENCLAVE_WHEELS: Final = PurePosixPath("/confide/wheels")
_ENCLAVE_SIZE: Final = re.compile(r"[1-9][0-9]{0,5}[KMG]")
MAX_THREADS: Final = 4096
#: The only variables the host passes into the enclave (``loader.env.NAME = { passthrough =
#: true }``): where the runtime listens, which ADR 0011 leaves unmeasured. The runtime reads
#: them as its ``--host``/``--port`` and for nothing else (``confide runtime`` validates them).
#: The launch manifest's canonical JSON, fixed in the Gramine manifest's environment
#: (measured): ``confide runtime`` refuses to start when it computes another manifest.
LAUNCH_VARIABLE: Final = "CONFIDE_LAUNCH_MANIFEST"
HOST_VARIABLE: Final = "CONFIDE_LISTEN_HOST"
PORT_VARIABLE: Final = "CONFIDE_LISTEN_PORT"
PASSTHROUGH_ENV: Final = (HOST_VARIABLE, PORT_VARIABLE)
#: The plan's defaults.
DEFAULT_ENCLAVE_SIZE: Final = "2G"
DEFAULT_MAX_THREADS: Final = 64
#: Where an app's files are, relative to its folder (where gramine-sgx runs).
APP_PACKAGE: Final = Path("package")
APP_STATE: Final = Path("state")
APP_CERTIFICATE: Final = Path("certificate.pem")
#: The lock, and its wheels named by SHA-256 (``wheels/<ab>/<cdef...>``), in the app's folder.
APP_REQUIREMENTS: Final = Path("requirements.lock")
APP_WHEELS: Final = Path("wheels")
#: What Python runs: the CLI's entry point, as ``confide_command`` runs it, with no ``site``
#: (``-S``): the path is the manifest's PYTHONPATH alone and no ``.pth`` file is read.
_CLI: Final = ("-S", "-c", "from confide.cli import main; main()")


def system_library_dirs() -> list[Path]:
    """This system's multiarch library folders (``/lib/<triplet>``, ``/usr/lib/<triplet>``),
    symlinks resolved, those that exist."""
    triplet = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    found: list[Path] = []
    for base in ("/lib", "/usr/lib"):
        folder = Path(base) / triplet
        if folder.is_dir() and folder.resolve() not in found:
            found.append(folder.resolve())
    return found


def simulated_mrenclave(manifest_text: str) -> bytes:
    """The simulated TEE's MRENCLAVE of a rendered Gramine manifest (32 bytes)."""
    return hashlib.sha256(_DOMAIN + manifest_text.encode()).digest()


def _s(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, once control characters are out)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UsageError(f"a manifest value holds a control character: {value!r}")
    return json.dumps(value, ensure_ascii=False)


def _uri(path: Path | PurePosixPath, folder: bool = False) -> str:
    text = path.as_posix()
    return _s(f"file:{text}/" if folder and not text.endswith("/") else f"file:{text}")


def enclave_argv(launch: LaunchManifest, environment: RuntimeEnvironment) -> list[str]:
    """The fixed ``loader.argv`` of ``confide runtime`` launching ``launch`` under Gramine,
    with the package, state and certificate at their in-enclave paths
    (:data:`ENCLAVE_PACKAGE` & co.). It names no address nor port: the runtime takes them
    from :data:`PASSTHROUGH_ENV`, so the measurement does not depend on them."""
    argv = [str(environment.interpreter), *_CLI, "runtime"]
    argv += ["--app-id", str(launch.app_id), "--application", launch.application]
    argv += ["--package", str(ENCLAVE_PACKAGE)]
    if launch.tls == TlsMode.OWNER:
        argv += ["--certificate", str(ENCLAVE_CERTIFICATE)]
    elif launch.tls == TlsMode.RATLS:
        argv += ["--ratls", str(launch.ratls_expiry)]
    else:
        argv += ["--no-ssl"]
    for name in launch.san:
        argv += ["--san", name]
    if launch.subject is not None:
        argv += ["--subject", launch.subject]
    argv += ["--state-dir", str(ENCLAVE_STATE), "--tee", "gramine"]
    if launch.requirements_sha256 is not None:
        argv += ["--requirements", str(ENCLAVE_REQUIREMENTS), "--wheels", str(ENCLAVE_WHEELS)]
    return argv


def gramine_manifest(
    launch: LaunchManifest,
    argv: Sequence[str],
    environment: RuntimeEnvironment,
    *,
    enclave_size: str,
    max_threads: int,
    package: Path,
    state_dir: Path,
    certificate: Path | None = None,
    gramine_libos: Path = DEFAULT_GRAMINE_LIBOS,
    gramine_runtime: Path = DEFAULT_GRAMINE_RUNTIME,
    system_libraries: Sequence[Path] | None = None,
    lock: RequirementsLock | None = None,
    requirements: Path | None = None,
    wheels: Path | None = None,
) -> str:
    """The Gramine manifest (TOML text) that runs ``argv`` as the enclave of ``launch``.

    ``system_libraries`` are the folders of the shared libraries the interpreter and the
    extension modules load (libssl, libffi, libz, ...; default :func:`system_library_dirs`):
    trusted as whole folders, which ``gramine-sgx-sign`` hashes (ADR 0017: the simulated
    measurement leaves them out).

    ``certificate`` is the owner's certificate chain (certificate mode only): it is
    a trusted file, since the launch manifest measures its leaf. ``lock`` is the app's
    requirements lock (exactly when the launch measures one), at ``requirements`` on
    the host, its wheels under ``wheels`` (``<ab>/<cdef...>``): trusted files with the
    lock's hashes (ADR 0024).
    """
    if not _ENCLAVE_SIZE.fullmatch(enclave_size):
        raise UsageError(f"the enclave size must be like 512M or 4G, got {enclave_size!r}")
    if not 0 < max_threads <= MAX_THREADS:
        raise UsageError(f"the enclave's thread count must be 1 to {MAX_THREADS}")
    if not argv:
        raise UsageError("the enclave's argv is empty")
    if (launch.tls == TlsMode.OWNER) != (certificate is not None):
        raise UsageError("give the owner's certificate exactly for a certificate-mode launch")
    locked = lock.digest() if lock is not None else None
    if launch.requirements_sha256 != locked or (lock is not None) != (
        requirements is not None and wheels is not None
    ):
        raise UsageError(
            "give the requirements lock the launch measures (and where it and its wheels "
            "are), exactly when it measures one"
        )
    libraries = list(system_libraries if system_libraries is not None else system_library_dirs())
    env = {
        "PYTHONPATH": ":".join(p.as_posix() for p in environment.python_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "LD_LIBRARY_PATH": ":".join(
            dict.fromkeys(
                ["/lib", *(f.path.parent.as_posix() for f in environment.files
                           if f.label.startswith("interpreter/lib")),
                 *(p.as_posix() for p in libraries)]
            )
        ),
        LAUNCH_VARIABLE: launch.to_json().decode(),
    }  # fmt: skip
    mounts = [f"  {{ path = {_s('/lib')}, uri = {_uri(gramine_runtime)} }},"]
    kept: list[Path] = []
    for folder in sorted(
        {environment.interpreter.parent, *libraries, *environment.python_path,
         *(f.path.parent for f in environment.files if f.label.startswith("interpreter/"))}
    ):  # fmt: skip
        # One identity mount per tree: a folder inside a mounted one is already visible.
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
            mounts.append(f"  {{ path = {_s(folder.as_posix())}, uri = {_uri(folder)} }},")
    mounts.append(f"  {{ path = {_s(str(ENCLAVE_PACKAGE))}, uri = {_uri(package)} }},")
    if certificate is not None:
        mounts.append(f"  {{ path = {_s(str(ENCLAVE_CERTIFICATE))}, uri = {_uri(certificate)} }},")
    if requirements is not None and wheels is not None:
        mounts.append(
            f"  {{ path = {_s(str(ENCLAVE_REQUIREMENTS))}, uri = {_uri(requirements)} }},"
        )
        mounts.append(f"  {{ path = {_s(str(ENCLAVE_WHEELS))}, uri = {_uri(wheels)} }},")
    mounts += [
        f'  {{ type = "encrypted", path = {_s(str(ENCLAVE_STATE))}, '
        f'uri = {_uri(state_dir)}, key_name = "_sgx_mrenclave" }},',
        f'  {{ type = "tmpfs", path = {_s(CODE_MOUNT)} }},',
    ]
    trusted = [f"  {_uri(folder, folder=True)}," for folder in (gramine_runtime, *libraries)]
    trusted += [
        f'  {{ uri = {_uri(f.path)}, sha256 = "{f.sha256.hex()}" }},'
        for f in sorted(environment.files, key=lambda f: f.path)
    ]
    if certificate is not None:
        trusted.append(f"  {_uri(certificate)},")
    if lock is not None and requirements is not None and wheels is not None:
        trusted.append(f'  {{ uri = {_uri(requirements)}, sha256 = "{lock.digest().hex()}" }},')
        for r in lock.requirements:
            name = r.sha256.hex()
            trusted.append(
                f'  {{ uri = {_uri(wheels / name[:2] / name[2:])}, sha256 = "{name}" }},'
            )
    lines = [
        "# Generated by Confide from a launch manifest (confide gramine manifest); do not edit.",
        f"libos.entrypoint = {_s(environment.interpreter.as_posix())}",
        f"loader.entrypoint.uri = {_uri(gramine_libos)}",
        'loader.log_level = "error"',
        "loader.argv = [" + ", ".join(_s(a) for a in argv) + "]",
        *(f"loader.env.{name} = {_s(value)}" for name, value in env.items()),
        *(f"loader.env.{name} = {{ passthrough = true }}" for name in PASSTHROUGH_ENV),
        "fs.mounts = [",
        *mounts,
        "]",
        f"sgx.enclave_size = {_s(enclave_size)}",
        f"sgx.max_threads = {max_threads}",
        "sgx.debug = false",
        'sgx.remote_attestation = "dcap"',
        'sgx.file_check_policy = "strict"',
        "sgx.trusted_files = [",
        *trusted,
        "]",
        "sgx.allowed_files = [",
        f"  {_uri(package)},",
        *(f"  {_uri(listing)}," for listing in environment.listings),
        "]",
        "",
    ]
    return "\n".join(lines)


def app_manifest(
    launch: LaunchManifest,
    environment: RuntimeEnvironment,
    *,
    enclave_size: str = DEFAULT_ENCLAVE_SIZE,
    max_threads: int = DEFAULT_MAX_THREADS,
    lock: RequirementsLock | None = None,
) -> str:
    """The manifest of ``launch`` run in its app's folder, with the package, state and
    owner's certificate at :data:`APP_PACKAGE`, :data:`APP_STATE`, :data:`APP_CERTIFICATE`
    and the argv of :func:`enclave_argv`: what an operator launches and what
    ``confide fingerprint --tee gramine`` predicts, so both give the same MRENCLAVE."""
    return gramine_manifest(
        launch,
        enclave_argv(launch, environment),
        environment,
        enclave_size=enclave_size,
        max_threads=max_threads,
        package=APP_PACKAGE,
        state_dir=APP_STATE,
        certificate=APP_CERTIFICATE if launch.tls == TlsMode.OWNER else None,
        lock=lock,
        requirements=APP_REQUIREMENTS if lock is not None else None,
        wheels=APP_WHEELS if lock is not None else None,
    )
