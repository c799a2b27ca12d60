"""End to end under Gramine's stand-ins: an app with locked requirements (ADR 0024).

The operator (``tee = "gramine"``) puts the lock and the wheels, fetched by hash from its
index, in the app's folder; its manifest trusts each with the lock's SHA-256 and mounts them
where the measured argv names them; the stand-in loader checks them at open, and the runtime
installs the wheel into the in-enclave tmpfs. The owner's ``confide deploy`` predicts the
MRENCLAVE from the lock alone (no wheel needed) and the enclave matches it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app as cli
from gramine_standin import StandinConfig, install, mount_namespace_support
from support.operators import OperatorProcess, create_token, kill_runtimes
from support.runtimes import HOST
from support.wheels import wheel_bytes, write_wheel

pytestmark = pytest.mark.slow

WHEEL = wheel_bytes("tinydep", "1.0")


@pytest.fixture(name="standins")
def standins_fixture(tmp_path: Path) -> StandinConfig:
    missing = mount_namespace_support()
    if missing is not None:
        pytest.skip(f"the Gramine stand-in needs a private mount namespace: {missing}")
    return install(tmp_path / "bin", tmp_path / "data" / "simulation")


@pytest.fixture(name="index")
def index_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    write_wheel(folder, "tinydep", "1.0", WHEEL)
    return folder


@pytest.fixture(name="operator")
def operator_fixture(
    tmp_path: Path, standins: StandinConfig, index: Path
) -> Iterator[OperatorProcess]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "operator.toml").write_text(
        'tee = "gramine"\nallow_simulated_gramine = true\n'
        f"wheel_find_links = {json.dumps(str(index))}\n"
    )
    env = dict(os.environ, PATH=f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    operator = OperatorProcess(data, env=env)
    try:
        yield operator
    finally:
        operator.kill()
        kill_runtimes(data)


def test_a_locked_app_runs_in_a_gramine_enclave_its_owner_predicted(
    operator: OperatorProcess,
    standins: StandinConfig,
    index: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    code = tmp_path / "project" / "code"
    code.mkdir(parents=True)
    (code / "app.py").write_text(
        "import tinydep\n\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': tinydep.VERSION.encode()})\n"
    )
    (code / "requirements.txt").write_text("tinydep==1.0\n")
    (tmp_path / "project" / "tests").mkdir()
    project = tmp_path / "project" / "confide.toml"
    project.write_text(
        'name = "locked"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n\n[cloud]\ncode = "code"\n'
        'tests = "tests"\nproject = "default"\nhardware = "small"\n'
    )
    token = create_token(operator.data_dir, "owner")
    deployed = CliRunner().invoke(
        cli,
        ["deploy", "--path", str(project), "--connect", f"{HOST}:{operator.router_port}",
         "--url", operator.api_url, "--token", token, "--timeout", "4",
         "--allow-simulation", "--key-file", str(tmp_path / "owner.key"), "--json"],
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    done = json.loads(deployed.stdout)
    assert done["tee"] == "gramine" and done["status"] == "running"
    lock = (tmp_path / "project" / "requirements.lock").read_bytes()
    assert done["launch"]["requirements_sha256"] == hashlib.sha256(lock).hexdigest()
    folder = operator.data_dir / "apps" / done["id"]
    manifest = (folder / "confide-runtime.manifest").read_text()
    digest = hashlib.sha256(WHEEL).hexdigest()
    assert f'file:wheels/{digest[:2]}/{digest[2:]}", sha256 = "{digest}"' in manifest
    assert (folder / "wheels" / digest[:2] / digest[2:]).read_bytes() == WHEEL
    log = (operator.data_dir / "logs" / f"{done['id']}.log").read_text()
    assert "installed 1 locked wheel(s)" in log
