"""`confide fingerprint`, run on the owner's side with no TEE, predicts the enclave's MRENCLAVE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.wire import TlsMode
from support.runtimes import (
    HOST,
    CodeUnderTest,
    Launch,
    new_platform,
    running,
    verify_enclave,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("tls", [TlsMode.RATLS, TlsMode.OPERATOR])
def test_fingerprint_command_predicts_the_quote(tmp_path: Path, tls: TlsMode) -> None:
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    launch = Launch(code=code, state_dir=tmp_path / "state", sim_dir=tmp_path / "sim", tls=tls)
    platform = new_platform(launch.sim_dir)
    mode = ["--ratls", str(launch.ratls_expiry)] if tls == TlsMode.RATLS else ["--no-ssl"]
    args = ["fingerprint", "--app-id", str(launch.app_id), "--application", launch.application]
    args += ["--package", str(code.path), *mode, "--json"]
    for name in launch.san:
        args += ["--san", name]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fingerprint = bytes.fromhex(json.loads(result.stdout)["fingerprint"])

    with running(launch.args()) as runtime:
        _, verified = verify_enclave(runtime.port(), platform, fingerprint)
    assert verified.quote.mr_enclave == fingerprint
    assert HOST  # the harness serves on its loopback host
