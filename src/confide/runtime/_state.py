"""The runtime's sealed state: what survives a restart, encrypted under the TEE's sealing key.

The sealing key is bound to the measurement, so a runtime launched with the
same code and arguments reads its state back and resumes the app with no
action from the owner, while one with another measurement cannot, and says so.

File format (``sealed-state.bin``), version 1::

    0   8   magic "CONFSTAT"
    8   1   version 0x01
    9   12  AES-GCM nonce (random)
    21  ..  AES-256-GCM(key = HKDF-SHA256(sealing key, info "confide/state/v1"),
                        aad = bytes 0..20, plaintext = canonical JSON) with its tag

Nothing in the state folder is readable without the sealing key.

Example::

    >>> import tempfile, os
    >>> store = StateStore(Path(tempfile.mkdtemp()), sealing_key=os.urandom(32))
    >>> store.save(SealedState(tls_key_pem=b"k", enclave_private_key=bytes(32)))
    >>> store.load().tls_key_pem
    b'k'
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from confide.errors import TeeError, UsageError

STATE_FILE: Final = "sealed-state.bin"
MAX_STATE_SIZE: Final = 4 * 1024 * 1024
_MAGIC: Final = b"CONFSTAT"
_VERSION: Final = 1
_NONCE: Final = 12
_HEADER: Final = len(_MAGIC) + 1 + _NONCE


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it (created 0600),
    flushed to disk and given ``mode``, then renamed over ``path``. Raises :class:`OSError`.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True, slots=True)
class SealedState:
    """Keys and secrets of one launch. Nothing here is ever logged (no ``repr`` of values)."""

    tls_key_pem: bytes = field(repr=False)
    enclave_private_key: bytes = field(repr=False)
    #: Set once the owner has configured the runtime.
    configured: bool = False
    code_key: bytes | None = field(default=None, repr=False)
    app_secrets: Any = field(default=None, repr=False)
    sealed_secrets: Any = field(default=None, repr=False)
    ssl_private_key_pem: bytes | None = field(default=None, repr=False)

    def to_json(self) -> bytes:
        def b64(v: bytes | None) -> str | None:
            return None if v is None else base64.b64encode(v).decode()

        return json.dumps(
            {
                "version": _VERSION,
                "tls_key_pem": b64(self.tls_key_pem),
                "enclave_private_key": b64(self.enclave_private_key),
                "configured": self.configured,
                "code_key": b64(self.code_key),
                "app_secrets": self.app_secrets,
                "sealed_secrets": self.sealed_secrets,
                "ssl_private_key_pem": b64(self.ssl_private_key_pem),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SealedState:
        obj = json.loads(data)

        def unb64(key: str) -> bytes | None:
            value = obj[key]
            return None if value is None else base64.b64decode(value, validate=True)

        tls = unb64("tls_key_pem")
        enclave = unb64("enclave_private_key")
        if obj.get("version") != _VERSION or tls is None or enclave is None:
            raise ValueError("unsupported state")
        return cls(
            tls_key_pem=tls,
            enclave_private_key=enclave,
            configured=bool(obj["configured"]),
            code_key=unb64("code_key"),
            app_secrets=obj["app_secrets"],
            sealed_secrets=obj["sealed_secrets"],
            ssl_private_key_pem=unb64("ssl_private_key_pem"),
        )


class StateStore:
    """Reads and writes :class:`SealedState` in a folder, sealed with the TEE's key."""

    def __init__(self, directory: Path, *, sealing_key: bytes) -> None:
        if len(sealing_key) != 32:
            raise UsageError("the sealing key must be 32 bytes")
        self.directory = directory
        self._aead = AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"confide/state/v1").derive(
                sealing_key
            )
        )

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> SealedState | None:
        """The saved state, ``None`` if there is none; raise if it cannot be unsealed."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TeeError(f"cannot read the sealed state {self.path}: {exc.strerror}") from None
        if len(blob) > MAX_STATE_SIZE or len(blob) < _HEADER + 16 or not blob.startswith(_MAGIC):
            raise TeeError(f"{self.path} is not a Confide sealed state")
        if blob[len(_MAGIC)] != _VERSION:
            raise TeeError(
                f"{self.path} has sealed-state version {blob[len(_MAGIC)]}, "
                f"this runtime reads version {_VERSION}"
            )
        try:
            plain = self._aead.decrypt(
                blob[len(_MAGIC) + 1 : _HEADER], blob[_HEADER:], blob[:_HEADER]
            )
        except InvalidTag:
            raise TeeError(
                f"cannot unseal {self.path}: it was sealed by an enclave with another "
                "measurement (other code or launch arguments) or altered",
                hint="relaunch with the original package and arguments, or remove the state "
                "folder and configure the app again",
            ) from None
        try:
            return SealedState.from_json(plain)
        except (ValueError, KeyError, TypeError) as exc:
            raise TeeError(f"the sealed state in {self.path} is malformed: {exc}") from None

    def save(self, state: SealedState) -> None:
        """Seal and write atomically, mode 0600."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        nonce = secrets.token_bytes(_NONCE)
        header = _MAGIC + bytes([_VERSION]) + nonce
        blob = header + self._aead.encrypt(nonce, state.to_json(), header)
        write_atomically(self.path, blob)
