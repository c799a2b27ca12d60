"""Trusted execution environments: quotes and sealing keys from inside the enclave.

One interface, :class:`Tee`, with three backends: :class:`GramineTee` (Intel SGX
through Gramine's ``/dev/attestation``), :class:`TdxTee` (an Intel TDX guest
through the kernel's configfs-tsm) and :class:`SimulationTee` (a
:class:`SimulatedPlatform` kept in a state folder, whose quotes verify only
against its own root with ``Policy(allow_simulation=True)``).
:func:`select_tee` picks one at the entry point.

Example::

    >>> from datetime import datetime, timezone
    >>> from pathlib import Path
    >>> tee = select_tee(  # doctest: +SKIP
    ...     "simulation",
    ...     simulation_state=Path("state/sim"),
    ...     measurement=bytes(32),
    ...     now=datetime.now(timezone.utc),
    ... )
    >>> len(tee.get_quote(bytes(64))) > 1000  # doctest: +SKIP
    True
"""

from ._base import REPORT_DATA_SIZE, SEALING_KEY_SIZE, Tee, TeeKind
from ._gramine import DEFAULT_GRAMINE_ROOT, GramineTee
from ._select import TeeChoice, select_tee
from ._simcollateral import CollateralSpec, default_qe_tcb_levels, default_tcb_levels
from ._simpki import (
    SIM_FMSPC,
    SIM_PCE_SVN,
    SIM_QE_ISV_SVN,
    SIM_QE_MR_SIGNER,
    SIM_TCB_COMPONENTS,
    SimulatedPck,
)
from ._simulation import SIM_GUEST_IMAGE, SimulatedPlatform, SimulationTdxTee, SimulationTee
from ._tdx import (
    DEFAULT_TDX_MEASUREMENTS,
    DEFAULT_TSM_REPORT_ROOT,
    RTMR3_FILE,
    TDX_PROVIDER,
    OsTsmFilesystem,
    TdxTee,
    TsmFilesystem,
)

__all__ = [
    "DEFAULT_GRAMINE_ROOT",
    "DEFAULT_TDX_MEASUREMENTS",
    "DEFAULT_TSM_REPORT_ROOT",
    "REPORT_DATA_SIZE",
    "RTMR3_FILE",
    "SEALING_KEY_SIZE",
    "SIM_FMSPC",
    "SIM_GUEST_IMAGE",
    "SIM_PCE_SVN",
    "SIM_QE_ISV_SVN",
    "SIM_QE_MR_SIGNER",
    "SIM_TCB_COMPONENTS",
    "TDX_PROVIDER",
    "CollateralSpec",
    "GramineTee",
    "OsTsmFilesystem",
    "SimulatedPck",
    "SimulatedPlatform",
    "SimulationTdxTee",
    "SimulationTee",
    "TdxTee",
    "Tee",
    "TeeChoice",
    "TeeKind",
    "TsmFilesystem",
    "default_qe_tcb_levels",
    "default_tcb_levels",
    "select_tee",
]
