"""``confide td-runtime``: the guest image's entry reads its launch from fw_cfg, then needs a TD.

On this machine (no TDX) it gets as far as the TEE: with the host's items laid
out as the ``qemu_fw_cfg`` driver shows them, it builds the launch and stops at
configfs-tsm's absence with one clear line; a launch item it cannot rebuild is
refused before any TEE is touched.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.crypto import PackageKey, encrypt_package
from confide.runtime import CodeSource, TdSettings, fw_cfg_file, launch_manifest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"


def items(tmp_path: Path, *, runtime_sha256: bytes | None) -> Path:
    package = tmp_path / "app.pkg"
    with package.open("wb") as f:
        encrypt_package(EXAMPLE, f, PackageKey.generate())
    launch = launch_manifest(
        app_id=uuid.uuid4(),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=1900000000,
        certificate=None,
        san=("a.example",),
        subject=None,
        runtime_sha256=runtime_sha256,
    )
    root = tmp_path / "qemu_fw_cfg"
    for item, data in (("launch", launch.to_json()), ("settings", TdSettings().to_json())):
        fw_cfg_file(root, item).parent.mkdir(parents=True)
        fw_cfg_file(root, item).write_bytes(data)
    fw_cfg_file(root, "package").parent.mkdir(parents=True)
    shutil.copyfile(package, fw_cfg_file(root, "package"))
    return root


def run(root: Path, tmp_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["td-runtime", "--fw-cfg", str(root), "--state-dir", str(tmp_path / "state")]
    )
    return result.exit_code, result.stderr


@pytest.mark.skipif(Path("/sys/kernel/config/tsm/report").exists(), reason="this is a TD")
def test_outside_a_td_it_stops_at_the_tee_with_one_line(tmp_path: Path) -> None:
    code, err = run(items(tmp_path, runtime_sha256=None), tmp_path)
    assert code != 0
    assert "configfs-tsm" in err and "Traceback" not in err


def test_a_launch_of_another_runtime_is_refused_before_the_tee(tmp_path: Path) -> None:
    code, err = run(items(tmp_path, runtime_sha256=bytes(32)), tmp_path)
    assert code != 0
    assert "not the host's launch item" in err and "runtime_sha256" in err
    assert "configfs-tsm" not in err
