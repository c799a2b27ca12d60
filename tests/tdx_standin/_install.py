"""Putting the ``qemu-system-x86_64`` stand-in on PATH (one small launcher script)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The folder holding this package (``tests/``), put on the launcher's ``sys.path``.
_TESTS: Final = Path(__file__).resolve().parent.parent
QEMU: Final = "qemu-system-x86_64"
#: The variable naming the simulated platform behind the TD's quotes.
PLATFORM_VARIABLE: Final = "CONFIDE_TDX_STANDIN_PLATFORM"


@dataclass(frozen=True, slots=True)
class StandinConfig:
    #: Where the launcher is (put it first on PATH).
    bin_dir: Path
    #: The simulated platform's state folder (the "hardware" quotes come from).
    platform_state: Path


def install(bin_dir: Path, platform_state: Path) -> StandinConfig:
    """Write ``qemu-system-x86_64`` into ``bin_dir``; quotes come from ``platform_state``.

    The operator starts QEMU with a fixed environment of its own, so the launcher
    carries the platform's folder itself.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    code = (
        f"import sys; sys.path.insert(0, {str(_TESTS)!r}); "
        "from tdx_standin.qemu import main; sys.exit(main())"
    )
    path = bin_dir / QEMU
    path.write_text(
        "#!/bin/sh\n"
        f"export {PLATFORM_VARIABLE}={shlex.quote(str(platform_state))}\n"
        f'exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "$@"\n'
    )
    path.chmod(0o755)
    return StandinConfig(bin_dir=bin_dir, platform_state=platform_state)
