"""The runtime environment: every file the runtime can run, hashed (ADR 0017).

What is in it:

* the interpreter executable, and ``libpython`` when Python is built shared;
* the standard library (``sysconfig``'s ``stdlib`` and ``platstdlib`` of the base
  interpreter, with ``lib-dynload``), except ``site-packages``/``dist-packages``,
  ``__pycache__``, test folders (``test``, ``tests``, ``idle_test``), the GUI and
  installer packages the runtime never imports (``idlelib``, ``tkinter``,
  ``turtledemo``, ``ensurepip``) and the build configuration (``config-*``);
* every file that each needed distribution's ``RECORD`` lists under its site folder,
  except byte code (``*.pyc``, ``__pycache__``) and installer bookkeeping
  (``RECORD``, ``INSTALLER``, ``REQUESTED``, ``direct_url.json``, ``__editable__*``)
  that records where or how it was installed rather than what runs. The needed
  distributions are the closure of ``confide``'s requirements and the app's declared
  requirement names, markers evaluated against this interpreter, extras not followed;
* Confide itself, from its package folder (editable or not): its ``.py`` files and
  packaged data (``.der``, ``py.typed``), without ``confide/operator/``, which the
  runtime never imports (a test holds it to that).

Each file has a location-independent label (``interpreter/<name>``,
``stdlib/<path>``, ``site/<path>``), so two installations of the same Python and the
same distributions give the same digest wherever they are::

    digest = SHA-256("confide/environment/v1" || 0x00 ||
                     for each file, sorted by label: label || 0x00 || SHA-256(file) || 0x0a)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import time_ns
from typing import Final

from confide.errors import UsageError

from ._hashcache import HashCache
from ._markers import marker_holds, normalize, requirement_name

_DOMAIN: Final = b"confide/environment/v1\x00"
#: Most distributions in the closure, and most files in an environment.
MAX_DISTRIBUTIONS: Final = 1000
MAX_FILES: Final = 200_000
#: Largest METADATA or RECORD file read.
MAX_METADATA_FILE: Final = 16 * 1024 * 1024
#: Standard-library folders the runtime never imports (top level), and test folders (anywhere).
STDLIB_LEFT_OUT: Final = frozenset(
    {"site-packages", "dist-packages", "idlelib", "tkinter", "turtledemo", "ensurepip"}
)
TEST_FOLDERS: Final = frozenset({"test", "tests", "idle_test", "__pycache__"})
#: Installer bookkeeping in a distribution's RECORD: where and how it was installed, not
#: what runs. RECORD itself differs between two installations of one wheel (byte code,
#: REQUESTED): it is read (an allowed file under Gramine), not measured.
BOOKKEEPING: Final = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})
#: Confide's own files that run (the rule of the former runtime code hash, ADR 0005).
CONFIDE_SUFFIXES: Final = (".py", ".der", ".typed")
#: Top-level subpackages of confide that never run in the enclave.
NOT_IN_ENCLAVE: Final = ("operator",)


@dataclass(frozen=True, slots=True)
class TrustedFile:
    """One measured file: where it is here, its SHA-256, and its location-independent label."""

    path: Path
    sha256: bytes
    label: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeEnvironment:
    """The files the runtime can run, hashed, and the digest that stands for all of them."""

    files: tuple[TrustedFile, ...]
    #: The interpreter executable (symlinks resolved).
    interpreter: Path
    #: SHA-256 over every file's label and hash (see the module docstring).
    digest: bytes
    #: Folders Python imports from, in order: the standard library, then site folders.
    python_path: tuple[Path, ...]
    #: ``name==version`` of every measured distribution, sorted.
    distributions: tuple[str, ...]
    #: The RECORD files read to list the distributions' files: read, not measured (data
    #: the measurement is computed from; a changed one changes the digest or nothing).
    listings: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class EnvironmentRoots:
    """Where an environment's files are: :meth:`current` for the running interpreter."""

    interpreter: Path
    #: Shared libraries the interpreter loads (``libpython``), may be empty.
    libraries: tuple[Path, ...]
    #: Standard-library folders (``lib-dynload`` included when it is outside them).
    stdlib: tuple[Path, ...]
    #: Site folders searched for distributions, in import order.
    site: tuple[Path, ...]
    #: Confide's package folder, measured from the folder itself; ``None``: not measured.
    confide_package: Path | None

    @classmethod
    def current(cls) -> EnvironmentRoots:
        interpreter = Path(sys.executable).resolve()
        libraries: list[Path] = []
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):
            libdir = sysconfig.get_config_var("LIBDIR")
            name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
            if libdir and name and (Path(libdir) / name).is_file():
                libraries.append((Path(libdir) / name).resolve())
        base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
        stdlib: list[Path] = []
        for key in ("stdlib", "platstdlib"):
            folder = Path(sysconfig.get_path(key, vars=base)).resolve()
            if folder.is_dir() and folder not in stdlib:
                stdlib.append(folder)
        dynload = sysconfig.get_config_var("DESTSHARED")
        if dynload and Path(dynload).is_dir():
            folder = Path(dynload).resolve()
            if not any(folder.is_relative_to(s) for s in stdlib):
                stdlib.append(folder)
        # Where imports come from: the path's folders beyond the standard library, in order
        # (a process launched with PYTHONPATH and no site, as under Gramine, finds the same).
        sites = [
            Path(p).resolve()
            for p in sys.path
            if p and Path(p).is_dir() and Path(p).resolve() not in stdlib
            and not any(Path(p).resolve() == s / "lib-dynload" for s in stdlib)
        ]  # fmt: skip
        package = Path(__file__).resolve().parents[1]
        return cls(
            interpreter=interpreter,
            libraries=tuple(libraries),
            stdlib=tuple(stdlib),
            site=tuple(dict.fromkeys(sites)),
            confide_package=package,
        )


def default_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/confide`` (``~/.cache/confide`` when it is not set or not
    absolute, as the XDG specification says); ``None`` when there is no home folder
    either (then nothing is cached)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base or not os.path.isabs(base):
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):
            return None
    return Path(base) / "confide"


def _stdlib_files(root: Path) -> Iterator[tuple[str, str]]:
    top = str(root)
    for folder, dirs, files in os.walk(top):
        at_top = folder == top
        dirs[:] = sorted(
            d
            for d in dirs
            if d not in TEST_FOLDERS
            and not (at_top and (d in STDLIB_LEFT_OUT or d.startswith("config-")))
        )
        rel = "" if at_top else os.path.relpath(folder, top).replace(os.sep, "/") + "/"
        for name in sorted(files):
            if not name.endswith((".pyc", ".pyo")):
                yield rel + name, os.path.join(folder, name)


def _confide_files(package: Path, relative: str = "") -> Iterator[tuple[str, str]]:
    for child in sorted(package.iterdir(), key=lambda p: p.name):
        rel = f"{relative}{child.name}"
        if child.is_dir():
            if child.name != "__pycache__" and not (relative == "" and rel in NOT_IN_ENCLAVE):
                yield from _confide_files(child, rel + "/")
        elif child.suffix in CONFIDE_SUFFIXES:
            yield rel, str(child)


def _measured_record_entry(entry: str) -> bool:
    parts = entry.split("/")
    if not entry or entry.startswith("/") or ".." in parts or "__pycache__" in parts:
        return False
    if entry.endswith((".pyc", ".pyo")) or parts[-1].startswith("__editable__"):
        return False
    return not (len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in BOOKKEEPING)


@dataclass(frozen=True, slots=True)
class _Distribution:
    """An installed distribution, as its ``.dist-info`` folder shows it."""

    name: str
    version: str
    site: Path
    info: str

    def _read(self, name: str) -> str:
        path = self.site / self.info / name
        try:
            with path.open("rb") as f:
                data = f.read(MAX_METADATA_FILE + 1)
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(data) > MAX_METADATA_FILE:
            raise UsageError(f"{path} is larger than {MAX_METADATA_FILE} bytes")
        return data.decode("utf-8", "replace")

    def requires(self) -> list[str]:
        """The ``Requires-Dist`` headers of its METADATA (the headers end at a blank line)."""
        found = []
        for line in self._read("METADATA").splitlines():
            if not line.strip():
                break
            if line.lower().startswith("requires-dist:"):
                found.append(line.split(":", 1)[1].strip())
        return found

    def files(self) -> list[str]:
        """The paths its RECORD lists (relative to its site folder, ``/``-separated)."""
        rows = csv.reader(io.StringIO(self._read("RECORD")))
        return [row[0] for row in rows if row]


def _closure(installed: dict[str, _Distribution], wanted: Iterable[str]) -> list[_Distribution]:
    found: dict[str, _Distribution] = {}
    queue = [name for name, marker in map(requirement_name, wanted) if marker_holds(marker)]
    while queue:
        name = queue.pop()
        if name in found:
            continue
        dist = installed.get(name)
        if dist is None:
            raise UsageError(
                f"the runtime needs the distribution {name!r}, which is not installed here",
                hint="install it, or remove it from the app's declared requirements",
            )
        found[name] = dist
        if len(found) > MAX_DISTRIBUTIONS:
            raise UsageError(f"more than {MAX_DISTRIBUTIONS} distributions to measure")
        for requirement in dist.requires():
            dep, marker = requirement_name(requirement)
            if marker_holds(marker) and dep not in found:
                queue.append(dep)
    return [found[k] for k in sorted(found)]


def _installed(site_dirs: Sequence[Path]) -> dict[str, _Distribution]:
    installed: dict[str, _Distribution] = {}
    for folder in site_dirs:
        for entry in sorted(os.listdir(folder)):
            if entry.endswith(".dist-info"):
                name, _, version = entry[: -len(".dist-info")].partition("-")
                # The first on the path wins, as it does for imports.
                installed.setdefault(normalize(name), _Distribution(name, version, folder, entry))
    return installed


def scan_environment(
    roots: EnvironmentRoots, requirements: Sequence[str], cache: HashCache
) -> RuntimeEnvironment:
    """Hash the environment at ``roots`` needed by ``requirements`` (plus Confide's own
    package when ``roots.confide_package`` is set)."""
    labelled: dict[str, str] = {}

    def add(label: str, path: str) -> None:
        if len(labelled) >= MAX_FILES:
            raise UsageError(f"more than {MAX_FILES} files in the runtime environment")
        labelled.setdefault(label, path)

    add(f"interpreter/{roots.interpreter.name}", str(roots.interpreter))
    for library in roots.libraries:
        add(f"interpreter/{library.name}", str(library))
    for root in roots.stdlib:
        for rel, path in _stdlib_files(root):
            add(f"stdlib/{rel}", path)
    wanted = list(requirements)
    installed = _installed(roots.site)
    if roots.confide_package is not None:
        confide = installed.pop("confide", None)
        if confide is None:
            # Without its metadata, Confide's requirements (and so most of what runs)
            # would silently go unmeasured.
            raise UsageError(
                "Confide's distribution metadata (confide-*.dist-info) is not on the path: "
                "its dependencies cannot be measured",
                hint="install Confide with pip (pip install -e . in a checkout)",
            )
        wanted += confide.requires()
        add(f"site/{confide.info}/METADATA", str(confide.site / confide.info / "METADATA"))
        for rel, path in _confide_files(roots.confide_package):
            add(f"site/confide/{rel}", path)
    dists = _closure(installed, wanted)
    listings = tuple(d.site / d.info / "RECORD" for d in dists)
    for dist in dists:
        for entry in dist.files():
            if _measured_record_entry(entry):
                add(f"site/{entry}", os.path.join(dist.site, entry))
    files = []
    for label, path in sorted(labelled.items()):
        try:
            digest = cache.sha256(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue  # listed but absent: nothing there can run
        except OSError as exc:
            raise UsageError(f"cannot hash {path}: {exc.strerror or exc}") from None
        files.append(TrustedFile(path=Path(path), sha256=digest, label=label))
    cache.save()
    total = hashlib.sha256(_DOMAIN)
    for f in files:
        total.update(f.label.encode() + b"\x00" + f.sha256 + b"\n")
    sites_used = {d.site for d in dists}
    python_path = []
    for root in roots.stdlib:
        python_path += [root, *([root / "lib-dynload"] if (root / "lib-dynload").is_dir() else [])]
    python_path += [s for s in roots.site if s in sites_used]
    if roots.confide_package is not None:
        parent = roots.confide_package.parent
        if parent not in python_path:
            python_path.append(parent)
    return RuntimeEnvironment(
        files=tuple(files),
        interpreter=roots.interpreter,
        digest=total.digest(),
        python_path=tuple(python_path),
        distributions=tuple(sorted(f"{d.name}=={d.version}" for d in dists)),
        listings=listings,
    )


def runtime_environment(
    requirements: Sequence[str] = (),
    *,
    cache_dir: Path | None = None,
    confide_package: Path | None = None,
) -> RuntimeEnvironment:
    """The running interpreter's runtime environment for Confide and ``requirements``
    (the app's declared requirement names), hashed with the cache in ``cache_dir``
    (default :func:`default_cache_dir`). ``confide_package`` measures that Confide
    package folder instead of the running one (a copy the runtime will import)."""
    roots = EnvironmentRoots.current()
    if confide_package is not None:
        if not confide_package.is_dir():
            raise UsageError(
                f"cannot measure the Confide package at {confide_package}: not a folder"
            )
        roots = dataclasses.replace(roots, confide_package=confide_package.resolve())
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    # One cache file per interpreter and prefix (a virtual environment): two of them do not
    # evict each other's entries, and every process of one shares it whatever its path.
    where = hashlib.sha256(f"{roots.interpreter}\x00{sys.prefix}".encode())
    name = f"hashes-{where.hexdigest()[:16]}.json"
    cache = HashCache(folder / name if folder is not None else None, now_ns=time_ns())
    return scan_environment(roots, requirements, cache)
