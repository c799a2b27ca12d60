"""A stand-in for QEMU launching an Intel TDX trust domain, for CI (test tooling: never shipped).

No TDX host, no KVM and no TDX-enabled QEMU are available where Confide's tests
run, so the operator's TD launch path (``tee = "tdx"``, :class:`confide.operator.TdxBackend`)
is exercised through ``qemu-system-x86_64`` from here, put first on ``PATH`` by
the tests (:func:`install`). It copies what QEMU documents
(``docs/system/i386/tdx.rst``, ``qemu-options.hx``) for the options it takes:

- **it refuses** a launch QEMU would refuse or that would not be a TD: no ``-accel
  kvm``; a ``-machine`` that is not q35 or has no ``confidential-guest-support``
  naming a ``tdx-guest`` object; ``kernel-irqchip`` other than ``split`` (left out
  it is split, as the document says); no ``-bios`` (TDVF) or a missing file; an
  unknown option or ``tdx-guest`` property; a ``-fw_cfg`` name outside ``opt/``, of
  56 characters or more, given twice, or whose file is missing; a ``-netdev user``
  without its ``-device``; a ``-m`` that is not a size; a ``-drive`` whose file does not
  open or whose id is given twice, a ``virtio-blk-pci`` whose drive is not defined or
  backs another device (and, as limits of its own, drives that are not ``if=none``
  ``format=raw``);
- **it "boots" the guest** by running, in its own process (its pid is the "VM"'s),
  what the Confide guest image's init runs (``confide td-runtime``) against
  stand-ins of the guest's kernel interfaces: the fw_cfg items as the
  ``qemu_fw_cfg`` driver shows them (``by_name/<name>/raw``, copied when the "VM"
  starts, as QEMU reads them), configfs-tsm (:mod:`support.configfs_tsm`) and the
  measurement registers (:mod:`support.tdx_measurements`), and the virtio disks
  (:func:`block_tree`: ``/sys/block/vdX/serial``, the device ID of at most 20 bytes,
  and ``/dev/vdX``, the image in whole 512-byte sectors). The TD's quotes come
  from the simulated platform given to :func:`install`: MRTD and RTMR0-2 are
  :func:`measure_image` of the ``-bios``, ``-kernel``, ``-initrd`` and ``-append``
  given, RTMR3 is what the guest extended, TD_ATTRIBUTES are the ``tdx-guest``
  object's (``sept-ve-disable``, ``attributes``);
- user networking's ``hostfwd=tcp:ADDR:PORT-:GUESTPORT`` to the guest's port is
  played by the guest listening on ``ADDR:PORT`` itself, so connections the router
  relays come from the host's loopback instead of QEMU's ``10.0.2.2``;
- ``-m`` bounds the "VM"'s address space (``RLIMIT_AS``).

What it does not prove (docs/hardware.md, ADR 0022): no TD isolates anything,
MRTD and RTMR0-2 are this stand-in's hashes of the image files and not TDVF's
measured boot, the quotes come from the simulated platform and not the TD quoting
enclave through QGS, and the guest image (kernel, initrd, init) is not built.
"""

from __future__ import annotations

from ._install import QEMU, StandinConfig, install
from ._measure import measure_image
from ._options import (
    GUEST_COMMAND_PORT,
    VIRTIO_BLK_ID_BYTES,
    QemuError,
    TdLaunch,
    parse_command_line,
)
from .qemu import block_tree

__all__ = [
    "GUEST_COMMAND_PORT",
    "QEMU",
    "QemuError",
    "StandinConfig",
    "TdLaunch",
    "VIRTIO_BLK_ID_BYTES",
    "block_tree",
    "install",
    "measure_image",
    "parse_command_line",
]
