"""Sealed boxes: anonymous public-key encryption to an enclave's X25519 key.

The format is libsodium's ``crypto_box_seal`` with no framing and no encoding,
byte for byte what Cosmian Enclave's ``cenclave seal`` writes and
``cenclave unseal`` reads (``cenclave_lib_crypto.seal_box`` is PyNaCl's
``SealedBox`` on the raw bytes)::

    ephemeral_pk (32) || MAC (16) || XSalsa20 ciphertext (len(data))
    nonce = BLAKE2b-192(ephemeral_pk || recipient_pk)

An enclave publishes its X25519 public key in ``report_data[32:64]`` of the
quote inside its RA-TLS certificate (``report_data[0:32]`` binds the TLS key);
:func:`public_key_from_report_data` takes it out of a verified quote. (Example:
:mod:`confide.crypto`.)
"""

from __future__ import annotations

from typing import Final

from nacl.bindings import crypto_box_seal, crypto_box_seal_open, crypto_box_SEALBYTES
from nacl.exceptions import CryptoError as NaclCryptoError

from confide.errors import UsageError

from ._errors import CryptoError
from ._keys import X25519_KEY_SIZE, X25519KeyPair

#: Bytes a sealed box adds to its plaintext (ephemeral public key and MAC).
SEAL_OVERHEAD: Final = int(crypto_box_SEALBYTES)
#: Largest plaintext sealed or sealed box opened: sealed boxes carry secrets, not bulk data.
MAX_SEALED_SIZE: Final = 64 * 1024 * 1024
#: Where an enclave's X25519 public key sits in its quote's 64-byte report data.
_REPORT_DATA_KEY: Final = slice(32, 64)
_REPORT_DATA_SIZE: Final = 64


def _public_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != X25519_KEY_SIZE:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise UsageError(f"an X25519 public key is {X25519_KEY_SIZE} bytes, got {size}")
    return key


def seal(data: bytes, recipient_public_key: bytes) -> bytes:
    """Encrypt ``data`` so that only the holder of the recipient's private key can read it."""
    if len(data) > MAX_SEALED_SIZE:
        raise UsageError(
            f"{len(data)} bytes is too much to seal; a sealed box holds at most {MAX_SEALED_SIZE}"
        )
    key = _public_key(recipient_public_key)
    try:
        return bytes(crypto_box_seal(bytes(data), key))
    except NaclCryptoError as exc:
        raise CryptoError(
            "seal.public_key", "the recipient public key is not usable (a low-order point)"
        ) from exc


def unseal(sealed: bytes, private_key: bytes | X25519KeyPair) -> bytes:
    """Open a sealed box with the recipient's private key (or key pair)."""
    pair = (
        private_key
        if isinstance(private_key, X25519KeyPair)
        else X25519KeyPair.from_private_key(private_key)
    )
    if len(sealed) > MAX_SEALED_SIZE + SEAL_OVERHEAD:
        raise CryptoError(
            "seal.size",
            f"the sealed box is {len(sealed)} bytes, more than the "
            f"{MAX_SEALED_SIZE + SEAL_OVERHEAD} allowed",
        )
    if len(sealed) < SEAL_OVERHEAD:
        raise CryptoError(
            "seal.truncated",
            f"the sealed box is {len(sealed)} bytes, shorter than the {SEAL_OVERHEAD} of its "
            "key and MAC",
        )
    try:
        return bytes(crypto_box_seal_open(bytes(sealed), pair.public_key, pair.private_key))
    except NaclCryptoError as exc:
        raise CryptoError(
            "seal.open",
            "the sealed box does not open: it was sealed for another key, or altered",
        ) from exc


def public_key_from_report_data(report_data: bytes) -> bytes:
    """The X25519 public key an enclave put in ``report_data[32:64]`` of its quote.

    Only meaningful for a quote that was verified (see :mod:`confide.attestation`).
    """
    if len(report_data) != _REPORT_DATA_SIZE:
        raise UsageError(f"report data is {_REPORT_DATA_SIZE} bytes, got {len(report_data)}")
    key = bytes(report_data[_REPORT_DATA_KEY])
    if not any(key):
        raise CryptoError(
            "seal.public_key", "report_data[32:64] is all zero: the enclave published no key"
        )
    return key
