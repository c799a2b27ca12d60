"""Key types: the symmetric package key and X25519 key pairs, and their file formats;
the PEM and key-usage helpers of the X.509 certificates Confide issues.

A key file holds either the raw key bytes or the key in hex (whitespace around
it is ignored), so files written by Cosmian Enclave's ``cenclave keygen`` load
as they are. Keys never show in a ``repr``.
"""

from __future__ import annotations

import hmac
import string
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from nacl.bindings import crypto_scalarmult_base
from nacl.utils import random

from confide.errors import UsageError

#: Bytes of a package key (secretstream XChaCha20-Poly1305).
PACKAGE_KEY_SIZE: Final = 32
#: Bytes of an X25519 public or private key.
X25519_KEY_SIZE: Final = 32
#: Largest key file read: a hex key pair with some whitespace.
KEY_FILE_MAX_SIZE: Final = 1024

_HEX_DIGITS: Final = frozenset(string.hexdigits)
_KEY_USAGES: Final = (
    *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
    *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
)


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_usage(*usages: str) -> x509.KeyUsage:
    """A KeyUsage extension with exactly ``usages`` set (``"key_cert_sign"``, ...)."""
    if unknown := set(usages) - set(_KEY_USAGES):
        raise ValueError(f"no key usage {sorted(unknown)}")
    return x509.KeyUsage(**{usage: usage in usages for usage in _KEY_USAGES})


def _key_bytes(data: bytes, sizes: tuple[int, ...], what: str, *, allow_raw: bool = True) -> bytes:
    """Raw bytes of a key given in hex (or raw, if allowed); its size must be one of ``sizes``.

    Text that is all hex digits of a fitting length is read as hex, so a raw
    key is taken as raw only if it is not such text (for random keys the odds
    of that are below 2**-150).
    """
    if len(data) > KEY_FILE_MAX_SIZE:
        raise UsageError(
            f"the {what} is {len(data)} bytes; a key file holds at most {KEY_FILE_MAX_SIZE}"
        )
    text = data.strip()
    if text[:2] in (b"0x", b"0X"):
        text = text[2:]
    if (
        text
        and len(text) % 2 == 0
        and len(text) // 2 in sizes
        and all(chr(c) in _HEX_DIGITS for c in text)
    ):
        return bytes.fromhex(text.decode("ascii"))
    if allow_raw and len(data) in sizes:
        return data
    expected = " or ".join(f"{n} bytes ({2 * n} hex digits)" for n in sizes)
    form = "raw or in hex" if allow_raw else "in hex"
    raise UsageError(f"the {what} is not a key: expected {expected}, {form}")


@dataclass(frozen=True, slots=True)
class PackageKey:
    """The 32-byte symmetric key that encrypts a code package.

    Example::

        >>> key = PackageKey.generate()
        >>> PackageKey.from_hex(key.hex()) == key
        True
        >>> repr(key)
        'PackageKey(<secret>)'
    """

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != PACKAGE_KEY_SIZE:
            raise UsageError(f"a package key is {PACKAGE_KEY_SIZE} bytes")

    def __repr__(self) -> str:
        return "PackageKey(<secret>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackageKey):
            return NotImplemented
        return hmac.compare_digest(self.secret, other.secret)

    def __hash__(self) -> int:
        return hash((PackageKey, self.secret))

    @classmethod
    def generate(cls) -> PackageKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(random(PACKAGE_KEY_SIZE))

    @classmethod
    def from_hex(cls, text: str) -> PackageKey:
        """Parse 64 hex digits (an optional ``0x`` prefix and surrounding spaces allowed)."""
        raw = _key_bytes(
            text.encode("utf-8", "replace"), (PACKAGE_KEY_SIZE,), "package key", allow_raw=False
        )
        return cls(raw)

    @classmethod
    def from_file_bytes(cls, data: bytes) -> PackageKey:
        """Parse a key file: 32 raw bytes, or 64 hex digits."""
        return cls(_key_bytes(data, (PACKAGE_KEY_SIZE,), "package key"))

    def hex(self) -> str:
        """The key in lowercase hex; treat the result as the secret it is."""
        return self.secret.hex()


@dataclass(frozen=True, slots=True)
class X25519KeyPair:
    """An X25519 key pair: ``public_key`` and ``private_key``, 32 bytes each.

    Example::

        >>> pair = X25519KeyPair.generate()
        >>> X25519KeyPair.from_private_key(pair.private_key) == pair
        True
    """

    public_key: bytes
    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("public_key", "private_key"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != X25519_KEY_SIZE:
                raise UsageError(f"an X25519 {name.replace('_', ' ')} is {X25519_KEY_SIZE} bytes")
        if not hmac.compare_digest(crypto_scalarmult_base(self.private_key), self.public_key):
            raise UsageError("the X25519 public key does not belong to the private key")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, X25519KeyPair):
            return NotImplemented
        return hmac.compare_digest(self.private_key, other.private_key)

    def __hash__(self) -> int:
        return hash((X25519KeyPair, self.public_key))

    @classmethod
    def generate(cls) -> X25519KeyPair:
        """A fresh key pair from the operating system's CSPRNG."""
        return cls.from_private_key(random(X25519_KEY_SIZE))

    @classmethod
    def from_private_key(cls, private_key: bytes) -> X25519KeyPair:
        """The pair of a 32-byte private key (its public key is derived)."""
        if not isinstance(private_key, bytes) or len(private_key) != X25519_KEY_SIZE:
            raise UsageError(f"an X25519 private key is {X25519_KEY_SIZE} bytes")
        return cls(crypto_scalarmult_base(private_key), private_key)

    @classmethod
    def from_file_bytes(cls, data: bytes) -> X25519KeyPair:
        """Parse a private key file.

        Accepted: the 32-byte private key, raw or in hex; or the 64 bytes
        ``public_key || private_key`` that ``cenclave keygen --asymmetric``
        writes, raw or in hex (the public half must match).
        """
        raw = _key_bytes(data, (X25519_KEY_SIZE, 2 * X25519_KEY_SIZE), "private key")
        if len(raw) == X25519_KEY_SIZE:
            return cls.from_private_key(raw)
        return cls(raw[:X25519_KEY_SIZE], raw[X25519_KEY_SIZE:])
