"""TDX on the command line: ``confide fingerprint --tee tdx`` and ``--td-reference`` (ADR 0020,
0022).

A TD's MRTD and RTMR0-2 measure its guest image; their expected values are the
reference values file the operator publishes with the image
(:meth:`confide.attestation.TdReference.from_json`), which the owner and users
pin with ``--td-reference FILE``. Without it, only a simulated TD verifies
(against the simulated image's values); a real TD is refused
(``policy.td_reference``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from confide.attestation import MAX_TD_REFERENCE_SIZE, TdReference
from confide.errors import FormatError, UsageError
from confide.tee import SIM_GUEST_IMAGE
from confide.wire import LaunchManifest

from ._output import Output

_LABELS = {"mr_td": "MRTD", "rtmr0": "RTMR0", "rtmr1": "RTMR1", "rtmr2": "RTMR2", "rtmr3": "RTMR3"}

TdReferenceOpt = Annotated[
    Path | None,
    typer.Option(
        "--td-reference",
        help="The reference values (MRTD, RTMR0-2) of the TDX guest image, the JSON file the "
        "operator publishes with it: a TD must report them (default: only a simulated TD "
        "verifies, against the simulated image).",
        envvar="CONFIDE_TD_REFERENCE",
    ),
]


def load_td_reference(path: Path | None) -> TdReference | None:
    """The reference values in ``path`` (``None`` when no file is given)."""
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TD_REFERENCE_SIZE + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read the TD reference values {path}: {exc.strerror or exc}"
        ) from None
    try:
        return TdReference.from_json(raw)
    except FormatError as exc:
        raise UsageError(f"--td-reference {path}: {exc}", hint=exc.hint) from None


def print_td_registers(
    launch: LaunchManifest, *, json_mode: bool, image: TdReference | None = None
) -> None:
    """Print MRTD and RTMR0-2 of the guest image and RTMR3 of ``launch``, one per line."""
    registers = (image or SIM_GUEST_IMAGE).expected(launch.measurement())
    out = Output(json_mode=json_mode)
    if json_mode:
        out.json(
            {
                "tee": "tdx",
                "guest_image": "simulated" if image is None else "reference",
                **{name: value.hex() for name, value in registers.items()},
                "fingerprint": launch.measurement().hex(),
                "manifest": launch.to_dict(),
            }
        )
    else:
        for name, value in registers.items():
            out.out.print(f"{_LABELS[name]} {value.hex()}")
    if image is None:
        out.warn(
            "MRTD and RTMR0-2 are the simulated Confide guest image's: give the reference "
            "values the operator publishes with its guest image (--td-reference FILE) for a "
            "real TD"
        )
