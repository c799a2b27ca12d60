"""Putting the stand-ins on PATH: one small launcher per executable, in a folder of the test's."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ._manifest import CACHE_VARIABLE

#: The folder holding this package (``tests/``), put on the launchers' ``sys.path``.
_TESTS: Final = Path(__file__).resolve().parent.parent
TOOLS: Final = {
    "gramine-sgx-sign": "gramine_standin.sign",
    "gramine-sgx-sigstruct-view": "gramine_standin.sigstruct_view",
    "gramine-sgx": "gramine_standin.sgx",
}
#: The variable naming the simulated platform behind the stand-in's /dev/attestation.
PLATFORM_VARIABLE: Final = "CONFIDE_GRAMINE_STANDIN_PLATFORM"


@dataclass(frozen=True, slots=True)
class StandinConfig:
    #: Where the launchers are (put it first on PATH).
    bin_dir: Path
    #: The simulated platform's state folder (the "hardware" quotes come from).
    platform_state: Path


def install(bin_dir: Path, platform_state: Path) -> StandinConfig:
    """Write the launchers into ``bin_dir``; quotes come from the platform at ``platform_state``.

    Each launcher runs this Python on the tool's module, with the platform's folder
    in its environment (the operator starts ``gramine-sgx`` with a fixed environment
    of its own, so the launcher carries it).
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, module in TOOLS.items():
        code = (
            f"import sys; sys.path.insert(0, {str(_TESTS)!r}); "
            f"from {module} import main; sys.exit(main())"
        )
        path = bin_dir / name
        path.write_text(
            "#!/bin/sh\n"
            f"export {PLATFORM_VARIABLE}={shlex.quote(str(platform_state))}\n"
            f"export {CACHE_VARIABLE}={shlex.quote(str(bin_dir / 'hash-cache.json'))}\n"
            f'exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "$@"\n'
        )
        path.chmod(0o755)
    return StandinConfig(bin_dir=bin_dir, platform_state=platform_state)


def mount_namespace_support() -> str | None:
    """``None`` when the ``gramine-sgx`` stand-in can make its namespace here, else why not.

    It needs to be root (or hold CAP_SYS_ADMIN), ``unshare(CLONE_NEWNS)`` and overlay
    and tmpfs mounts: probed by doing exactly that in a throwaway child.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(_TESTS)!r});"
        "from gramine_standin import _namespace as n;"
        "n.enter_private_namespace(); n.private_dev();"
        "import pathlib; pathlib.Path('/dev/attestation').mkdir()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return (
        f"this kernel or user cannot make a private mount namespace with /dev/attestation: {last}"
    )
