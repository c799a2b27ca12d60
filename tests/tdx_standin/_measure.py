"""The stand-in's "measured boot": MRTD and RTMR0-2 of a guest image's files.

A real TD's MRTD is the TDX module's measurement of the pages TDVF is loaded
into, and RTMR0-2 are extended by TDVF and the boot loader with the firmware's
configuration, the kernel, its command line and the initrd (their exact event
logs are TDVF's). This stand-in keeps the structure, not the algorithm:

- MRTD = SHA-384(firmware);
- RTMR0 = extend(0, SHA-384("tdx-standin/td-config" || firmware));
- RTMR1 = extend(0, SHA-384(kernel));
- RTMR2 = extend(extend(0, SHA-384(command line)), SHA-384(initrd)).

So any change to one of the four changes what the TD reports, and the values
an operator publishes (``TdReference.to_json``) are computable from the files.
"""

from __future__ import annotations

import hashlib

from confide.attestation import TdReference, extend_rtmr

_ZERO = bytes(48)


def _h(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def measure_image(firmware: bytes, kernel: bytes, initrd: bytes, append: str) -> TdReference:
    """The reference values of a TD booted from these files with this command line."""
    return TdReference(
        mr_td=_h(firmware),
        rtmr0=extend_rtmr(_ZERO, _h(b"tdx-standin/td-config" + firmware)),
        rtmr1=extend_rtmr(_ZERO, _h(kernel)),
        rtmr2=extend_rtmr(extend_rtmr(_ZERO, _h(append.encode())), _h(initrd)),
    )
