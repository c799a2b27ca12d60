"""Owner keys: Ed25519 keys that sign release statements, and their text forms.

Formats (all ASCII):

- **public key**: ``ed25519:`` followed by the standard base64 (RFC 4648
  section 4, padded) of the 32-byte RFC 8032 public key; this is what an app
  user passes to ``confide verify --owner``.
- **key id**: the first 8 bytes of SHA-256 over the 32-byte public key, in
  lowercase hex (16 characters). It names a key in a DSSE signature's
  ``keyid`` and in output; it is an identifier, never a trust decision: a
  signature is always verified with the full key.
- **private key file**: ``confide-owner-key-v1:`` followed by the base64 of the
  32-byte RFC 8032 seed, then a newline; written with mode 0600.

A private key never shows in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from confide.errors import UsageError

#: Bytes of an Ed25519 public key or seed (RFC 8032).
ED25519_KEY_SIZE: Final = 32
#: Bytes of an Ed25519 signature.
ED25519_SIGNATURE_SIZE: Final = 64
#: Longest text read as a public key (``ed25519:`` + 44 base64 characters, with room).
MAX_PUBLIC_KEY_TEXT: Final = 128
#: Longest private key file read.
MAX_PRIVATE_KEY_FILE: Final = 256

_PUBLIC_PREFIX: Final = "ed25519:"
_PRIVATE_PREFIX: Final = "confide-owner-key-v1:"
_KEY_ID_BYTES: Final = 8


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard padded base64 (RFC 4648 section 4), refused unless canonical."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise UsageError(f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise UsageError(f"{what} is not canonical base64")
    return raw


@dataclass(frozen=True, slots=True)
class OwnerPublicKey:
    """An owner's Ed25519 public key (32 bytes).

    Example::

        >>> key = OwnerKey.generate().public_key
        >>> OwnerPublicKey.from_text(key.to_text()) == key
        True
        >>> len(key.key_id)
        16
    """

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != ED25519_KEY_SIZE:
            raise UsageError(
                f"an Ed25519 public key is {ED25519_KEY_SIZE} bytes, got {len(self.raw)}"
            )

    @property
    def key_id(self) -> str:
        """First 8 bytes of SHA-256 of the key, hex: a name, not a check."""
        return hashlib.sha256(self.raw).digest()[:_KEY_ID_BYTES].hex()

    def to_text(self) -> str:
        return _PUBLIC_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> OwnerPublicKey:
        """Parse ``ed25519:BASE64`` (surrounding whitespace ignored)."""
        if len(text) > MAX_PUBLIC_KEY_TEXT:
            raise UsageError(
                f"an owner key is at most {MAX_PUBLIC_KEY_TEXT} characters, got {len(text)}"
            )
        text = text.strip()
        if not text.startswith(_PUBLIC_PREFIX):
            raise UsageError(
                f"an owner key looks like {_PUBLIC_PREFIX}BASE64, got {text[:20]!r}",
                hint="print it with `confide keys show`",
            )
        return cls(b64decode_strict(text[len(_PUBLIC_PREFIX) :], "the owner key"))

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``.

        A building block for the verifiers of this package, which raise.
        """
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class OwnerKey:
    """An owner's Ed25519 signing key (its 32-byte seed, never shown)."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != ED25519_KEY_SIZE:
            raise UsageError(f"an Ed25519 seed is {ED25519_KEY_SIZE} bytes, got {len(self.seed)}")

    def __repr__(self) -> str:
        return "OwnerKey(<secret>)"

    @classmethod
    def generate(cls) -> OwnerKey:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def public_key(self) -> OwnerPublicKey:
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        return OwnerPublicKey(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)

    def to_file_bytes(self) -> bytes:
        return (_PRIVATE_PREFIX + base64.b64encode(self.seed).decode("ascii") + "\n").encode()

    @classmethod
    def from_file_bytes(cls, data: bytes) -> OwnerKey:
        if len(data) > MAX_PRIVATE_KEY_FILE:
            raise UsageError(
                f"an owner key file is at most {MAX_PRIVATE_KEY_FILE} bytes, got {len(data)}"
            )
        try:
            text = data.decode("ascii").strip()
        except UnicodeError:
            raise UsageError("the owner key file is not ASCII") from None
        if not text.startswith(_PRIVATE_PREFIX):
            raise UsageError(f"the owner key file does not start with {_PRIVATE_PREFIX!r}")
        return cls(b64decode_strict(text[len(_PRIVATE_PREFIX) :], "the owner key file"))
