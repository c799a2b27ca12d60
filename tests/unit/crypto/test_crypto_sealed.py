"""Sealed boxes: round trips, PyNaCl (so Cosmian Enclave) compatibility, failures, key files."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey, PublicKey, SealedBox

from confide.crypto import (
    SEAL_OVERHEAD,
    CryptoError,
    X25519KeyPair,
    public_key_from_report_data,
    seal,
    unseal,
)
from confide.errors import UsageError

PAIR = X25519KeyPair.from_private_key(bytes(range(32)))
OTHER = X25519KeyPair.from_private_key(bytes(range(1, 33)))


@pytest.mark.parametrize("size", [0, 1, 1000, 1 << 20])
def test_round_trip(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    sealed = seal(data, PAIR.public_key)
    assert len(sealed) == size + SEAL_OVERHEAD == size + 48
    assert unseal(sealed, PAIR.private_key) == data
    assert unseal(sealed, PAIR) == data


def test_pynacl_opens_ours_and_we_open_pynacls() -> None:
    """cenclave seal/unseal are PyNaCl's SealedBox on the raw bytes: no framing, no encoding."""
    ours = seal(b"to cosmian", PAIR.public_key)
    assert SealedBox(PrivateKey(PAIR.private_key)).decrypt(ours) == b"to cosmian"
    theirs = SealedBox(PublicKey(PAIR.public_key)).encrypt(b"from cosmian")
    assert unseal(theirs, PAIR.private_key) == b"from cosmian"


def test_each_seal_is_fresh() -> None:
    assert seal(b"x", PAIR.public_key) != seal(b"x", PAIR.public_key)


def _flipped(at: int) -> Callable[[], bytes]:
    def make() -> bytes:
        data = bytearray(seal(b"secret", PAIR.public_key))
        data[at] ^= 1
        return bytes(data)

    return make


FAILURES: list[tuple[str, Callable[[], bytes], X25519KeyPair, str]] = [
    ("wrong key", lambda: seal(b"secret", PAIR.public_key), OTHER, "seal.open"),
    ("empty", lambda: b"", PAIR, "seal.truncated"),
    ("shorter than key and MAC", lambda: bytes(47), PAIR, "seal.truncated"),
    ("altered ephemeral key", _flipped(0), PAIR, "seal.open"),
    ("altered MAC", _flipped(40), PAIR, "seal.open"),
    ("altered ciphertext", _flipped(-1), PAIR, "seal.open"),
    ("truncated", lambda: seal(b"secret", PAIR.public_key)[:-1], PAIR, "seal.open"),
    ("trailing byte", lambda: seal(b"secret", PAIR.public_key) + b"\0", PAIR, "seal.open"),
]


@pytest.mark.parametrize(("name", "make", "pair", "code"), FAILURES, ids=[f[0] for f in FAILURES])
def test_failures(name: str, make: Callable[[], bytes], pair: X25519KeyPair, code: str) -> None:
    with pytest.raises(CryptoError) as info:
        unseal(make(), pair)
    assert info.value.code == code


def test_unusable_public_keys() -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        seal(b"x", b"short")
    with pytest.raises(CryptoError) as info:
        seal(b"x", bytes(32))  # a low-order point: the shared secret would be zero
    assert info.value.code == "seal.public_key"


def test_public_key_from_report_data() -> None:
    report_data = bytes(32) + PAIR.public_key
    assert public_key_from_report_data(report_data) == PAIR.public_key
    with pytest.raises(UsageError):
        public_key_from_report_data(PAIR.public_key)
    with pytest.raises(CryptoError, match="no key"):
        public_key_from_report_data(bytes(64))


def test_key_pair_is_checked_and_hides_its_secret() -> None:
    assert PAIR.private_key.hex() not in repr(PAIR)
    assert X25519KeyPair.generate() != X25519KeyPair.generate()
    with pytest.raises(UsageError, match="does not belong"):
        X25519KeyPair(OTHER.public_key, PAIR.private_key)
    with pytest.raises(UsageError):
        X25519KeyPair.from_private_key(b"short")


KEY_FILES: list[tuple[str, bytes, X25519KeyPair | None]] = [
    ("raw private key", PAIR.private_key, PAIR),
    ("hex private key", PAIR.private_key.hex().encode() + b"\n", PAIR),
    ("0x hex private key", b"  0x" + PAIR.private_key.hex().upper().encode() + b"\r\n", PAIR),
    ("cenclave keygen pair, raw", PAIR.public_key + PAIR.private_key, PAIR),
    ("cenclave keygen pair, hex", (PAIR.public_key + PAIR.private_key).hex().encode(), PAIR),
    ("mismatched pair", OTHER.public_key + PAIR.private_key, None),
    ("too short", b"abc", None),
    ("odd hex", b"a" * 63, None),
    ("too long", bytes(2000), None),
]


@pytest.mark.parametrize(("name", "data", "pair"), KEY_FILES, ids=[k[0] for k in KEY_FILES])
def test_private_key_files(name: str, data: bytes, pair: X25519KeyPair | None) -> None:
    if pair is None:
        with pytest.raises(UsageError):
            X25519KeyPair.from_file_bytes(data)
    else:
        assert X25519KeyPair.from_file_bytes(data) == pair


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=140))
def test_key_file_parser_fails_closed(data: bytes) -> None:
    try:
        pair = X25519KeyPair.from_file_bytes(data)
    except UsageError:
        return
    assert X25519KeyPair.from_private_key(pair.private_key) == pair


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_unseal_fails_closed(data: bytes) -> None:
    with pytest.raises(CryptoError):
        unseal(data, PAIR)
