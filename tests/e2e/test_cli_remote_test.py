"""End to end: ``confide test`` runs a Cosmian Enclave app's own tests against its enclave.

``examples/cosmian_flask`` is deployed from its ``mse.toml`` as is (its
``docker`` key ignored) on a real operator (simulated TEE), then ``confide
test --no-install`` starts a verified ``confide proxy`` of it and runs the
project's pytest suite through it: exit 0. A copy of the project with one
failing test more gives a non-zero exit; a wrong fingerprint runs no test.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from confide.client import AppContext
from support.cli import cli, deploy, router
from support.operators import (
    OperatorProcess,
    create_token,
)
from support.runtimes import EXAMPLES

pytestmark = pytest.mark.slow

PROJECT = EXAMPLES / "cosmian_flask"


@pytest.fixture(scope="module", name="context_file")
def context_file_fixture(
    operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The example deployed from its unchanged mse.toml; its context kept out of the repo."""
    token = create_token(operator.data_dir, "owner")
    workspace = tmp_path_factory.mktemp("workspace")
    done = deploy(
        operator,
        token,
        PROJECT / "mse.toml",
        "--allow-simulation",
        "-y",
        "--workspace",
        str(workspace),
    )
    assert done.exit_code == 0, done.output
    # Its requirements.txt is locked (the committed requirements.lock, reused as is) and
    # installed from checked wheels in the enclave (ADR 0024).
    assert "requirements.txt in the code folder" in done.output
    assert "(reused as is)" in done.output and "locked flask==3.1.3" in done.output
    (context,) = workspace.glob("*.json")
    return context


def remote_test(operator: OperatorProcess, *args: str) -> tuple[int, str]:
    done = cli(
        "test",
        "--no-install",
        "--connect",
        router(operator),
        "--operator",
        operator.api_url,
        "--allow-simulation",
        *args,
    )
    return done.exit_code, done.output


def test_the_projects_tests_pass_through_the_verified_proxy(
    operator: OperatorProcess, context_file: Path
) -> None:
    code, output = remote_test(
        operator, "--path", str(PROJECT / "mse.toml"), "--context", str(context_file)
    )
    assert code == 0, output
    assert "4 passed" in output
    fingerprint = AppContext.load(context_file).fingerprint.hex()
    assert "verified a SIMULATED enclave" in output and fingerprint in output
    assert "the tests passed" in output
    assert not (PROJECT / ".confide").exists()


def test_a_failing_test_fails_the_command(
    operator: OperatorProcess, context_file: Path, tmp_path: Path
) -> None:
    """The context is found in the project's .confide/ when --context is not given."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", ".confide"))
    (project / "tests" / "test_fails.py").write_text(
        "import httpx\n\n\n"
        "def test_the_app_says_goodbye(url: str) -> None:\n"
        '    assert httpx.get(f"{url}/", timeout=10).text == "Goodbye"\n'
    )
    (project / ".confide").mkdir()
    shutil.copy(context_file, project / ".confide" / context_file.name)
    code, output = remote_test(operator, "--path", str(project / "mse.toml"))
    assert code == 1, output
    assert "1 failed, 4 passed" in output
    assert "the tests failed (exit 1)" in output


def test_another_fingerprint_runs_no_test(
    operator: OperatorProcess, context_file: Path, tmp_path: Path
) -> None:
    """A context expecting other code (another runtime hash): the proxy refuses, no test runs."""
    context = AppContext.load(context_file)
    launch = dataclasses.replace(context.launch, runtime_sha256=bytes(32))
    other = dataclasses.replace(context, launch=launch)
    altered = tmp_path / "other.json"
    other.save(altered)
    code, output = remote_test(
        operator, "--path", str(PROJECT / "mse.toml"), "--context", str(altered)
    )
    assert code == 2, output
    assert f"[proxy] error: MRENCLAVE: observed {context.fingerprint.hex()}" in output
    assert f"expected {other.fingerprint.hex()}" in output
    assert "nothing was tested" in output
    assert "passed" not in output
