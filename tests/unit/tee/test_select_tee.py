"""select_tee: Gramine when its files are there, simulation only when configured."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from confide.errors import TeeError, TsmError, UsageError
from confide.tee import GramineTee, SimulationTee, TeeKind, select_tee

MEASUREMENT = bytes(range(32))
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def gramine_root(tmp_path: Path) -> Path:
    root = tmp_path / "attestation"
    root.mkdir()
    (root / "attestation_type").write_text("dcap")
    return root


def test_auto_picks_gramine_when_present(gramine_root: Path, tmp_path: Path) -> None:
    tee = select_tee(
        "auto",
        simulation_state=tmp_path / "sim",
        measurement=MEASUREMENT,
        gramine_root=gramine_root,
    )
    assert isinstance(tee, GramineTee)
    assert not (tmp_path / "sim").exists()


def test_auto_falls_back_to_configured_simulation(tmp_path: Path) -> None:
    tee = select_tee(
        "auto",
        simulation_state=tmp_path / "sim",
        measurement=MEASUREMENT,
        now=NOW,
        gramine_root=tmp_path / "absent",
    )
    assert isinstance(tee, SimulationTee)
    assert tee.kind is TeeKind.SIMULATION
    assert tee.measurement == MEASUREMENT


def test_auto_without_simulation_state_fails(tmp_path: Path) -> None:
    with pytest.raises(TeeError, match="no TEE found"):
        select_tee(
            "auto", simulation_state=None, measurement=None, gramine_root=tmp_path / "absent"
        )


def test_gramine_explicitly_but_absent(tmp_path: Path) -> None:
    with pytest.raises(TeeError):
        select_tee(
            "gramine",
            simulation_state=tmp_path / "sim",
            measurement=MEASUREMENT,
            gramine_root=tmp_path / "absent",
        )


def test_simulation_explicitly_even_with_gramine(gramine_root: Path, tmp_path: Path) -> None:
    tee = select_tee(
        "simulation",
        simulation_state=tmp_path / "sim",
        measurement=MEASUREMENT,
        now=NOW,
        gramine_root=gramine_root,
    )
    assert isinstance(tee, SimulationTee)


@pytest.mark.parametrize(
    ("state", "measurement", "with_time"),
    [(None, MEASUREMENT, True), (Path("sim"), None, True), (Path("sim"), MEASUREMENT, False)],
)
def test_simulation_needs_state_measurement_and_time(
    tmp_path: Path, state: Path | None, measurement: bytes | None, with_time: bool
) -> None:
    with pytest.raises(UsageError):
        select_tee(
            "simulation",
            simulation_state=None if state is None else tmp_path / state,
            measurement=measurement,
            now=NOW if with_time else None,
        )


def test_unknown_kind() -> None:
    with pytest.raises(UsageError, match="unknown TEE kind"):
        select_tee("sev", simulation_state=None, measurement=None)  # type: ignore[arg-type]


def test_tdx_explicitly_but_absent(tmp_path: Path) -> None:
    with pytest.raises(TsmError) as info:
        select_tee(
            "tdx",
            simulation_state=tmp_path / "sim",
            measurement=MEASUREMENT,
            tsm_root=tmp_path / "absent",
        )
    assert info.value.code == "tsm.absent"
    assert not (tmp_path / "sim").exists()
