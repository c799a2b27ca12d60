"""The QEMU command line the stand-in takes, parsed and checked as QEMU documents it.

Sources: ``docs/system/i386/tdx.rst`` (``-accel kvm``, a ``tdx-guest`` object
named by ``-machine ...,confidential-guest-support=<id>``, ``kernel-irqchip``
split, TDVF as ``-bios``, no SMM; the object's ``attributes`` and
``sept-ve-disable`` properties, SEPT_VE_DISABLE set by default), ``qemu-options.hx``
(``-fw_cfg [name=]<name>,file=<file>|string=<str>``: names under ``opt/``, shorter
than 56 bytes; ``-netdev user,id=<id>,hostfwd=tcp:[addr]:port-[addr]:port``,
``-m <size>[M|G]``; ``-drive file=<file>,if=none,id=<id>,format=raw,readonly=on`` with
``-device virtio-blk-pci,drive=<id>,serial=<serial>``: a drive's file must open, a device's
drive must be defined and backs one device only) and ``-object`` in both its
``type,key=value`` and JSON forms. The guest sees a virtio disk as the virtio spec says:
its capacity in whole 512-byte sectors, its serial (the device ID) at most 20 bytes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: The port the Confide guest image's init listens on (``confide td-runtime --port``).
GUEST_COMMAND_PORT: Final = 8443
SEPT_VE_DISABLE: Final = 1 << 28
#: fw_cfg's FW_CFG_MAX_FILE_PATH (names are NUL-terminated in 56 bytes).
FW_CFG_MAX_NAME: Final = 56
_WITH_VALUE: Final = frozenset(
    {"-name", "-accel", "-cpu", "-machine", "-M", "-object", "-m", "-smp", "-serial", "-bios",
     "-kernel", "-initrd", "-append", "-netdev", "-device", "-fw_cfg", "-drive"}
)  # fmt: skip
#: virtio-blk's device ID (its serial, as the guest reads it) is 20 bytes (VIRTIO_BLK_ID_BYTES).
VIRTIO_BLK_ID_BYTES: Final = 20
_DRIVE_KEYS: Final = frozenset({"file", "if", "id", "format", "readonly"})
_BLK_KEYS: Final = frozenset({"driver", "drive", "serial", "id"})
_FLAGS: Final = frozenset({"-nographic", "-nodefaults", "-no-reboot"})
_MACHINE_KEYS: Final = frozenset(
    {"type", "kernel-irqchip", "kernel_irqchip", "confidential-guest-support", "hpet", "smm"}
)
_TDX_KEYS: Final = frozenset(
    {"qom-type", "id", "attributes", "sept-ve-disable", "quote-generation-socket"}
)
_HOSTFWD = re.compile(r"^tcp:(?P<addr>[0-9.]*):(?P<port>\d+)-(?:[0-9.]*):(?P<guest>\d+)$")


class QemuError(Exception):
    """A command line QEMU (or this stand-in) refuses: the message QEMU prints."""


@dataclass
class TdLaunch:
    """What the command line asks for, once checked."""

    name: str | None = None
    memory: int = 128 * 1024 * 1024
    cpus: int = 1
    firmware: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    td_attributes: int = SEPT_VE_DISABLE
    #: fw_cfg name -> the file QEMU reads it from (or the bytes of a string=).
    fw_cfg: dict[str, Path | bytes] = field(default_factory=dict)
    #: The virtio disks, in the order of their devices: (file, serial, read-only).
    disks: list[tuple[Path, str, bool]] = field(default_factory=list)
    #: (host address, host port) forwarded to :data:`GUEST_COMMAND_PORT`, if any.
    forward: tuple[str, int] | None = None
    qgs: dict[str, Any] | None = None


def _keyvals(text: str, *, first: str | None = None) -> dict[str, str]:
    """``a,k=v,k2=v2`` (``,,`` is a comma) -> dict; a bare first element is ``first``."""
    parts = [p.replace("\0", ",") for p in text.replace(",,", "\0").split(",")]
    out: dict[str, str] = {}
    for i, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if not sep:
            if i == 0 and first is not None:
                out[first] = part
                continue
            raise QemuError(f"Invalid parameter '{part}'")
        if key in out:
            raise QemuError(f"Parameter '{key}' given twice")
        out[key] = value
    return out


def _bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("on", "true", "yes"):
        return True
    if value in ("off", "false", "no"):
        return False
    raise QemuError(f"Parameter '{what}' expects 'on' or 'off'")


def _size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([MGmg]?)", text)
    if match is None:
        raise QemuError(f"Parameter 'size' expects a size, got {text!r}")
    return int(match.group(1)) * {"": 1 << 20, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]


def _object(text: str) -> dict[str, Any]:
    if text.startswith("{"):
        try:
            found = json.loads(text)
        except ValueError as exc:
            raise QemuError(f"-object: JSON parse error: {exc}") from None
        if not isinstance(found, dict):
            raise QemuError("-object: JSON must be an object")
        return found
    return dict(_keyvals(text, first="qom-type"))


def parse_command_line(argv: list[str]) -> TdLaunch:
    """Check ``argv`` (after the program name); raise :class:`QemuError` with QEMU's words."""
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = "-" + arg.lstrip("-") if arg.startswith("-") else arg
        if name in _FLAGS:
            options.append((name, None))
            i += 1
        elif name in _WITH_VALUE:
            if i + 1 >= len(argv):
                raise QemuError(f"{arg}: requires an argument")
            options.append(("-machine" if name == "-M" else name, argv[i + 1]))
            i += 2
        else:
            raise QemuError(f"{arg}: invalid option")

    launch = TdLaunch()
    accel: list[str] = []
    machine: dict[str, str] | None = None
    objects: dict[str, dict[str, Any]] = {}
    netdevs: dict[str, str] = {}
    devices: list[dict[str, str]] = []
    drives: dict[str, dict[str, str]] = {}
    for name, value in options:
        if value is None:
            continue
        if name == "-name":
            launch.name = value
        elif name == "-accel":
            accel.append(_keyvals(value, first="accel")["accel"])
        elif name == "-machine":
            if machine is not None:
                raise QemuError("-machine given twice (this stand-in takes one)")
            machine = _keyvals(value, first="type")
        elif name == "-object":
            obj = _object(value)
            if obj.get("qom-type") != "tdx-guest":
                raise QemuError(f"-object: type '{obj.get('qom-type')}' is not supported here")
            if not isinstance(obj.get("id"), str) or obj["id"] in objects:
                raise QemuError("-object: Parameter 'id' is missing or not unique")
            objects[obj["id"]] = obj
        elif name == "-m":
            launch.memory = _size(_keyvals(value, first="size")["size"])
        elif name == "-smp":
            cpus = _keyvals(value, first="cpus")["cpus"]
            if not cpus.isdigit() or int(cpus) < 1:
                raise QemuError(f"Invalid -smp {value!r}")
            launch.cpus = int(cpus)
        elif name in ("-bios", "-kernel", "-initrd"):
            path = Path(value)
            if not path.is_file():
                raise QemuError(f"could not load {name[1:]} '{value}'")
            setattr(launch, {"-bios": "firmware"}.get(name, name[1:]), path)
        elif name == "-append":
            launch.append = value
        elif name == "-netdev":
            kv = _keyvals(value, first="type")
            if kv.get("type") != "user" or "id" not in kv:
                raise QemuError("-netdev: only 'user' networking with an id is supported here")
            netdevs[kv["id"]] = kv.get("hostfwd", "")
        elif name == "-device":
            devices.append(_keyvals(value, first="driver"))
        elif name == "-drive":
            drive = _keyvals(value)
            unknown = set(drive) - _DRIVE_KEYS
            if unknown:
                raise QemuError(f"-drive: Invalid parameter '{sorted(unknown)[0]}'")
            if drive.get("if") != "none" or not drive.get("id"):
                raise QemuError("-drive: this stand-in takes if=none drives with an id only")
            if drive["id"] in drives:
                raise QemuError(f"-drive: Duplicate ID '{drive['id']}' for drive")
            if drive.get("format") != "raw":
                raise QemuError("-drive: this stand-in reads format=raw images only")
            if not Path(drive.get("file", "")).is_file():
                raise QemuError(
                    f"-drive: Could not open '{drive.get('file', '')}': No such file or directory"
                )
            _bool(drive.get("readonly", "off"), "readonly")
            drives[drive["id"]] = drive
        elif name == "-fw_cfg":
            kv = _keyvals(value, first="name")
            item = kv.get("name", "")
            if not item:
                raise QemuError("-fw_cfg: name not specified")
            if not item.startswith("opt/"):
                raise QemuError(f"-fw_cfg: name '{item}' must be prefixed with 'opt/'")
            if len(item.encode()) >= FW_CFG_MAX_NAME:
                raise QemuError(f"-fw_cfg: name '{item}' is too long")
            if item in launch.fw_cfg:
                raise QemuError(f"-fw_cfg: name '{item}' is given twice")
            if ("file" in kv) == ("string" in kv) or set(kv) - {"name", "file", "string"}:
                raise QemuError("-fw_cfg: give exactly one of file= and string=")
            if "file" in kv:
                if not Path(kv["file"]).is_file():
                    raise QemuError(f"-fw_cfg: can't load '{kv['file']}'")
                launch.fw_cfg[item] = Path(kv["file"])
            else:
                launch.fw_cfg[item] = kv["string"].encode()

    if accel != ["kvm"]:
        raise QemuError("a TD needs KVM: give -accel kvm (TDX runs only under KVM)")
    if machine is None or not re.fullmatch(r"q35|pc-q35-[0-9.]+", machine.get("type", "")):
        raise QemuError("a TD needs a q35 machine (-machine q35,...)")
    unknown = set(machine) - _MACHINE_KEYS
    if unknown:
        raise QemuError(f"-machine: Property '{sorted(unknown)[0]}' not found")
    cgs = machine.get("confidential-guest-support")
    if cgs is None:
        raise QemuError(
            "-machine has no confidential-guest-support: this would be a plain VM, not a TD "
            "(this stand-in boots only TDs)"
        )
    if cgs not in objects:
        raise QemuError(f"-machine: confidential-guest-support '{cgs}' is not a tdx-guest object")
    irqchip = machine.get("kernel-irqchip", machine.get("kernel_irqchip", "split"))
    if irqchip != "split":
        raise QemuError("TDX VM requires kernel_irqchip to be split")
    if _bool(machine.get("smm", "off"), "smm"):
        raise QemuError("a TD has no SMM support: smm must be off")
    tdx = objects[cgs]
    unknown = set(tdx) - _TDX_KEYS
    if unknown:
        raise QemuError(f"-object: Property 'tdx-guest.{sorted(unknown)[0]}' not found")
    if "attributes" in tdx:
        raw = tdx["attributes"]
        try:
            launch.td_attributes = int(raw, 0) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError):
            raise QemuError("tdx-guest: Parameter 'attributes' expects a number") from None
    if "sept-ve-disable" in tdx:
        if _bool(tdx["sept-ve-disable"], "sept-ve-disable"):
            launch.td_attributes |= SEPT_VE_DISABLE
        else:
            launch.td_attributes &= ~SEPT_VE_DISABLE
    qgs = tdx.get("quote-generation-socket")
    if qgs is not None and not (isinstance(qgs, dict) and qgs.get("type") in ("vsock", "unix")):
        raise QemuError("tdx-guest: quote-generation-socket must be a vsock or unix address")
    launch.qgs = qgs
    if launch.firmware is None:
        raise QemuError("a TD needs TDVF: give it as -bios (OVMF.fd built with TDX support)")
    if launch.kernel is None:
        raise QemuError("this stand-in boots a guest image directly: give -kernel")
    used: set[str] = set()
    for device in devices:
        if device.get("driver") != "virtio-blk-pci":
            continue
        unknown = set(device) - _BLK_KEYS
        if unknown:
            raise QemuError(f"-device: Property 'virtio-blk-pci.{sorted(unknown)[0]}' not found")
        drive_id = device.get("drive", "")
        if drive_id not in drives:
            raise QemuError(f"Property 'virtio-blk-device.drive' can't find value '{drive_id}'")
        if drive_id in used:
            raise QemuError(f"Drive '{drive_id}' is already in use by another device")
        used.add(drive_id)
        drive = drives[drive_id]
        launch.disks.append(
            (
                Path(drive["file"]),
                device.get("serial", ""),
                _bool(drive.get("readonly", "off"), "readonly"),
            )
        )
    for netdev, hostfwd in netdevs.items():
        if not any(d.get("netdev") == netdev for d in devices):
            raise QemuError(f"warning: netdev {netdev} has no peer (no -device for it)")
        if hostfwd:
            match = _HOSTFWD.match(hostfwd)
            if match is None:
                raise QemuError(f"invalid host forwarding rule '{hostfwd}'")
            if int(match["guest"]) == GUEST_COMMAND_PORT:
                launch.forward = (match["addr"] or "0.0.0.0", int(match["port"]))  # noqa: S104
    return launch
