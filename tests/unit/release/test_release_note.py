"""C2SP signed notes and checkpoints: the Go reference's vector, and a tamper table."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confide.errors import LogError, UsageError
from confide.release import Checkpoint, LogKey, LogVerifier, root

# golang.org/x/mod/sumdb/note's test key and note (the C2SP signed-note reference).
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + (
        "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
        "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    ).encode()
)


def test_the_go_vector_verifies() -> None:
    verifier = LogVerifier.from_text(GO_VERIFIER)
    assert verifier.open(GO_NOTE) == GO_TEXT
    assert verifier.to_text() == GO_VERIFIER


def test_signing_reproduces_the_go_vector() -> None:
    key = LogKey("PeterNeumann", GO_SEED)
    assert key.verifier.to_text() == GO_VERIFIER
    assert key.sign_note(GO_TEXT) == GO_NOTE


def test_verifier_keys_with_a_plus_in_their_base64_round_trip() -> None:
    for seed in range(64):
        verifier = LogKey("operator.example/log", bytes([seed]) * 32).verifier
        assert LogVerifier.from_text(verifier.to_text()) == verifier
    assert any("+" in LogKey("n", bytes([s]) * 32).verifier.to_text()[14:] for s in range(64))


def test_a_checkpoint_round_trips() -> None:
    key = LogKey.generate("operator.example/log")
    checkpoint = Checkpoint("operator.example/log", 0, root([]))
    note = checkpoint.sign(key)
    assert note.startswith(
        b"operator.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n"
    )
    assert Checkpoint.open(note, key.verifier) == checkpoint


KEY = LogKey("operator.example/log", bytes(range(32)))
GOOD = Checkpoint("operator.example/log", 5, bytes(32)).sign(KEY)
OTHER = LogKey("operator.example/log", bytes(range(1, 33)))


def resign(text: bytes) -> bytes:
    return KEY.sign_note(text)


NOTE_TAMPER: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "size changed": (lambda n: n.replace(b"\n5\n", b"\n6\n", 1), "log.signature"),
    "signature byte flipped": (
        lambda n: n[:-6] + (b"A" if n[-6:-5] != b"A" else b"B") + n[-5:],
        "log.signature",
    ),
    "signed by another key": (
        lambda n: Checkpoint("operator.example/log", 5, bytes(32)).sign(OTHER),
        "log.key",
    ),
    "signature of another name": (
        lambda n: n.replace(
            "\u2014 operator.example/log".encode(), "\u2014 other.example".encode()
        ),
        "log.key",
    ),
    "no blank line": (lambda n: n.replace(b"\n\n", b"\n"), "log.format"),
    "no final newline": (lambda n: n[:-1], "log.format"),
    "a control character": (
        lambda n: resign(b"operator.example/log\n5\r\n" + n.split(b"\n")[2] + b"\n"),
        "log.format",
    ),
    "not UTF-8": (lambda n: n.replace(b"\n5\n", b"\n\xff\n"), "log.format"),
    "an extension line": (lambda n: resign(n.split(b"\n\n")[0] + b"\nextension\n"), "log.format"),
    "a leading zero": (
        lambda n: resign(n.split(b"\n\n")[0].replace(b"\n5\n", b"\n05\n") + b"\n"),
        "log.format",
    ),
    "a short root": (
        lambda n: resign(b"operator.example/log\n5\n" + base64.b64encode(bytes(31)) + b"\n"),
        "log.format",
    ),
    "another origin signed by the key": (
        lambda n: resign(b"other.example\n5\n" + base64.b64encode(bytes(32)) + b"\n"),
        "log.origin",
    ),
    "a signature line without dash": (lambda n: n.replace("\u2014 ".encode(), b"- "), "log.format"),
    "too large": (lambda n: n + b"x" * 9000, "log.format"),
}


@pytest.mark.parametrize(("tamper", "code"), NOTE_TAMPER.values(), ids=NOTE_TAMPER.keys())
def test_checkpoint_tamper(tamper: Callable[[bytes], bytes], code: str) -> None:
    assert Checkpoint.open(GOOD, KEY.verifier).size == 5
    changed = tamper(GOOD)
    assert changed != GOOD, "the tamper changed nothing"
    with pytest.raises(LogError) as caught:
        Checkpoint.open(changed, KEY.verifier)
    assert caught.value.code == code


def test_unknown_signatures_are_ignored() -> None:
    cosigned = GOOD + OTHER.sign_note(b"x\n").split(b"\n\n")[1].replace(
        b"operator.example/log", b"witness.example"
    )
    assert Checkpoint.open(cosigned, KEY.verifier).size == 5


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys(text: str) -> None:
    with pytest.raises(UsageError):
        LogVerifier.from_text(text)


@given(st.binary(max_size=300))
def test_arbitrary_notes_raise_only_our_error(data: bytes) -> None:
    with pytest.raises(LogError):
        Checkpoint.open(data, KEY.verifier)
