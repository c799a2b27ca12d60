"""``confide td-runtime``: the runtime as a TD's guest image starts it (ADR 0022).

It reads the app's launch from the items the host passed with QEMU's ``-fw_cfg``
(:mod:`confide.runtime._guest`), builds the runtime's settings from them and
refuses to start unless they measure to the host's launch manifest, extends
RTMR3 with that launch through the TDX guest driver (``--tee tdx`` of ``confide
runtime``, :class:`~confide.tee.TdxTee`), then serves as ``confide runtime`` does.
Exit codes are ``confide runtime``'s.

Example (the guest image's init)::

    $ confide td-runtime --fw-cfg /sys/firmware/qemu_fw_cfg --host 0.0.0.0 --port 8443
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from confide.runtime import FW_CFG_ROOT, GUEST_PORT, td_runtime_settings
from confide.tee import select_tee

from ._app import app, handle_errors
from ._runtime import serve_runtime

#: Where the runtime keeps nothing (a TD seals nothing, ADR 0020): a RAM folder of the guest.
GUEST_STATE_DIR = Path("/run/confide/state")


@app.command("td-runtime")
@handle_errors
def td_runtime_command(
    fw_cfg: Annotated[
        Path,
        typer.Option("--fw-cfg", help="Where the guest kernel shows QEMU's fw_cfg items."),
    ] = FW_CFG_ROOT,
    host: Annotated[str, typer.Option("--host", help="Address to listen on in the TD.")] = (
        "0.0.0.0"  # noqa: S104 - the TD's own interface, forwarded by the host
    ),
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on in the TD.", min=1, max=65535)
    ] = GUEST_PORT,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="A RAM folder of the guest (nothing is sealed).")
    ] = GUEST_STATE_DIR,
) -> None:
    """Run this TD's app: its launch from fw_cfg, RTMR3 extended with it, then serve."""
    now = datetime.now(UTC)
    settings = td_runtime_settings(fw_cfg, host=host, port=port, state_dir=state_dir, now=now)
    enclave = select_tee("tdx", simulation_state=None, measurement=settings.measurement)
    serve_runtime(settings, enclave, now=now)
