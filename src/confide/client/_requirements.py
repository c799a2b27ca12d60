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

Example::

    >>> declared = declared_requirements(config)  # doctest: +SKIP
    >>> lock = lock_for_deploy(config, events.step)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confide.errors import UsageError
from confide.wire import (
    LOCK_FILE_NAME,
    MAX_LOCK_SIZE,
    MAX_LOCKED,
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


def _digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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
    if config.requirements is not None:
        lines = _check_lines(config.requirements, f"{config.path.name}: requirements")
        return Declared(
            lines,
            f"{config.path.name} requirements sha256:{_digest(lines)}",
            f"the requirements in {config.path.name}",
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
            f"requirements.txt sha256:{_digest(checked)}",
            f"{path.name} in the code folder",
        )
    if config.cloud.docker is not None:
        image = cosmian_image(config.cloud.docker)
        if image is None:
            return None
        return Declared(
            image.requirements,
            f"image {image.name} sha256:{_digest(image.requirements)}",
            f"the requirement set of Cosmian's image {image.name} ({image.source})",
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
) -> RequirementsLock:
    """Resolve ``declared`` for ``target`` with pip into a lock of wheels.

    ``provided`` are the ``name==version`` pins of the runtime environment: the
    resolution keeps to them (constraints) and leaves them out of the lock (they are
    measured in ``runtime_sha256`` already).
    """
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
    lock = resolve(declared, wanted, provided=provided(), pip=pip)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(lock.to_bytes())
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"cannot write the lock {path}: {exc.strerror or exc}") from None
    return LockChoice(lock, path, declared, False)
