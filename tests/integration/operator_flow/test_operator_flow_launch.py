"""Launching a stored manifest: the runtime's arguments; a launch that differs is refused."""

from __future__ import annotations

import dataclasses
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.crypto import PackageKey, encrypt_package
from confide.errors import UsageError
from confide.runtime import (
    check_launch,
    runtime_arguments,
    runtime_code_hash,
)
from confide.wire import LaunchManifest, TlsMode

NOW = datetime.now(UTC)


@pytest.fixture(name="package")
def package_fixture(tmp_path: Path) -> tuple[Path, bytes]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    out = io.BytesIO()
    info = encrypt_package(app, out, PackageKey.generate())
    path = tmp_path / "app.pkg"
    path.write_bytes(out.getvalue())
    return path, info.digest


def manifest(digest: bytes, tls: TlsMode = TlsMode.RATLS, **changes: object) -> LaunchManifest:
    app_id = uuid.uuid4()
    base = LaunchManifest(
        runtime_sha256=runtime_code_hash(),
        package_sha256=digest,
        app_id=app_id,
        application="app:app",
        tls=tls,
        ratls_expiry=int((NOW + timedelta(days=1)).timestamp()) if tls == TlsMode.RATLS else None,
        certificate_sha256=None,
        san=(f"{app_id}.apps.example",),
        subject=f"{app_id}.apps.example" if tls == TlsMode.RATLS else None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_arguments_of_each_mode(package: tuple[Path, bytes], tmp_path: Path) -> None:
    path, digest = package
    ratls = manifest(digest)
    args = runtime_arguments(
        ratls,
        package=path,
        certificate=None,
        host="127.0.0.1",
        port=4000,
        state_dir=tmp_path / "state",
        tee="simulation",
        simulation_state=tmp_path / "sim",
    )
    assert args[args.index("--ratls") + 1] == str(ratls.ratls_expiry)
    assert args[args.index("--subject") + 1] == ratls.subject
    assert args[args.index("--app-id") + 1] == str(ratls.app_id)
    assert "--no-ssl" not in args and "--certificate" not in args
    plain = manifest(digest, TlsMode.OPERATOR)
    args = runtime_arguments(
        plain,
        package=path,
        certificate=None,
        host="127.0.0.1",
        port=4000,
        state_dir=tmp_path / "state",
        tee="gramine",
        simulation_state=None,
    )
    assert "--no-ssl" in args and "--simulation-state" not in args
    assert args[args.index("--tee") + 1] == "gramine"
    with pytest.raises(UsageError, match="certificate"):
        runtime_arguments(
            plain,
            package=path,
            certificate=tmp_path / "cert.pem",
            host="127.0.0.1",
            port=4000,
            state_dir=tmp_path / "state",
            tee="gramine",
            simulation_state=None,
        )
    with pytest.raises(UsageError, match="simulation"):
        runtime_arguments(
            plain,
            package=path,
            certificate=None,
            host="127.0.0.1",
            port=4000,
            state_dir=tmp_path / "state",
            tee="simulation",
            simulation_state=None,
        )


def test_every_argument_is_an_option_of_the_runtime(
    package: tuple[Path, bytes], tmp_path: Path
) -> None:
    """Each option given is one ``confide runtime`` has (the e2e tests launch them for real)."""
    from confide.cli import app

    path, digest = package
    wanted = manifest(digest)
    args = runtime_arguments(
        wanted,
        package=path,
        certificate=None,
        host="127.0.0.1",
        port=0,
        state_dir=tmp_path / "state",
        tee="simulation",
        simulation_state=tmp_path / "sim",
    )
    result = CliRunner().invoke(app, ["runtime", "--help"])
    assert result.exit_code == 0
    for option in (a for a in args if a.startswith("--")):
        assert option in result.output, option


@pytest.mark.parametrize(
    "change",
    [
        {"package_sha256": bytes(32)},
        {"runtime_sha256": bytes(32)},
    ],
    ids=["another package", "another runtime"],
)
def test_a_launch_that_would_measure_differently_is_refused(
    package: tuple[Path, bytes], tmp_path: Path, change: dict[str, bytes]
) -> None:
    path, digest = package
    good = manifest(digest)
    settings = check_launch(good, package=path, certificate=None, state_dir=tmp_path, now=NOW)
    assert settings.manifest.measurement() == good.measurement()
    bad = dataclasses.replace(good, **change)  # type: ignore[arg-type]
    field = next(iter(change))
    with pytest.raises(UsageError, match=field):
        check_launch(bad, package=path, certificate=None, state_dir=tmp_path, now=NOW)
