"""Sealed state: readable only with the same sealing key, never plaintext on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from confide.errors import TeeError, UsageError
from confide.runtime import STATE_FILE, SealedState, StateStore

KEY = bytes(range(32))
SECRET = "s3cr3t-db-password-marker"
STATE = SealedState(
    tls_key_pem=b"-----BEGIN PRIVATE KEY-----tls-marker",
    enclave_private_key=b"\x42" * 32,
    configured=True,
    code_key=b"\x17" * 32,
    app_secrets={"password": SECRET},
    sealed_secrets={"token": "sealed-marker"},
    ssl_private_key_pem=b"owner-key-marker",
)


def test_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path, sealing_key=KEY)
    assert store.load() is None
    store.save(STATE)
    assert store.load() == STATE
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_nothing_is_plaintext_on_disk(tmp_path: Path) -> None:
    StateStore(tmp_path, sealing_key=KEY).save(STATE)
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for marker in (
        SECRET.encode(),
        b"sealed-marker",
        b"tls-marker",
        b"owner-key-marker",
        (b"\x17" * 32),
        (b"\x17" * 32).hex().encode(),
        (b"\x42" * 32),
    ):
        assert marker not in blob
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


def test_another_measurement_cannot_unseal(tmp_path: Path) -> None:
    StateStore(tmp_path, sealing_key=KEY).save(STATE)
    with pytest.raises(TeeError, match="another measurement"):
        StateStore(tmp_path, sealing_key=bytes(32)).load()


@pytest.mark.parametrize(
    ("tamper", "fragment"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "another measurement"),
        (lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:], "another measurement"),
        (lambda b: b"XXXXXXXX" + b[8:], "not a Confide sealed state"),
        (lambda b: b[:8] + b"\x09" + b[9:], "version 9"),
        (lambda b: b[:20], "not a Confide sealed state"),
    ],
)
def test_altered_state_fails_closed(tmp_path: Path, tamper: object, fragment: str) -> None:
    store = StateStore(tmp_path, sealing_key=KEY)
    store.save(STATE)
    store.path.write_bytes(tamper(store.path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(TeeError, match=fragment):
        store.load()


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path, sealing_key=KEY)
    store.save(SealedState(tls_key_pem=b"a", enclave_private_key=bytes(32)))
    store.save(STATE)
    assert store.load() == STATE
    assert os.listdir(tmp_path) == [STATE_FILE]


def test_secrets_stay_out_of_repr() -> None:
    text = repr(STATE)
    assert SECRET not in text and "tls-marker" not in text and "owner-key" not in text


def test_sealing_key_must_be_32_bytes(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        StateStore(tmp_path, sealing_key=b"short")
