"""``confide fingerprint --tee tdx``: the registers a TD of this launch must report (ADR 0020)."""

from __future__ import annotations

from confide.attestation import TdReference
from confide.tee import SIM_GUEST_IMAGE
from confide.wire import LaunchManifest

from ._output import Output

_LABELS = {"mr_td": "MRTD", "rtmr0": "RTMR0", "rtmr1": "RTMR1", "rtmr2": "RTMR2", "rtmr3": "RTMR3"}


def print_td_registers(
    launch: LaunchManifest, *, json_mode: bool, image: TdReference = SIM_GUEST_IMAGE
) -> None:
    """Print MRTD and RTMR0-2 of the guest image and RTMR3 of ``launch``, one per line."""
    registers = image.expected(launch.measurement())
    out = Output(json_mode=json_mode)
    if json_mode:
        out.json(
            {
                "tee": "tdx",
                "guest_image": "simulated",
                **{name: value.hex() for name, value in registers.items()},
                "fingerprint": launch.measurement().hex(),
                "manifest": launch.to_dict(),
            }
        )
    else:
        for name, value in registers.items():
            out.out.print(f"{_LABELS[name]} {value.hex()}")
    out.warn(
        "MRTD and RTMR0-2 are the simulated Confide guest image's: no TDX guest image "
        "is released yet, so no real TD can match them"
    )
