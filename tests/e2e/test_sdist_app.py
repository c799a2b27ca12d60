"""An app whose dependency is a source distribution the owner allowed (ADR 0024 amendment):
``confide deploy`` locks the sdist and its build backend and says that build code will run
in the enclave; the operator fetches both by hash from its index; the runtime builds the
sdist with the locked backend and the app imports it.

The index is a PEP 503 index on 127.0.0.1 (port 0) serving the sdist built here and the
flit_core wheel (from the package index, pip's cache first); the owner's resolver
(``PIP_INDEX_URL``) and the operator (``wheel_index_url``) use it and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import deploy
from support.operators import OperatorProcess, create_token, only_app, operator_running
from support.wheels import download_wheels, index_page, pep503_index, sdist_bytes

pytestmark = pytest.mark.slow

SDIST = sdist_bytes("tinypkg", "1.0")


@pytest.fixture(scope="module", name="index_url")
def index_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        found = download_wheels(tmp_path_factory.mktemp("backend"), "flit_core")
    except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover - offline
        pytest.skip(f"the package index is not reachable: {exc}")
    flit = found["flit-core"]
    files = {
        "/simple/tinypkg/": index_page("tinypkg-1.0.tar.gz", SDIST),
        "/files/tinypkg-1.0.tar.gz": SDIST,
        "/simple/flit-core/": index_page(flit.name, flit.read_bytes()),
        f"/files/{flit.name}": flit.read_bytes(),
    }
    with pep503_index(files) as url:
        yield url


@pytest.fixture(scope="module", name="operator")
def operator_fixture(
    tmp_path_factory: pytest.TempPathFactory, index_url: str
) -> Iterator[OperatorProcess]:
    data = tmp_path_factory.mktemp("operator") / "data"
    data.mkdir()
    (data / "operator.toml").write_text(f"wheel_index_url = {json.dumps(index_url)}\n")
    with operator_running(data) as operator:
        yield operator


def _project(root: Path, name: str) -> Path:
    code = root / "code"
    code.mkdir(parents=True)
    (code / "app.py").write_text(
        "import tinypkg\n\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': tinypkg.BUILT.encode()})\n"
    )
    (root / "tests").mkdir()
    project = root / "confide.toml"
    project.write_text(
        f'name = "{name}"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n'
        'requirements = ["tinypkg==1.0"]\nallow_sdists = ["tinypkg"]\n\n[cloud]\n'
        f'code = {json.dumps(str(code))}\ntests = "tests"\nproject = "default"\n'
        'hardware = "small"\n'
    )
    return project


def test_an_allowed_sdist_is_locked_fetched_built_in_the_enclave_and_imported(
    operator: OperatorProcess, index_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", index_url)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    token = create_token(operator.data_dir, "sdist")
    done = deploy(operator, token, _project(tmp_path, "sdist"), "--allow-simulation")
    assert done.exit_code == 0, done.output
    digest = hashlib.sha256(SDIST).hexdigest()
    assert f"locked tinypkg==1.0 sha256:{digest} as a SOURCE DISTRIBUTION" in done.output
    assert "build code will run in the enclave" in done.output
    assert "build-only" in done.output
    with operator.client(token) as api:
        record = only_app(api)
    assert record["status"] == "running", record
    cached = operator.data_dir / "wheels" / digest[:2] / digest[2:]
    assert cached.read_bytes() == SDIST  # fetched from the operator's index, by hash
