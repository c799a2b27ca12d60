"""Choosing the TEE backend at the entry point."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from confide.errors import TeeError, UsageError

from ._base import Tee
from ._gramine import DEFAULT_GRAMINE_ROOT, GramineTee
from ._simulation import SimulatedPlatform, SimulationTdxTee, SimulationTee
from ._tdx import DEFAULT_TDX_MEASUREMENTS, DEFAULT_TSM_REPORT_ROOT, TdxTee

TeeChoice = Literal["auto", "gramine", "tdx", "simulation", "simulation-tdx"]


def select_tee(
    kind: TeeChoice,
    *,
    simulation_state: Path | None,
    measurement: bytes | None,
    now: datetime | None = None,
    gramine_root: Path = DEFAULT_GRAMINE_ROOT,
    tsm_root: Path = DEFAULT_TSM_REPORT_ROOT,
    tdx_measurements: Path = DEFAULT_TDX_MEASUREMENTS,
) -> Tee:
    """The TEE to run on.

    ``"gramine"`` requires Gramine's attestation files at ``gramine_root``;
    ``"tdx"`` requires configfs-tsm with the ``tdx_guest`` provider at ``tsm_root``
    and extends RTMR3 with the launch ``measurement`` before returning (ADR 0020);
    ``"simulation-tdx"`` is a simulated TD on the simulated platform whose RTMR3
    holds the launch ``measurement`` (ADR 0020);
    ``"simulation"`` loads (or creates, with ``now``) the simulated platform in
    ``simulation_state`` and launches ``measurement`` on it; ``"auto"`` picks
    Gramine when ``gramine_root`` exists, else simulation, which then needs
    ``simulation_state`` and ``measurement``: auto never falls back to a
    simulator the caller did not configure.
    """
    if kind == "gramine":
        return GramineTee(gramine_root)
    if kind == "tdx":
        if measurement is None:
            raise UsageError("the TDX TEE needs the launch measurement to extend into RTMR3")
        tdx = TdxTee(tsm_root, measurements=tdx_measurements)
        tdx.extend_launch(measurement)
        return tdx
    if kind == "auto":
        if gramine_root.exists():
            return GramineTee(gramine_root)
        if simulation_state is None:
            raise TeeError(
                f"no TEE found: {gramine_root} does not exist and no simulation state was given",
                hint="run inside Gramine SGX, or choose the simulation TEE explicitly",
            )
    elif kind not in ("simulation", "simulation-tdx"):
        raise UsageError(
            f"unknown TEE kind {kind!r}; expected auto, gramine, tdx, simulation or simulation-tdx"
        )
    if simulation_state is None or measurement is None:
        raise UsageError("the simulation TEE needs a state folder and an enclave measurement")
    if now is None or now.tzinfo is None:
        raise UsageError("the simulation TEE needs the current time (timezone-aware) as now")
    platform = SimulatedPlatform.open(simulation_state, now=now)
    if kind == "simulation-tdx":
        return SimulationTdxTee(platform, measurement)
    return SimulationTee(platform, measurement)
