"""A minimal PEP 517 frontend: build a checked source distribution into a wheel (ADR 0024).

The runtime calls :func:`build_wheel` only for a source distribution the owner allowed
in the measured lock, whose SHA-256 it has already checked. It

1. unpacks the ``.tar.gz`` into a private folder, refusing links, devices, paths that
   would leave the folder, more than :data:`MAX_SDIST_ENTRIES` entries or
   :data:`MAX_SDIST_EXTRACTED` bytes, and anything but one top folder
   (``requirements.unsafe_sdist``);
2. reads ``pyproject.toml``'s ``[build-system]``: its ``build-backend`` and its
   ``requires``; with no ``[build-system]`` (or no ``build-backend``), setuptools' legacy
   backend ``setuptools.build_meta:__legacy__`` with ``requires = ["setuptools"]`` (PEP
   517's fallback); an in-tree backend (``backend-path``) is refused;
3. returns the build requirement names, so the caller checks each is locked
   (``requirements.backend_not_locked``) and installs those wheels into the build env;
4. runs ``build_wheel`` of that backend in a child process (``python -I -S``, whose
   ``sys.path`` is the build env and the standard library only: no build isolation
   download, no pip, no index), with an environment of its own, bounded in time
   (:data:`BUILD_TIMEOUT`), in bytes written (:data:`MAX_BUILD_FILE`, ``RLIMIT_FSIZE``)
   and in output kept (:data:`MAX_BUILD_OUTPUT`) (``requirements.build_failed``);
5. returns the one wheel it built, which the caller installs like a locked wheel (its
   name and version must be the locked ones).

Example::

    >>> source = unpack_sdist(checked_copy, req, folder)  # doctest: +SKIP
    >>> system = build_system(source, req)  # doctest: +SKIP
    >>> wheel = build_wheel(source, system, build_env, req, out)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from confide.errors import RequirementError
from confide.wire import APPLICATION_LENGTH, APPLICATION_PATTERN, LockedRequirement

#: Most entries in one source distribution, and most bytes it may unpack to.
MAX_SDIST_ENTRIES: Final = 20_000
MAX_SDIST_EXTRACTED: Final = 512 * 1024 * 1024
#: Largest pyproject.toml read.
MAX_PYPROJECT: Final = 256 * 1024
#: Most build requirements one source distribution may name.
MAX_BUILD_REQUIRES: Final = 32
#: Seconds one build may take.
BUILD_TIMEOUT: Final = 300.0
#: Largest file a build may write (its wheel, its output, any temporary file).
MAX_BUILD_FILE: Final = 512 * 1024 * 1024
#: Bytes of a failed build's output shown (its end).
MAX_BUILD_OUTPUT: Final = 2000
#: PEP 517's fallback when a source distribution names no backend.
LEGACY_BACKEND: Final = "setuptools.build_meta:__legacy__"
LEGACY_REQUIRES: Final = ("setuptools",)
#: A backend is ``module[.sub]`` or ``module[.sub]:object``: the app's module:attribute form.
_BACKEND: Final = re.compile(APPLICATION_PATTERN)
_REQUIREMENT_NAME: Final = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?)")
_CHILD: Final = Path(__file__).with_name("_pep517_child.py")


@dataclass(frozen=True, slots=True)
class BuildSystem:
    """What a source distribution needs to be built: its backend and its requirements."""

    backend: str
    #: The distribution names of ``requires`` (PEP 503 normalized by the caller).
    requires: tuple[str, ...]


def _refuse(code: str, message: str, hint: str | None = None) -> RequirementError:
    return RequirementError(code, message, hint=hint)


def unpack_sdist(archive: Path, req: LockedRequirement, folder: Path) -> Path:
    """Unpack ``archive`` (checked already) into ``folder``; its one top folder."""
    unsafe = "requirements.unsafe_sdist"
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError):
        raise _refuse(unsafe, f"the sdist locked as {req.pin} is not a .tar.gz") from None
    with tar:
        members = []
        total = 0
        try:
            for member in tar:
                members.append(member)
                if len(members) > MAX_SDIST_ENTRIES:
                    raise _refuse(
                        unsafe, f"the sdist of {req.pin} has more than {MAX_SDIST_ENTRIES} entries"
                    )
                if not (member.isfile() or member.isdir()):
                    raise _refuse(
                        unsafe,
                        f"the sdist of {req.pin} holds a link or special file: {member.name[:120]}",
                    )
                parts = PurePosixPath(member.name).parts
                if (
                    member.name.startswith("/")
                    or "\\" in member.name
                    or any(p in ("", ".", "..") for p in parts)
                ):
                    raise _refuse(
                        unsafe, f"the sdist of {req.pin} has the path {member.name[:120]!r}"
                    )
                total += member.size
                if total > MAX_SDIST_EXTRACTED:
                    raise _refuse(
                        unsafe,
                        f"the sdist of {req.pin} unpacks to more than {MAX_SDIST_EXTRACTED} bytes",
                    )
        except tarfile.TarError as exc:
            raise _refuse(unsafe, f"the sdist of {req.pin} is damaged: {exc}") from None
        tops = {PurePosixPath(m.name).parts[0] for m in members}
        if len(tops) != 1:
            raise _refuse(unsafe, f"the sdist of {req.pin} has {len(tops)} top folders, not one")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            tar.extractall(folder, members=members, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise _refuse(unsafe, f"the sdist of {req.pin} cannot be unpacked: {exc}") from None
    return folder / tops.pop()


def build_system(source: Path, req: LockedRequirement) -> BuildSystem:
    """The backend and build requirements ``source``'s pyproject.toml names (PEP 517/518)."""
    path = source / "pyproject.toml"
    if not path.is_file():
        return BuildSystem(LEGACY_BACKEND, LEGACY_REQUIRES)
    with path.open("rb") as f:
        data = f.read(MAX_PYPROJECT + 1)
    if len(data) > MAX_PYPROJECT:
        raise _refuse(
            "requirements.unsafe_sdist",
            f"the pyproject.toml of {req.pin} is larger than {MAX_PYPROJECT}",
        )
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _refuse(
            "requirements.unsafe_sdist", f"the pyproject.toml of {req.pin} is not TOML: {exc}"
        ) from None
    system = table.get("build-system")
    if system is None:
        return BuildSystem(LEGACY_BACKEND, LEGACY_REQUIRES)
    if not isinstance(system, dict):
        raise _refuse("requirements.unsafe_sdist", f"[build-system] of {req.pin} is not a table")
    if "backend-path" in system:
        raise _refuse(
            "requirements.backend_not_locked",
            f"the sdist of {req.pin} builds with an in-tree backend (backend-path), which is "
            "not a locked wheel",
        )
    backend = system.get("build-backend", LEGACY_BACKEND)
    requires = system.get("requires", list(LEGACY_REQUIRES))
    if (
        not isinstance(backend, str)
        or len(backend) > APPLICATION_LENGTH
        or not _BACKEND.fullmatch(backend if ":" in backend else f"{backend}:build_wheel")
    ):
        raise _refuse(
            "requirements.unsafe_sdist",
            f"the build-backend of {req.pin} is {str(backend)[:120]!r}, not module[:object]",
        )
    if (
        not isinstance(requires, list)
        or len(requires) > MAX_BUILD_REQUIRES
        or not all(isinstance(r, str) for r in requires)
    ):
        raise _refuse(
            "requirements.unsafe_sdist",
            f"the build requires of {req.pin} is not a list of at most {MAX_BUILD_REQUIRES} "
            "strings",
        )
    names = []
    for line in requires:
        match = _REQUIREMENT_NAME.match(line)
        if match is None:
            raise _refuse(
                "requirements.unsafe_sdist",
                f"the build requirement {line[:120]!r} of {req.pin} names no distribution",
            )
        names.append(match.group(1))
    return BuildSystem(backend, tuple(names))


def build_wheel(
    source: Path,
    system: BuildSystem,
    build_env: Path,
    req: LockedRequirement,
    out: Path,
    *,
    timeout: float = BUILD_TIMEOUT,
    max_file: int = MAX_BUILD_FILE,
) -> Path:
    """Build ``source`` with ``system``'s backend from ``build_env`` in a child process;
    the one wheel it wrote into ``out``. The child runs in a session of its own: on
    timeout the whole session (any process the build code started) is killed."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    home = out.parent / f"{out.name}.home"
    home.mkdir(mode=0o700, exist_ok=True)
    env = {
        "PATH": os.defpath,
        "HOME": str(home),
        "TMPDIR": str(home),
        "SOURCE_DATE_EPOCH": "315532800",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
    }
    argv = [
        sys.executable,
        "-I",
        "-S",
        str(_CHILD),
        str(build_env),
        system.backend,
        str(out),
        str(max_file),
    ]
    with log.open("wb") as sink:
        try:
            child = subprocess.Popen(  # noqa: S603 - our argv, no shell
                argv,
                cwd=source,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise _refuse(
                "requirements.build_failed", f"cannot run the build of {req.pin}: {exc}"
            ) from None
        try:
            returncode = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise _refuse(
                "requirements.build_failed",
                f"building {req.pin} from its sdist took more than {timeout:.0f} s",
            ) from None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - MAX_BUILD_OUTPUT))
        tail = f.read(MAX_BUILD_OUTPUT).decode("utf-8", errors="replace")
    if returncode != 0:
        last = [line for line in tail.splitlines() if line.strip()]
        raise _refuse(
            "requirements.build_failed",
            f"building {req.pin} from its sdist with {system.backend} failed (exit "
            f"{returncode}): {(last[-1] if last else 'no output')[:300]}",
            hint="the sdist's build fails in the enclave: lock a wheel instead, or fix it",
        )
    built = [p for p in out.iterdir() if p.name.endswith(".whl")]
    if len(built) != 1:
        raise _refuse(
            "requirements.build_failed",
            f"building {req.pin} wrote {len(built)} wheels, not one",
        )
    mode = os.lstat(built[0]).st_mode
    if not stat.S_ISREG(mode):
        raise _refuse("requirements.build_failed", f"the wheel built for {req.pin} is not a file")
    return built[0]
