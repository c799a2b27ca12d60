"""The runtime code hash, and what the launch manifest leaves out.

The launch manifest itself (its format and measurement) is
:class:`confide.wire.LaunchManifest`.

The runtime code hash (the manifest's ``runtime_sha256``) is the digest of the
runtime environment (ADR 0017, amending ADR 0005): every file the runtime can
run, as Gramine would measure it: the interpreter and ``libpython``, the
standard library, every file of the distributions Confide needs (the closure of
its requirements) and Confide's own package without ``confide/operator/``, which
the runtime never imports (a test holds the runtime to that). Changing one byte
of any of them changes every fingerprint; an operator upgrade alone does not.
See :func:`confide.gramine.runtime_environment` for the exact rule and the
stat-keyed hash cache that keeps a warm start-up from reading them again.

What the manifest leaves out, and why (ADR 0011). Each ``confide runtime``
option is measured above (``--app-id``, ``--application``, ``--package`` or
``--app-dir --plaincode``, ``--ratls``/``--certificate``/``--no-ssl``,
``--san``, ``--subject``, ``--requirements``: the lock's SHA-256) or is in
this table; a test holds the two lists to the command's options. A value the
host could choose to send plaintext elsewhere, or to change what reaches the
app, is never an unmeasured option::

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
    --wheels DIR          harmless: the operator's wheel cache. Each wheel is read from it by
                          the SHA-256 the measured lock names, copied into the code folder
                          (RAM) and installed only if the copy has that hash (ADR 0024).
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

from pathlib import Path

from confide.gramine import runtime_environment


def runtime_code_hash(root: Path | None = None, *, cache_dir: Path | None = None) -> bytes:
    """The digest of this interpreter's runtime environment, with the installed ``confide``
    package (or the package folder at ``root``, a copy the runtime will import).

    What a client uses by default: its own environment. An operator that runs
    another environment tells the client that environment's digest, which the
    client must check itself (ADR 0005, ADR 0017). ``cache_dir`` holds the hash
    cache (default: ``$XDG_CACHE_HOME/confide``).
    """
    return runtime_environment(cache_dir=cache_dir, confide_package=root).digest
