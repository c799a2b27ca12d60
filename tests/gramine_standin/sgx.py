"""``gramine-sgx`` stand-in (see the package's description): ``gramine-sgx APP``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from . import _manifest, _namespace
from ._attestation import AttestationTree
from ._install import PLATFORM_VARIABLE
from ._sigstruct import Sigstruct, SigstructError

_LOADER: Final = Path(__file__).resolve().parent / "_loader.py"
_SIZE: Final = re.compile(r"(\d+)([KMG]?)")
_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
#: Interpreter options the stand-in's loader passes on before running the program.
_INTERPRETER_FLAGS: Final = frozenset({"-I", "-B", "-E", "-s", "-S", "-u", "-O", "-OO", "-q", "-P"})


class Refused(Exception):
    """Gramine would not start this enclave (or the stand-in will not)."""


def parse_size(value: object) -> int:
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Refused(f"sgx.enclave_size {value!r} is not a size such as 512M")
    return int(match.group(1)) * _UNITS[match.group(2)]


def load(app: str) -> tuple[dict[str, Any], Sigstruct]:
    """The expanded manifest and the SIGSTRUCT, checked as EINIT and Gramine's loader would."""
    from confide.gramine import simulated_mrenclave

    manifest_path = Path(app + ".manifest.sgx")
    if not manifest_path.exists():
        raise Refused(
            f"Invalid application path specified ({manifest_path} does not exist). The path "
            "should point to application configuration files, so that they can be found after "
            "appending corresponding extensions."
        )
    text, manifest = _manifest.read(manifest_path)
    try:
        sigstruct = Sigstruct.from_bytes(Path(app + ".sig").read_bytes())
        sigstruct.check_signature()
    except OSError as exc:
        raise Refused(f"cannot read {app}.sig: {exc.strerror or exc}") from None
    measured = simulated_mrenclave(text)
    if measured != sigstruct.enclave_hash:
        raise Refused(
            f"EINIT failed: the manifest measures to {measured.hex()}, "
            f"the SIGSTRUCT was signed for {sigstruct.enclave_hash.hex()}"
        )
    _manifest.refuse_insecure(manifest)
    if sigstruct.debug:
        raise Refused("the SIGSTRUCT asks for a debug enclave")
    if not _manifest.fully_expanded(manifest):
        raise Refused(f"{manifest_path} is not expanded (run gramine-sgx-sign)")
    libos = manifest.get("loader", {}).get("entrypoint", {})
    if libos and libos.get("sha256") != _manifest.libos_sha256(manifest):
        raise Refused(f"loader.entrypoint {libos.get('uri')} does not match its sha256")
    cache = _manifest.cache_from_environment()
    for trusted in _manifest.expand_trusted(manifest):
        try:
            observed = _manifest.sha256_file(trusted.path, cache)
        except OSError as exc:
            raise Refused(f"cannot read trusted file {trusted.path}: {exc.strerror}") from None
        if observed != trusted.sha256:
            raise Refused(
                f"trusted file {trusted.path} changed: sha256 {observed}, "
                f"the manifest has {trusted.sha256}"
            )
    if cache is not None:
        cache.save()
    return manifest, sigstruct


def _environment(manifest: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in manifest.get("loader", {}).get("env", {}).items():
        if isinstance(value, str):
            env[name] = value
        elif isinstance(value, dict) and set(value) == {"value"}:
            env[name] = str(value["value"])
        elif isinstance(value, dict) and value == {"passthrough": True}:
            if name in os.environ:
                env[name] = os.environ[name]
        else:
            raise Refused(f"loader.env.{name} is neither a value nor a passthrough")
    return env


def _command(manifest: dict[str, Any], manifest_path: Path) -> list[str]:
    entrypoint = manifest.get("libos", {}).get("entrypoint")
    if not isinstance(entrypoint, str):
        raise Refused("libos.entrypoint is missing")
    trusted = {str(t.path) for t in _manifest.expand_trusted(manifest)}
    if entrypoint not in trusted:
        raise Refused(f"libos.entrypoint {entrypoint} is not a trusted file")
    argv: list[str] = manifest["loader"]["argv"]
    rest = argv[1:]
    flags: list[str] = []
    while rest and rest[0] in _INTERPRETER_FLAGS:
        flags.append(rest.pop(0))
    size = parse_size(manifest["sgx"].get("enclave_size", "256M"))
    loader = [str(_LOADER), str(manifest_path), str(size), str(Path.cwd()), "--"]
    return [entrypoint, *flags, *loader, *rest]


def _gramine_runtime(manifest: dict[str, Any]) -> Path | None:
    """Gramine's own glibc folder (beside its LibOS): the stand-in runs the host's instead."""
    prefix = _manifest.gramine_prefix(manifest)
    return prefix / "runtime" / "glibc" if prefix is not None else None


def _mount_point(path: Path, *, folder: bool, private: set[Path]) -> None:
    """Make ``path`` exist in this namespace only (Gramine makes its mount points itself).

    A mount under a top-level folder that is missing or empty on the host (such as
    ``/confide``) gets a tmpfs private to this namespace on that folder, created once
    on the host as an empty folder (a mount needs a point): the points made inside
    vanish with the namespace. Elsewhere the point must already exist.
    """
    top = Path("/", *path.parts[1:2])
    if top not in private and top != path and (not top.exists() or not any(top.iterdir())):
        top.mkdir(mode=0o755, exist_ok=True)
        _namespace.tmpfs(top)
        private.add(top)
    if path.exists():
        return
    if not any(path.is_relative_to(p) for p in private):
        raise Refused(f"the stand-in cannot make mount point {path} outside a private folder")
    if folder:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _mounts(manifest: dict[str, Any], cwd: Path) -> None:
    gramine_runtime = _gramine_runtime(manifest)
    private: set[Path] = set()
    for mount in manifest.get("fs", {}).get("mounts", []):
        kind = mount.get("type", "chroot")
        path = Path(mount["path"])
        if kind == "tmpfs":
            _mount_point(path, folder=True, private=private)
            _namespace.tmpfs(path)
        elif kind in ("chroot", "encrypted"):
            # The encrypted mount is a plain bind here: the runtime seals its own state
            # with the TEE's key (what Gramine's encryption adds is not exercised).
            source = cwd / _manifest.uri_path(mount["uri"])
            if source == gramine_runtime or source.resolve() == path.resolve():
                continue
            if not source.exists():
                raise Refused(f"the mount {path} comes from {source}, which does not exist")
            _mount_point(path, folder=source.is_dir(), private=private)
            _namespace.bind(source, path)
        else:
            raise Refused(f"fs.mounts type {kind!r} is not supported by the stand-in")


def run(app: str, extra: list[str]) -> int:
    from confide.tee import SimulatedPlatform, SimulationTee

    manifest, sigstruct = load(app)
    if extra:
        raise Refused(
            f"command-line arguments {extra!r} given, but the manifest fixes loader.argv "
            "(loader.insecure__use_cmdline_argv is refused)"
        )
    platform_state = os.environ.get(PLATFORM_VARIABLE)
    if not platform_state:
        raise Refused(f"{PLATFORM_VARIABLE} is not set: which simulated platform is the hardware?")
    platform = SimulatedPlatform.open(Path(platform_state), now=datetime.now(UTC))
    tee = SimulationTee(platform, sigstruct.enclave_hash, mr_signer=sigstruct.mr_signer)
    command = _command(manifest, Path(app + ".manifest.sgx").resolve())
    env = _environment(manifest)
    try:
        _namespace.enter_private_namespace()
        _namespace.private_dev()
        tree = AttestationTree(Path("/dev/attestation"), tee)
        _mounts(manifest, Path.cwd())
    except OSError as exc:
        raise Refused(f"cannot make the enclave's file system: {exc}") from None
    # Forwarded by the process group already (the operator signals the group); the
    # stand-in itself waits for the enclave's end and reports it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen(  # noqa: S603 - the manifest's fixed entrypoint and argv
        command,
        env=env,
        cwd=manifest.get("fs", {}).get("start_dir", "/"),
        preexec_fn=_default_signals,  # noqa: PLW1509 - single-threaded here
        close_fds=True,
    )
    tree.start()
    code = child.wait()
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        print("Gramine stand-in for Confide's tests (not Gramine)")
        return 0
    if not args:
        print("Usage: gramine-sgx [<application>] <args>...", file=sys.stderr)
        return 2
    try:
        return run(args[0], args[1:])
    except (Refused, _manifest.ManifestError, SigstructError) as exc:
        print(f"error: gramine-sgx (stand-in): {exc}", file=sys.stderr, flush=True)
        return 2 if "Invalid application path" in str(exc) else 1


if __name__ == "__main__":
    raise SystemExit(main())
