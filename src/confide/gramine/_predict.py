"""MRENCLAVE of a Gramine manifest, as Gramine's own tools compute it.

:func:`predict_mrenclave` signs the manifest with ``gramine-sgx-sign`` (a throw-away
key: MRENCLAVE does not depend on the signer) and reads ``mr_enclave`` back with
``gramine-sgx-sigstruct-view``, both found on ``PATH``. ``confide fingerprint --tee
gramine`` and ``confide deploy`` (against an operator that launches with Gramine) use
it: one code path. Where the tools are missing it raises :class:`UsageError` naming
them and what to do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from confide.errors import UsageError
from confide.wire import LaunchManifest, RequirementsLock

from ._environment import RuntimeEnvironment
from ._lint import lint_manifest
from ._manifest import app_manifest

#: Gramine's signing tools; the prediction needs both.
SIGN_TOOL: Final = "gramine-sgx-sign"
VIEW_TOOL: Final = "gramine-sgx-sigstruct-view"
_TOOL_TIMEOUT: Final = 300.0
_MR_ENCLAVE: Final = re.compile(r"mr_enclave\W+([0-9a-fA-F]{64})\b")


def _run_tool(argv: Sequence[str], cwd: Path) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - Gramine's tool from PATH, no shell
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{argv[0]} could not run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{Path(argv[0]).name} failed (exit {done.returncode}): {last}")
    return done.stdout


def predict_mrenclave(manifest_text: str, *, certificate: Path | None, signer_pem: bytes) -> bytes:
    """MRENCLAVE of ``manifest_text`` as Gramine computes it: ``gramine-sgx-sign`` with
    ``signer_pem``, a throw-away RSA-3072 key of exponent 3 in PEM (MRENCLAVE does not
    depend on the signer; the caller makes it, this package does not import a crypto
    library), read back with ``gramine-sgx-sigstruct-view``. Raises :class:`UsageError`
    naming what is missing."""
    tools = {tool: shutil.which(tool) for tool in (SIGN_TOOL, VIEW_TOOL)}
    missing = [tool for tool, found in tools.items() if found is None]
    if missing:
        raise UsageError(
            f"cannot predict the Gramine MRENCLAVE: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH",
            hint="install Gramine (its gramine package) on this machine and run this again; "
            "without it, only the simulated fingerprint can be computed (--tee simulation)",
        )
    sign, view = str(tools[SIGN_TOOL]), str(tools[VIEW_TOOL])
    with tempfile.TemporaryDirectory(prefix="confide-gramine-") as tmp:
        folder = Path(tmp)
        (folder / "confide.manifest").write_text(manifest_text)
        if certificate is not None:
            shutil.copyfile(certificate, folder / "certificate.pem")
        # SGX signing keys are RSA-3072 with public exponent 3.
        (folder / "signer.pem").write_bytes(signer_pem)
        _run_tool(
            [sign, "--manifest", "confide.manifest", "--output", "confide.manifest.sgx",
             "--key", "signer.pem"],
            folder,
        )  # fmt: skip
        if not (folder / "confide.sig").is_file():
            raise UsageError(f"{SIGN_TOOL} wrote no confide.sig beside confide.manifest.sgx")
        shown = _run_tool([view, "confide.sig"], folder)
    match = _MR_ENCLAVE.search(shown)
    if match is None:
        raise UsageError(f"{VIEW_TOOL} printed no mr_enclave")
    return bytes.fromhex(match.group(1))


def render_app(
    launch: LaunchManifest,
    environment: RuntimeEnvironment,
    *,
    enclave_size: str,
    max_threads: int,
    lock: RequirementsLock | None = None,
) -> str:
    """The linted :func:`app_manifest` of ``launch``: what the operator launches."""
    text = app_manifest(
        launch, environment, enclave_size=enclave_size, max_threads=max_threads, lock=lock
    )
    lint_manifest(text)
    return text


def predict_app_mrenclave(
    launch: LaunchManifest,
    environment: RuntimeEnvironment,
    *,
    enclave_size: str,
    max_threads: int,
    signer_pem: bytes,
    certificate: Path | None = None,
    lock: RequirementsLock | None = None,
) -> bytes:
    """MRENCLAVE of the enclave an operator launches for ``launch`` (:func:`render_app`,
    then :func:`predict_mrenclave`): ``confide fingerprint --tee gramine`` and
    ``confide deploy`` both call this. ``certificate``: the owner's chain, in certificate
    mode (a trusted file); ``lock``: the app's requirements lock (its wheels are trusted
    files with the lock's hashes: the signer needs none of them)."""
    text = render_app(
        launch, environment, enclave_size=enclave_size, max_threads=max_threads, lock=lock
    )
    return predict_mrenclave(text, certificate=certificate, signer_pem=signer_pem)
