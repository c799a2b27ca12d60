"""A TD's launch, passed in by the host through QEMU's fw_cfg (ADR 0022).

The operator's TDX backend starts each app's TD with one
``-fw_cfg name=opt/confide/<item>,file=<path>`` per item (QEMU's documented
option; names under ``opt/``); in the guest, the kernel's ``qemu_fw_cfg``
driver (``CONFIG_FW_CFG_SYSFS``) shows each one's bytes at
``/sys/firmware/qemu_fw_cfg/by_name/opt/confide/<item>/raw``:

``launch``
    the launch manifest, canonical JSON (:meth:`~confide.wire.LaunchManifest.to_json`);
``package``
    the encrypted package;
``certificate``
    the owner's certificate chain, PEM (certificate mode only);
``settings``
    what is not measured, JSON::

        {"format": "confide-td-settings", "version": 1,
         "relay_sources": ["10.0.2.2"], "timeout": null}

An app that locks requirements also gets a read-only virtio disk, the *wheel disk*
(:mod:`._wheeldisk`, ADR 0030): its lock and wheels, found by the disk's serial under
``/sys/block`` and read from ``/dev`` into a RAM folder of the guest, within bounds.

Nothing here is trusted. :func:`td_runtime_settings` builds the runtime's
settings from the items exactly as ``confide runtime`` does from its arguments
(hashing the package, the certificate and its own code) and refuses to start
unless the launch manifest it computes is ``launch``; the TD then extends RTMR3
with *its own* computation. A host that passes anything else only changes what
the TD reports, which every verifier checks. The listening address and port are
the guest's (``--host``, ``--port`` of ``confide td-runtime``), fixed in the guest
image; the host reaches them through QEMU's port forwarding.

Example::

    >>> settings = td_runtime_settings(  # doctest: +SKIP
    ...     FW_CFG_ROOT, host="0.0.0.0", port=GUEST_PORT, state_dir=Path("/run/confide"),
    ...     now=datetime.now(timezone.utc),
    ... )
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from confide import strictjson
from confide.errors import FormatError, JsonError, UsageError
from confide.wire import LaunchManifest, TlsMode

from ._settings import RuntimeSettings
from ._wheeldisk import DISK_SERIAL, read_wheel_disk

#: Where the guest kernel shows fw_cfg items.
FW_CFG_ROOT: Final = Path("/sys/firmware/qemu_fw_cfg")
#: The prefix of Confide's fw_cfg names (QEMU requires user items under ``opt/``).
FW_CFG_PREFIX: Final = "opt/confide/"
#: The items, in the order the backend passes them.
FW_CFG_ITEMS: Final = ("launch", "settings", "package", "certificate")
#: The port the runtime listens on in the guest (the host forwards one of its own to it).
GUEST_PORT: Final = 8443
#: The address QEMU's user networking gives the host, seen from the guest: the router's
#: relayed connections come from it.
USER_NET_HOST: Final = "10.0.2.2"
#: Largest ``launch`` and ``settings`` items read.
MAX_LAUNCH_ITEM: Final = 64 * 1024
MAX_SETTINGS_ITEM: Final = 4 * 1024
#: Most relay sources.
MAX_RELAY_SOURCES: Final = 16
#: Where the guest kernel lists block devices (``<name>/serial``: a virtio disk's serial)
#: and where their device nodes are, and the RAM folder the wheel disk is read into.
SYS_BLOCK: Final = Path("/sys/block")
DEV: Final = Path("/dev")
GUEST_REQUIREMENTS_DIR: Final = Path("/run/confide/requirements")
#: Most block devices looked at, and the longest serial read (virtio's ID is 20 bytes).
MAX_BLOCK_DEVICES: Final = 64
_MAX_SERIAL: Final = 64
_SETTINGS_FORMAT: Final = "confide-td-settings"


def fw_cfg_name(item: str) -> str:
    """The fw_cfg name of an item (``opt/confide/<item>``)."""
    if item not in FW_CFG_ITEMS:
        raise UsageError(f"no TD launch item {item!r}")
    return FW_CFG_PREFIX + item


def fw_cfg_file(root: Path, item: str) -> Path:
    """Where the guest reads an item: ``<root>/by_name/opt/confide/<item>/raw``."""
    return root / "by_name" / fw_cfg_name(item) / "raw"


@dataclass(frozen=True, slots=True)
class TdSettings:
    """The ``settings`` item: what the host decides and the launch does not measure."""

    #: Addresses that relay other clients' connections (ADR 0013): availability only.
    relay_sources: tuple[str, ...] = ()
    #: Seconds to wait for the configuration (it can only stop the runtime sooner).
    timeout: float | None = None

    def __post_init__(self) -> None:
        if len(self.relay_sources) > MAX_RELAY_SOURCES:
            raise UsageError(f"at most {MAX_RELAY_SOURCES} relay sources")
        if self.timeout is not None and not 0 < self.timeout < 1e9:
            raise UsageError(f"timeout must be positive, got {self.timeout}")

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": _SETTINGS_FORMAT,
                "version": 1,
                "relay_sources": list(self.relay_sources),
                "timeout": self.timeout,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TdSettings:
        """Parse the item; :class:`FormatError` ``td.settings`` if it is not one."""
        try:
            obj = strictjson.loads_object(raw, what="the TD settings", max_bytes=MAX_SETTINGS_ITEM)
            if obj.get("format") != _SETTINGS_FORMAT or obj.get("version") != 1:
                raise ValueError(f"not a version 1 {_SETTINGS_FORMAT} document")
            if set(obj) != {"format", "version", "relay_sources", "timeout"}:
                raise ValueError("keys must be format, version, relay_sources, timeout")
            sources, timeout = obj["relay_sources"], obj["timeout"]
            if not isinstance(sources, list) or not all(
                isinstance(s, str) and 0 < len(s) <= 253 for s in sources
            ):
                raise ValueError("relay_sources must be a list of addresses")
            if timeout is not None and (
                isinstance(timeout, bool) or not isinstance(timeout, int | float)
            ):
                raise ValueError("timeout must be a number or null")
            return cls(tuple(sources), None if timeout is None else float(timeout))
        except (JsonError, ValueError, UsageError) as exc:
            raise FormatError(
                "td.settings", "the TD's settings item is malformed", detail=str(exc)
            ) from None


def _read_item(root: Path, item: str, limit: int) -> bytes:
    path = fw_cfg_file(root, item)
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read the TD's {item} item {path}: {exc.strerror or exc}",
            hint=f"the host passes it with -fw_cfg name={fw_cfg_name(item)},file=...",
        ) from None
    if len(raw) > limit:
        raise UsageError(f"the TD's {item} item is larger than {limit} bytes")
    return raw


def find_disk(serial: str, *, sys_block: Path = SYS_BLOCK, dev: Path = DEV) -> Path:
    """The device node of the one block device whose serial is ``serial``."""
    try:
        names = sorted(os.listdir(sys_block))[:MAX_BLOCK_DEVICES]
    except OSError as exc:
        raise UsageError(f"cannot list {sys_block}: {exc.strerror or exc}") from None
    found = []
    for name in names:
        try:
            with open(sys_block / name / "serial", "rb") as f:
                seen = f.read(_MAX_SERIAL + 1)
        except OSError:
            continue  # not a virtio disk (no serial), or gone
        if seen.strip() == serial.encode():
            found.append(name)
    if len(found) != 1:
        raise UsageError(
            f"the TD has {len(found)} disks with the serial {serial!r}, not one",
            hint="the host attaches the wheel disk of an app with locked requirements",
        )
    return dev / found[0]


def td_runtime_settings(
    fw_cfg: Path,
    *,
    host: str,
    port: int,
    state_dir: Path,
    now: datetime,
    runtime_sha256: bytes | None = None,
    sys_block: Path = SYS_BLOCK,
    dev: Path = DEV,
    requirements_dir: Path = GUEST_REQUIREMENTS_DIR,
) -> RuntimeSettings:
    """The runtime's settings from the TD's fw_cfg items (and, when the launch locks
    requirements, its wheel disk, read into ``requirements_dir``); raise unless they are
    ``launch``.

    ``runtime_sha256`` defaults to the installed runtime's code hash (tests pass it).
    """
    try:
        launch = LaunchManifest.from_json(_read_item(fw_cfg, "launch", MAX_LAUNCH_ITEM))
    except FormatError as exc:
        raise UsageError(f"the TD's launch item is not a launch manifest: {exc}") from None
    extra = TdSettings.from_json(_read_item(fw_cfg, "settings", MAX_SETTINGS_ITEM))
    package = fw_cfg_file(fw_cfg, "package")
    certificate = fw_cfg_file(fw_cfg, "certificate") if launch.tls == TlsMode.OWNER else None
    for needed in (package, certificate):
        if needed is not None and not needed.is_file():
            raise UsageError(f"the TD has no {needed.parent.name} item ({needed})")
    requirements = wheels = None
    if launch.requirements_sha256 is not None:
        disk = find_disk(DISK_SERIAL, sys_block=sys_block, dev=dev)
        requirements, wheels = read_wheel_disk(
            disk, requirements_dir, lock_sha256=launch.requirements_sha256
        )
    settings = RuntimeSettings.from_arguments(
        app_id=launch.app_id,
        application=launch.application,
        package=package,
        app_dir=None,
        plaincode=False,
        host=host,
        port=port,
        ratls_expiry=launch.ratls_expiry,
        certificate=certificate,
        no_ssl=launch.tls == TlsMode.OPERATOR,
        san=launch.san,
        subject=launch.subject,
        state_dir=state_dir,
        timeout=extra.timeout,
        now=now,
        runtime_sha256=runtime_sha256,
        relay_sources=extra.relay_sources,
        requirements=requirements,
        wheels=wheels,
    )
    if settings.manifest != launch:
        ours, theirs = settings.manifest.to_dict(), launch.to_dict()
        differs = sorted(key for key, value in theirs.items() if ours.get(key) != value)
        raise UsageError(
            f"the launch computed in this TD is not the host's launch item: "
            f"{', '.join(differs)} differ",
            hint="the package, certificate or this guest image's runtime is not the one the "
            "app was deployed with",
        )
    return settings
