"""One authenticated encrypted stream: the container of a code package.

Everything is streamed in constant memory: file objects in, file objects out.

Format, version 1 (all sizes in bytes; K is the 32-byte package key)::

    offset  size   field
    0       8      magic            b"CONFIDEP"
    8       1      format version   0x01
    9       1      algorithm        0x01 = libsodium secretstream XChaCha20-Poly1305,
                                    64 KiB chunks, BLAKE2b-derived subkeys
    10      24     stream header    crypto_secretstream_xchacha20poly1305 header (its nonce)
    34      32     key check        BLAKE2b-256(key=K, person=b"confide.pkg.chk1", bytes 0..33)
    66      65553  data chunk 0     secretstream push of 65536 plaintext bytes, TAG_MESSAGE
    ...     65553  data chunk i     ...
    ...     25     final chunk      secretstream push of u64be(plaintext length), TAG_FINAL

Data chunks all hold exactly 65536 plaintext bytes; the last one is padded
with zeros (which the reader checks) and the final chunk states the true
length, so the framing is fixed: nothing but the plaintext length rounded up
to 64 KiB shows, and trailing bytes are told apart from altered ones. The
first chunk pushed (a data chunk, or the final chunk of an empty stream) has
the 66 header bytes as associated data. The stream key is
``BLAKE2b-256(key=K, person=b"confide.pkg.enc1")`` of the empty message, so
``K`` is never used directly by two algorithms; the key check tells a wrong
key (or an altered header) apart from altered data before anything is
decrypted, and commits the package to one key.

Truncation (no final chunk), reordered, dropped or repeated chunks, altered
bytes, a wrong key, an unknown version or algorithm and trailing data each
raise :class:`CryptoError` with its own ``code``.

Example::

    >>> import io
    >>> from confide.crypto import PackageKey, decrypt_stream, encrypt_stream
    >>> key = PackageKey.generate()
    >>> sealed, opened = io.BytesIO(), io.BytesIO()
    >>> encrypt_stream(io.BytesIO(b"hello"), sealed, key)
    >>> _ = sealed.seek(0)
    >>> decrypt_stream(sealed, opened, key)
    >>> opened.getvalue()
    b'hello'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_ABYTES,
    crypto_secretstream_xchacha20poly1305_HEADERBYTES,
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
    crypto_secretstream_xchacha20poly1305_TAG_FINAL,
    crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from confide.errors import UsageError

from ._errors import CryptoError
from ._keys import PackageKey

MAGIC: Final = b"CONFIDEP"
FORMAT_VERSION: Final = 1
ALGORITHM_SECRETSTREAM_64K: Final = 1
#: Plaintext bytes in every chunk but the last.
CHUNK_SIZE: Final = 64 * 1024
_ABYTES: Final = int(crypto_secretstream_xchacha20poly1305_ABYTES)
_SS_HEADER_SIZE: Final = int(crypto_secretstream_xchacha20poly1305_HEADERBYTES)
#: Bytes of an encrypted full chunk.
ENCRYPTED_CHUNK_SIZE: Final = CHUNK_SIZE + _ABYTES
_KEY_CHECK_SIZE: Final = 32
_LENGTH_SIZE: Final = 8
_FINAL_CHUNK_SIZE: Final = _LENGTH_SIZE + _ABYTES
_PREFIX_SIZE: Final = len(MAGIC) + 2 + _SS_HEADER_SIZE
#: Bytes of the header before the first chunk.
HEADER_SIZE: Final = _PREFIX_SIZE + _KEY_CHECK_SIZE
_TAG_MESSAGE: Final = int(crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
_TAG_FINAL: Final = int(crypto_secretstream_xchacha20poly1305_TAG_FINAL)
_PERSON_STREAM: Final = b"confide.pkg.enc1"
_PERSON_CHECK: Final = b"confide.pkg.chk1"
_DIGEST_BLOCK: Final = 1024 * 1024


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _stream_key(key: PackageKey) -> bytes:
    return hashlib.blake2b(b"", key=key.secret, person=_PERSON_STREAM, digest_size=32).digest()


def _key_check(key: PackageKey, prefix: bytes) -> bytes:
    return hashlib.blake2b(prefix, key=key.secret, person=_PERSON_CHECK, digest_size=32).digest()


def read_exact(src: Reader, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only at the end of ``src``."""
    data = src.read(size)
    if len(data) == size or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class PackageHeader:
    """The parsed header of an encrypted package (no secret in it)."""

    version: int
    algorithm: int
    stream_header: bytes
    key_check: bytes

    def to_bytes(self) -> bytes:
        return self._prefix() + self.key_check

    def _prefix(self) -> bytes:
        return MAGIC + bytes((self.version, self.algorithm)) + self.stream_header

    @classmethod
    def from_bytes(cls, data: bytes) -> PackageHeader:
        """Parse the first :data:`HEADER_SIZE` bytes of a package (fails closed)."""
        magic = data[: len(MAGIC)]
        if magic != MAGIC[: len(magic)] or not data:
            raise CryptoError(
                "package.magic",
                f"not a Confide package: it starts with {data[:8].hex() or 'nothing'}, "
                f"expected {MAGIC.hex()} ({MAGIC.decode()!r})",
            )
        if len(data) < len(MAGIC) + 2:
            raise CryptoError(
                "package.truncated",
                f"the package is truncated: {len(data)} bytes, shorter than its header",
            )
        version, algorithm = data[len(MAGIC)], data[len(MAGIC) + 1]
        if version != FORMAT_VERSION:
            raise CryptoError(
                "package.version",
                f"package format version {version} is not supported: observed {version}, "
                f"expected {FORMAT_VERSION}",
                hint="upgrade Confide to open it" if version > FORMAT_VERSION else None,
            )
        if algorithm != ALGORITHM_SECRETSTREAM_64K:
            raise CryptoError(
                "package.algorithm",
                f"package algorithm {algorithm} is not supported: observed {algorithm}, "
                f"expected {ALGORITHM_SECRETSTREAM_64K}",
            )
        if len(data) != HEADER_SIZE:
            raise CryptoError(
                "package.truncated",
                f"the package is truncated: {len(data)} bytes, shorter than its "
                f"{HEADER_SIZE}-byte header",
            )
        return cls(
            version=version,
            algorithm=algorithm,
            stream_header=bytes(data[_PREFIX_SIZE - _SS_HEADER_SIZE : _PREFIX_SIZE]),
            key_check=bytes(data[_PREFIX_SIZE:]),
        )

    def check_key(self, key: PackageKey) -> None:
        if not hmac.compare_digest(_key_check(key, self._prefix()), self.key_check):
            raise CryptoError(
                "package.key",
                "the key does not open this package (its key check does not match)",
                hint="use the package's own key; if it is the right one, the header was altered",
            )


def check_package_layout(head: bytes, size: int) -> PackageHeader:
    """What can be checked of a package without its key: its header and its size.

    ``head`` is the package's first :data:`HEADER_SIZE` bytes (fewer when it
    is shorter), ``size`` its length. The framing is fixed, so a package of
    this format is exactly the header, whole data chunks and the final
    chunk: any other size is a truncated or padded package. Raises
    :class:`CryptoError` (``package.magic``, ``package.version``,
    ``package.algorithm``, ``package.truncated``, ``package.size``). Whether
    the key opens it, and what it holds, only the key's holder can tell.
    """
    header = PackageHeader.from_bytes(head[:HEADER_SIZE])
    body = size - HEADER_SIZE - _FINAL_CHUNK_SIZE
    if body < 0 or body % ENCRYPTED_CHUNK_SIZE:
        raise CryptoError(
            "package.size",
            f"the package is {size} bytes: a package is {HEADER_SIZE} bytes of header, whole "
            f"chunks of {ENCRYPTED_CHUNK_SIZE} bytes and a final chunk of {_FINAL_CHUNK_SIZE}",
            hint="it was truncated or padded; encrypt it again with `confide package encrypt`",
        )
    return header


class _Encryptor:
    """Writes the header, then data chunks, then the final chunk."""

    def __init__(self, dst: Writer, key: PackageKey) -> None:
        self._dst = dst
        self._state = crypto_secretstream_xchacha20poly1305_state()
        stream_header = crypto_secretstream_xchacha20poly1305_init_push(
            self._state, _stream_key(key)
        )
        prefix = MAGIC + bytes((FORMAT_VERSION, ALGORITHM_SECRETSTREAM_64K)) + stream_header
        header = prefix + _key_check(key, prefix)
        self._ad: bytes | None = header
        self._total = 0
        dst.write(header)

    def _push(self, plain: bytes, tag: int) -> None:
        out = crypto_secretstream_xchacha20poly1305_push(self._state, plain, self._ad, tag)
        self._ad = None
        self._dst.write(out)

    def data(self, chunk: bytes) -> None:
        """Push up to CHUNK_SIZE bytes; a short chunk is zero-padded and must be the last."""
        self._total += len(chunk)
        if len(chunk) < CHUNK_SIZE:
            chunk = chunk + bytes(CHUNK_SIZE - len(chunk))
        self._push(chunk, _TAG_MESSAGE)

    def finish(self) -> None:
        self._push(self._total.to_bytes(_LENGTH_SIZE, "big"), _TAG_FINAL)


class EncryptingWriter:
    """A write-only file object that encrypts what is written to it into ``dst``.

    :meth:`close` pushes the last data chunk and the final chunk; a stream
    never closed is truncated and does not decrypt. Memory: one chunk.
    """

    def __init__(self, dst: Writer, key: PackageKey) -> None:
        self._enc = _Encryptor(dst, key)
        self._buf = bytearray()
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        if self._buf:
            take = min(CHUNK_SIZE - len(self._buf), size)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < CHUNK_SIZE:
                return size
            self._enc.data(bytes(self._buf))
            self._buf.clear()
        while len(view) >= CHUNK_SIZE:
            self._enc.data(bytes(view[:CHUNK_SIZE]))
            view = view[CHUNK_SIZE:]
        self._buf += view
        return size

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._buf:
                self._enc.data(bytes(self._buf))
                self._buf.clear()
            self._enc.finish()

    @property
    def closed(self) -> bool:
        return self._closed


def encrypt_stream(src: Reader, dst: Writer, key: PackageKey) -> None:
    """Encrypt everything ``src`` yields into ``dst``: header, data chunks, final chunk."""
    enc = _Encryptor(dst, key)
    while chunk := read_exact(src, CHUNK_SIZE):
        enc.data(chunk)
        if len(chunk) < CHUNK_SIZE:
            break
    enc.finish()


def read_header(src: Reader, key: PackageKey) -> tuple[PackageHeader, bytes]:
    """Parse and check the header; returns it and the stream key."""
    header = PackageHeader.from_bytes(read_exact(src, HEADER_SIZE))
    header.check_key(key)
    return header, _stream_key(key)


def iter_plaintext(src: Reader, key: PackageKey) -> Iterator[bytes]:
    """The plaintext of a package in pieces, each authenticated before it is yielded.

    The header is read and the key checked at once; the iterator ends (without
    error) only after the final chunk was authenticated, the length it states
    matched, and ``src`` was found to hold nothing more.
    """
    header, stream_key = read_header(src, key)
    return _plaintext(src, header, stream_key)


def _pull(
    state: crypto_secretstream_xchacha20poly1305_state, data: bytes, ad: bytes | None
) -> tuple[bytes, int] | None:
    try:
        plain, tag = crypto_secretstream_xchacha20poly1305_pull(state, data, ad)
    except NaclCryptoError:
        return None  # libsodium leaves the state as it was
    return plain, tag


def _plaintext(src: Reader, header: PackageHeader, stream_key: bytes) -> Iterator[bytes]:
    state = crypto_secretstream_xchacha20poly1305_state()
    try:
        crypto_secretstream_xchacha20poly1305_init_pull(state, header.stream_header, stream_key)
    except NaclCryptoError as exc:  # pragma: no cover - libsodium accepts any 24 bytes
        raise CryptoError("package.header", "the stream header is not usable") from exc
    ad: bytes | None = header.to_bytes()
    pending: bytes | None = None  # the last data chunk, held until the final chunk says its length
    index = 0
    while True:
        data = read_exact(src, ENCRYPTED_CHUNK_SIZE)
        pulled = _pull(state, data, ad) if len(data) == ENCRYPTED_CHUNK_SIZE else None
        if pulled is None or pulled[1] != _TAG_MESSAGE:
            break
        ad = None
        if pending is not None:
            yield pending
        pending = pulled[0]
        index += 1
    # Not a data chunk: it must be the final chunk, and nothing after it.
    if pulled is not None:
        raise CryptoError("package.chunk", f"chunk {index} carries an unknown tag {pulled[1]}")
    if len(data) < _FINAL_CHUNK_SIZE:
        where = "at a chunk boundary" if not data else "inside a chunk"
        raise CryptoError(
            "package.truncated",
            f"the package is truncated: it ends {where} after {index} data chunk(s), "
            "without its final chunk",
        )
    final = _pull(state, data[:_FINAL_CHUNK_SIZE], ad)
    if final is None or final[1] != _TAG_FINAL:
        short = len(data) < ENCRYPTED_CHUNK_SIZE
        raise CryptoError(
            "package.chunk",
            f"chunk {index} does not authenticate: the package was "
            + ("truncated or altered" if short else "altered, reordered or spliced"),
        )
    if len(data) > _FINAL_CHUNK_SIZE or src.read(1):
        raise CryptoError("package.trailing", "the package has data after its final chunk")
    total = int.from_bytes(final[0], "big")
    last = total - (index - 1) * CHUNK_SIZE
    if len(final[0]) != _LENGTH_SIZE or index != -(-total // CHUNK_SIZE):
        raise CryptoError(
            "package.chunk",
            f"the final chunk states {total} bytes, which {index} data chunk(s) do not hold",
        )
    if pending is not None:
        if any(pending[last:]):
            raise CryptoError("package.chunk", "the padding of the last data chunk is not zero")
        yield pending[:last]


def decrypt_stream(src: Reader, dst: Writer, key: PackageKey) -> None:
    """Decrypt a package stream from ``src`` into ``dst``.

    ``dst`` receives only authenticated bytes, but it may receive some before
    a later chunk fails: on error, discard what ``dst`` holds.
    """
    for chunk in iter_plaintext(src, key):
        dst.write(chunk)


class DecryptingReader:
    """A read-only file object over the plaintext of a package.

    The header and key are checked when it is made; ``read`` returns ``b""``
    only once the whole stream has been authenticated, final chunk included.
    """

    def __init__(self, src: Reader, key: PackageKey) -> None:
        self._chunks = iter_plaintext(src, key)
        self._buf = memoryview(b"")
        self._eof = False
        self.position = 0

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            raise ValueError("DecryptingReader reads a bounded size")
        while not self._buf and not self._eof:
            nxt = next(self._chunks, None)
            if nxt is None:
                self._eof = True
            else:
                self._buf = memoryview(nxt)
        out = bytes(self._buf[:size])
        self._buf = self._buf[size:]
        self.position += len(out)
        return out


class HashingWriter:
    """Passes writes on to ``dst`` and keeps their SHA-256 and length."""

    def __init__(self, dst: Writer) -> None:
        self._dst = dst
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._dst.write(data)
        return len(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def package_digest(package: BinaryIO | Path) -> bytes:
    """SHA-256 of an encrypted package file, streamed: what an enclave measures."""
    if isinstance(package, Path):
        try:
            with package.open("rb") as f:
                return package_digest(f)
        except OSError as exc:
            raise UsageError(f"cannot read the package {package}: {exc.strerror or exc}") from None
    h = hashlib.sha256()
    while block := package.read(_DIGEST_BLOCK):
        h.update(block)
    return h.digest()
