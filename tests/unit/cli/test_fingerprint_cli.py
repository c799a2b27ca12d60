"""`confide fingerprint`: the launch's measurement from its inputs, and refusals."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.crypto import PackageKey, encrypt_package
from confide.runtime import (
    CodeSource,
    launch_manifest,
)
from confide.wire import LaunchManifest, TlsMode

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
APP_ID = "0f0f0f0f-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "app.pkg"
    with out.open("wb") as f:
        encrypt_package(EXAMPLE, f, PackageKey.generate())
    return out


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["fingerprint", *args])
    return result.exit_code, result.stdout, result.stderr


def test_options_give_the_launch_manifest_measurement(package: Path) -> None:
    code, out, _ = _run(
        "--app-id", APP_ID, "--application", "app:app", "--package", str(package),
        "--ratls", "1900000000", "--san", "a.example", "--subject", "a.example", "--json",
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    expected = launch_manifest(
        app_id=uuid.UUID(APP_ID),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=1900000000,
        certificate=None,
        san=("a.example",),
        subject="a.example",
    )
    assert payload["fingerprint"] == expected.measurement().hex()
    assert LaunchManifest.from_json(json.dumps(payload["manifest"])) == expected


def test_manifest_file_is_recomputed_and_its_package_checked(package: Path, tmp_path: Path) -> None:
    manifest = launch_manifest(
        app_id=uuid.UUID(APP_ID),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=None,
        certificate=None,
        san=(),
        subject=None,
    )
    assert manifest.tls == TlsMode.OPERATOR
    record = tmp_path / "app.json"
    record.write_text(json.dumps({"id": APP_ID, "manifest": manifest.to_dict()}))
    code, out, _ = _run("--manifest", str(record), "--package", str(package))
    assert code == 0
    assert out.strip() == manifest.measurement().hex()

    other = tmp_path / "other.pkg"
    other.write_bytes(package.read_bytes()[:-1] + b"\x00")
    code, _, err = _run("--manifest", str(record), "--package", str(other))
    assert code == 2
    assert "package digest mismatch" in err


def test_another_releases_runtime_hash_needs_to_be_given(package: Path, tmp_path: Path) -> None:
    theirs = bytes(range(32))
    manifest = launch_manifest(
        app_id=uuid.UUID(APP_ID),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=1900000000,
        certificate=None,
        san=(),
        subject=None,
        runtime_sha256=theirs,
    )
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest.to_json())
    code, _, err = _run("--manifest", str(path))
    assert code == 2
    assert "not this Confide's own" in err and "--runtime-sha256" in err
    code, out, err = _run("--manifest", str(path), "--runtime-sha256", theirs.hex())
    assert code == 0
    assert out.strip() == manifest.measurement().hex()
    assert "you vouch for that environment" in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "--app-id and --application"),
        (["--app-id", APP_ID, "--application", "app:app", "--no-ssl"], "exactly one of --package"),
        (
            ["--app-id", APP_ID, "--application", "app:app", "--app-dir", str(EXAMPLE)],
            "exactly one of --ratls",
        ),
        (
            ["--app-id", "nope", "--application", "app:app", "--app-dir", str(EXAMPLE),
             "--plaincode", "--no-ssl"],
            "must be a UUID",
        ),
        (
            ["--app-id", APP_ID, "--application", "app", "--app-dir", str(EXAMPLE),
             "--plaincode", "--no-ssl"],
            "module:attribute",
        ),
        (["--manifest", "/nonexistent.json"], "cannot read"),
        (["--runtime-sha256", "abcd", "--manifest", "/x"], "must be 32 bytes"),
        (["--runtime-sha256", "abc", "--manifest", "/x"], "is not hex"),
    ],
)  # fmt: skip
def test_bad_inputs_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    code, _, err = _run(*args)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
