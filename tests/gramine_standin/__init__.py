"""Stand-ins for Gramine's SGX executables, for CI (test tooling: never installed, never shipped).

No SGX machine and no Gramine package are available where Confide's tests run, so
the operator's Gramine launch path (``tee = "gramine"``) is exercised through
these stand-ins, put first on ``PATH`` by the tests (:func:`install`):

``gramine-sgx-sign``
    ``--manifest X.manifest --output X.manifest.sgx [--key K] [--sigfile S] [--date D]``:
    parses the manifest (TOML), refuses what Gramine's signer refuses (a missing or
    unreadable trusted file, a ``file:`` URI that is not one, a directory URI without
    its ``/``, a key that is not RSA-3072 with exponent 3), expands trusted
    directories and hashes every trusted file (SHA-256), writes ``X.manifest.sgx``
    and ``X.sig``: a SIGSTRUCT in the SDM's 1808-byte layout, signed with the key
    (RSA-3072, e = 3, PKCS#1 v1.5 over bytes 0..127 and 900..1027, with Q1 and Q2).
    Its ENCLAVEHASH is :func:`confide.gramine.simulated_mrenclave` of the expanded
    manifest (real MRENCLAVE also depends on Gramine's loader pages, which only
    ``gramine-sgx-sign`` itself can lay out).
``gramine-sgx-sigstruct-view``
    ``[-v|-q] [--output-format text|toml|json] X.sig``: the SIGSTRUCT's fields, in
    Gramine's names and formats (``mr_signer`` is SHA-256 of the modulus).
``gramine-sgx``
    ``gramine-sgx X``: refuses unless ``X.manifest.sgx`` and ``X.sig`` exist, the
    signature holds and ENCLAVEHASH is the expanded manifest's measurement (what
    EINIT checks); refuses a manifest Gramine would run insecurely (``insecure__``
    keys, ``sgx.debug``, no fixed ``loader.argv``, no DCAP attestation); checks the
    hash of every trusted file; then, in a private mount namespace, gives the
    entrypoint ``/dev/attestation`` backed by the simulated platform (``attestation_type``,
    ``user_report_data`` then ``quote``, ``keys/_sgx_mrenclave``), the manifest's
    ``tmpfs`` mounts as fresh RAM folders, its address space bounded by
    ``sgx.enclave_size``, its fixed argv and environment, and an audit hook that
    refuses to open a file neither trusted nor allowed and checks a trusted file's
    hash when it is opened.

What they do not prove is listed in ADR 0018 and docs/hardware.md: no enclave
isolates the process, the encrypted mount is a plain bind mount (the runtime
seals its own state), and MRENCLAVE is the simulated one.
"""

from __future__ import annotations

from ._install import StandinConfig, install, mount_namespace_support

__all__ = ["StandinConfig", "install", "mount_namespace_support"]
