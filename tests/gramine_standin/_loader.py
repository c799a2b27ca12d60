"""What the ``gramine-sgx`` stand-in runs as the entrypoint's first code (stdlib only).

Run as ``ENTRYPOINT [flags] _loader.py MANIFEST.sgx ENCLAVE_SIZE HOST_CWD -- ARGV[1:]``:
bounds the address space to the enclave size, installs an audit hook that lets the
program open only what the manifest lets an enclave open, then runs ``-m MODULE``,
``-c CODE`` or a script from the manifest's fixed ``loader.argv``, as the
interpreter would have.

Opening a file (``open``, ``os.open``, ``io.open_code``) is refused with
``PermissionError`` (EACCES, as Gramine's strict file check policy fails it)
unless the file is trusted (then read-only, and its SHA-256 is checked against
the manifest's on open), under an allowed URI (URIs are host paths: an
in-enclave path is mapped through the ``chroot`` mounts, relative URIs are
relative to where ``gramine-sgx`` ran), under a ``tmpfs`` or
``encrypted`` mount, or one of the pseudo-files Gramine provides itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import runpy
import sys
import threading
import tomllib
from typing import Any

_PSEUDO = ("/dev/attestation/", "/proc/", "/sys/")
_DEVICES = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/tty"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Policy:
    """What the manifest lets the enclave open, in host paths (URIs are the host's)."""

    def __init__(self, manifest_path: str, host_cwd: str) -> None:
        with open(manifest_path, "rb") as f:
            manifest = tomllib.load(f)

        def host(uri: str) -> str:
            return os.path.normpath(os.path.join(host_cwd, uri.split(":", 1)[1]))

        sgx = manifest.get("sgx", {})
        self.trusted = {host(e["uri"]): e["sha256"] for e in sgx.get("trusted_files", [])}
        self.prefixes: list[str] = list(_PSEUDO)
        self.exact = set(_DEVICES)
        for uri in sgx.get("allowed_files", []):
            if uri.endswith("/"):
                self.prefixes.append(host(uri).rstrip("/") + "/")
            else:
                self.exact.add(host(uri))
        #: (in-enclave path, host path) of each host-backed mount, longest first.
        self.mounts: list[tuple[str, str]] = []
        self.enclave_only: list[str] = []
        for mount in manifest.get("fs", {}).get("mounts", []):
            path = os.path.normpath(mount["path"])
            if mount.get("type", "chroot") == "chroot":
                self.mounts.append((path, host(mount["uri"])))
            else:  # tmpfs: in the enclave; encrypted: sealed by Gramine's key
                self.enclave_only.append(path)
        self.mounts.sort(key=lambda m: len(m[0]), reverse=True)

    def host_path(self, path: str) -> str:
        for inside, outside in self.mounts:
            if path == inside or path.startswith(inside.rstrip("/") + "/"):
                return outside + path[len(inside) :]
        return path

    def enclave_only_path(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.enclave_only)


def _install(manifest_path: str, host_cwd: str) -> None:
    policy = _Policy(manifest_path, host_cwd)
    verified: set[tuple[str, int, int, int, int, int]] = set()
    inside = threading.local()
    prefixes = tuple(policy.prefixes)

    def check(path: Any, mode: Any, flags: Any) -> None:
        if path is None or isinstance(path, int) or getattr(inside, "hashing", False):
            return
        given = os.path.abspath(os.fsdecode(path))
        if policy.enclave_only_path(given) or given.startswith(prefixes) or given in policy.exact:
            return
        host = policy.host_path(given)
        for candidate in (host, os.path.realpath(given)):
            expected = policy.trusted.get(candidate)
            if expected is not None:
                writing = bool((flags or 0) & _WRITE_FLAGS) or any(
                    c in (mode or "") for c in "wax+"
                )
                if writing:
                    raise PermissionError(errno.EACCES, "a trusted file is read-only", given)
                st = os.stat(given)
                key = (candidate, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if key not in verified:
                    inside.hashing = True  # the hook's own read of the file
                    try:
                        with open(given, "rb") as f:
                            observed = hashlib.file_digest(f, "sha256").hexdigest()
                    finally:
                        inside.hashing = False
                    if observed != expected:
                        raise PermissionError(
                            errno.EACCES,
                            f"trusted file hash mismatch: observed {observed}, expected {expected}",
                            given,
                        )
                    verified.add(key)
                return
            if candidate in policy.exact or candidate.startswith(prefixes):
                return
        raise PermissionError(errno.EACCES, "neither trusted nor allowed by the manifest", given)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            check(*args)

    sys.addaudithook(hook)


def main() -> None:
    manifest_path, enclave_size, host_cwd, separator, *argv = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: _loader.py MANIFEST.sgx ENCLAVE_SIZE HOST_CWD -- ARGV...")
    size = int(enclave_size)
    resource.setrlimit(resource.RLIMIT_AS, (size, size))
    _install(manifest_path, host_cwd)
    if argv[:1] == ["-m"] and len(argv) >= 2:
        sys.argv = [argv[1], *argv[2:]]
        if not (sys.flags.isolated or sys.flags.safe_path):
            sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[:1] == ["-c"] and len(argv) >= 2:
        sys.argv = ["-c", *argv[2:]]
        if not (sys.flags.isolated or sys.flags.safe_path):
            sys.path[0] = ""
        exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
    elif argv and not argv[0].startswith("-"):
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")
    else:
        raise SystemExit(f"the stand-in loader runs -m MODULE, -c CODE or a script, got {argv[:1]}")


if __name__ == "__main__":
    main()
