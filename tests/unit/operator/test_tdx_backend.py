"""The operator's TDX backend (ADR 0022): QEMU's TD command line, what it refuses, adoption.

The command line the backend builds is checked by the QEMU stand-in's parser
(which follows QEMU's documentation, tests/unit/standins/test_tdx_standins.py);
the launch runs end to end in tests/e2e/test_tdx_launch.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from confide.attestation import TdReference
from confide.crypto import PackageKey, encrypt_package
from confide.errors import UsageError
from confide.operator import (
    AppSpec,
    FileLogSource,
    LaunchRefused,
    OperatorSettings,
    TdxBackend,
    TdxSettings,
    TeeBackend,
)
from confide.operator._wheels import WheelCache
from confide.runtime import (
    DISK_SERIAL,
    GUEST_PORT,
    CodeSource,
    TdSettings,
    launch_manifest,
    read_wheel_disk,
)
from confide.wire import LaunchManifest, RequirementsLock
from support.wheels import cache_wheel, lock_of, wheel_bytes
from tdx_standin import install, parse_command_line

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"
NOW = datetime.now(UTC)
REFERENCE = TdReference(*(bytes([i]) * 48 for i in range(4)))


@pytest.fixture(scope="module", name="package")
def package_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pkg") / "app.pkg"
    with path.open("wb") as f:
        encrypt_package(EXAMPLE, f, PackageKey.generate())
    return path


def spec(package: Path) -> AppSpec:
    app_id = uuid.uuid4()
    manifest = launch_manifest(
        app_id=app_id,
        application="app:app",
        code=CodeSource.encrypted(package),
        ratls_expiry=1900000000,
        certificate=None,
        san=(f"{app_id}.confide.test",),
        subject=None,
    )
    return AppSpec(app_id, manifest, package, None, memory_mib=512, cores=2)


def image(tmp_path: Path, *, reference: bytes | None = None) -> TdxSettings:
    folder = tmp_path / "image"
    folder.mkdir(exist_ok=True)
    for name in ("OVMF.inteltdx.fd", "vmlinuz", "initrd.img"):
        (folder / name).write_bytes(name.encode())
    if reference is not None:
        (folder / "reference.json").write_bytes(reference)
    return TdxSettings(
        firmware=folder / "OVMF.inteltdx.fd",
        kernel=folder / "vmlinuz",
        initrd=folder / "initrd.img",
        reference=folder / "reference.json",
        append="console=ttyS0 ro",
    )


def backend(tmp_path: Path, tdx: TdxSettings, *, qemu: bool = True) -> TdxBackend:
    bin_dir = tmp_path / "bin"
    if qemu:
        install(bin_dir, tmp_path / "sim")
    else:
        bin_dir.mkdir(exist_ok=True)
    return TdxBackend(
        data_dir=tmp_path / "data",
        log_source=FileLogSource(tmp_path / "logs"),
        tdx=tdx,
        search_path=str(bin_dir),
    )


def test_the_command_line_is_a_td_as_qemu_documents_it(package: Path, tmp_path: Path) -> None:
    tdx = image(tmp_path, reference=REFERENCE.to_json())
    app = spec(package)
    launch = backend(tmp_path, tdx)._prepare(app, NOW)
    assert Path(launch.argv[0]).name == "qemu-system-x86_64"
    td = parse_command_line(launch.argv[1:])  # the stand-in's parser refuses what QEMU does
    assert td.td_attributes == 1 << 28  # SEPT_VE_DISABLE, no DEBUG (ADR 0022)
    assert td.qgs == {"type": "vsock", "cid": "2", "port": "4050"}
    assert (td.firmware, td.kernel, td.initrd, td.append) == (
        tdx.firmware, tdx.kernel, tdx.initrd, tdx.append,
    )  # fmt: skip
    assert (td.memory, td.cpus) == (512 << 20, 2)
    assert td.forward == ("127.0.0.1", launch.port)
    assert launch.handoff is None  # the router relays bytes: no descriptor enters a TD
    assert "-accel" in launch.argv and launch.argv[launch.argv.index("-accel") + 1] == "kvm"
    # The launch goes in through fw_cfg: the manifest, the settings, the package.
    items = td.fw_cfg
    assert set(items) == {"opt/confide/launch", "opt/confide/settings", "opt/confide/package"}
    launch_file, settings_file = items["opt/confide/launch"], items["opt/confide/settings"]
    assert isinstance(launch_file, Path) and isinstance(settings_file, Path)
    assert LaunchManifest.from_json(launch_file.read_bytes()) == app.manifest
    assert TdSettings.from_json(settings_file.read_bytes()).relay_sources == ("10.0.2.2",)
    assert items["opt/confide/package"] == package.resolve()
    assert f"-:{GUEST_PORT}" in launch.argv[launch.argv.index("-netdev") + 1]


@pytest.mark.parametrize(
    ("row", "reference", "qemu", "words"),
    [
        ("no QEMU", REFERENCE.to_json(), False, "qemu-system-x86_64 is not installed"),
        ("no reference values", None, True, "cannot read the guest image's reference values"),
        ("malformed reference values", b"{}", True, "malformed"),
    ],
)
def test_refusals(
    package: Path, tmp_path: Path, row: str, reference: bytes | None, qemu: bool, words: str
) -> None:
    tdx = image(tmp_path, reference=reference)
    with pytest.raises(LaunchRefused) as info:
        backend(tmp_path, tdx, qemu=qemu)._prepare(spec(package), NOW)
    assert words in str(info.value)


def test_a_missing_firmware_is_refused(package: Path, tmp_path: Path) -> None:
    tdx = image(tmp_path, reference=REFERENCE.to_json())
    tdx.firmware.unlink()
    with pytest.raises(LaunchRefused, match="firmware"):
        backend(tmp_path, tdx)._prepare(spec(package), NOW)


def test_a_package_that_does_not_measure_as_the_manifest_is_refused(
    package: Path, tmp_path: Path
) -> None:
    app = spec(package)
    other = tmp_path / "other.pkg"
    other.write_bytes(b"another package")
    with pytest.raises(LaunchRefused, match="package_sha256"):
        backend(tmp_path, image(tmp_path, reference=REFERENCE.to_json()))._prepare(
            AppSpec(app.app_id, app.manifest, other, None, memory_mib=512, cores=1), NOW
        )


def _locked(package: Path, data: Path) -> tuple[AppSpec, RequirementsLock]:
    """The app locking one wheel, its lock and wheel in the backend's cache (``data``)."""
    wheel = wheel_bytes("tinydep", "1.0")
    lock = lock_of(("tinydep", "1.0", wheel))
    cache = WheelCache(data / "wheels")
    cache.put_lock(lock)
    cache_wheel(cache.root, wheel)
    app = spec(package)
    locked = dataclasses.replace(app.manifest, requirements_sha256=lock.digest())
    return dataclasses.replace(app, manifest=locked), lock


def test_a_locked_app_gets_its_wheel_disk_as_a_read_only_virtio_disk(
    package: Path, tmp_path: Path
) -> None:
    """The lock and its wheels go into the TD on a raw read-only disk the guest finds by its
    serial (ADR 0030); the command line is one QEMU (the stand-in's parser) accepts."""
    tdx = backend(tmp_path, image(tmp_path, reference=REFERENCE.to_json()))
    app, lock = _locked(package, tmp_path / "data")
    launch = tdx._prepare(app, NOW)
    td = parse_command_line(launch.argv[1:])
    ((disk, serial, readonly),) = td.disks
    assert (serial, readonly) == (DISK_SERIAL, True)
    drive = launch.argv[launch.argv.index("-drive") + 1]
    assert drive.endswith(",if=none,id=confide-wheels,format=raw,readonly=on")
    assert disk.stat().st_size % 512 == 0
    lock_path, wheels = read_wheel_disk(disk, tmp_path / "guest", lock_sha256=lock.digest())
    assert lock_path.read_bytes() == lock.to_bytes()
    digest = lock.requirements[0].sha256.hex()
    assert (wheels / digest[:2] / digest[2:]).read_bytes() == wheel_bytes("tinydep", "1.0")
    # Guard: an app without a lock gets no disk.
    assert parse_command_line(tdx._prepare(spec(package), NOW).argv[1:]).disks == []


def test_a_locked_app_whose_lock_is_not_stored_is_refused(package: Path, tmp_path: Path) -> None:
    tdx = backend(tmp_path, image(tmp_path, reference=REFERENCE.to_json()))
    app = spec(package)
    locked = dataclasses.replace(app.manifest, requirements_sha256=bytes(32))
    with pytest.raises(LaunchRefused, match="is not stored"):
        tdx._prepare(dataclasses.replace(app, manifest=locked), NOW)


@pytest.fixture(name="qemu_like")
def qemu_like_fixture(package: Path, tmp_path: Path) -> Iterator[tuple[TdxBackend, AppSpec, int]]:
    """A process whose command line is the TD's (as QEMU's would be), recorded as started."""
    tdx_backend = backend(tmp_path, image(tmp_path, reference=REFERENCE.to_json()))
    app = spec(package)
    launch = tdx_backend._prepare(app, NOW)
    proc = subprocess.Popen(  # noqa: S603 - this interpreter
        [sys.executable, "-c", "import sys; sys.stdin.read()", *launch.argv[1:]],
        stdin=subprocess.PIPE,
    )
    with proc:
        tdx_backend._started(app.app_id, proc.pid, launch)
        try:
            yield tdx_backend, app, proc.pid
        finally:
            proc.kill()


def test_an_operator_restart_adopts_the_running_td(
    qemu_like: tuple[TdxBackend, AppSpec, int],
) -> None:
    tdx_backend, app, pid = qemu_like
    handle = asyncio.run(tdx_backend.adopt(pid, app.app_id))
    assert handle is not None and handle.pid == pid and handle.handoff is None
    record = json.loads((tdx_backend.app_dir(app.app_id) / "runtime.json").read_text())
    assert handle.port == record["port"]
    assert asyncio.run(tdx_backend.adopt(pid, uuid.uuid4())) is None  # another app's id
    found = asyncio.run(tdx_backend.discover())
    assert [(h.app_id, h.pid) for h in found] == [(app.app_id, pid)]


# -- settings -----------------------------------------------------------------------------


def test_tee_tdx_needs_its_table(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\[tdx\]"):
        OperatorSettings.load(tmp_path, runtime_sha256=bytes(32), tee="tdx")


def test_the_tdx_table_is_read_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "operator.toml"
    config.write_text(
        'tee = "tdx"\nallow_simulated_tdx = true\n[tdx]\nfirmware = "/g/OVMF.fd"\n'
        'kernel = "/g/vmlinuz"\ninitrd = "/g/initrd"\nreference = "/g/reference.json"\n'
    )
    settings = OperatorSettings.load(tmp_path, runtime_sha256=bytes(32), config_file=config)
    assert settings.tee == TeeBackend.TDX and settings.simulated
    assert settings.tdx is not None and settings.tdx.firmware == Path("/g/OVMF.fd")
    assert settings.tdx.qemu == "qemu-system-x86_64"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('tee = "tdx"\n[tdx]\nfirmware = "/f"\n', "needs firmware, kernel, initrd and reference"),
        (
            'tee = "tdx"\n[tdx]\nfirmware = "f"\nkernel = "/k"\ninitrd = "/i"\nreference = "/r"\n',
            "absolute",
        ),
        ('tee = "tdx"\n[tdx]\ndebug = "on"\n', "[tdx] keys are"),
        ("allow_simulated_tdx = true\n", 'allow_simulated_tdx needs tee = "tdx"'),
        (
            '[tdx]\nfirmware = "/f"\nkernel = "/k"\ninitrd = "/i"\nreference = "/r"\n',
            'needs tee = "tdx"',
        ),
    ],
)
def test_bad_tdx_configurations(tmp_path: Path, text: str, words: str) -> None:
    config = tmp_path / "operator.toml"
    config.write_text(text)
    with pytest.raises(UsageError) as info:
        OperatorSettings.load(tmp_path, runtime_sha256=bytes(32), config_file=config)
    assert words in str(info.value)
