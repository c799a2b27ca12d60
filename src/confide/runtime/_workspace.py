"""The code folder: where the decrypted app, its secrets and its home live, in RAM.

Every code folder is made by the runtime itself in :data:`CODE_ROOT`
(``/dev/shm``, RAM-backed; inside Gramine, an in-enclave tmpfs) and named
``confide-code-<app id>-<pid>-<random>``: the host does not choose where
plaintext goes (no option, no environment variable; ADR 0011), and the
operator can find and remove the folder of a runtime that ended without
removing it (:func:`remove_orphans`). Layout (mode 0700)::

    app/                    the decrypted code; the app is imported from here
    private/                0700
        secrets.json        app_secrets            ($SECRETS_PATH)
        sealed_secrets.json opened app_sealed_secrets, without the code key
                            ($SEALED_SECRETS_PATH)
    home/                   a writable $HOME for the app
    tmp/                    the app's temporary files ($TMPDIR): in RAM, not on the
                            host's disk
    site/                   the app's locked wheels, each checked by its hash, installed
                            (ADR 0024); on sys.path after app/
    wheels/                 the checked copies of the wheels while they are installed

The paths and variable names are those of Cosmian Enclave, so apps written
for it find their secrets. Nothing here is ever in the state folder.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confide.crypto import PackageKey, decrypt_package, extract_archive, write_archive
from confide.errors import AppLoadError, UsageError

from ._settings import CodeSource

#: Environment variables the app reads (Cosmian Enclave's names).
SECRET_ENV: Final = ("SECRETS_PATH", "SEALED_SECRETS_PATH", "HOME", "TMPDIR")
#: Where every code folder is made: RAM-backed (tmpfs) on Linux; inside Gramine, mount it
#: as an in-enclave tmpfs. Fixed here, never taken from the host (ADR 0011).
CODE_ROOT: Final = Path("/dev/shm")  # noqa: S108  (a private 0700 folder is made in it)
_PRIVATE_MODE: Final = 0o700
#: Code folders are named ``confide-code-<app id>-<pid>-<random>``.
_FRESH_PREFIX: Final = "confide-code-"
_FRESH_NAME: Final = re.compile(
    r"confide-code-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"-([0-9]{1,10})-[A-Za-z0-9_]+"
)


class _HashingReader:
    """Reads through to ``src`` and hashes every byte read."""

    def __init__(self, src: io.BufferedReader) -> None:
        self._src = src
        self._hash = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._src.read(size)
        self._hash.update(data)
        return data

    def drain_digest(self) -> bytes:
        while self.read(1024 * 1024):
            pass
        return self._hash.digest()


@dataclass(frozen=True, slots=True)
class Workspace:
    """The runtime's private RAM folder for one launch; :meth:`remove` at exit."""

    root: Path

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

    @property
    def site_dir(self) -> Path:
        """The app's locked wheels, installed (ADR 0024)."""
        return self.root / "site"

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @classmethod
    def create(cls, app_id: uuid.UUID, *, root: Path = CODE_ROOT) -> Workspace:
        """Create a fresh private folder for ``app_id`` in ``root`` (:data:`CODE_ROOT`).

        The folder is named after the app and this process
        (``confide-code-<app id>-<pid>-...``), so that a later runtime, or the
        operator, can remove it if this one dies without cleaning up
        (:func:`remove_orphans`). ``root`` is for tests: the runtime never
        passes one. A missing ``root`` is an error, never a reason to use disk.
        """
        if not root.is_dir():
            raise UsageError(
                f"the RAM folder {root} is missing: the runtime keeps decrypted code only there",
                hint="run on Linux with /dev/shm mounted (tmpfs); inside Gramine, mount it as "
                "an in-enclave tmpfs",
            )
        try:
            prefix = f"{_FRESH_PREFIX}{app_id}-{os.getpid()}-"
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
            os.chmod(path, _PRIVATE_MODE)
        except OSError as exc:
            raise UsageError(
                f"cannot create the code folder in {root}: {exc.strerror or exc}"
            ) from None
        return cls(root=path)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def install_code(self, source: CodeSource, key: PackageKey | None) -> None:
        """Put the measured code into :attr:`app_dir`; nothing is left there on failure.

        Raises :class:`~confide.errors.CryptoError` if the package does not open
        with ``key``, :class:`UsageError` if the code is no longer what was measured.
        """
        if source.plaintext:
            buffer = io.BytesIO()
            write_archive(source.path, buffer)
            if hashlib.sha256(buffer.getvalue()).digest() != source.digest:
                raise UsageError(
                    f"--app-dir {source.path} changed since launch: it is no longer the "
                    "measured code; relaunch"
                )
            buffer.seek(0)
            extract_archive(buffer, self.app_dir)
            return
        if key is None:
            raise UsageError("an encrypted package needs its key")
        try:
            with source.path.open("rb") as f:
                reader = _HashingReader(f)
                decrypt_package(reader, self.app_dir, key)
                digest = reader.drain_digest()
        except OSError as exc:
            raise UsageError(f"cannot read the package {source.path}: {exc.strerror}") from None
        if digest != source.digest:
            # Decrypted, but not the package measured at launch (swapped meanwhile).
            shutil.rmtree(self.app_dir, ignore_errors=True)
            raise UsageError(
                f"the package {source.path} changed since launch: it is no longer the "
                "measured code; relaunch"
            )

    def uninstall_code(self) -> None:
        shutil.rmtree(self.app_dir, ignore_errors=True)

    def write_secrets(
        self, app_secrets: Mapping[str, Any] | None, sealed_secrets: Mapping[str, Any] | None
    ) -> dict[str, str]:
        """Write the secrets files (0600, in a 0700 folder); return the app's environment."""
        env: dict[str, str] = {}
        try:
            self.private_dir.mkdir(mode=_PRIVATE_MODE, exist_ok=True)
            self.home.mkdir(mode=_PRIVATE_MODE, exist_ok=True)
            self.tmp.mkdir(mode=_PRIVATE_MODE, exist_ok=True)
            for name, variable, value in (
                ("secrets.json", "SECRETS_PATH", app_secrets),
                ("sealed_secrets.json", "SEALED_SECRETS_PATH", sealed_secrets),
            ):
                if value is None:
                    continue
                path = self.private_dir / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(value, f)
                env[variable] = str(path)
        except OSError as exc:
            raise UsageError(f"cannot write the app's secrets: {exc.strerror or exc}") from None
        env["HOME"] = str(self.home)
        env["TMPDIR"] = str(self.tmp)
        return env


def code_folder_owner(name: str) -> tuple[uuid.UUID, int] | None:
    """The app id and the runtime's pid a code folder's name carries, or ``None``."""
    match = _FRESH_NAME.fullmatch(name)
    if match is None:
        return None
    return uuid.UUID(match.group(1)), int(match.group(2))


def remove_orphans(
    root: Path = CODE_ROOT,
    *,
    app_id: uuid.UUID | None = None,
    running: Callable[[uuid.UUID, int], bool] | None = None,
) -> list[Path]:
    """Remove the code folders of runtimes of this user that no longer run.

    A runtime killed with SIGKILL (or out of memory) leaves its decrypted code in
    RAM. A folder is an orphan when its name is ``confide-code-<app id>-<pid>-...``,
    it is a directory (not a link) owned by this user, and ``running(app id, pid)``
    is false: by default, when no process ``<pid>`` exists (the operator passes a
    stricter check: that ``<pid>`` is the runtime of that app). A folder of a live
    runtime, or of another user, is never touched. With ``app_id``, only that
    app's folders are looked at. Returns the folders removed.
    """
    is_running = running if running is not None else _pid_runs
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        owner = code_folder_owner(entry.name)
        if owner is None or (app_id is not None and owner[0] != app_id):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if is_running(*owner):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _pid_runs(app_id: uuid.UUID, pid: int) -> bool:
    """Whether process ``pid`` exists (what a runtime can tell of another runtime)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def load_app(app_dir: Path, application: str) -> object:
    """Import ``module:attribute`` from ``app_dir`` (and nowhere else)."""
    module_name, _, attribute = application.partition(":")
    root = str(app_dir)
    sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise AppLoadError(
                f"the code has no module {module_name!r} (python_application {application!r})",
                hint="check python_application",
            ) from None
        raise AppLoadError(
            f"the app imports the module {missing!r}, which is not installed in the enclave",
            hint="add it to the requirements",
        ) from None
    except ImportError as exc:
        raise AppLoadError(
            f"cannot import the app module {module_name!r}: {exc}",
            hint="check the app's imports and its requirements",
        ) from None
    origin = getattr(module, "__file__", None)
    if origin is None or not Path(origin).resolve().is_relative_to(app_dir.resolve()):
        raise UsageError(
            f"the app module {module_name!r} resolves to {origin}, outside the code folder: "
            "an installed module shadows it; rename the app's module"
        )
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise AppLoadError(
            f"the app module {module_name!r} has no attribute {attribute!r}",
            hint="check python_application",
        ) from None
