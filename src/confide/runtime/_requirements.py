"""Installing the app's locked wheels into the enclave's private environment (ADR 0024).

The lock (``--requirements``) is measured: its SHA-256 is the launch manifest's
``requirements_sha256``. The wheels (``--wheels``, the operator's cache, named by
SHA-256) are not trusted: for each locked wheel, :func:`install_locked`

1. opens ``<wheels>/<ab>/<cdef...>`` (the locked hash's name; no symbolic link
   followed) and copies it into the code folder, in RAM (an in-enclave tmpfs under
   Gramine), hashing it as it reads, so what is checked is what is installed: the
   host cannot change the file between the check and the extraction;
2. refuses it unless its SHA-256 is the locked one (:class:`RequirementError`
   ``requirements.hash_mismatch``, with the observed and expected hashes);
3. refuses anything that is not a wheel of the locked distribution and version
   (``requirements.not_a_wheel``: a source distribution runs build code);
4. extracts it into ``<code folder>/site`` with every bound checked: the
   number and size of entries, paths that would leave the folder, symbolic links,
   two wheels writing one file (``requirements.unsafe_wheel``).

That folder is then put on ``sys.path`` after the app's own folder and before
the runtime environment's site folders, so the app imports the locked versions.

A version 2 lock may also name source distributions (``# sdist``) and build
backends' wheels (``# build-only``). Before anything is installed, an sdist whose
name the owner did not allow in the lock (``# allow-sdists:``) is refused
(``requirements.sdist_not_allowed``). After the wheels, each sdist is copied and
checked by its hash like a wheel (``requirements.hash_mismatch``, both hashes),
unpacked within bounds, and the distributions its ``[build-system] requires``
names must be locked (build-only, or a wheel of the app), else
``requirements.backend_not_locked``; those wheels, checked by hash, are
extracted into a build-only folder of its own, never on the app's
``sys.path``; :mod:`._pep517` builds the wheel in a child process from that
folder alone; the built wheel (not hashed in the lock: its inputs are) is
extracted into ``site`` like a locked wheel, with the same checks of its name,
version and paths.

Example::

    >>> wheels = Path("/var/lib/confide/wheels")
    >>> installed = install_locked(lock, wheels, site, scratch)  # doctest: +SKIP
    >>> [r.pin for r in installed]  # doctest: +SKIP
    ['numpy==2.1.3', 'pandas==2.2.3']
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Final

from confide.errors import RequirementError
from confide.wire import BUILD, SDIST, WHEEL, LockedRequirement, RequirementsLock, normalize_name

from ._pep517 import build_system, build_wheel, unpack_sdist

#: Largest wheel read (bytes).
MAX_WHEEL_SIZE: Final = 1024 * 1024 * 1024
#: Most bytes of wheels one lock may install (compressed).
MAX_WHEELS_TOTAL: Final = 4 * 1024 * 1024 * 1024
#: Most entries in one wheel.
MAX_WHEEL_ENTRIES: Final = 100_000
#: Largest file in a wheel, and most bytes one wheel may extract to.
MAX_ENTRY_SIZE: Final = 1024 * 1024 * 1024
MAX_EXTRACTED: Final = 4 * 1024 * 1024 * 1024
#: Longest path in a wheel.
MAX_PATH_LENGTH: Final = 1024
_BLOCK: Final = 1024 * 1024
_SCHEME_INSTALLED: Final = ("purelib", "platlib")
_SAFE_PART: Final = re.compile(r"[^\x00/\\]+")


def _refuse(code: str, message: str, hint: str | None = None) -> RequirementError:
    return RequirementError(code, message, hint=hint)


def wheel_path(wheels: Path, sha256: bytes) -> Path:
    """Where the operator's cache keeps the wheel with this SHA-256."""
    name = sha256.hex()
    return wheels / name[:2] / name[2:]


def _what(req: LockedRequirement) -> str:
    return "sdist" if req.kind == SDIST else "wheel"


def _copy_checked(source: Path, scratch: Path, req: LockedRequirement, budget: int) -> Path:
    """Copy ``source`` into ``scratch`` while hashing it; raise unless it is the locked file."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise _refuse(
            "requirements.missing",
            f"the {_what(req)} of {req.pin} (sha256 {req.sha256.hex()}) is not in the operator's "
            f"wheel cache {source.parent.parent}",
            hint="the operator fetches it before the launch; ask the operator",
        ) from None
    except OSError as exc:
        raise _refuse(
            "requirements.unreadable",
            f"cannot open the {_what(req)} of {req.pin} at {source}: {exc.strerror or exc}",
        ) from None
    target = scratch / f"{req.sha256.hex()}.{'tar.gz' if req.kind == SDIST else 'whl'}"
    digest = hashlib.sha256()
    size = 0
    limit = min(MAX_WHEEL_SIZE, budget)
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise _refuse("requirements.unreadable", f"{source} is not a regular file")
        out_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(out_fd, "wb") as out:
            while block := src.read(_BLOCK):
                size += len(block)
                if size > limit:
                    target.unlink(missing_ok=True)
                    raise _refuse(
                        "requirements.too_large",
                        f"the {_what(req)} of {req.pin} is larger than {limit} bytes (the per-file "
                        "bound, or what is left of the lock's total)",
                    )
                digest.update(block)
                out.write(block)
    observed = digest.digest()
    if observed != req.sha256:
        target.unlink(missing_ok=True)
        raise _refuse(
            "requirements.hash_mismatch",
            f"the {_what(req)} of {req.pin} is not the locked one: sha256 observed "
            f"{observed.hex()}, expected {req.sha256.hex()}; it was not installed",
            hint="the operator's wheel cache holds another file: ask the operator to remove it",
        )
    return target


def _dist_info(names: list[str], req: LockedRequirement) -> str:
    """The wheel's one ``.dist-info`` folder, which must be the locked name and version."""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    infos = [t for t in tops if t.endswith(".dist-info")]
    if len(infos) != 1 or f"{infos[0]}/WHEEL" not in names:
        raise _refuse(
            "requirements.not_a_wheel",
            f"the file locked as {req.pin} is not a wheel (no single .dist-info with a WHEEL "
            "file): source distributions run build code and are not installed",
        )
    stem = infos[0].removesuffix(".dist-info")
    name, _, version = stem.rpartition("-")
    if normalize_name(name) != req.name or version != req.version:
        raise _refuse(
            "requirements.not_a_wheel",
            f"the wheel locked as {req.pin} is {name}=={version}",
        )
    return infos[0]


def _destination(name: str, data_dir: str, site: Path) -> Path | None:
    """Where entry ``name`` goes under ``site`` (``None``: not installed), refusing any
    path that would leave it."""
    if len(name) > MAX_PATH_LENGTH or name.startswith("/") or "\\" in name or "\x00" in name:
        raise _refuse("requirements.unsafe_wheel", f"a wheel entry has the path {name[:120]!r}")
    parts = PurePosixPath(name).parts
    if any(p in ("", ".", "..") or not _SAFE_PART.fullmatch(p) for p in parts):
        raise _refuse("requirements.unsafe_wheel", f"a wheel entry has the path {name[:120]!r}")
    if parts[0] == data_dir:
        if len(parts) < 3 or parts[1] not in _SCHEME_INSTALLED:
            return None  # scripts, headers, data: the enclave runs no installed script
        parts = parts[2:]
    return site.joinpath(*parts)


def _extract(wheel: Path, req: LockedRequirement, site: Path) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError):
        raise _refuse(
            "requirements.not_a_wheel",
            f"the file locked as {req.pin} is not a wheel (not a zip archive): source "
            "distributions run build code and are not installed",
        ) from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_WHEEL_ENTRIES:
            raise _refuse(
                "requirements.unsafe_wheel",
                f"the wheel of {req.pin} has {len(infos)} entries, more than {MAX_WHEEL_ENTRIES}",
            )
        names = [i.filename for i in infos]
        info_dir = _dist_info(names, req)
        data_dir = info_dir.removesuffix(".dist-info") + ".data"
        total = 0
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(
                    "requirements.unsafe_wheel",
                    f"the wheel of {req.pin} holds a symbolic link: {info.filename[:120]}",
                )
            target = _destination(info.filename, data_dir, site)
            if target is None:
                continue
            folder = target if info.is_dir() else target.parent
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError:  # a file of this wheel or another stands where a folder goes
                raise _refuse(
                    "requirements.unsafe_wheel",
                    f"the wheel of {req.pin} puts {info.filename[:120]} under a path that "
                    "is a file, not a folder",
                ) from None
            if info.is_dir():
                continue
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                raise _refuse(
                    "requirements.unsafe_wheel",
                    f"the wheel of {req.pin} writes {info.filename[:120]}, which another "
                    "locked wheel wrote",
                ) from None
            written = 0
            with archive.open(info) as src, os.fdopen(fd, "wb") as out:
                while block := src.read(_BLOCK):
                    written += len(block)
                    total += len(block)
                    if written > MAX_ENTRY_SIZE or total > MAX_EXTRACTED:
                        raise _refuse(
                            "requirements.unsafe_wheel",
                            f"the wheel of {req.pin} extracts to more than its bound "
                            f"({MAX_ENTRY_SIZE} bytes a file, {MAX_EXTRACTED} in all)",
                        )
                    out.write(block)


def _check_sdists_allowed(lock: RequirementsLock) -> None:
    for req in lock.of_kind(SDIST):
        if req.name not in lock.allow_sdists:
            raise _refuse(
                "requirements.sdist_not_allowed",
                f"the lock names the sdist {req.pin}, which the owner did not allow to be built "
                f"in the enclave (allowed: {', '.join(lock.allow_sdists) or 'none'}); nothing "
                "was installed",
                hint=f'add allow_sdists = ["{req.name}"] to the project file and deploy again',
            )


def _install_checked(
    req: LockedRequirement, wheels: Path, site: Path, scratch: Path, budget: int
) -> int:
    """Copy, check and extract one locked wheel into ``site``; the bytes it took."""
    copy = _copy_checked(wheel_path(wheels, req.sha256), scratch, req, budget)
    try:
        size = copy.stat().st_size
        _extract(copy, req, site)
    finally:
        copy.unlink(missing_ok=True)
    return size


def _build_sdist(
    req: LockedRequirement,
    lock: RequirementsLock,
    wheels: Path,
    site: Path,
    scratch: Path,
    budget: int,
) -> int:
    """Check, build and install one allowed sdist (see the module's description)."""
    folder = scratch / f"build-{req.sha256.hex()[:16]}"
    copy = _copy_checked(wheel_path(wheels, req.sha256), scratch, req, budget)
    try:
        size = copy.stat().st_size
        source = unpack_sdist(copy, req, folder / "source")
    finally:
        copy.unlink(missing_ok=True)
    system = build_system(source, req)
    backends = {r.name: r for r in lock.requirements if r.kind in (BUILD, WHEEL)}
    needed = []
    for name in system.requires:
        found = backends.get(normalize_name(name))
        if found is None:
            raise _refuse(
                "requirements.backend_not_locked",
                f"the sdist {req.pin} builds with {system.backend}, whose requirement "
                f"{normalize_name(name)} is not locked; it was not built",
                hint="deploy again: confide deploy locks the build backend of an allowed sdist",
            )
        needed.append(found)
    build_env = folder / "build-env"
    for backend in needed:
        size += _install_checked(backend, wheels, build_env, scratch, budget - size)
    built = build_wheel(source, system, build_env, req, folder / "dist")
    built_req = LockedRequirement(req.name, req.version, req.sha256, WHEEL)
    if built.stat().st_size > MAX_WHEEL_SIZE:
        raise _refuse("requirements.too_large", f"the wheel built for {req.pin} is too large")
    _extract(built, built_req, site)
    return size


def install_locked(
    lock: RequirementsLock,
    wheels: Path,
    site: Path,
    scratch: Path,
    *,
    on_installed: Callable[[LockedRequirement], None] | None = None,
) -> tuple[LockedRequirement, ...]:
    """Check and install every wheel of ``lock`` from ``wheels`` into ``site``, then build
    and install its allowed sdists; what was installed (build-only wheels are not).

    ``scratch`` is a private folder in RAM for the checked copies (each removed once
    extracted). Raises :class:`RequirementError` on the first wheel refused; ``site``
    then holds nothing the caller should import (the runtime stops).
    """
    _check_sdists_allowed(lock)
    site.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    budget = MAX_WHEELS_TOTAL
    installed = []
    for req in lock.of_kind(WHEEL):
        budget -= _install_checked(req, wheels, site, scratch, budget)
        installed.append(req)
        if on_installed is not None:
            on_installed(req)
    for req in lock.of_kind(SDIST):
        budget -= _build_sdist(req, lock, wheels, site, scratch, budget)
        installed.append(req)
        if on_installed is not None:
            on_installed(req)
    return tuple(installed)
