"""The operator's TDX backend: each app in a TD of its own, launched with QEMU (ADR 0020, 0022).

:class:`TdxBackend` runs one trust domain per app from the Confide guest image
(``[tdx]`` in ``operator.toml``: the TDVF firmware, the image's kernel, initrd
and command line, and the reference values file the operator publishes). For
each start, in the app's folder ``<data>/apps/<id>/``:

1. :func:`confide.runtime.check_launch` refuses a launch that would not measure as
   the stored launch manifest (the guest recomputes it the same way and refuses too);
2. ``launch.json`` (the launch manifest) and ``settings.json`` (what is not measured:
   :class:`confide.runtime.TdSettings`) are written, and with the package and, in
   certificate mode, ``certificate.pem``, passed into the TD with QEMU's ``-fw_cfg``
   (:mod:`confide.runtime._guest` says where the guest reads them);
3. QEMU starts the TD as its documentation (``docs/system/i386/tdx.rst``) says:
   ``-accel kvm``, a ``tdx-guest`` object with ``sept-ve-disable`` on (ADR 0022) and
   the host's quote generation service on vsock port 4050, ``-machine
   q35,kernel-irqchip=split,confidential-guest-support=tdx``, ``-bios`` TDVF,
   ``-kernel``/``-initrd``/``-append`` the guest image, the plan's memory and cores,
   user networking forwarding a loopback port of this host to the runtime's
   :data:`~confide.runtime.GUEST_PORT` in the TD, and the guest's serial console
   appended to the app's log.

An app that locks requirements (ADR 0024, 0030) gets its wheels fetched into the
operator's cache first, as with every backend; then ``wheels.disk`` in its folder, the
*wheel disk* (:mod:`confide.runtime._wheeldisk`: the lock and each of its files, by
SHA-256), is attached as a read-only raw virtio disk with the serial
:data:`~confide.runtime.DISK_SERIAL` (``-drive file=...,if=none,id=...,format=raw,
readonly=on`` and ``-device virtio-blk-pci,drive=...,serial=...``). A disk, not fw_cfg:
the guest reads fw_cfg with port I/O, which traps to the host on every instruction in a
TD (a #VE), far too slow for hundreds of megabytes; virtio moves them through shared
buffers. The guest parses the disk itself within bounds (it mounts no file system of the
host's making) and the runtime checks every wheel against the measured lock.

The guest image's init runs ``confide td-runtime``, which reads the launch from
fw_cfg, extends RTMR3 with it and serves (ADR 0020). Nothing this backend passes
is trusted: a changed item changes what the TD reports (RTMR3), which owners and
users check; the firmware, kernel, initrd and command line are measured into MRTD
and RTMR0-2, which users check against the published reference values. The
router relays bytes to the forwarded port (no descriptor enters a TD).

The port is kept in ``runtime.json`` with QEMU's pid: a restart reuses it and an
operator restart adopts a running TD after checking that the pid's command line
is QEMU's for this app's launch item. The decrypted code lives in the TD's RAM:
nothing is left on the host when a TD ends.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Final

from confide.attestation import TdReference
from confide.errors import FormatError, UsageError
from confide.runtime import (
    DISK_SERIAL,
    GUEST_PORT,
    USER_NET_HOST,
    TdSettings,
    check_launch,
    fw_cfg_name,
    write_wheel_disk,
)
from confide.wire import TlsMode

from ._backend import (
    LOCAL_RUNTIME_ENVIRONMENT,
    STOP_TIMEOUT,
    AppSpec,
    Launch,
    LaunchRefused,
    RecordedProcessBackend,
    read_cmdline,
)
from ._logs import LogSource
from ._seams import Clock, utc_now
from ._settings import TdxSettings, TeeBackend

#: The id of the ``tdx-guest`` object the machine's confidential-guest-support names.
TDX_OBJECT_ID: Final = "tdx"
#: Where the TD asks for quotes: the host's quote generation service (QGS), vsock
#: CID 2 (the host) port 4050, its default.
QGS_VSOCK_PORT: Final = 4050
#: Largest reference values file read.
_MAX_REFERENCE: Final = 4096
_LAUNCH_FILE: Final = "launch.json"
_SETTINGS_FILE: Final = "settings.json"
#: The app's wheel disk in its folder, and its drive's id on QEMU's command line.
WHEEL_DISK_FILE: Final = "wheels.disk"
WHEEL_DRIVE_ID: Final = "confide-wheels"


def load_reference(path: Path) -> TdReference:
    """The guest image's reference values from ``path``; :class:`LaunchRefused` if unusable."""
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_REFERENCE + 1)
        return TdReference.from_json(raw)
    except OSError as exc:
        raise LaunchRefused(
            f"cannot read the guest image's reference values {path}: {exc.strerror or exc}",
            hint="[tdx] reference names the MRTD and RTMR0-2 file published with the image",
        ) from None
    except FormatError as exc:
        raise LaunchRefused(f"{path}: {exc}", hint=exc.hint) from None


def tdx_object(settings: TdxSettings) -> str:
    """QEMU's ``-object`` of the TD (JSON form: the QGS address is a nested object)."""
    del settings  # the same for every app: no debug, SEPT_VE_DISABLE on (ADR 0022)
    return json.dumps(
        {
            "qom-type": "tdx-guest",
            "id": TDX_OBJECT_ID,
            "sept-ve-disable": True,
            "quote-generation-socket": {
                "type": "vsock",
                "cid": "2",
                "port": str(QGS_VSOCK_PORT),
            },
        },
        separators=(",", ":"),
    )


class TdxBackend(RecordedProcessBackend):
    """Each app in a TD of its own, launched with QEMU (see the module's description)."""

    def __init__(
        self,
        *,
        data_dir: Path,
        log_source: LogSource,
        tdx: TdxSettings,
        host: str = "127.0.0.1",
        search_path: str | None = None,
        environment: Mapping[str, str] = LOCAL_RUNTIME_ENVIRONMENT,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Clock = utc_now,
        wheel_index_url: str | None = None,
        wheel_find_links: str | None = None,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            log_source=log_source,
            tee=TeeBackend.TDX,
            host=host,
            environment=environment,
            stop_timeout=stop_timeout,
            clock=clock,
            wheel_index_url=wheel_index_url,
            wheel_find_links=wheel_find_links,
        )
        self.tdx = tdx
        #: Where QEMU is looked for (the operator's PATH).
        self._search_path = search_path

    def remove_code(self, app_id: uuid.UUID | None = None) -> list[Path]:
        return []  # the code is in the TD's memory: nothing is left on the host

    def launch_file(self, app_id: uuid.UUID) -> Path:
        return self.app_dir(app_id) / _LAUNCH_FILE

    # -- starting ------------------------------------------------------------------------------

    def _qemu(self) -> str:
        found = shutil.which(self.tdx.qemu, path=self._search_path)
        if found is None:
            raise LaunchRefused(
                f"{self.tdx.qemu} is not installed on this host (looked on PATH)",
                hint="install QEMU with TDX support (see docs/hardware.md)",
            )
        return found

    def _write(self, path: Path, data: bytes) -> Path:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def _wheel_disk(self, spec: AppSpec) -> tuple[Path, Path] | None:
        """The app's lock (in the cache) and its wheel disk, written after its wheels were
        fetched; ``None`` for an app without a lock. Not a defence (ADR 0030)."""
        lock_path = self.prepare_requirements(spec)
        digest = spec.manifest.requirements_sha256
        if lock_path is None or digest is None:
            return None
        lock = self.wheels.read_lock(digest)
        disk = self.app_dir(spec.app_id) / WHEEL_DISK_FILE
        files = {r.sha256: self.wheels.wheel_path(r.sha256) for r in lock.requirements}
        try:
            write_wheel_disk(lock, files, disk)
        except OSError as exc:
            raise LaunchRefused(
                f"cannot write the wheel disk of app {spec.app_id}: {exc.strerror or exc}"
            ) from None
        except UsageError as exc:
            raise LaunchRefused(exc.message, hint=exc.hint) from None
        return lock_path, disk

    def _prepare(self, spec: AppSpec, now: datetime) -> Launch:
        qemu = self._qemu()
        tdx = self.tdx
        for what, path in (("firmware", tdx.firmware), ("kernel", tdx.kernel)):
            if not path.is_file():
                raise LaunchRefused(f"the TD's {what} {path} is missing")
        if not tdx.initrd.is_file():
            raise LaunchRefused(f"the TD's initrd {tdx.initrd} is missing")
        # No TD starts unless the image's reference values exist to be published (fail closed).
        load_reference(tdx.reference)
        folder = self.app_dir(spec.app_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        certificate: Path | None = None
        if spec.manifest.tls == TlsMode.OWNER:
            if spec.certificate_pem is None:
                raise LaunchRefused(f"app {spec.app_id} has no owner certificate stored")
            certificate = self._write(
                self.certificate_path(spec.app_id), spec.certificate_pem.encode()
            )
        if not spec.package.is_file():
            raise LaunchRefused(f"the package of app {spec.app_id} is missing: {spec.package}")
        locked = self._wheel_disk(spec)
        try:
            check_launch(
                spec.manifest,
                package=spec.package,
                certificate=certificate,
                state_dir=self.state_dir(spec.app_id),
                now=now,
                requirements=locked[0] if locked is not None else None,
                wheels=self.wheels.wheels_dir if locked is not None else None,
            )
        except UsageError as exc:
            raise LaunchRefused(exc.message, hint=exc.hint) from None
        items = {
            "launch": self._write(self.launch_file(spec.app_id), spec.manifest.to_json()),
            # The router's relayed connections reach the TD from QEMU's user network host.
            "settings": self._write(
                folder / _SETTINGS_FILE, TdSettings(relay_sources=(USER_NET_HOST,)).to_json()
            ),
            "package": spec.package.resolve(),
        }
        if certificate is not None:
            items["certificate"] = certificate
        disks = [locked[1]] if locked is not None else []
        for path in (*items.values(), *disks, tdx.firmware, tdx.kernel, tdx.initrd):
            if "," in str(path):
                raise LaunchRefused(f"QEMU cannot be given a path with a comma: {path}")
        port = self._port(spec.app_id)
        argv = [
            qemu,
            "-name",
            f"confide-{spec.app_id}",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-machine",
            f"q35,kernel-irqchip=split,confidential-guest-support={TDX_OBJECT_ID}",
            "-object",
            tdx_object(tdx),
            "-m",
            f"{spec.memory_mib}M",
            "-smp",
            str(spec.cores),
            "-nographic",
            "-nodefaults",
            "-serial",
            "stdio",
            "-bios",
            str(tdx.firmware),
            "-kernel",
            str(tdx.kernel),
            "-initrd",
            str(tdx.initrd),
            "-append",
            tdx.append,
            "-netdev",
            f"user,id=net0,hostfwd=tcp:{self._host}:{port}-:{GUEST_PORT}",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
        for item, path in items.items():
            argv += ["-fw_cfg", f"name={fw_cfg_name(item)},file={path}"]
        for disk in disks:
            # Read-only, raw (no format header of the host's is probed), found by its serial.
            argv += [
                "-drive",
                f"file={disk},if=none,id={WHEEL_DRIVE_ID},format=raw,readonly=on",
                "-device",
                f"virtio-blk-pci,drive={WHEEL_DRIVE_ID},serial={DISK_SERIAL}",
            ]
        return Launch(argv, self._environment, port)

    # -- finding it again ----------------------------------------------------------------------

    def _launch_argument(self, app_id: uuid.UUID) -> str:
        return f"name={fw_cfg_name('launch')},file={self.launch_file(app_id)}"

    def _ours(self, pid: int, app_id: uuid.UUID) -> list[str] | None:
        """The command line of ``pid`` if it is QEMU running this app's TD."""
        argv = read_cmdline(pid)
        if argv is None or self._launch_argument(app_id) not in argv:
            return None
        return argv

    def _app_of(self, argv: list[str]) -> uuid.UUID | None:
        prefix = f"name={fw_cfg_name('launch')},file="
        for element in argv:
            if element.startswith(prefix):
                path = Path(element[len(prefix) :])
                if path.name == _LAUNCH_FILE and path.parent.parent == self.apps_dir:
                    try:
                        return uuid.UUID(path.parent.name)
                    except ValueError:
                        return None
        return None
