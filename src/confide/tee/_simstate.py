"""The state folder of a simulated platform: its keys, certificates and secret on disk.

Private keys and the secret are written 0600 in a 0700 folder, never over an
existing file; ``platform.json`` is written last and marks a complete platform.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confide.crypto import private_key_pem
from confide.errors import TeeError

from ._simpki import PLATFORM_SECRET_SIZE, SimulatedPck

if TYPE_CHECKING:
    from ._simulation import SimulatedPlatform

_STATE_VERSION: Final = 1
#: Each signer's certificate and key, then the attestation key and the platform secret.
_FILES: Final = (
    *(f"{n}.{k}" for n in ("root", "pck_ca", "pck", "tcb_signer") for k in ("pem", "key")),
    *("attestation.key", "platform.secret"),
)
STATE_MARKER: Final = "platform.json"


def save_platform(self: SimulatedPlatform) -> None:
    """Write the platform into its state folder, the marker file last."""
    try:
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
    except OSError as exc:
        raise TeeError(f"cannot create {self.state}: {exc.strerror or exc}") from exc

    def cert_pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    files = {
        "root.pem": cert_pem(self.root_certificate),
        "root.key": private_key_pem(self.root_key),
        "pck_ca.pem": cert_pem(self.pck_ca_certificate),
        "pck_ca.key": private_key_pem(self.pck_ca_key),
        "pck.pem": cert_pem(self.pck.certificate),
        "pck.key": private_key_pem(self.pck.private_key),
        "tcb_signer.pem": cert_pem(self.tcb_signing_certificate),
        "tcb_signer.key": private_key_pem(self.tcb_signing_key),
        "attestation.key": private_key_pem(self.attestation_key),
        "platform.secret": self.secret,
    }
    for name, data in files.items():
        _write_new(self.state / name, data, 0o600 if name.endswith((".key", ".secret")) else 0o644)
    # Written last: its presence means the platform is complete.
    marker = {"version": _STATE_VERSION, "kind": "confide simulated SGX platform"}
    _write_new(self.state / STATE_MARKER, json.dumps(marker).encode(), 0o644)


def load_platform(cls: type[SimulatedPlatform], state: Path) -> SimulatedPlatform:
    """The platform kept in ``state``; an incomplete or foreign folder raises."""
    raw: dict[str, bytes] = {}
    for name in (STATE_MARKER, *_FILES):
        path = state / name
        try:
            if name.endswith((".key", ".secret")):
                mode = path.stat().st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise TeeError(
                        f"{path} is accessible to other users (mode {mode & 0o777:o})",
                        hint=f"chmod 600 {path}",
                    )
            raw[name] = path.read_bytes()
        except OSError as exc:
            raise TeeError(
                f"incomplete simulated platform in {state}: cannot read {name}: "
                f"{exc.strerror or exc}"
            ) from exc
    try:
        marker = json.loads(raw[STATE_MARKER])
    except ValueError as exc:
        raise TeeError(f"{state / STATE_MARKER} is not JSON") from exc
    if not isinstance(marker, dict) or marker.get("version") != _STATE_VERSION:
        raise TeeError(
            f"unsupported simulated platform state in {state}",
            hint="delete the folder to create a new simulated platform",
        )
    try:
        certs = {
            n: x509.load_pem_x509_certificate(raw[n])
            for n in ("root.pem", "pck_ca.pem", "pck.pem", "tcb_signer.pem")
        }
        keys = {
            n: _load_key(raw[n])
            for n in ("root.key", "pck_ca.key", "pck.key", "tcb_signer.key", "attestation.key")
        }
    except ValueError as exc:
        raise TeeError(f"corrupt simulated platform in {state}: {exc}") from exc
    secret = raw["platform.secret"]
    if len(secret) != PLATFORM_SECRET_SIZE:
        raise TeeError(f"corrupt simulated platform in {state}: bad platform secret size")
    return cls(
        state=state,
        root_certificate=certs["root.pem"],
        pck_ca_certificate=certs["pck_ca.pem"],
        tcb_signing_certificate=certs["tcb_signer.pem"],
        pck=SimulatedPck(certs["pck.pem"], keys["pck.key"]),
        root_key=keys["root.key"],
        pck_ca_key=keys["pck_ca.key"],
        tcb_signing_key=keys["tcb_signer.key"],
        attestation_key=keys["attestation.key"],
        secret=secret,
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("a key is not an EC private key")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (never following or replacing an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    except OSError as exc:
        raise TeeError(f"cannot write {path}: {exc.strerror or exc}") from exc
