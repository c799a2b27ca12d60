"""An app with locked requirements runs in its own TD; a wheel swapped in the operator's cache
is refused in the TD (ADR 0024, 0030).

An operator with ``tee = "tdx"`` and QEMU's stand-in (tests/tdx_standin) first on its
PATH, fetching wheels from a local folder (``wheel_find_links``). The owner deploys a
project whose ``requirements.txt`` names a wheel built here; the operator writes the wheel
disk and attaches it as a read-only virtio disk; the stand-in checks the command line and
shows the disk to the guest as the kernel would (``/sys/block/<vdX>/serial``,
``/dev/<vdX>``); ``confide td-runtime``'s code reads it within bounds and the runtime
installs each wheel after checking it against the measured lock, extends RTMR3 with the
launch (the lock's hash included) and serves. With another file under the locked hash's
name in the cache, the TD's runtime refuses it with ``requirements.hash_mismatch`` and
both hashes, and the app is ``on_error`` at once.

Everything is offline: the wheels are built here, served to the owner's resolver and to
the operator from a local folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import deploy
from support.operators import OperatorProcess, create_token, kill_runtimes, only_app
from support.wheels import (
    TINYDEP,
    TINYDEP_BACKDOORED,
    cache_wheel,
    resolve_offline,
    tinydep_project,
    write_wheel,
)
from tdx_standin import StandinConfig, install, measure_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="index")
def index_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("index")
    write_wheel(folder, "tinydep", "1.0", TINYDEP)
    return folder


@pytest.fixture(scope="module", name="image")
def image_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("guest")
    parts = {"OVMF.inteltdx.fd": b"TDVF " * 64, "vmlinuz": b"kernel " * 64, "initrd": b"init"}
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    reference = measure_image(parts["OVMF.inteltdx.fd"], parts["vmlinuz"], parts["initrd"], "ro")
    (folder / "reference.json").write_bytes(reference.to_json())
    return folder


@pytest.fixture(scope="module", name="standins")
def standins_fixture(tmp_path_factory: pytest.TempPathFactory) -> StandinConfig:
    root = tmp_path_factory.mktemp("tdx-locked")
    return install(root / "bin", root / "data" / "simulation")


@pytest.fixture(scope="module", name="operator")
def operator_fixture(
    standins: StandinConfig, image: Path, index: Path
) -> Iterator[OperatorProcess]:
    data = standins.platform_state.parent
    data.mkdir(mode=0o700, exist_ok=True)
    (data / "operator.toml").write_text(
        f'tee = "tdx"\nallow_simulated_tdx = true\nwheel_find_links = {json.dumps(str(index))}\n'
        f'\n[tdx]\nfirmware = "{image / "OVMF.inteltdx.fd"}"\nkernel = "{image / "vmlinuz"}"\n'
        f'initrd = "{image / "initrd"}"\nappend = "ro"\n'
        f'reference = "{image / "reference.json"}"\n'
    )
    env = dict(os.environ, PATH=f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    operator = OperatorProcess(data, "--stop-apps-on-exit", env=env)
    try:
        yield operator
    finally:
        operator.kill()
        kill_runtimes(data)


@pytest.fixture(name="offline")
def offline_fixture(index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's resolver reads the same local folder, and nothing else."""
    resolve_offline(index, monkeypatch)


def _app(operator: OperatorProcess, token: str) -> dict[str, object]:
    with operator.client(token) as api:
        return only_app(api)


def _deploy(operator: OperatorProcess, image: Path, root: Path, name: str) -> tuple[str, str]:
    token = create_token(operator.data_dir, name)
    reference = str(image / "reference.json")
    done = deploy(
        operator,
        token,
        tinydep_project(root, name),
        "--allow-simulation",
        "--td-reference",
        reference,
    )
    return token, done.output + ("" if done.exit_code == 0 else f"\nexit {done.exit_code}")


@pytest.mark.usefixtures("offline")
def test_a_locked_app_runs_in_its_td_with_its_wheel_disk(
    operator: OperatorProcess, image: Path, tmp_path: Path
) -> None:
    cache_wheel(operator.data_dir / "wheels", TINYDEP)  # whatever ran before
    token, output = _deploy(operator, image, tmp_path, "genuine")
    assert "\nexit " not in output, output
    digest = hashlib.sha256(TINYDEP).hexdigest()
    assert f"locked tinydep==1.0 sha256:{digest}" in output
    record = _app(operator, token)
    assert record["status"] == "running"
    launch = record["launch"]
    assert isinstance(launch, dict)
    lock = (tmp_path / "requirements.lock").read_bytes()
    assert launch["requirements_sha256"] == hashlib.sha256(lock).hexdigest()
    disk = operator.data_dir / "apps" / str(record["id"]) / "wheels.disk"
    assert lock in disk.read_bytes() and TINYDEP in disk.read_bytes()  # what the TD was given


@pytest.mark.usefixtures("offline")
def test_a_wheel_swapped_in_the_operator_cache_is_refused_in_the_td(
    operator: OperatorProcess, image: Path, tmp_path: Path
) -> None:
    expected = hashlib.sha256(TINYDEP).hexdigest()
    observed = hashlib.sha256(TINYDEP_BACKDOORED).hexdigest()
    cached = operator.data_dir / "wheels" / expected[:2] / expected[2:]
    cached.unlink(missing_ok=True)
    cache_wheel(operator.data_dir / "wheels", TINYDEP_BACKDOORED, sha256=bytes.fromhex(expected))
    token, output = _deploy(operator, image, tmp_path, "victim")
    assert "\nexit " in output, output
    assert "the backdoored wheel ran" not in output and "Traceback" not in output
    record = _app(operator, token)
    assert record["status"] == "on_error"
    detail = str(record["status_detail"])
    assert "requirements.hash_mismatch" in detail
    assert f"observed {observed}" in detail and f"expected {expected}" in detail
    with operator.client(token) as api:
        metrics = api.get(f"/api/v1/apps/{record['id']}/metrics").json()
    assert metrics["restarts"] == 0  # refused once, not retried
