"""Attack: the operator (or whoever writes its disk) swaps a wheel in its cache (ADR 0024).

The owner locks a dependency by hash; the operator fetches it into its content-addressed
cache and hands the runtime the cache. An operator that puts another file under the locked
hash's name (a backdoored build of the same version) must not get it run: the runtime
refuses it, naming the observed and the expected SHA-256, the app goes ``on_error`` at
once, and ``confide deploy`` prints why. The same flow with the genuine wheel runs the app
(the guard against a vacuous pass: the refusal is the hash, not a broken install path).

Everything is offline: the wheels are built here, served to the owner's resolver and to
the operator from a local folder (``wheel_find_links``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import deploy
from support.operators import OperatorProcess, create_token, only_app, operator_running
from support.wheels import (
    TINYDEP,
    TINYDEP_BACKDOORED,
    cache_wheel,
    resolve_offline,
    tinydep_project,
    write_wheel,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="index")
def index_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    write_wheel(folder, "tinydep", "1.0", TINYDEP)
    return folder


@pytest.fixture(scope="module", name="operator")
def operator_fixture(
    tmp_path_factory: pytest.TempPathFactory, index: Path
) -> Iterator[OperatorProcess]:
    data = tmp_path_factory.mktemp("operator") / "data"
    data.mkdir()
    (data / "operator.toml").write_text(f"wheel_find_links = {json.dumps(str(index))}\n")
    with operator_running(data) as operator:
        yield operator


@pytest.fixture(name="offline")
def offline_fixture(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's resolver reads the same local folder, and nothing else."""
    resolve_offline(index, monkeypatch)


def _only_app(operator: OperatorProcess, token: str) -> dict[str, object]:
    with operator.client(token) as api:
        return only_app(api)


@pytest.mark.usefixtures("offline")
def test_the_genuine_wheel_is_fetched_checked_and_imported(
    operator: OperatorProcess, tmp_path: Path
) -> None:
    token = create_token(operator.data_dir, "genuine")
    done = deploy(operator, token, tinydep_project(tmp_path, "genuine"), "--allow-simulation")
    assert done.exit_code == 0, done.output
    digest = hashlib.sha256(TINYDEP).hexdigest()
    assert f"locked tinydep==1.0 sha256:{digest}" in done.output
    record = _only_app(operator, token)
    assert record["status"] == "running"
    launch = record["launch"]
    assert isinstance(launch, dict)
    lock = (tmp_path / "requirements.lock").read_bytes()
    assert launch["requirements_sha256"] == hashlib.sha256(lock).hexdigest()
    cached = operator.data_dir / "wheels" / digest[:2] / digest[2:]
    assert cached.read_bytes() == TINYDEP  # fetched from the operator's index, by hash


@pytest.mark.usefixtures("offline")
def test_a_wheel_swapped_in_the_operator_cache_is_refused_with_both_hashes(
    operator: OperatorProcess, tmp_path: Path
) -> None:
    token = create_token(operator.data_dir, "victim")
    expected = hashlib.sha256(TINYDEP).hexdigest()
    observed = hashlib.sha256(TINYDEP_BACKDOORED).hexdigest()
    cached = operator.data_dir / "wheels" / expected[:2] / expected[2:]
    cached.unlink(missing_ok=True)
    cache_wheel(operator.data_dir / "wheels", TINYDEP_BACKDOORED, sha256=bytes.fromhex(expected))
    done = deploy(operator, token, tinydep_project(tmp_path, "victim"), "--allow-simulation")
    assert done.exit_code != 0, done.output
    assert f"observed {observed}" in done.output
    assert f"expected {expected}" in done.output
    assert "the backdoored wheel ran" not in done.output
    assert "Traceback" not in done.output
    record = _only_app(operator, token)
    assert record["status"] == "on_error"
    detail = str(record["status_detail"])
    assert f"observed {observed}" in detail and f"expected {expected}" in detail
    with operator.client(token) as api:
        metrics = api.get(f"/api/v1/apps/{record['id']}/metrics").json()
    assert metrics["restarts"] == 0  # refused once, not retried
