"""The encrypted stream: round trips, framing, every tamper case, constant memory."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_secretstream_xchacha20poly1305_init_pull,
    crypto_secretstream_xchacha20poly1305_push,
    crypto_secretstream_xchacha20poly1305_state,
    crypto_secretstream_xchacha20poly1305_TAG_FINAL,
    crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
)

from confide.crypto import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    HEADER_SIZE,
    MAGIC,
    CryptoError,
    DecryptingReader,
    EncryptingWriter,
    PackageHeader,
    PackageKey,
    check_package_layout,
    decrypt_stream,
    encrypt_stream,
    package_digest,
)
from confide.crypto._stream import _stream_key
from confide.errors import UsageError

KEY = PackageKey(bytes(range(32)))
OTHER_KEY = PackageKey(bytes(range(1, 33)))
ABYTES = ENCRYPTED_CHUNK_SIZE - CHUNK_SIZE


def encrypt(data: bytes, key: PackageKey = KEY) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key)
    return out.getvalue()


def decrypt(data: bytes, key: PackageKey = KEY) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, key)
    return out.getvalue()


FINAL_SIZE = 8 + ABYTES


def expected_size(n: int) -> int:
    return HEADER_SIZE + -(-n // CHUNK_SIZE) * ENCRYPTED_CHUNK_SIZE + FINAL_SIZE


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 7],
)
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    """Every size frames as header, ceil(size / CHUNK_SIZE) full chunks and the final chunk."""
    data = hashlib.shake_256(str(size).encode()).digest(size)
    sealed = encrypt(data)
    assert len(sealed) == expected_size(size)
    assert sealed.startswith(MAGIC)
    assert decrypt(sealed) == data


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 5]
)
@pytest.mark.parametrize("piece", [1000, CHUNK_SIZE, 3 * CHUNK_SIZE])
def test_encrypting_writer_frames_like_encrypt_stream(size: int, piece: int) -> None:
    """Writes of any size give the same framing as encrypt_stream, so the reader opens both."""
    data = hashlib.shake_256(b"w").digest(size)
    out = io.BytesIO()
    writer = EncryptingWriter(out, KEY)
    for i in range(0, size, piece):
        writer.write(data[i : i + piece])
    writer.close()
    assert len(out.getvalue()) == expected_size(size)
    assert decrypt(out.getvalue()) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3 * CHUNK_SIZE), st.lists(st.integers(1, 2 * CHUNK_SIZE), max_size=6))
def test_round_trip_any_bytes_any_writes(data: bytes, cuts: list[int]) -> None:
    out = io.BytesIO()
    writer = EncryptingWriter(out, KEY)
    pos = 0
    for cut in cuts:
        writer.write(data[pos : pos + cut])
        pos += cut
    writer.write(data[pos:])
    writer.close()
    reader = DecryptingReader(io.BytesIO(out.getvalue()), KEY)
    got = b"".join(iter(lambda: reader.read(12345), b""))
    assert got == data


def test_ciphertext_is_a_function_of_key_plaintext_and_header_nonce() -> None:
    """Two encryptions differ, but only through the random secretstream header."""
    data = hashlib.shake_256(b"d").digest(2 * CHUNK_SIZE + 10)
    first, second = encrypt(data), encrypt(data)
    assert first != second
    assert len(first) == len(second)
    for sealed in (first, second):
        header = PackageHeader.from_bytes(sealed[:HEADER_SIZE])
        # Rebuild the whole ciphertext from the header alone: pull and push states are the same.
        state = crypto_secretstream_xchacha20poly1305_state()
        crypto_secretstream_xchacha20poly1305_init_pull(
            state, header.stream_header, _stream_key(KEY)
        )
        assert b"".join(_push_all(state, header.to_bytes(), data)) == sealed


def _push_all(
    state: crypto_secretstream_xchacha20poly1305_state,
    header: bytes,
    data: bytes,
    *,
    padding: bytes = b"",
    stated: int | None = None,
) -> list[bytes]:
    """The format, spelled out: padded data chunks, then the length in the final chunk."""
    out = [header]
    ad: bytes | None = header
    for i in range(0, len(data), CHUNK_SIZE):
        chunk = data[i : i + CHUNK_SIZE]
        pad = padding or bytes(CHUNK_SIZE - len(chunk))
        chunk += pad[: CHUNK_SIZE - len(chunk)]
        out.append(
            crypto_secretstream_xchacha20poly1305_push(
                state, chunk, ad, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
            )
        )
        ad = None
    length = (len(data) if stated is None else stated).to_bytes(8, "big")
    out.append(
        crypto_secretstream_xchacha20poly1305_push(
            state, length, ad, crypto_secretstream_xchacha20poly1305_TAG_FINAL
        )
    )
    return out


def _crafted(data: bytes, *, padding: bytes = b"", stated: int | None = None) -> bytes:
    """A package made with the key, but not as Confide makes them."""
    header = PackageHeader.from_bytes(SEALED[:HEADER_SIZE])
    state = crypto_secretstream_xchacha20poly1305_state()
    crypto_secretstream_xchacha20poly1305_init_pull(state, header.stream_header, _stream_key(KEY))
    return b"".join(_push_all(state, header.to_bytes(), data, padding=padding, stated=stated))


# -- tampering -------------------------------------------------------------------------------

PLAIN = hashlib.shake_256(b"tamper").digest(3 * CHUNK_SIZE + 100)
SEALED = encrypt(PLAIN)
SEALED_AGAIN = encrypt(PLAIN)


def _chunk(data: bytes, i: int) -> slice:
    start = HEADER_SIZE + i * ENCRYPTED_CHUNK_SIZE
    return slice(start, start + ENCRYPTED_CHUNK_SIZE)


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def _swap01(data: bytes) -> bytes:
    return (
        data[:HEADER_SIZE]
        + data[_chunk(data, 1)]
        + data[_chunk(data, 0)]
        + data[_chunk(data, 2).start :]
    )


def test_crafting_helper_matches_the_format() -> None:
    assert _crafted(PLAIN) == SEALED


def _unfinished(data: bytes) -> bytes:
    out = io.BytesIO()
    writer = EncryptingWriter(out, KEY)
    writer.write(data)  # never closed: the final chunk is missing
    return out.getvalue()


N = 4  # data chunks in SEALED
LAST = _chunk(SEALED, N - 1)
FINAL = slice(len(SEALED) - FINAL_SIZE, len(SEALED))

TAMPER_CASES: list[tuple[str, Callable[[], bytes], PackageKey, str]] = [
    ("empty file", lambda: b"", KEY, "package.magic"),
    ("another format", lambda: b"PK\x03\x04" + SEALED[4:], KEY, "package.magic"),
    ("header cut short", lambda: SEALED[:20], KEY, "package.truncated"),
    ("magic only", lambda: SEALED[:8], KEY, "package.truncated"),
    ("unknown version", lambda: SEALED[:8] + b"\x02" + SEALED[9:], KEY, "package.version"),
    ("version 0", lambda: SEALED[:8] + b"\x00" + SEALED[9:], KEY, "package.version"),
    ("unknown algorithm", lambda: SEALED[:9] + b"\x07" + SEALED[10:], KEY, "package.algorithm"),
    ("altered stream header", lambda: _flip(SEALED, 12), KEY, "package.key"),
    ("altered key check", lambda: _flip(SEALED, HEADER_SIZE - 1), KEY, "package.key"),
    ("wrong key", lambda: SEALED, OTHER_KEY, "package.key"),
    ("header only", lambda: SEALED[:HEADER_SIZE], KEY, "package.truncated"),
    ("bit flipped in chunk 0", lambda: _flip(SEALED, HEADER_SIZE + 5), KEY, "package.chunk"),
    (
        "bit flipped in a MAC",
        lambda: _flip(SEALED, _chunk(SEALED, 1).start + 1),
        KEY,
        "package.chunk",
    ),
    (
        "bit flipped in the final chunk",
        lambda: _flip(SEALED, len(SEALED) - 1),
        KEY,
        "package.chunk",
    ),
    ("final chunk dropped", lambda: SEALED[: FINAL.start], KEY, "package.truncated"),
    (
        "cut inside a data chunk",
        lambda: SEALED[: _chunk(SEALED, 1).start + 100],
        KEY,
        "package.chunk",
    ),
    ("cut inside the final chunk", lambda: SEALED[:-10], KEY, "package.truncated"),
    ("last byte cut", lambda: SEALED[:-1], KEY, "package.truncated"),
    ("chunks 0 and 1 swapped", lambda: _swap01(SEALED), KEY, "package.chunk"),
    (
        "chunk 1 dropped",
        lambda: SEALED[: _chunk(SEALED, 1).start] + SEALED[_chunk(SEALED, 2).start :],
        KEY,
        "package.chunk",
    ),
    ("last data chunk dropped", lambda: SEALED[: LAST.start] + SEALED[FINAL], KEY, "package.chunk"),
    (
        "chunk 1 repeated",
        lambda: SEALED[: _chunk(SEALED, 2).start] + SEALED[_chunk(SEALED, 1).start :],
        KEY,
        "package.chunk",
    ),
    (
        "chunk spliced from another package",
        lambda: SEALED[: _chunk(SEALED, 1).start] + SEALED_AGAIN[_chunk(SEALED, 1).start :],
        KEY,
        "package.chunk",
    ),
    (
        "final chunk from another package",
        lambda: SEALED[: FINAL.start] + SEALED_AGAIN[FINAL],
        KEY,
        "package.chunk",
    ),
    ("one trailing byte", lambda: SEALED + b"\x00", KEY, "package.trailing"),
    ("final chunk repeated", lambda: SEALED + SEALED[FINAL], KEY, "package.trailing"),
    ("a second package appended", lambda: SEALED + SEALED_AGAIN, KEY, "package.trailing"),
    ("stream never finalized", lambda: _unfinished(PLAIN), KEY, "package.truncated"),
    (
        "length says less than the chunks hold",
        lambda: _crafted(PLAIN, stated=CHUNK_SIZE),
        KEY,
        "package.chunk",
    ),
    (
        "length says more than the chunks hold",
        lambda: _crafted(PLAIN, stated=len(PLAIN) + CHUNK_SIZE),
        KEY,
        "package.chunk",
    ),
    (
        "padding is not zero",
        lambda: _crafted(PLAIN, padding=b"\x01" * CHUNK_SIZE),
        KEY,
        "package.chunk",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "key", "code"), TAMPER_CASES, ids=[c[0] for c in TAMPER_CASES]
)
def test_tampering_is_rejected(
    name: str, make: Callable[[], bytes], key: PackageKey, code: str
) -> None:
    with pytest.raises(CryptoError) as info:
        decrypt(make(), key)
    assert info.value.code == code, str(info.value)
    message = str(info.value)
    assert "\n" not in message and message


def test_a_wrong_key_releases_nothing() -> None:
    out = io.BytesIO()
    with pytest.raises(CryptoError):
        decrypt_stream(io.BytesIO(SEALED), out, OTHER_KEY)
    assert out.getvalue() == b""


def test_decrypting_reader_checks_the_key_at_once() -> None:
    with pytest.raises(CryptoError, match="key check"):
        DecryptingReader(io.BytesIO(SEALED), OTHER_KEY)


def test_decrypting_reader_ends_only_after_the_final_chunk() -> None:
    reader = DecryptingReader(io.BytesIO(SEALED[: FINAL.start]), KEY)
    # Authenticated chunks come out (all but the last, held for the final chunk's length)...
    got = b"".join(reader.read(1000) for _ in range(3 * CHUNK_SIZE // 1000))
    assert got == PLAIN[: len(got)]
    # ...but the end of the stream is never reached without its final chunk.
    with pytest.raises(CryptoError, match="truncated"):
        while reader.read(1000):
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=HEADER_SIZE + 40))
def test_header_parser_fails_closed(data: bytes) -> None:
    try:
        header = PackageHeader.from_bytes(data)
    except CryptoError:
        return
    assert header.to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SEALED) - 1), st.integers(1, 255))
def test_any_altered_byte_is_caught(at: int, mask: int) -> None:
    data = bytearray(SEALED)
    data[at] ^= mask
    with pytest.raises(CryptoError):
        decrypt(bytes(data))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, len(SEALED) - 1))
def test_any_truncation_is_caught(size: int) -> None:
    with pytest.raises(CryptoError):
        decrypt(SEALED[:size])


# -- keys and digests ------------------------------------------------------------------------


def test_package_key_hides_itself_and_parses_hex() -> None:
    key = PackageKey.generate()
    assert key.hex() not in repr(key)
    assert PackageKey.from_hex(key.hex()) == key
    assert PackageKey.from_hex("0x" + key.hex().upper() + "\n") == key
    assert PackageKey.from_file_bytes(key.secret) == key
    assert PackageKey.from_file_bytes((key.hex() + "\n").encode()) == key
    with pytest.raises(UsageError):
        PackageKey.from_hex("zz" * 32)
    with pytest.raises(UsageError):
        PackageKey.from_hex("ab" * 16)
    with pytest.raises(UsageError):
        PackageKey(b"short")


def test_package_digest_streams_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_bytes(SEALED)
    assert package_digest(path) == hashlib.sha256(SEALED).digest()
    assert package_digest(io.BytesIO(SEALED)) == hashlib.sha256(SEALED).digest()
    with pytest.raises(UsageError):
        package_digest(tmp_path / "missing")


# -- memory ----------------------------------------------------------------------------------


class _Generated:
    """A reader of ``size`` bytes made on the fly, in short reads (like a pipe)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = hashlib.shake_256(b"gen").digest(40_000)

    def read(self, size: int = -1, /) -> bytes:
        n = min(size, self.left, len(self.block))
        self.left -= n
        return self.block[:n]


class _Sink:
    def __init__(self) -> None:
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        self.hash.update(data)
        return len(data)


MEMORY_LIMIT = 2 * 1024 * 1024


def test_encryption_runs_in_constant_memory() -> None:
    size = 200 * 1024 * 1024
    sink = _Sink()
    tracemalloc.start()
    try:
        encrypt_stream(_Generated(size), sink, KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size == expected_size(size)
    assert peak < MEMORY_LIMIT, f"peak {peak} bytes"


def test_decryption_runs_in_constant_memory(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    path = tmp_path / "big.pkg"
    with path.open("wb") as f:
        encrypt_stream(_Generated(size), f, KEY)
    sink = _Sink()
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            decrypt_stream(f, sink, KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size == size
    assert peak < MEMORY_LIMIT, f"peak {peak} bytes"


def test_the_layout_check_takes_packages_and_refuses_other_sizes() -> None:
    for size in (0, 1, CHUNK_SIZE, CHUNK_SIZE + 1):
        out = io.BytesIO()
        encrypt_stream(io.BytesIO(bytes(size)), out, PackageKey.generate())
        data = out.getvalue()
        check_package_layout(data[:HEADER_SIZE], len(data))
        for wrong in (len(data) - 1, len(data) + 1, len(data) + ENCRYPTED_CHUNK_SIZE - 1):
            with pytest.raises(CryptoError) as info:
                check_package_layout(data[:HEADER_SIZE], wrong)
            assert info.value.code == "package.size"
        with pytest.raises(CryptoError) as info:
            check_package_layout(b"\x00" + data[1:HEADER_SIZE], len(data))
        assert info.value.code == "package.magic"
