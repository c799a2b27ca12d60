"""``confide sim``: the simulated TEE, for tests and demos on machines without SGX."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.serialization import Encoding

from confide.errors import UsageError
from confide.runtime import write_atomically
from confide.tee import SimulatedPlatform

from ._app import app, handle_errors
from ._output import Output
from ._verify_options import parse_hex

sim_app = typer.Typer(
    help="A simulated TEE: real-format quotes under a per-platform simulation root (tests only).",
    no_args_is_help=True,
)
app.add_typer(sim_app, name="sim")


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data, mode=0o644)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


@sim_app.command("quote")
@handle_errors
def sim_quote(
    ctx: typer.Context,
    state: Annotated[
        Path,
        typer.Option(
            "--state",
            help="Folder of the simulated platform (created on first use).",
            envvar="CONFIDE_SIM_STATE",
        ),
    ],
    mrenclave: Annotated[str, typer.Option("--mrenclave", help="MRENCLAVE to attest (hex).")],
    mrsigner: Annotated[str, typer.Option("--mrsigner", help="MRSIGNER to attest (hex).")],
    report_data: Annotated[
        str, typer.Option("--report-data", help="64 bytes of report data (hex).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the quote.")],
    collateral_out: Annotated[
        Path, typer.Option("--collateral-out", help="Where to write the collateral JSON.")
    ],
    root_out: Annotated[
        Path, typer.Option("--root-out", help="Where to write the simulation root CA (PEM).")
    ],
    at: Annotated[
        int | None,
        typer.Option("--at", help="Issue time in UNIX seconds (default: now).", min=0),
    ] = None,
    isv_prod_id: Annotated[int, typer.Option("--isv-prod-id", min=0, max=0xFFFF)] = 0,
    isv_svn: Annotated[int, typer.Option("--isv-svn", min=0, max=0xFFFF)] = 0,
    debug_enclave: Annotated[
        bool, typer.Option("--debug-enclave", help="Attest a debug enclave.")
    ] = False,
) -> None:
    """Sign a v3 SGX quote on the simulated platform, with its collateral and root."""
    now = datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)
    platform = SimulatedPlatform.open(state, now=now)
    quote = platform.quote(
        parse_hex(report_data, "--report-data", 64),
        mr_enclave=parse_hex(mrenclave, "--mrenclave", 32),
        mr_signer=parse_hex(mrsigner, "--mrsigner", 32),
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        debug=debug_enclave,
    )
    collateral = platform.collateral(now)
    _write(out, quote)
    _write(collateral_out, collateral.to_json().encode())
    _write(root_out, platform.root_certificate.public_bytes(Encoding.PEM))
    Output().info(
        f"wrote {out} ({len(quote)} bytes), {collateral_out} and {root_out}; "
        "verify with --root-ca and --allow-simulation"
    )
