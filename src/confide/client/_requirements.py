"""The app's requirements: declared by the owner, resolved once into a lock (ADR 0024).

Where they are declared, first found wins:

1. the project file's ``requirements = [...]`` key;
2. ``requirements.txt`` in the code folder (plain ``name`` / ``name==version`` /
   ``name>=x`` lines and comments; no pip options);
3. Cosmian's ``[cloud] docker`` naming one of Cosmian's published runtime images
   (:data:`COSMIAN_IMAGES`): that image's requirement set.

:func:`lock_for_deploy` turns them into a :class:`~confide.wire.RequirementsLock`:
a lock file beside the project file (``requirements.lock``) whose ``source`` line
matches what is declared now is reused as is (so a deploy is reproducible: commit
it); otherwise pip resolves the declaration once for the enclave's Python and
platform (``pip install --dry-run --report`` with ``--only-binary=:all:``: wheels
only, never a source distribution, whose build runs code), keeping to the versions
the runtime environment already has (they are measured in ``runtime_sha256``) and
locking every other wheel by its SHA-256; the lock is written there.

Source distributions, by the owner's explicit opt-in only (``allow_sdists =
["name"]`` in the project file; each named distribution must be declared pinned,
``name==version``): the sdist ``name-version.tar.gz`` is taken from the index's
PEP 503 page (PyPI's by default) and locked by the SHA-256 the page gives, checked
against the bytes downloaded; its ``pyproject.toml`` ``[build-system] requires``
(``setuptools`` when it has none) is resolved as wheels, with no runtime
constraint (the build sees only them), and locked as build-only entries; the
``Requires-Dist`` of its ``PKG-INFO`` are resolved with the other declared
requirements. No build code runs on the owner's machine: the sdist is read, never
built, here. The lock is then of format version 2, and ``deploy`` says plainly
that these builds run in the enclave.

Example::

    >>> declared = declared_requirements(config)  # doctest: +SKIP
    >>> lock = lock_for_deploy(config, events.step)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confide.errors import UsageError
from confide.simpleindex import DEFAULT_INDEX, project_files, read_url
from confide.wire import (
    BUILD,
    LOCK_FILE_NAME,
    MAX_ALLOWED_SDISTS,
    MAX_LOCK_SIZE,
    MAX_LOCKED,
    SDIST,
    LockedRequirement,
    RequirementsLock,
    compatible_platforms,
    normalize_name,
)

from ._config import ProjectConfig

#: The platform tag the enclave's wheels are chosen for: glibc 2.28 or later on x86-64
#: (pip also accepts every older manylinux tag). The runtime image's glibc is newer.
ENCLAVE_PLATFORM: Final = "manylinux_2_28_x86_64"
#: Largest requirements.txt read.
MAX_REQUIREMENTS_FILE: Final = 64 * 1024
#: Most requirements declared.
MAX_DECLARED: Final = 256
#: Largest pip report read (bytes).
MAX_REPORT_SIZE: Final = 16 * 1024 * 1024
#: How long one resolution may take (seconds).
RESOLVE_TIMEOUT: Final = 600.0
#: Largest sdist read (its index page's bounds are :mod:`confide.simpleindex`'s).
MAX_SDIST_SIZE: Final = 256 * 1024 * 1024
MAX_SDIST_METADATA: Final = 1024 * 1024
#: The build requirements of an sdist with no ``[build-system]`` (PEP 517's fallback).
LEGACY_BUILD_REQUIRES: Final = ("setuptools",)
_DECLARED: Final = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?"
    r"( *(==|>=|<=|~=|!=|<|>) *[0-9A-Za-z.*+!_-]+( *, *(==|>=|<=|~=|!=|<|>) *[0-9A-Za-z.*+!_-]+)*)?"
    r"( *; *[ -~]+)?"
)


@dataclass(frozen=True, slots=True)
class CosmianImage:
    """One of Cosmian's runtime images and the requirements its Dockerfile installed."""

    name: str
    requirements: tuple[str, ...]
    #: Where the set was read (repository, file, commit).
    source: str
    #: Why a requirement was added beyond the Dockerfile's, if any.
    note: str = ""


#: Cosmian's published runtime images (``ghcr.io/cosmian/<name>:<tag>``), each with the
#: ``pip3 install`` line of its public Dockerfile on GitHub (the newest version stored).
#: Flask 2.2.2 imports ``werkzeug.urls.url_quote``, which Werkzeug 3 removed: the images,
#: built in January and February 2023, resolved Flask's ``Werkzeug>=2.2.2`` to 2.2.x, so
#: Werkzeug 2.2.3 (released 2023-02-14) is pinned with it.
COSMIAN_IMAGES: Final = {
    image.name: image
    for image in (
        CosmianImage(
            "mse-flask",
            ("flask==2.2.2", "flask-cors==3.0.10", "flask-sqlalchemy==3.0.2", "werkzeug==2.2.3"),
            "github.com/Cosmian/mse-docker-flask Dockerfile @f37dd9facf71",
            "werkzeug==2.2.3 as resolved when the image was built",
        ),
        CosmianImage(
            "mse-fastapi",
            ("fastapi==0.92.0",),
            "github.com/Cosmian/mse-docker-fastapi Dockerfile @43980d8f8f37",
        ),
        CosmianImage(
            "mse-ds",
            (
                "flask==2.2.2",
                "flask-cors==3.0.10",
                "flask-sqlalchemy==3.0.2",
                "pandas==1.5.3",
                "numpy==1.24.2",
                "scipy==1.10.1",
                "scikit-learn==1.2.2",
                "werkzeug==2.2.3",
            ),
            "github.com/Cosmian/mse-docker-ds Dockerfile @0a0787f44d01",
            "werkzeug==2.2.3 as resolved when the image was built",
        ),
        CosmianImage(
            "mse-pytorch",
            (
                "flask==2.2.2",
                "flask-cors==3.0.10",
                "lifelines==0.27.4",
                "torch==1.13.1",
                "torchvision==0.14.1",
                "lightgbm==3.3.3",
                "numpy==1.24.1",
                "scikit-learn==1.2.0",
                "pandas==1.5.2",
                "scipy==1.9.3",
                "werkzeug==2.2.3",
            ),
            "github.com/Cosmian/mse-docker-pytorch Dockerfile @0a5646977755",
            "werkzeug==2.2.3 as resolved when the image was built",
        ),
    )
}


def cosmian_image(docker: str) -> CosmianImage | None:
    """The Cosmian image a ``docker`` value names (``ghcr.io/cosmian/mse-ds:2023...``), or
    ``None`` when it names none of :data:`COSMIAN_IMAGES`."""
    reference = docker.strip().lower()
    repository = reference.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    name = last.split(":", 1)[0]
    if "/" in repository and not repository.startswith(("ghcr.io/cosmian/", "cosmian/")):
        return None
    return COSMIAN_IMAGES.get(name)


@dataclass(frozen=True, slots=True)
class Declared:
    """What the owner declared: the requirement lines, and where they come from."""

    requirements: tuple[str, ...]
    #: The lock's ``source`` line: where, and the SHA-256 of what was declared.
    source: str
    #: Said by ``deploy``: which set was used.
    description: str
    #: The distributions the owner allows to be built from source in the enclave.
    allow_sdists: tuple[str, ...] = ()


def _digest(lines: Sequence[str], allow: Sequence[str] = ()) -> str:
    # the opt-in is part of what was declared (a lock without it is not reused)
    listed = [*lines, f"allow_sdists: {' '.join(allow)}"] if allow else list(lines)
    return hashlib.sha256("\n".join(listed).encode()).hexdigest()


def _allowed(config: ProjectConfig) -> tuple[str, ...]:
    names = sorted({normalize_name(n) for n in config.allow_sdists})
    if len(names) > MAX_ALLOWED_SDISTS:
        raise UsageError(
            f"{config.path.name}: allow_sdists names {len(names)} distributions, more than "
            f"{MAX_ALLOWED_SDISTS}"
        )
    for name in names:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?", name):
            raise UsageError(
                f"{config.path.name}: allow_sdists: {name[:80]!r} is not a distribution name"
            )
    return tuple(names)


def _check_lines(lines: Sequence[str], where: str) -> tuple[str, ...]:
    if len(lines) > MAX_DECLARED:
        raise UsageError(f"{where} declares {len(lines)} requirements, more than {MAX_DECLARED}")
    for line in lines:
        # A pip option after a requirement (`name; marker --opt`) is an option all the same.
        if not _DECLARED.fullmatch(line) or " -" in line:
            raise UsageError(
                f"{where}: {line[:80]!r} is not a requirement (name, optional extras, version "
                "specifiers, marker)",
                hint="pip options, URLs and paths are not accepted: the enclave installs only "
                "locked wheels from the package index",
            )
    return tuple(lines)


def declared_requirements(config: ProjectConfig) -> Declared | None:
    """The owner's declared requirements (see the module's description), or ``None``."""
    allow = _allowed(config)
    if config.requirements is not None:
        lines = _check_lines(config.requirements, f"{config.path.name}: requirements")
        return Declared(
            lines,
            f"{config.path.name} requirements sha256:{_digest(lines, allow)}",
            f"the requirements in {config.path.name}",
            allow,
        )
    path = config.cloud.code / "requirements.txt"
    if path.is_file():
        try:
            with path.open("rb") as f:
                data = f.read(MAX_REQUIREMENTS_FILE + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_REQUIREMENTS_FILE:
            raise UsageError(f"{path} is larger than {MAX_REQUIREMENTS_FILE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path} is not UTF-8") from None
        found = [
            line.split(" #", 1)[0].strip()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        checked = _check_lines(found, str(path))
        return Declared(
            checked,
            f"requirements.txt sha256:{_digest(checked, allow)}",
            f"{path.name} in the code folder",
            allow,
        )
    if config.cloud.docker is not None:
        image = cosmian_image(config.cloud.docker)
        if image is None:
            return None
        return Declared(
            image.requirements,
            f"image {image.name} sha256:{_digest(image.requirements, allow)}",
            f"the requirement set of Cosmian's image {image.name} ({image.source})",
            allow,
        )
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """The interpreter and platform the enclave's wheels are chosen for."""

    python: str
    platform: str = ENCLAVE_PLATFORM

    @classmethod
    def current(cls) -> Target:
        """This interpreter's version: the runtime environment a fingerprint predicts is
        this machine's (ADR 0017), so is the enclave's Python."""
        return cls(python=f"{sys.version_info.major}.{sys.version_info.minor}")


def resolve(
    declared: Declared,
    target: Target,
    *,
    provided: Sequence[str],
    pip: Sequence[str] | None = None,
    index_url: str | None = None,
) -> RequirementsLock:
    """Resolve ``declared`` for ``target`` into a lock: wheels, and the sdists the owner
    allowed with their build backends' wheels (see the module's description)."""
    if not declared.allow_sdists:
        return _resolve_wheels(declared, target, provided=provided, pip=pip)
    by_name = {_requirement_name(line): line for line in declared.requirements}
    sdists: list[LockedRequirement] = []
    runtime_lines = [
        line
        for line in declared.requirements
        if _requirement_name(line) not in declared.allow_sdists
    ]
    build_lines: list[str] = []
    for name in declared.allow_sdists:
        line = by_name.get(name)
        pinned = re.fullmatch(r"([A-Za-z0-9._-]+) *== *([0-9][0-9A-Za-z.+!_-]*)", line or "")
        if pinned is None:
            raise UsageError(
                f"allow_sdists names {name}, which {declared.description} does not declare "
                f"pinned ({(line or 'not declared')[:80]!r})",
                hint=f'declare it as "{name}==<version>": an sdist is locked by its version',
            )
        sdist, requires, depends = fetch_sdist(name, pinned.group(2), index_url or DEFAULT_INDEX)
        sdists.append(sdist)
        build_lines += [r for r in requires if r not in build_lines]
        runtime_lines += [d for d in depends if d not in runtime_lines]
    app = _resolve_wheels(
        Declared(tuple(runtime_lines), declared.source, declared.description),
        target,
        provided=provided,
        pip=pip,
    )
    backends = _resolve_wheels(
        Declared(
            _check_lines(build_lines, "the sdists' build requires"),
            declared.source,
            "the build requirements of " + ", ".join(s.pin for s in sdists),
        ),
        target,
        provided=(),
        pip=pip,
    )
    entries = {r.name: r for r in app.requirements}
    for backend in backends.requirements:
        same = entries.get(backend.name)
        if same is None:
            entries[backend.name] = LockedRequirement(
                backend.name, backend.version, backend.sha256, BUILD
            )
        elif same.sha256 != backend.sha256:
            raise UsageError(
                f"the build backend needs {backend.pin}, the app {same.pin}: one lock names "
                "one version of a distribution",
                hint=f"pin {backend.name} to one version the build and the app both accept",
            )
    for sdist in sdists:
        if sdist.name in entries:
            raise UsageError(f"{sdist.pin} is both an allowed sdist and a wheel of the lock")
        entries[sdist.name] = sdist
    return RequirementsLock(
        python=target.python,
        platform=target.platform,
        source=declared.source,
        requirements=tuple(entries[n] for n in sorted(entries)),
        allow_sdists=declared.allow_sdists,
    )


def _requirement_name(line: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return normalize_name(match.group(0)) if match else ""


def fetch_sdist(
    name: str, version: str, index_url: str
) -> tuple[LockedRequirement, tuple[str, ...], tuple[str, ...]]:
    """The sdist ``name-version.tar.gz`` from ``index_url``'s PEP 503 page, locked by the
    SHA-256 the page gives (checked against the bytes), with its build requirements and
    its ``Requires-Dist``; nothing of it is built or run here."""
    for found in project_files(index_url, name):
        stem = found.file_name.removesuffix(".tar.gz")
        if stem == found.file_name:
            continue
        dist, _, dist_version = stem.rpartition("-")
        if normalize_name(dist) != name or dist_version != version:
            continue
        data = read_url(found.url, MAX_SDIST_SIZE)
        observed = hashlib.sha256(data).digest()
        if observed != found.sha256:
            raise UsageError(
                f"the sdist {found.file_name} from {index_url} is not the file its index page "
                f"names: sha256 observed {observed.hex()}, expected {found.sha256.hex()}"
            )
        requires, depends = _sdist_metadata(data, f"{name}=={version}")
        locked = LockedRequirement(name, version, observed, SDIST)
        return locked, requires, depends
    raise UsageError(
        f"{index_url} has no source distribution {name}-{version}.tar.gz with a sha256",
        hint="allow_sdists takes a distribution published as a .tar.gz sdist",
    )


def _sdist_metadata(data: bytes, pin: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The build requires and the ``Requires-Dist`` (without extras) of an sdist's bytes."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] in ("pyproject.toml", "PKG-INFO"):
                    if not member.isfile() or member.size > MAX_SDIST_METADATA:
                        raise UsageError(f"the sdist of {pin} has an unusable {parts[1]}")
                    handle = archive.extractfile(member)
                    if handle is not None:
                        files[parts[1]] = handle.read(MAX_SDIST_METADATA)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise UsageError(f"the sdist of {pin} is not a .tar.gz: {exc}") from None
    requires: list[str] = list(LEGACY_BUILD_REQUIRES)
    if "pyproject.toml" in files:
        try:
            table = tomllib.loads(files["pyproject.toml"].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"the pyproject.toml of {pin} is not TOML: {exc}") from None
        system = table.get("build-system")
        if isinstance(system, dict):
            if "backend-path" in system:
                raise UsageError(
                    f"{pin} builds with an in-tree backend (backend-path), which the enclave "
                    "does not run"
                )
            found = system.get("requires", list(LEGACY_BUILD_REQUIRES))
            if not isinstance(found, list) or not all(isinstance(r, str) for r in found):
                raise UsageError(f"the [build-system] requires of {pin} is not a list of strings")
            requires = [r.strip() for r in found]
    depends = []
    for line in files.get("PKG-INFO", b"").decode("utf-8", errors="replace").splitlines():
        if line.startswith("Requires-Dist:"):
            value = line.removeprefix("Requires-Dist:").strip()
            if re.search(r"\bextra\s*==", value):
                continue
            depends.append(re.sub(r" *\(([^)]*)\)", r" \1", value))
    return tuple(requires), tuple(depends)


def _resolve_wheels(
    declared: Declared,
    target: Target,
    *,
    provided: Sequence[str],
    pip: Sequence[str] | None = None,
) -> RequirementsLock:
    """Resolve ``declared`` for ``target`` with pip into a lock of wheels.

    ``provided`` are the ``name==version`` pins of the runtime environment: the
    resolution keeps to them (constraints) and leaves them out of the lock (they are
    measured in ``runtime_sha256`` already).
    """
    if not declared.requirements:
        return RequirementsLock(
            python=target.python, platform=target.platform, source=declared.source, requirements=()
        )
    command = list(pip) if pip is not None else [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="confide-lock-") as tmp:
        folder = Path(tmp)
        requirements = folder / "requirements.txt"
        requirements.write_text("\n".join(declared.requirements) + "\n", encoding="utf-8")
        constraints = folder / "constraints.txt"
        constraints.write_text("\n".join(provided) + "\n", encoding="utf-8")
        report = folder / "report.json"
        argv = [
            *command,
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            target.python,
            *(f"--platform={tag}" for tag in compatible_platforms(target.platform)),
            "--target",
            str(folder / "target"),
            "--report",
            str(report),
            "-r",
            str(requirements),
            "-c",
            str(constraints),
        ]
        try:
            done = subprocess.run(  # noqa: S603 - our argv, no shell
                argv,
                capture_output=True,
                timeout=RESOLVE_TIMEOUT,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UsageError(f"pip could not resolve the requirements: {exc}") from None
        if done.returncode != 0:
            lines = [
                line
                for line in done.stderr.decode(errors="replace").splitlines()
                if line.startswith("ERROR") or "error" in line.lower()
            ]
            shown = lines[-1] if lines else f"exit {done.returncode}"
            raise UsageError(
                f"pip could not resolve {declared.description} for Python {target.python} "
                f"on {target.platform} (wheels only): {shown.strip()[:300]}",
                hint="fix the requirements (or their versions); a package with no wheel for "
                "the enclave cannot be locked",
            )
        try:
            with report.open("rb") as f:
                raw = f.read(MAX_REPORT_SIZE + 1)
        except OSError as exc:
            raise UsageError(f"pip wrote no report: {exc.strerror or exc}") from None
    return lock_from_report(raw, declared, target, provided=provided)


def lock_from_report(
    raw: bytes, declared: Declared, target: Target, *, provided: Sequence[str]
) -> RequirementsLock:
    """The lock of pip's installation report ``raw`` (``pip install --report``), less the
    distributions ``provided`` by the runtime environment."""
    if len(raw) > MAX_REPORT_SIZE:
        raise UsageError(f"pip's report is larger than {MAX_REPORT_SIZE} bytes")
    try:
        report = json.loads(raw)
        items = report["install"]
    except (ValueError, KeyError, TypeError):
        raise UsageError("pip's report is not an installation report") from None
    if not isinstance(items, list) or len(items) > MAX_LOCKED:
        raise UsageError(f"pip's report must list at most {MAX_LOCKED} distributions")
    have = {normalize_name(p.split("==", 1)[0]): p.split("==", 1)[1] for p in provided}
    locked: dict[str, LockedRequirement] = {}
    for item in items:
        try:
            name = normalize_name(item["metadata"]["name"])
            version = item["metadata"]["version"]
            info = item["download_info"]
            url = info["url"]
            digest = info["archive_info"]["hashes"]["sha256"]
        except (KeyError, TypeError):
            raise UsageError(
                "pip's report has a distribution without its name, version, URL or SHA-256"
            ) from None
        if not isinstance(url, str) or not url.split("#", 1)[0].endswith(".whl"):
            raise UsageError(
                f"{name}=={version} resolved to {str(url)[:120]}, not a wheel: source "
                "distributions run build code and are not installed in the enclave"
            )
        if have.get(name) == version:
            continue  # in the measured runtime environment already
        try:
            sha256 = bytes.fromhex(digest)
        except (TypeError, ValueError):
            raise UsageError(f"pip's report gives {name} a SHA-256 that is not hex") from None
        locked[name] = LockedRequirement(name, version, sha256)
    return RequirementsLock(
        python=target.python,
        platform=target.platform,
        source=declared.source,
        requirements=tuple(locked[n] for n in sorted(locked)),
    )


@dataclass(frozen=True, slots=True)
class LockChoice:
    """The lock a deploy uses, and what ``deploy`` says about it."""

    lock: RequirementsLock
    path: Path
    declared: Declared
    #: True when the lock file was reused as is; False when it was (re)written.
    reused: bool


def read_lock(path: Path) -> RequirementsLock:
    """Read a lock file (strictly: :meth:`RequirementsLock.from_bytes`)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_LOCK_SIZE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the lock {path}: {exc.strerror or exc}") from None
    return RequirementsLock.from_bytes(data, where=str(path))


def lock_for_deploy(
    config: ProjectConfig,
    *,
    provided: Callable[[], Sequence[str]],
    target: Target | None = None,
    pip: Sequence[str] | None = None,
    index_url: str | None = None,
) -> LockChoice | None:
    """The lock of the owner's declared requirements, or ``None`` when none are declared
    and no lock file exists. A lock file beside the project file is reused as is when its
    source is what is declared now (or when nothing is declared: a lock written by hand);
    otherwise the declaration is resolved and the lock written there."""
    path = config.path.parent / LOCK_FILE_NAME
    declared = declared_requirements(config)
    wanted = target or Target.current()
    if path.is_file():
        existing = read_lock(path)
        if declared is None:
            return LockChoice(
                existing, path, Declared(existing.pins(), existing.source, str(path)), True
            )
        if existing.source == declared.source and existing.python == wanted.python:
            return LockChoice(existing, path, declared, True)
    if declared is None:
        return None
    lock = resolve(declared, wanted, provided=provided(), pip=pip, index_url=index_url)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(lock.to_bytes())
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write the lock {path}: {exc.strerror or exc}") from None
    return LockChoice(lock, path, declared, False)
