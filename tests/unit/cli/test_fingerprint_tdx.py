"""`confide fingerprint --tee tdx`: the registers a simulated TD of this launch reports."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.attestation import TdReference, launch_rtmr3, verify_quote
from confide.cli import app
from confide.crypto import PackageKey, encrypt_package
from confide.runtime import CodeSource, launch_manifest
from confide.tee import SIM_GUEST_IMAGE, SimulatedPlatform, SimulationTdxTee

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
APP_ID = "0f0f0f0f-0000-4000-8000-000000000002"
ARGS = ["--app-id", APP_ID, "--application", "app:app", "--ratls", "1900000000",
        "--san", "a.example", "--subject", "a.example"]  # fmt: skip
CREATED = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "app.pkg"
    with out.open("wb") as f:
        encrypt_package(EXAMPLE, f, PackageKey.generate())
    return out


def test_prints_the_registers_a_td_of_this_launch_reports(package: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["fingerprint", "--tee", "tdx", *ARGS, "--package", str(package)]
    )
    assert result.exit_code == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert list(lines) == ["MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"]
    assert "simulated Confide guest image" in result.stderr
    # A simulated TD launched with the same inputs reports exactly these values.
    launch = launch_manifest(
        app_id=uuid.UUID(APP_ID),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=1900000000,
        certificate=None,
        san=("a.example",),
        subject="a.example",
    )
    platform = SimulatedPlatform.open(tmp_path / "sim", now=CREATED)
    now = CREATED + timedelta(hours=1)
    verified = verify_quote(
        SimulationTdxTee(platform, launch.measurement()).get_quote(bytes(64)),
        platform.collateral(now, tee="tdx"),
        now=now,
        policy=SIM_GUEST_IMAGE.policy(launch.measurement(), allow_simulation=True),
        trust_anchor=platform.root_certificate,
    )
    assert verified.mr_td is not None and verified.rtmrs is not None
    reported = [verified.mr_td, *verified.rtmrs]
    assert [bytes.fromhex(v) for v in lines.values()] == reported


def test_json_names_each_register(package: Path) -> None:
    result = CliRunner().invoke(
        app, ["fingerprint", "--tee", "tdx", *ARGS, "--package", str(package), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["tee"] == "tdx"
    assert payload["mr_td"] == SIM_GUEST_IMAGE.mr_td.hex()
    assert {"rtmr0", "rtmr1", "rtmr2", "rtmr3", "fingerprint", "manifest"} <= set(payload)


def test_td_reference_gives_the_published_image_values(package: Path, tmp_path: Path) -> None:
    published = TdReference(*(hashlib.sha384(bytes([i])).digest() for i in range(4)))
    reference = tmp_path / "reference.json"
    reference.write_bytes(published.to_json())
    result = CliRunner().invoke(
        app,
        ["fingerprint", "--tee", "tdx", *ARGS, "--package", str(package), "--json"]
        + ["--td-reference", str(reference)],
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["guest_image"] == "reference"
    assert [payload[k] for k in ("mr_td", "rtmr0", "rtmr1", "rtmr2")] == [
        published.mr_td.hex(),
        published.rtmr0.hex(),
        published.rtmr1.hex(),
        published.rtmr2.hex(),
    ]
    assert payload["rtmr3"] == launch_rtmr3(bytes.fromhex(payload["fingerprint"])).hex()
    assert "simulated" not in result.stderr


@pytest.mark.parametrize(
    ("content", "extra", "words"),
    [
        (b"{}", ["--tee", "tdx"], "malformed"),
        (None, ["--tee", "tdx"], "cannot read the TD reference values"),
        (b"{}", ["--tee", "simulation"], "--td-reference is for --tee tdx"),
    ],
)
def test_a_bad_td_reference_is_one_clear_line(
    package: Path, tmp_path: Path, content: bytes | None, extra: list[str], words: str
) -> None:
    reference = tmp_path / "reference.json"
    if content is not None:
        reference.write_bytes(content)
    result = CliRunner().invoke(
        app,
        ["fingerprint", *extra, *ARGS, "--package", str(package)]
        + ["--td-reference", str(reference)],
    )
    assert result.exit_code != 0
    assert words in result.stderr and "Traceback" not in result.stderr
