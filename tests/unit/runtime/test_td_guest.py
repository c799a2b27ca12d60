"""A TD's launch through fw_cfg: the guest rebuilds it from the items and refuses any other.

The items are laid out as the kernel's ``qemu_fw_cfg`` driver shows them
(``by_name/opt/confide/<item>/raw``); the runtime code hash is given, so the
tests do not hash the installed environment.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.crypto import PackageKey, encrypt_package
from confide.errors import FormatError, UsageError
from confide.runtime import (
    FW_CFG_ITEMS,
    CodeSource,
    TdSettings,
    fw_cfg_file,
    fw_cfg_name,
    launch_manifest,
    td_runtime_settings,
    write_wheel_disk,
)
from confide.wire import LaunchManifest, RequirementsLock
from support.wheels import lock_of, wheel_bytes

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RUNTIME = bytes(range(32))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", name="packages")
def packages_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pkg")
    out = []
    for name in ("helloworld", "fastapi_hello"):
        path = folder / f"{name}.pkg"
        with path.open("wb") as f:
            encrypt_package(EXAMPLES / name, f, PackageKey.generate())
        out.append(path)
    return out[0], out[1]


def manifest_of(package: Path) -> LaunchManifest:
    return launch_manifest(
        app_id=uuid.UUID(int=7),
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=1900000000,
        certificate=None,
        san=("a.example",),
        subject=None,
        runtime_sha256=RUNTIME,
    )


def lay_out(root: Path, items: dict[str, bytes | Path]) -> Path:
    for item, value in items.items():
        raw = fw_cfg_file(root, item)
        raw.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, Path):
            shutil.copyfile(value, raw)
        else:
            raw.write_bytes(value)
    return root


def settings_of(root: Path, tmp_path: Path) -> object:
    return td_runtime_settings(
        root, host="0.0.0.0", port=8443, state_dir=tmp_path / "state", now=NOW,  # noqa: S104
        runtime_sha256=RUNTIME,
    )  # fmt: skip


def test_the_guest_rebuilds_the_hosts_launch(packages: tuple[Path, Path], tmp_path: Path) -> None:
    launch = manifest_of(packages[0])
    root = lay_out(
        tmp_path / "fw_cfg",
        {
            "launch": launch.to_json(),
            "settings": TdSettings(relay_sources=("10.0.2.2",), timeout=30.0).to_json(),
            "package": packages[0],
        },
    )
    settings = td_runtime_settings(
        root, host="0.0.0.0", port=8443, state_dir=tmp_path / "state", now=NOW,  # noqa: S104
        runtime_sha256=RUNTIME,
    )  # fmt: skip
    assert settings.manifest == launch
    assert settings.measurement == launch.measurement()
    assert (settings.host, settings.port, settings.timeout) == ("0.0.0.0", 8443, 30.0)  # noqa: S104
    assert settings.relay_sources == frozenset({"10.0.2.2"})


def test_a_launch_item_of_another_package_is_refused(
    packages: tuple[Path, Path], tmp_path: Path
) -> None:
    # The host says one package and passes another: the guest measures what it got.
    root = lay_out(
        tmp_path / "fw_cfg",
        {
            "launch": manifest_of(packages[0]).to_json(),
            "settings": TdSettings().to_json(),
            "package": packages[1],
        },
    )
    with pytest.raises(UsageError) as info:
        settings_of(root, tmp_path)
    assert "package_sha256" in str(info.value) and "not the host's launch item" in str(info.value)


def test_another_runtime_is_refused(packages: tuple[Path, Path], tmp_path: Path) -> None:
    launch = manifest_of(packages[0])
    root = lay_out(
        tmp_path / "fw_cfg",
        {"launch": launch.to_json(), "settings": TdSettings().to_json(), "package": packages[0]},
    )
    with pytest.raises(UsageError) as info:
        td_runtime_settings(
            root, host="0.0.0.0", port=8443, state_dir=tmp_path / "s", now=NOW,  # noqa: S104
            runtime_sha256=bytes(32),
        )  # fmt: skip
    assert "runtime_sha256" in str(info.value)


@pytest.mark.parametrize(
    ("missing", "words"),
    [("launch", "launch item"), ("settings", "settings item"), ("package", "no package item")],
)
def test_a_missing_item_is_named(
    packages: tuple[Path, Path], tmp_path: Path, missing: str, words: str
) -> None:
    items: dict[str, bytes | Path] = {
        "launch": manifest_of(packages[0]).to_json(),
        "settings": TdSettings().to_json(),
        "package": packages[0],
    }
    del items[missing]
    with pytest.raises(UsageError) as info:
        settings_of(lay_out(tmp_path / "fw_cfg", items), tmp_path)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b'{"format":"confide-td-settings","version":2,"relay_sources":[],"timeout":null}',
        b'{"format":"confide-td-settings","version":1,"relay_sources":"x","timeout":null}',
        b'{"format":"confide-td-settings","version":1,"relay_sources":[],"timeout":true}',
        b'{"format":"confide-td-settings","version":1,"relay_sources":[],"timeout":-1}',
        b'{"format":"confide-td-settings","version":1,"relay_sources":[],"timeout":null,"x":1}',
    ],
)
def test_malformed_settings_are_refused(raw: bytes) -> None:
    with pytest.raises(FormatError) as info:
        TdSettings.from_json(raw)
    assert info.value.code == "td.settings"


@given(
    st.lists(st.from_regex(r"[0-9a-f.:]{1,40}", fullmatch=True), max_size=16),
    st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e6)),
)
def test_settings_round_trip(sources: list[str], timeout: float | None) -> None:
    settings = TdSettings(tuple(sources), timeout)
    assert TdSettings.from_json(settings.to_json()) == settings


@given(st.binary(max_size=300))
def test_settings_parser_raises_only_its_own_error(raw: bytes) -> None:
    try:
        TdSettings.from_json(raw)
    except FormatError as exc:
        assert exc.code == "td.settings"


def test_fw_cfg_names_are_under_opt_and_fit_qemus_limit() -> None:
    for item in FW_CFG_ITEMS:
        name = fw_cfg_name(item)
        assert name.startswith("opt/") and len(name.encode()) < 56
    with pytest.raises(UsageError):
        fw_cfg_name("other")
    assert json.loads(TdSettings().to_json())["relay_sources"] == []


# -- the wheel disk of a locked launch (ADR 0030) ----------------------------------------------


def _locked_td(
    packages: tuple[Path, Path], tmp_path: Path, disks: dict[str, bytes]
) -> tuple[Path, RequirementsLock, dict[str, Path]]:
    """fw_cfg items of a launch locking one wheel, and virtio disks by name and serial."""
    wheel = wheel_bytes("tinydep", "1.0")
    lock = lock_of(("tinydep", "1.0", wheel))
    (tmp_path / "wheel").write_bytes(wheel)
    image = tmp_path / "wheels.disk"
    write_wheel_disk(lock, {lock.requirements[0].sha256: tmp_path / "wheel"}, image)
    launch = dataclasses.replace(manifest_of(packages[0]), requirements_sha256=lock.digest())
    root = lay_out(
        tmp_path / "fw_cfg",
        {"launch": launch.to_json(), "settings": TdSettings().to_json(), "package": packages[0]},
    )
    sys_block, dev = tmp_path / "sys" / "block", tmp_path / "dev"
    sys_block.mkdir(parents=True)
    dev.mkdir(parents=True)
    for name, serial in disks.items():
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "serial").write_bytes(serial + b"\n")
        shutil.copyfile(image, dev / name)
    where = {"sys_block": sys_block, "dev": dev, "requirements_dir": tmp_path / "requirements"}
    return root, lock, where


def test_a_locked_launch_reads_its_wheel_disk_by_serial(
    packages: tuple[Path, Path], tmp_path: Path
) -> None:
    root, lock, where = _locked_td(packages, tmp_path, {"vda": b"other", "vdb": b"confide-wheels"})
    settings = td_runtime_settings(
        root, host="0.0.0.0", port=8443, state_dir=tmp_path / "state", now=NOW,  # noqa: S104
        runtime_sha256=RUNTIME, **where,
    )  # fmt: skip
    assert settings.lock == lock and settings.manifest.requirements_sha256 == lock.digest()
    assert settings.wheels == tmp_path / "requirements" / "wheels"


@pytest.mark.parametrize(
    ("disks", "words"),
    [
        ({}, "has 0 disks with the serial 'confide-wheels'"),
        ({"vda": b"confide-wheels", "vdb": b"confide-wheels"}, "has 2 disks"),
    ],
    ids=["no disk", "two disks"],
)
def test_a_locked_launch_needs_exactly_one_wheel_disk(
    packages: tuple[Path, Path], tmp_path: Path, disks: dict[str, bytes], words: str
) -> None:
    root, _, where = _locked_td(packages, tmp_path, disks)
    with pytest.raises(UsageError, match=words):
        td_runtime_settings(
            root, host="0.0.0.0", port=8443, state_dir=tmp_path / "state", now=NOW,  # noqa: S104
            runtime_sha256=RUNTIME, **where,
        )  # fmt: skip


def test_a_wheel_disk_of_another_lock_does_not_measure_as_the_launch(
    packages: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _, where = _locked_td(packages, tmp_path, {"vda": b"confide-wheels"})
    other = lock_of(("tinydep", "2.0", wheel_bytes("tinydep", "2.0")))
    (tmp_path / "other").write_bytes(wheel_bytes("tinydep", "2.0"))
    write_wheel_disk(other, {other.requirements[0].sha256: tmp_path / "other"}, tmp_path / "o")
    shutil.copyfile(tmp_path / "o", tmp_path / "dev" / "vda")
    # Refused at the disk's lock, before any of its files is written (review of ADR 0030).
    with pytest.raises(FormatError, match="the launch measures") as info:
        td_runtime_settings(
            root, host="0.0.0.0", port=8443, state_dir=tmp_path / "state", now=NOW,  # noqa: S104
            runtime_sha256=RUNTIME, **where,
        )  # fmt: skip
    assert info.value.code == "td.wheel_disk"
    assert not where["requirements_dir"].exists()
