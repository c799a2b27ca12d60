"""The TDX stand-ins (tests/tdx_standin, support.tdx_measurements) against what they copy.

- The measurement registers: ``Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest``
  (Linux 6.16): RTMRs read as 48 bytes and are extended by a write of exactly 48
  bytes (``SHA-384(RTMR || data)``), partial writes are EINVAL, MRTD and the
  owner/config registers are read-only.
- QEMU's command line: ``docs/system/i386/tdx.rst`` and ``qemu-options.hx``: each
  refusal row names the option QEMU refuses, and the backend's own command line
  is accepted (tests/unit/operator/test_tdx_backend.py).
- A virtio disk as the guest sees it (the virtio spec, virtio-blk): whole 512-byte
  sectors, a serial of at most 20 bytes.

A stand-in that drifted from what it copies would let the launch path pass where
the real one fails, so they are held to it here.
"""

from __future__ import annotations

import errno
import hashlib
import subprocess
from pathlib import Path

import pytest

from support.tdx_measurements import TdxMeasurements
from tdx_standin import (
    GUEST_COMMAND_PORT,
    VIRTIO_BLK_ID_BYTES,
    QemuError,
    block_tree,
    install,
    measure_image,
    parse_command_line,
)

ROOT = Path("/sys/class/misc/tdx_guest/measurements")
MR_TD = hashlib.sha384(b"mrtd").digest()


# -- measurement registers ---------------------------------------------------------------


def test_an_rtmr_reads_as_48_bytes_and_a_48_byte_write_extends_it() -> None:
    regs = TdxMeasurements(ROOT, mr_td=MR_TD)
    path = ROOT / "rtmr3:sha384"
    assert regs.read(path, 4096) == bytes(48)
    digest = hashlib.sha384(b"event").digest()
    regs.write(path, digest)
    once = hashlib.sha384(bytes(48) + digest).digest()
    assert regs.read(path, 4096) == once == regs.rtmr(3)
    regs.write(path, digest)
    assert regs.rtmr(3) == hashlib.sha384(once + digest).digest()
    assert regs.rtmr(2) == bytes(48)  # only the written register changes
    assert regs.extends == [(3, digest), (3, digest)]


@pytest.mark.parametrize("size", [0, 1, 47, 49, 64])
def test_a_write_that_is_not_48_bytes_is_einval(size: int) -> None:
    regs = TdxMeasurements(ROOT, mr_td=MR_TD)
    with pytest.raises(OSError) as info:
        regs.write(ROOT / "rtmr3:sha384", bytes(size))
    assert info.value.errno == errno.EINVAL
    assert regs.rtmr(3) == bytes(48)


@pytest.mark.parametrize("name", ["mrtd:sha384", "mrconfigid", "mrowner", "mrownerconfig"])
def test_read_only_registers_refuse_writes(name: str) -> None:
    regs = TdxMeasurements(ROOT, mr_td=MR_TD)
    with pytest.raises(OSError) as info:
        regs.write(ROOT / name, bytes(48))
    assert info.value.errno == errno.EACCES
    assert len(regs.read(ROOT / name, 4096)) == 48
    assert regs.read(ROOT / "mrtd:sha384", 4096) == MR_TD


def test_unknown_files_and_folders() -> None:
    regs = TdxMeasurements(ROOT, mr_td=MR_TD)
    for call in (
        lambda: regs.read(ROOT / "rtmr4:sha384", 48),
        lambda: regs.write(ROOT / "rtmr3", bytes(48)),  # the name carries its hash
        lambda: regs.read(ROOT.parent / "rtmr3:sha384", 48),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        regs.mkdir(ROOT / "new")
    assert info.value.errno == errno.EPERM
    assert regs.is_dir(ROOT) and not regs.is_dir(ROOT / "rtmr3:sha384")


# -- QEMU's command line ------------------------------------------------------------------


NET = "virtio-net-pci,netdev=n0"
BLK = "virtio-blk-pci,drive=wheels,serial=confide-wheels"
#: A read-only raw drive as qemu-options.hx writes it ({disk}: the image's path).
DRIVE = "file={disk},if=none,id=wheels,format=raw,readonly=on"


@pytest.fixture(name="files")
def files_fixture(tmp_path: Path) -> dict[str, Path]:
    names = ("OVMF.fd", "vmlinuz", "initrd", "launch.json", "wheels.disk")
    paths = {name: tmp_path / name for name in names}
    for path in paths.values():
        path.write_bytes(path.name.encode())
    return paths


def td_command(files: dict[str, Path], **replace: list[str] | None) -> list[str]:
    """A TD command line as QEMU's documentation writes it; ``replace`` swaps or drops options."""
    options: dict[str, list[str] | None] = {
        "-accel": ["kvm"],
        "-cpu": ["host"],
        "-machine": ["q35,kernel-irqchip=split,confidential-guest-support=tdx0"],
        "-object": ["tdx-guest,id=tdx0"],
        "-m": ["512M"],
        "-bios": [str(files["OVMF.fd"])],
        "-kernel": [str(files["vmlinuz"])],
        "-initrd": [str(files["initrd"])],
        "-append": ["console=ttyS0"],
        "-netdev": [f"user,id=n0,hostfwd=tcp:127.0.0.1:4000-:{GUEST_COMMAND_PORT}"],
        "-device": [NET, BLK],
        "-drive": [DRIVE],
        "-fw_cfg": [f"name=opt/confide/launch,file={files['launch.json']}"],
        "-nographic": [],
    }
    options.update(replace)
    drives = options["-drive"]
    if drives is not None:
        options["-drive"] = [d.replace("{disk}", str(files["wheels.disk"])) for d in drives]
    argv: list[str] = []
    for name, values in options.items():
        if values is None:
            continue
        if not values:
            argv.append(name)
        for value in values:
            argv += [name, value]
    return argv


def test_the_documented_td_command_line_is_accepted(files: dict[str, Path]) -> None:
    launch = parse_command_line(td_command(files))
    assert launch.firmware == files["OVMF.fd"] and launch.kernel == files["vmlinuz"]
    assert launch.memory == 512 << 20
    assert launch.forward == ("127.0.0.1", 4000)
    assert launch.fw_cfg == {"opt/confide/launch": files["launch.json"]}
    # QEMU sets SEPT_VE_DISABLE by default (tdx_guest_init).
    assert launch.td_attributes == 1 << 28


def test_a_read_only_virtio_disk_is_attached_by_its_drive(files: dict[str, Path]) -> None:
    launch = parse_command_line(td_command(files))
    assert launch.disks == [(files["wheels.disk"], "confide-wheels", True)]
    writable = DRIVE.replace("readonly=on", "readonly=off")
    assert parse_command_line(td_command(files, **{"-drive": [writable]})).disks == [
        (files["wheels.disk"], "confide-wheels", False)
    ]
    no_disk = parse_command_line(td_command(files, **{"-drive": None, "-device": [NET]}))
    assert no_disk.disks == []


def test_the_guest_sees_whole_sectors_and_a_20_byte_serial(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """virtio-blk (the virtio spec, 5.2): the capacity counts 512-byte sectors, and the device
    ID the guest reads as its serial is at most VIRTIO_BLK_ID_BYTES (20) bytes."""
    files["wheels.disk"].write_bytes(b"x" * 1000)
    serial = "s" * 25
    launch = parse_command_line(
        td_command(files, **{"-device": [NET, BLK.replace("confide-wheels", serial)]})
    )
    sys_block, dev = block_tree(launch, tmp_path / "guest")
    assert (sys_block / "vda" / "serial").read_bytes() == b"s" * VIRTIO_BLK_ID_BYTES + b"\n"
    assert (dev / "vda").read_bytes() == b"x" * 1000 + bytes(24)  # a whole last sector


def test_kernel_irqchip_left_out_is_split(files: dict[str, Path]) -> None:
    argv = td_command(files, **{"-machine": ["q35,confidential-guest-support=tdx0"]})
    assert parse_command_line(argv).kernel is not None


#: (row, options replaced, words of the refusal).
REFUSED: list[tuple[str, dict[str, list[str] | None], str]] = [
    ("no -accel", {"-accel": None}, "-accel kvm"),
    ("TCG", {"-accel": ["tcg"]}, "-accel kvm"),
    ("no confidential-guest-support", {"-machine": ["q35,kernel-irqchip=split"]}, "plain VM"),
    (
        "cgs names no tdx-guest",
        {"-machine": ["q35,kernel-irqchip=split,confidential-guest-support=sev0"]},
        "not a tdx-guest object",
    ),
    (
        "kernel-irqchip on",
        {"-machine": ["q35,kernel-irqchip=on,confidential-guest-support=tdx0"]},
        "kernel_irqchip to be split",
    ),
    (
        "SMM",
        {"-machine": ["q35,smm=on,confidential-guest-support=tdx0"]},
        "no SMM",
    ),
    ("not q35", {"-machine": ["pc,confidential-guest-support=tdx0"]}, "q35"),
    ("no TDVF", {"-bios": None}, "-bios"),
    ("missing TDVF", {"-bios": ["/nonexistent/OVMF.fd"]}, "could not load bios"),
    ("a debug property", {"-object": ["tdx-guest,id=tdx0,debug=on"]}, "tdx-guest.debug"),
    ("another object type", {"-object": ["sev-guest,id=tdx0"]}, "sev-guest"),
    ("an unknown option", {"-snapshot": []}, "-snapshot: invalid option"),
    ("fw_cfg outside opt/", {"-fw_cfg": ["name=confide/launch,string=x"]}, "prefixed with 'opt/'"),
    ("fw_cfg name too long", {"-fw_cfg": [f"name=opt/{'x' * 52},string=x"]}, "too long"),
    (
        "fw_cfg twice",
        {"-fw_cfg": ["name=opt/a,string=x", "name=opt/a,string=y"]},
        "given twice",
    ),
    ("fw_cfg file missing", {"-fw_cfg": ["name=opt/a,file=/nonexistent"]}, "can't load"),
    ("netdev without device", {"-device": None}, "no peer"),
    ("drive file missing", {"-drive": [DRIVE.replace("{disk}", "/nonexistent")]}, "Could not open"),
    (
        "device names no drive",
        {"-device": [NET, "virtio-blk-pci,drive=other,serial=confide-wheels"]},
        "can't find value 'other'",
    ),
    ("one drive, two devices", {"-device": [NET, BLK, BLK]}, "already in use"),
    ("drive id twice", {"-drive": [DRIVE, DRIVE]}, "Duplicate ID"),
    ("drive unknown parameter", {"-drive": [DRIVE + ",cache=none"]}, "Invalid parameter 'cache'"),
    ("drive not raw", {"-drive": [DRIVE.replace("format=raw", "format=qcow2")]}, "format=raw"),
    ("not a size", {"-m": ["lots"]}, "expects a size"),
]


@pytest.mark.parametrize(("row", "replace", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_command_lines(
    files: dict[str, Path], row: str, replace: dict[str, list[str] | None], words: str
) -> None:
    with pytest.raises(QemuError) as info:
        parse_command_line(td_command(files, **replace))
    assert words in str(info.value)


def test_refusal_rows_are_distinct() -> None:
    # Guard against a vacuous table: each row changes something else and expects other words.
    assert len({r[0] for r in REFUSED}) == len({str(r[1]) for r in REFUSED}) == len(REFUSED)


@pytest.mark.parametrize(
    ("obj", "attributes"),
    [
        ("tdx-guest,id=tdx0,sept-ve-disable=off", 0),
        ("tdx-guest,id=tdx0,attributes=0x10000001", (1 << 28) | 1),
        ('{"qom-type":"tdx-guest","id":"tdx0","sept-ve-disable":true}', 1 << 28),
        ('{"qom-type":"tdx-guest","id":"tdx0","attributes":0,"sept-ve-disable":true}', 1 << 28),
    ],
)
def test_td_attributes_follow_the_tdx_guest_object(
    files: dict[str, Path], obj: str, attributes: int
) -> None:
    assert parse_command_line(td_command(files, **{"-object": [obj]})).td_attributes == attributes


def test_the_installed_stand_in_refuses_with_qemus_words(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = install(tmp_path / "bin", tmp_path / "sim")
    done = subprocess.run(
        [str(config.bin_dir / "qemu-system-x86_64"), *td_command(files, **{"-accel": None})],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("qemu-system-x86_64: a TD needs KVM")


def test_each_image_file_changes_its_register() -> None:
    base = measure_image(b"fw", b"kernel", b"initrd", "ro")
    changed = {
        "firmware": measure_image(b"fw2", b"kernel", b"initrd", "ro"),
        "kernel": measure_image(b"fw", b"kernel2", b"initrd", "ro"),
        "initrd": measure_image(b"fw", b"kernel", b"initrd2", "ro"),
        "append": measure_image(b"fw", b"kernel", b"initrd", "rw"),
    }
    assert changed["firmware"].mr_td != base.mr_td and changed["firmware"].rtmr0 != base.rtmr0
    assert changed["kernel"].rtmr1 != base.rtmr1 and changed["kernel"].mr_td == base.mr_td
    assert changed["initrd"].rtmr2 != base.rtmr2 and changed["initrd"].rtmr1 == base.rtmr1
    assert (
        changed["append"].rtmr2 != base.rtmr2 and changed["append"].rtmr2 != changed["initrd"].rtmr2
    )
