"""The requirements lock: the exact wheels an app's enclave installs, each by its SHA-256.

``confide deploy`` resolves the owner's declared requirements once, for the
enclave's Python and platform, into this lock; the launch manifest measures the
lock's SHA-256 (``requirements_sha256``), so the fingerprint covers exactly the
app's dependency set; the operator fetches the wheels it names (it is not
trusted) and the runtime installs a wheel only when its SHA-256 is the one
locked here (ADR 0024).

Format, version 1: UTF-8 text in the canonical form below, and nothing else (a
strict parser: any other spelling, order, blank line or comment is refused, so
one dependency set has exactly one lock and one digest). It is a valid pip
requirements file for ``pip install --require-hashes --no-deps -r`` (every
requirement pinned with ``==`` and one ``--hash``)::

    # confide requirements lock v1
    # target: python 3.11, implementation cp, platform manylinux_2_28_x86_64
    # source: <what was resolved: see SOURCE_PATTERN>
    <name>==<version> \\
        --hash=sha256:<64 lower-case hex digits>
    ...

- ``name``: the PEP 503 normalized name (lower case, runs of ``-_.`` as one ``-``),
  at most :data:`MAX_NAME_LENGTH` characters; entries sorted by name, unique.
- ``version``: a PEP 440 version as published (``2.2.3``, ``2.5.1+cpu``), at most
  :data:`MAX_VERSION_LENGTH` characters of ``[0-9A-Za-z.+!_-]``, starting with a digit.
- ``--hash``: the SHA-256 of the one wheel (``.whl``) for the target: source
  distributions run build code and are never locked (ADR 0024).
- at most :data:`MAX_LOCKED` entries, :data:`MAX_LOCK_SIZE` bytes, and
  :data:`MAX_LINE_LENGTH` characters a line.

The lock's digest (what the launch manifest measures) is the SHA-256 of these
exact bytes: ``sha256sum requirements.lock`` gives it.

Example::

    >>> lock = RequirementsLock(
    ...     python="3.11", platform="manylinux_2_28_x86_64", source="requirements.txt",
    ...     requirements=(LockedRequirement("six", "1.16.0", bytes(32)),),
    ... )
    >>> RequirementsLock.from_bytes(lock.to_bytes()) == lock
    True
    >>> len(lock.digest())
    32
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from confide.errors import UsageError

#: Most wheels one lock may name.
MAX_LOCKED: Final = 512
#: Largest lock file, in bytes.
MAX_LOCK_SIZE: Final = 128 * 1024
#: Longest line of a lock.
MAX_LINE_LENGTH: Final = 256
#: Longest distribution name and version.
MAX_NAME_LENGTH: Final = 100
MAX_VERSION_LENGTH: Final = 64
#: The lock file's usual name, beside the project file.
LOCK_FILE_NAME: Final = "requirements.lock"

HEADER: Final = "# confide requirements lock v1"
_NAME: Final = re.compile(rf"[a-z0-9](?:[a-z0-9-]{{0,{MAX_NAME_LENGTH - 2}}}[a-z0-9])?")
_VERSION: Final = re.compile(rf"[0-9][0-9A-Za-z.+!_-]{{0,{MAX_VERSION_LENGTH - 1}}}")
_PYTHON: Final = re.compile(r"3\.[0-9]{1,2}")
_PLATFORM: Final = re.compile(r"[a-z0-9_]{1,64}")
#: What a lock was resolved from: free words of a safe alphabet (a file name and its
#: digest, a Cosmian image's name).
SOURCE_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9 ._:/=+@-]{0,199}"
_SOURCE: Final = re.compile(SOURCE_PATTERN)
_TARGET: Final = re.compile(r"# target: python (\S+), implementation cp, platform (\S+)")
_ENTRY: Final = re.compile(r"(\S+)==(\S+) \\")
_HASH: Final = re.compile(r"    --hash=sha256:([0-9a-f]{64})")
_SEPARATORS: Final = re.compile(r"[-_.]+")


_MANYLINUX: Final = re.compile(r"manylinux_2_([0-9]{1,2})_([a-z0-9_]+)")
#: The legacy manylinux names and the glibc minor version each stands for (PEP 600).
_LEGACY: Final = (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5))


def compatible_platforms(platform: str) -> tuple[str, ...]:
    """Every platform tag a wheel may carry to run on ``platform``: for
    ``manylinux_2_28_x86_64``, every ``manylinux_2_N`` from 28 down and the legacy names
    (pip's ``--platform`` does not expand them itself); any other tag is itself only."""
    match = _MANYLINUX.fullmatch(platform)
    if match is None:
        return (platform,)
    glibc, arch = int(match.group(1)), match.group(2)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    tags += [f"{name}_{arch}" for name, minor in _LEGACY if minor <= glibc]
    return tuple(tags)


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Python_Dateutil`` -> ``python-dateutil``)."""
    return _SEPARATORS.sub("-", name).lower()


@dataclass(frozen=True, slots=True)
class LockedRequirement:
    """One wheel of the lock: its distribution, its version and its SHA-256."""

    name: str
    version: str
    sha256: bytes

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise UsageError(
                f"the locked name {self.name[:120]!r} is not a normalized distribution name "
                f"(lower case letters, digits and inner '-', at most {MAX_NAME_LENGTH})"
            )
        if not _VERSION.fullmatch(self.version):
            raise UsageError(
                f"the locked version {self.version[:120]!r} of {self.name} is not a version "
                f"(a digit, then at most {MAX_VERSION_LENGTH - 1} of [0-9A-Za-z.+!_-])"
            )
        if not isinstance(self.sha256, bytes) or len(self.sha256) != 32:
            raise UsageError(f"the locked hash of {self.name} must be 32 bytes")

    @property
    def pin(self) -> str:
        """``name==version``."""
        return f"{self.name}=={self.version}"


@dataclass(frozen=True, slots=True)
class RequirementsLock:
    """A parsed lock (see the module's description); :meth:`to_bytes` is its one spelling."""

    #: The enclave's Python version (``3.11``) the wheels were chosen for (CPython).
    python: str
    #: The most recent platform tag the wheels may have (``manylinux_2_28_x86_64``).
    platform: str
    #: What was resolved (``requirements.txt sha256:...``, ``image mse-flask-pandas``).
    source: str
    requirements: tuple[LockedRequirement, ...]

    def __post_init__(self) -> None:
        if not _PYTHON.fullmatch(self.python):
            raise UsageError(f"the lock's python {self.python[:40]!r} is not 3.N")
        if not _PLATFORM.fullmatch(self.platform):
            raise UsageError(f"the lock's platform {self.platform[:80]!r} is not a platform tag")
        if not _SOURCE.fullmatch(self.source):
            raise UsageError(f"the lock's source {self.source[:80]!r} must match {SOURCE_PATTERN}")
        if len(self.requirements) > MAX_LOCKED:
            raise UsageError(
                f"the lock names {len(self.requirements)} wheels, more than {MAX_LOCKED}"
            )
        names = [r.name for r in self.requirements]
        if names != sorted(set(names)):
            raise UsageError("the lock's entries must be sorted by name, each name once")

    def to_text(self) -> str:
        lines = [
            HEADER,
            f"# target: python {self.python}, implementation cp, platform {self.platform}",
            f"# source: {self.source}",
        ]
        for r in self.requirements:
            lines += [f"{r.pin} \\", f"    --hash=sha256:{r.sha256.hex()}"]
        return "\n".join(lines) + "\n"

    def to_bytes(self) -> bytes:
        """The canonical bytes (the file's content)."""
        return self.to_text().encode("ascii")

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes`: what the launch manifest measures."""
        return hashlib.sha256(self.to_bytes()).digest()

    def pins(self) -> tuple[str, ...]:
        return tuple(r.pin for r in self.requirements)

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "the requirements lock") -> RequirementsLock:
        """Parse a lock; :class:`UsageError` naming the line unless it is in canonical form."""
        if len(data) > MAX_LOCK_SIZE:
            raise UsageError(f"{where} is larger than {MAX_LOCK_SIZE} bytes")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise UsageError(f"{where} is not ASCII text") from None
        if not text.endswith("\n"):
            raise UsageError(f"{where} does not end with a newline")
        lines = text[:-1].split("\n")
        for number, line in enumerate(lines, 1):
            if len(line) > MAX_LINE_LENGTH:
                raise UsageError(f"{where}, line {number}: longer than {MAX_LINE_LENGTH}")
        if len(lines) < 3 or lines[0] != HEADER:
            raise UsageError(
                f"{where} does not start with {HEADER!r}",
                hint="regenerate it: delete it and run confide deploy",
            )
        target = _TARGET.fullmatch(lines[1])
        if target is None:
            raise UsageError(f"{where}, line 2: expected '# target: python 3.N, ...'")
        if not lines[2].startswith("# source: "):
            raise UsageError(f"{where}, line 3: expected '# source: ...'")
        body = lines[3:]
        if len(body) % 2:
            raise UsageError(f"{where}: each entry is two lines (name==version \\, --hash=...)")
        if len(body) // 2 > MAX_LOCKED:
            raise UsageError(f"{where} names more than {MAX_LOCKED} wheels")
        entries = []
        for i in range(0, len(body), 2):
            entry, digest = _ENTRY.fullmatch(body[i]), _HASH.fullmatch(body[i + 1])
            if entry is None:
                raise UsageError(f"{where}, line {i + 4}: expected 'name==version \\'")
            if digest is None:
                raise UsageError(
                    f"{where}, line {i + 5}: expected '    --hash=sha256:<64 lower-case hex>'"
                )
            entries.append(
                LockedRequirement(entry.group(1), entry.group(2), bytes.fromhex(digest.group(1)))
            )
        lock = cls(
            python=target.group(1),
            platform=target.group(2),
            source=lines[2].removeprefix("# source: "),
            requirements=tuple(entries),
        )
        if lock.to_bytes() != data:  # pragma: no cover - every line was matched exactly above
            raise UsageError(f"{where} is not in canonical form")
        return lock
