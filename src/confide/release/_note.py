"""Checkpoints of the operator's log: C2SP tlog-checkpoint text in a C2SP signed note.

Signed note (c2sp.org/signed-note): UTF-8 text with no control character but
newline; the note *text* ends with a newline, then comes one blank line, then
one or more signature lines::

    — <key name> <base64(key hash (4 bytes, big-endian) || signature)>\\n

(an em dash U+2014 and a space first). The text is separated from the
signatures by the *last* blank line. A key name is non-empty, with no space
and no ``+``. For Ed25519 (signature type ``0x01``) the signature is RFC 8032
over the note text, and the key hash is::

    SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]

A verifier key is written ``<name>+<key hash, 8 hex>+<base64(0x01 || public key)>``.
Signatures by unknown keys (another name or key hash) are ignored; one by the
known key must verify, and at least one must be there.

Checkpoint (c2sp.org/tlog-checkpoint), the note text::

    <origin>\\n<tree size, decimal, no leading zeros>\\n<base64 of the 32-byte root>\\n

Confide's log writes no extension lines and refuses checkpoints with any. Its
origin is the log key's name. Bounds: a note is at most :data:`MAX_NOTE_SIZE`
bytes with at most :data:`MAX_NOTE_SIGNATURES` signatures (the spec asks to
accept 16).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from confide.errors import LogError, UsageError

from ._keys import ED25519_KEY_SIZE, OwnerPublicKey, b64decode_strict
from ._merkle import HASH_SIZE

#: Largest signed note read.
MAX_NOTE_SIZE: Final = 8192
#: Most signature lines read in one note.
MAX_NOTE_SIGNATURES: Final = 16
#: Longest origin (and log key name).
MAX_ORIGIN: Final = 255
#: Largest tree size (the log refuses to grow past it; proofs stay short).
MAX_TREE_SIZE: Final = 2**62

_ED25519: Final = b"\x01"
_DASH: Final = "\u2014 "
_NAME: Final = re.compile(r"[^\s+]{1,255}")
_SIZE: Final = re.compile(r"0|[1-9][0-9]{0,18}")


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4]


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or len(name.encode()) > MAX_ORIGIN:
        raise UsageError(f"a log key name is 1 to {MAX_ORIGIN} characters, no space or '+'")


@dataclass(frozen=True, slots=True)
class LogVerifier:
    """The public half of a log key: its name (the log's origin) and Ed25519 key.

    Example (the Go reference's test key)::

        >>> key = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        >>> v = LogVerifier.from_text(key)
        >>> v.key_hash.hex()
        'c74f20a3'
    """

    name: str
    public: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        OwnerPublicKey(self.public)  # the size check

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public)

    def to_text(self) -> str:
        key = base64.b64encode(_ED25519 + self.public).decode("ascii")
        return f"{self.name}+{self.key_hash.hex()}+{key}"

    @classmethod
    def from_text(cls, text: str) -> LogVerifier:
        if len(text) > MAX_ORIGIN + 64:
            raise UsageError("a log verifier key is too long")
        parts = text.strip().split("+", 2)  # the base64 key may hold "+" itself
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise UsageError("a log verifier key is NAME+KEYHASH+BASE64")
        raw = b64decode_strict(parts[2], "the log verifier key")
        if len(raw) != 1 + ED25519_KEY_SIZE or raw[:1] != _ED25519:
            raise UsageError("the log verifier key is not an Ed25519 key")
        verifier = cls(parts[0], raw[1:])
        if verifier.key_hash.hex() != parts[1]:
            raise UsageError("the log verifier key's hash does not match its key")
        return verifier

    def open(self, note: bytes) -> bytes:
        """The text of ``note`` once this key's signature on it verifies.

        :class:`LogError`: ``log.format`` for a malformed note, ``log.key`` when
        no signature is this key's, ``log.signature`` when it does not verify.
        """
        text, signatures = _split_note(note)
        mine = [sig for name, sig in signatures if name == self.name and sig[:4] == self.key_hash]
        if not mine:
            raise LogError(
                "log.key",
                "the checkpoint is not signed by the log's key",
                observed=[name for name, _ in signatures],
                expected=f"{self.name} ({self.key_hash.hex()})",
                hint="the operator changed its log key or this is another log",
            )
        public = OwnerPublicKey(self.public)
        if not all(public.verifies(sig[4:], text) for sig in mine):
            raise LogError(
                "log.signature",
                "the checkpoint's signature by the log key does not verify",
                expected=self.to_text(),
                hint="the checkpoint was altered",
            )
        return text


def _split_note(note: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    def bad(why: str) -> LogError:
        return LogError("log.format", "the checkpoint is not a signed note", detail=why)

    if len(note) > MAX_NOTE_SIZE:
        raise bad(f"{len(note)} bytes, more than {MAX_NOTE_SIZE}")
    try:
        decoded = note.decode("utf-8")
    except UnicodeError:
        raise bad("not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise bad("a control character")
    cut = decoded.rfind("\n\n")
    if cut < 0 or not decoded.endswith("\n"):
        raise bad("no blank line before signatures, or no final newline")
    text, lines = decoded[: cut + 1], decoded[cut + 2 : -1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise bad(f"more than {MAX_NOTE_SIGNATURES} signatures")
    signatures: list[tuple[str, bytes]] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise bad("a signature line does not start with an em dash")
        name, _, blob = line[len(_DASH) :].partition(" ")
        if not _NAME.fullmatch(name):
            raise bad("a signature's key name is malformed")
        try:
            sig = b64decode_strict(blob, "a note signature")
        except UsageError as exc:
            raise bad(str(exc)) from None
        if len(sig) < 5:
            raise bad("a signature is shorter than its key hash")
        signatures.append((name, sig))
    return text.encode(), signatures


@dataclass(frozen=True, slots=True)
class LogKey:
    """The operator's log signing key: a name (the origin) and an Ed25519 seed."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.seed) != ED25519_KEY_SIZE:
            raise UsageError(f"a log key seed is {ED25519_KEY_SIZE} bytes")

    def __repr__(self) -> str:
        return f"LogKey({self.name!r}, <secret>)"

    @classmethod
    def generate(cls, name: str) -> LogKey:
        raw = Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(name, raw)

    @property
    def verifier(self) -> LogVerifier:
        key = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return LogVerifier(self.name, key.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign_note(self, text: bytes) -> bytes:
        """``text`` (ending in a newline) signed as a note by this key."""
        if not text.endswith(b"\n"):
            raise UsageError("a note's text ends with a newline")
        sig = Ed25519PrivateKey.from_private_bytes(self.seed).sign(text)
        blob = base64.b64encode(self.verifier.key_hash + sig).decode("ascii")
        return text + f"\n{_DASH}{self.name} {blob}\n".encode()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: its origin, size and root hash (the note text, not its signature)."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        _check_name(self.origin)
        if not 0 <= self.size <= MAX_TREE_SIZE or len(self.root) != HASH_SIZE:
            raise UsageError("a checkpoint has a size up to 2**62 and a 32-byte root")

    def check_origin(self, seen: Checkpoint) -> None:
        """Raise :class:`LogError` ``log.origin`` unless this is of the log ``seen`` is of."""
        if self.origin != seen.origin:
            raise LogError(
                "log.origin", "the checkpoint's origin", observed=self.origin, expected=seen.origin
            )

    def text(self) -> bytes:
        root = base64.b64encode(self.root).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n".encode()

    def sign(self, key: LogKey) -> bytes:
        if key.name != self.origin:
            raise UsageError("the log key's name is the checkpoint's origin")
        return key.sign_note(self.text())

    @classmethod
    def open(cls, note: bytes, verifier: LogVerifier) -> Checkpoint:
        """Verify ``note`` with ``verifier`` and parse its checkpoint (origin: the key's name).

        :class:`LogError`: ``log.format``, ``log.key``, ``log.signature``,
        ``log.origin`` (a checkpoint of another log).
        """
        text = verifier.open(note).decode("utf-8")
        lines = text[:-1].split("\n")
        if len(lines) != 3 or not _SIZE.fullmatch(lines[1]):
            raise LogError(
                "log.format",
                "the checkpoint's text is not origin, size, root hash",
                observed=f"{len(lines)} lines",
                expected="3 lines",
            )
        if lines[0] != verifier.name:
            raise LogError(
                "log.origin", "the checkpoint's origin", observed=lines[0], expected=verifier.name
            )
        try:
            return cls(lines[0], int(lines[1]), b64decode_strict(lines[2], "the root hash"))
        except UsageError as exc:
            raise LogError(
                "log.format", "the checkpoint's text is malformed", detail=str(exc)
            ) from None
