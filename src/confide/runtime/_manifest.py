"""The runtime code hash, and what the launch manifest leaves out.

The launch manifest itself (its format and measurement) is
:class:`confide.wire.LaunchManifest`.

The runtime code hash is SHA-256 over the sorted list
of ``<relative path> 0x00 <SHA-256 of the file> 0x0a`` for every ``*.py`` file
and packaged data file of the installed ``confide`` package, except the
operator's service (``confide/operator/``), which the runtime never imports (a
test holds the runtime to that): every line of code the enclave can run is
measured, and an operator upgrade alone does not change app fingerprints.

What the manifest leaves out, and why (ADR 0011). Each ``confide runtime``
option is measured above (``--app-id``, ``--application``, ``--package`` or
``--app-dir --plaincode``, ``--ratls``/``--certificate``/``--no-ssl``,
``--san``, ``--subject``) or is in this table; a test holds the two lists to
the command's options. A value the host could choose to send plaintext
elsewhere, or to change what reaches the app, is never an unmeasured option::

    --host, --port        harmless: only where the listener binds. The host carries
                          every byte anyway; what is served there is protected by the
                          measured TLS mode, or is plain HTTP for the operator's proxy
                          because the mode "none" is measured.
    --handoff PATH        harmless: the runtime only receives connected TCP sockets
                          there (checked), no more than a client connecting to --port
                          gives it; it sends nothing there.
    --timeout SECONDS     harmless: it can only stop an unconfigured runtime sooner (the
                          configuration certificate's expiry bounds the wait), which the
                          host can do anyway.
    --state-dir DIR       harmless: only data sealed to this measurement is written
                          there (an older sealed state can be put back: a rollback).
    --tee, --simulation-state
                          harmless: the quote says which TEE made it; verifiers refuse
                          a simulated one unless told to accept simulation.
    --certificate's       harmless: clients check them against their own roots; the
    intermediates         leaf, whose key the owner sends, is measured.
    the code folder       fixed by the runtime: /dev/shm/confide-code-<app id>-<pid>-<random>
                          (RAM; an in-enclave tmpfs under Gramine). No option and no
                          environment variable moves it (--code-dir was removed); the
                          decrypted code, the secrets files and any TLS key file go
                          nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Final

from confide.errors import UsageError

__all__ = ["runtime_code_hash"]

_RUNTIME_SUFFIXES: Final = (".py", ".der", ".typed")
#: Top-level subpackages that never run in the enclave, left out of the code hash.
NOT_IN_ENCLAVE: Final = ("operator",)


def _files(root: Path, relative: str = "") -> Iterable[tuple[str, Path]]:
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        rel = f"{relative}{child.name}"
        if child.is_dir():
            if child.name != "__pycache__" and not (relative == "" and rel in NOT_IN_ENCLAVE):
                yield from _files(child, rel + "/")
        elif child.suffix in _RUNTIME_SUFFIXES:
            yield rel, child


def runtime_code_hash(root: Path | None = None) -> bytes:
    """Hash the installed ``confide`` package (or the package folder at ``root``).

    What a client uses by default: its own installed Confide. An operator that
    runs another release tells the client that release's hash, which the client
    must check itself (ADR 0005).
    """
    base = root if root is not None else Path(str(resources.files("confide")))
    if not base.is_dir():
        raise UsageError(f"cannot hash the Confide runtime at {base}: not a folder")
    digest = hashlib.sha256()
    for rel, path in sorted(_files(base)):
        digest.update(rel.encode() + b"\x00" + hashlib.sha256(path.read_bytes()).digest() + b"\n")
    return digest.digest()
