"""Confide's cryptography: sealed boxes to enclave keys, and encrypted code packages.

Sealed boxes (:func:`seal`, :func:`unseal`) are libsodium's ``crypto_box_seal``,
byte-compatible with Cosmian Enclave's ``cenclave seal`` / ``cenclave unseal``.
A code package (:func:`encrypt_package`, :func:`decrypt_package`) is the
deterministic tar of an app folder encrypted as one secretstream
XChaCha20-Poly1305 stream; its format is described in :mod:`._stream`, and its
SHA-256 (:func:`package_digest`) is what an enclave measurement includes.

Example::

    >>> from confide.crypto import X25519KeyPair, seal, unseal
    >>> enclave = X25519KeyPair.generate()
    >>> unseal(seal(b"db-password", enclave.public_key), enclave.private_key)
    b'db-password'
"""

from ._archive import (
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_PATH_BYTES,
    MAX_TOTAL_SIZE,
    ArchiveEntry,
    ArchiveLimits,
    ArchiveSummary,
    collect_entries,
    extract_archive,
    write_archive,
)
from ._errors import CryptoError
from ._ignore import ALWAYS_IGNORED, IGNORE_FILES, IgnoreRules
from ._keys import (
    KEY_FILE_MAX_SIZE,
    PACKAGE_KEY_SIZE,
    X25519_KEY_SIZE,
    PackageKey,
    X25519KeyPair,
    key_usage,
    private_key_pem,
)
from ._package import PackageInfo, decrypt_package, encrypt_package
from ._sealed import MAX_SEALED_SIZE, SEAL_OVERHEAD, public_key_from_report_data, seal, unseal
from ._stream import (
    ALGORITHM_SECRETSTREAM_64K,
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    DecryptingReader,
    EncryptingWriter,
    PackageHeader,
    check_package_layout,
    decrypt_stream,
    encrypt_stream,
    package_digest,
)

__all__ = [
    "ALGORITHM_SECRETSTREAM_64K",
    "ALWAYS_IGNORED",
    "CHUNK_SIZE",
    "ENCRYPTED_CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "IGNORE_FILES",
    "KEY_FILE_MAX_SIZE",
    "MAGIC",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_PATH_BYTES",
    "MAX_SEALED_SIZE",
    "MAX_TOTAL_SIZE",
    "PACKAGE_KEY_SIZE",
    "SEAL_OVERHEAD",
    "X25519_KEY_SIZE",
    "ArchiveEntry",
    "ArchiveLimits",
    "ArchiveSummary",
    "CryptoError",
    "DecryptingReader",
    "EncryptingWriter",
    "IgnoreRules",
    "PackageHeader",
    "PackageInfo",
    "PackageKey",
    "X25519KeyPair",
    "check_package_layout",
    "collect_entries",
    "decrypt_package",
    "decrypt_stream",
    "encrypt_package",
    "encrypt_stream",
    "extract_archive",
    "key_usage",
    "package_digest",
    "private_key_pem",
    "public_key_from_report_data",
    "seal",
    "unseal",
    "write_archive",
]
