"""The requirements lock: the exact wheels an app's enclave installs, each by its SHA-256.

``confide deploy`` resolves the owner's declared requirements once, for the
enclave's Python and platform, into this lock; the launch manifest measures the
lock's SHA-256 (``requirements_sha256``), so the fingerprint covers exactly the
app's dependency set; the operator fetches the wheels it names (it is not
trusted) and the runtime installs a wheel only when its SHA-256 is the one
locked here (ADR 0024).

Format, version 1 (wheels only) or 2 (with source distributions): UTF-8 text
in the canonical form below, and nothing else (a strict parser: any other
spelling, order, blank line or comment is refused, so one dependency set has
exactly one lock and one digest). It is a valid pip requirements file for
``pip install --require-hashes --no-deps -r`` (every
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
- ``--hash``: the SHA-256 of the one wheel (``.whl``) for the target, or, in
  version 2, of the one source distribution (``.tar.gz``) of an entry marked
  ``# sdist``.
- at most :data:`MAX_LOCKED` entries, :data:`MAX_LOCK_SIZE` bytes, and
  :data:`MAX_LINE_LENGTH` characters a line.

Version 2 is written only when the lock names a source distribution or a build
backend (so a lock of wheels keeps its version 1 bytes and digest). Its header
line says ``v2``; a fourth line names the distributions the owner allowed to be
built from source (``allow_sdists`` in the project file: normalized names,
sorted, unique, at most :data:`MAX_ALLOWED_SDISTS`, each after one space; none
is ``# allow-sdists:`` alone); and an entry may be preceded by one marker line::

    # confide requirements lock v2
    # target: python 3.11, implementation cp, platform manylinux_2_28_x86_64
    # source: <...>
    # allow-sdists: tinypkg
    # build-only
    setuptools==75.6.0 \
        --hash=sha256:<...>
    # sdist
    tinypkg==1.0 \
        --hash=sha256:<...>

- ``# sdist``: the entry is a source distribution: the runtime builds it in the
  enclave (its build code runs there) only when its name is allowed on line 4
  and every distribution its ``[build-system] requires`` names is locked;
- ``# build-only``: the entry is a wheel of a build backend, installed only in
  the build's private folder, never importable by the app.

Entries stay sorted by name, each name once (a wheel needed both by the app and
by a build is one unmarked entry, which the build may use too).

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
#: Most distributions the owner may allow to be built from source.
MAX_ALLOWED_SDISTS: Final = 32
#: An entry's kind: a wheel the app imports, a source distribution built in the enclave,
#: a build backend's wheel installed only for builds.
WHEEL: Final = "wheel"
SDIST: Final = "sdist"
BUILD: Final = "build"
KINDS: Final = (WHEEL, SDIST, BUILD)
#: The lock file's usual name, beside the project file.
LOCK_FILE_NAME: Final = "requirements.lock"

HEADER: Final = "# confide requirements lock v1"
HEADER_V2: Final = "# confide requirements lock v2"
_ALLOW_PREFIX: Final = "# allow-sdists:"
_MARKS: Final = {SDIST: "# sdist", BUILD: "# build-only"}
_KIND_OF_MARK: Final = {mark: kind for kind, mark in _MARKS.items()}
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
    """One entry of the lock: its distribution, its version, the SHA-256 of its file, and
    its kind (:data:`WHEEL`, :data:`SDIST` or :data:`BUILD`)."""

    name: str
    version: str
    sha256: bytes
    kind: str = WHEEL

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
        if self.kind not in KINDS:
            raise UsageError(
                f"the locked kind {self.kind[:20]!r} of {self.name} is not one of {KINDS}"
            )

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
    #: The distributions the owner allowed to be built from source in the enclave.
    allow_sdists: tuple[str, ...] = ()

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
        if len(self.allow_sdists) > MAX_ALLOWED_SDISTS:
            raise UsageError(
                f"the lock allows {len(self.allow_sdists)} source distributions, more than "
                f"{MAX_ALLOWED_SDISTS}"
            )
        for name in self.allow_sdists:
            if not _NAME.fullmatch(name):
                raise UsageError(f"the allowed sdist {name[:120]!r} is not a normalized name")
        if list(self.allow_sdists) != sorted(set(self.allow_sdists)):
            raise UsageError("the lock's allowed sdists must be sorted, each name once")

    @property
    def version(self) -> int:
        """The format's version: 2 when the lock names a source distribution, a build
        backend or an allowed sdist; else 1."""
        if self.allow_sdists or any(r.kind != WHEEL for r in self.requirements):
            return 2
        return 1

    def of_kind(self, kind: str) -> tuple[LockedRequirement, ...]:
        return tuple(r for r in self.requirements if r.kind == kind)

    def to_text(self) -> str:
        v2 = self.version == 2
        lines = [
            HEADER_V2 if v2 else HEADER,
            f"# target: python {self.python}, implementation cp, platform {self.platform}",
            f"# source: {self.source}",
        ]
        if v2:
            lines.append(_ALLOW_PREFIX + "".join(f" {n}" for n in self.allow_sdists))
        for r in self.requirements:
            if r.kind != WHEEL:
                lines.append(_MARKS[r.kind])
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
        if len(lines) < 3 or lines[0] not in (HEADER, HEADER_V2):
            raise UsageError(
                f"{where} does not start with {HEADER!r} or {HEADER_V2!r}",
                hint="regenerate it: delete it and run confide deploy",
            )
        v2 = lines[0] == HEADER_V2
        target = _TARGET.fullmatch(lines[1])
        if target is None:
            raise UsageError(f"{where}, line 2: expected '# target: python 3.N, ...'")
        if not lines[2].startswith("# source: "):
            raise UsageError(f"{where}, line 3: expected '# source: ...'")
        first = 3
        allowed: list[str] = []
        if v2:
            if len(lines) < 4 or not lines[3].startswith(_ALLOW_PREFIX):
                raise UsageError(f"{where}, line 4: expected '{_ALLOW_PREFIX} [name ...]'")
            rest = lines[3].removeprefix(_ALLOW_PREFIX)
            allowed = rest.split(" ")[1:] if rest else []
            if rest and not rest.startswith(" "):
                raise UsageError(f"{where}, line 4: expected '{_ALLOW_PREFIX} [name ...]'")
            if len(allowed) > MAX_ALLOWED_SDISTS:
                raise UsageError(
                    f"{where}, line 4: allows more than {MAX_ALLOWED_SDISTS} source distributions"
                )
            first = 4
        entries: list[LockedRequirement] = []
        i = first
        while i < len(lines):
            kind = WHEEL
            if v2 and lines[i] in _KIND_OF_MARK:
                kind = _KIND_OF_MARK[lines[i]]
                i += 1
            if len(entries) >= MAX_LOCKED:
                raise UsageError(f"{where} names more than {MAX_LOCKED} entries")
            if i + 1 >= len(lines):
                raise UsageError(
                    f"{where}, line {i + 1}: each entry is two lines (name==version \\, --hash=...)"
                )
            entry, digest = _ENTRY.fullmatch(lines[i]), _HASH.fullmatch(lines[i + 1])
            if entry is None:
                raise UsageError(f"{where}, line {i + 1}: expected 'name==version \\'")
            if digest is None:
                raise UsageError(
                    f"{where}, line {i + 2}: expected '    --hash=sha256:<64 lower-case hex>'"
                )
            entries.append(
                LockedRequirement(
                    entry.group(1), entry.group(2), bytes.fromhex(digest.group(1)), kind
                )
            )
            i += 2
        lock = cls(
            python=target.group(1),
            platform=target.group(2),
            source=lines[2].removeprefix("# source: "),
            requirements=tuple(entries),
            allow_sdists=tuple(allowed),
        )
        if lock.to_bytes() != data:  # a v2 header on a lock of wheels, for one
            raise UsageError(f"{where} is not in canonical form")
        return lock
