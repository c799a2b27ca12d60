"""``qemu-system-x86_64``: check the TD's command line, then "boot" the Confide guest in-process.

See the package's description for what is checked and what stands in for what.
Exit codes: 1 a command line QEMU refuses (its message on stderr, prefixed
``qemu-system-x86_64:`` as QEMU does); otherwise what the guest's runtime returns
(0 after SIGTERM, 2 an error it names on its last ``error:`` line).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import typer

from confide.cli._runtime import serve_runtime
from confide.errors import Error
from confide.runtime import USER_NET_HOST, td_runtime_settings
from confide.tee import SimulatedPlatform, TdxTee
from support.configfs_tsm import ConfigfsTsm
from support.tdx_measurements import TdxMeasurements

from ._install import PLATFORM_VARIABLE, QEMU
from ._measure import measure_image
from ._options import VIRTIO_BLK_ID_BYTES, QemuError, TdLaunch, parse_command_line

#: Where the guest kernel shows its interfaces (paths inside the "TD"; the stand-ins
#: serve them in-process, so they are names, not folders of the host).
TSM_ROOT: Final = Path("/sys/kernel/config/tsm/report")
MEASUREMENTS: Final = Path("/sys/class/misc/tdx_guest/measurements")
#: virtio-blk counts a disk's capacity in 512-byte sectors.
SECTOR: Final = 512
#: What QEMU itself needs beyond the guest's memory (the stand-in's interpreter and runtime).
_OVERHEAD: Final = 256 * 1024 * 1024


def _fw_cfg_tree(launch: TdLaunch, root: Path) -> Path:
    """The ``qemu_fw_cfg`` driver's ``by_name`` view of the items, as QEMU read them at start."""
    fw_cfg = root / "qemu_fw_cfg"
    for name, source in launch.fw_cfg.items():
        raw = fw_cfg / "by_name" / name / "raw"
        raw.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            raw.write_bytes(source)
        else:
            shutil.copyfile(source, raw)
    return fw_cfg


def block_tree(launch: TdLaunch, root: Path) -> tuple[Path, Path]:
    """The guest kernel's view of the virtio disks, ``vda``, ``vdb``... in device order:
    ``sys/block/<name>/serial`` (the device ID: at most 20 bytes) and ``dev/<name>`` (the
    image, in whole 512-byte sectors: a partial last sector reads as zeros)."""
    sys_block, dev = root / "sys" / "block", root / "dev"
    sys_block.mkdir(parents=True, exist_ok=True)
    dev.mkdir(parents=True, exist_ok=True)
    for i, (image, serial, readonly) in enumerate(launch.disks):
        name = f"vd{chr(ord('a') + i)}"
        (sys_block / name).mkdir(parents=True)
        (sys_block / name / "serial").write_bytes(serial.encode()[:VIRTIO_BLK_ID_BYTES] + b"\n")
        node = dev / name
        shutil.copyfile(image, node)
        with node.open("r+b") as f:
            f.truncate(-(-f.seek(0, os.SEEK_END) // SECTOR) * SECTOR)
        if readonly:
            node.chmod(0o444)
    return sys_block, dev


def boot(launch: TdLaunch, platform_state: Path, guest_root: Path) -> int:
    """Run what the guest image's init runs (``confide td-runtime``), on the stand-ins."""
    assert launch.firmware is not None and launch.kernel is not None  # noqa: S101 - checked
    image = measure_image(
        launch.firmware.read_bytes(),
        launch.kernel.read_bytes(),
        launch.initrd.read_bytes() if launch.initrd is not None else b"",
        launch.append,
    )
    now = datetime.now(UTC)
    platform = SimulatedPlatform.open(platform_state, now=now)
    registers = TdxMeasurements(
        MEASUREMENTS, mr_td=image.mr_td, rtmrs=(image.rtmr0, image.rtmr1, image.rtmr2, bytes(48))
    )

    def quote(report_data: bytes) -> bytes:
        rtmrs = (image.rtmr0, image.rtmr1, image.rtmr2, registers.rtmr(3))
        return platform.td_quote(
            report_data, mr_td=image.mr_td, rtmrs=rtmrs, td_attributes=launch.td_attributes
        )

    tsm = ConfigfsTsm(TSM_ROOT, quote)
    # User networking's forward to the guest's port: the guest listens there itself.
    host, port = launch.forward or ("127.0.0.1", 0)
    logger = logging.getLogger("confide.runtime")
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.INFO)
    try:
        sys_block, dev = block_tree(launch, guest_root)
        settings = td_runtime_settings(
            _fw_cfg_tree(launch, guest_root),
            host=host,
            port=port,
            state_dir=guest_root / "state",
            now=now,
            sys_block=sys_block,
            dev=dev,
            requirements_dir=guest_root / "requirements",
        )
        # Relayed connections come from QEMU's user-network host in a TD, from loopback here.
        relays = {"127.0.0.1" if s == USER_NET_HOST else s for s in settings.relay_sources}
        settings = dataclasses.replace(settings, relay_sources=frozenset(relays))
        tee = TdxTee(TSM_ROOT, filesystem=tsm, measurements=MEASUREMENTS, registers=registers)
        tee.extend_launch(settings.measurement)
        # What ``confide td-runtime`` does next: its exit codes and last lines are the CLI's.
        serve_runtime(settings, tee, now=now)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        launch = parse_command_line(args)
    except QemuError as exc:
        print(f"{QEMU}: {exc}", file=sys.stderr, flush=True)
        return 1
    # The "VM"'s memory: QEMU maps -m of guest RAM; here it bounds the guest's address space.
    limit = launch.memory + _OVERHEAD
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    platform_state = Path(os.environ[PLATFORM_VARIABLE])
    guest_root = Path(tempfile.mkdtemp(prefix="confide-td-"))
    try:
        return boot(launch, platform_state, guest_root)
    finally:
        shutil.rmtree(guest_root, ignore_errors=True)
