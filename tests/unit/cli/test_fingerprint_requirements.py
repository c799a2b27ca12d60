"""`confide fingerprint --requirements`: the lock is measured, as the runtime measures it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.crypto import PackageKey, encrypt_package
from confide.runtime import RuntimeSettings
from support.wheels import lock_of, wheel_bytes

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
APP_ID = "0f0f0f0f-0000-4000-8000-000000000003"
ARGS = ["--app-id", APP_ID, "--application", "app:app", "--ratls", "1900000000",
        "--san", "a.example", "--subject", "a.example"]  # fmt: skip


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "app.pkg"
    with out.open("wb") as f:
        encrypt_package(EXAMPLE, f, PackageKey.generate())
    return out


def _lock(folder: Path, version: str) -> Path:
    path = folder / f"requirements-{version}.lock"
    lock = lock_of(
        ("colorful", version, wheel_bytes("colorful", version)),
        ("tinydep", "1.0", wheel_bytes("tinydep", "1.0")),
    )
    path.write_bytes(lock.to_bytes())
    return path


def _fingerprint(*args: str) -> str:
    result = CliRunner().invoke(app, ["fingerprint", *args])
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_changing_one_pinned_version_changes_the_fingerprint(package: Path, tmp_path: Path) -> None:
    first, second = _lock(tmp_path, "1.0"), _lock(tmp_path, "1.1")
    bare = _fingerprint(*ARGS, "--package", str(package))
    locked = _fingerprint(*ARGS, "--package", str(package), "--requirements", str(first))
    bumped = _fingerprint(*ARGS, "--package", str(package), "--requirements", str(second))
    assert len({bare, locked, bumped}) == 3
    # The runtime launched with that lock measures exactly what fingerprint printed.
    settings = RuntimeSettings.from_arguments(
        app_id=uuid.UUID(APP_ID), application="app:app", package=package, app_dir=None,
        plaincode=False, host="127.0.0.1", port=0, ratls_expiry=1900000000, certificate=None,
        no_ssl=False, san=("a.example",), subject="a.example", state_dir=tmp_path / "state",
        timeout=None, now=datetime.now(UTC), requirements=first, wheels=tmp_path / "wheels",
    )  # fmt: skip
    assert settings.measurement.hex() == locked


def test_a_manifest_is_checked_against_the_lock_given(package: Path, tmp_path: Path) -> None:
    first, second = _lock(tmp_path, "1.0"), _lock(tmp_path, "1.1")
    result = CliRunner().invoke(
        app,
        ["fingerprint", *ARGS, "--package", str(package), "--requirements", str(first), "--json"],
    )
    assert result.exit_code == 0, result.stderr
    manifest = tmp_path / "launch.json"
    manifest.write_text(json.dumps(json.loads(result.stdout)["manifest"]))
    same = _fingerprint("--manifest", str(manifest), "--requirements", str(first))
    assert same == json.loads(result.stdout)["fingerprint"]
    refused = CliRunner().invoke(
        app, ["fingerprint", "--manifest", str(manifest), "--requirements", str(second)]
    )
    assert refused.exit_code != 0
    assert "requirements lock mismatch" in refused.stderr


def test_gramine_needs_the_lock_of_a_locked_launch(package: Path, tmp_path: Path) -> None:
    lock = _lock(tmp_path, "1.0")
    result = CliRunner().invoke(
        app,
        ["fingerprint", *ARGS, "--package", str(package), "--requirements", str(lock), "--json"],
    )
    assert result.exit_code == 0, result.stderr
    manifest = tmp_path / "launch.json"
    manifest.write_text(json.dumps(json.loads(result.stdout)["manifest"]))
    refused = CliRunner().invoke(
        app, ["fingerprint", "--tee", "gramine", "--manifest", str(manifest)]
    )
    assert refused.exit_code != 0
    assert "give their lock with --requirements" in refused.stderr
