"""The code folder: where the decrypted app, its secrets and its home live, in RAM.

Layout of the code folder (mode 0700, under /dev/shm by default)::

    app/                    the decrypted code; the app is imported from here
    private/                0700
        secrets.json        app_secrets            ($SECRETS_PATH)
        sealed_secrets.json opened app_sealed_secrets ($SEALED_SECRETS_PATH)
    home/                   a writable $HOME for the app

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from confide.crypto import PackageKey, decrypt_package, extract_archive, write_archive
from confide.errors import UsageError

from ._settings import CodeSource

__all__ = ["SECRET_ENV", "Workspace", "load_app", "remove_orphans"]

#: Environment variables the app reads (Cosmian Enclave's names).
SECRET_ENV: Final = ("SECRETS_PATH", "SEALED_SECRETS_PATH", "HOME")
#: RAM-backed (tmpfs) on Linux; inside Gramine, mount it as an in-enclave tmpfs.
_RAM_FOLDER: Final = Path("/dev/shm")  # noqa: S108  (a private 0700 folder is made in it)
_PRIVATE_MODE: Final = 0o700
#: Fresh code folders are named ``confide-code-<pid>-<random>``.
_FRESH_PREFIX: Final = "confide-code-"
_FRESH_NAME: Final = re.compile(r"confide-code-([0-9]{1,10})-[A-Za-z0-9_]+")


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
    def private_dir(self) -> Path:
        return self.root / "private"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @classmethod
    def create(cls, code_dir: Path | None, *, parent: Path | None = None) -> Workspace:
        """Create ``code_dir`` (which must not exist), or a fresh folder in ``parent``.

        ``parent`` defaults to /dev/shm (else the temp folder). The fresh folder is
        named after this process (``confide-code-<pid>-...``), so that a later
        runtime can remove it if this one dies without cleaning up
        (:func:`remove_orphans`).
        """
        try:
            if code_dir is not None:
                code_dir.mkdir(mode=_PRIVATE_MODE)
                root = code_dir.resolve()
            else:
                if parent is None and _RAM_FOLDER.is_dir():
                    parent = _RAM_FOLDER
                prefix = f"{_FRESH_PREFIX}{os.getpid()}-"
                root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            os.chmod(root, _PRIVATE_MODE)
        except OSError as exc:
            raise UsageError(
                f"cannot create the code folder {code_dir or _RAM_FOLDER}: {exc.strerror or exc}"
            ) from None
        return cls(root=root)

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
        return env


def remove_orphans(parent: Path | None = None) -> list[Path]:
    """Remove the code folders of runtimes of this user that died without removing them.

    A runtime killed with SIGKILL (or out of memory) leaves its decrypted code in
    RAM. A folder is an orphan when its name is ``confide-code-<pid>-...``, it is
    a directory (not a link) owned by this user, and no process ``<pid>`` runs;
    a folder of a live process, or of another user, is never touched. Returns
    the folders removed. ``parent`` defaults to where :meth:`Workspace.create` puts them.
    """
    if parent is None:
        parent = _RAM_FOLDER if _RAM_FOLDER.is_dir() else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _FRESH_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        if _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
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
    except ImportError as exc:
        raise UsageError(f"cannot import the app module {module_name!r}: {exc}") from None
    origin = getattr(module, "__file__", None)
    if origin is None or not Path(origin).resolve().is_relative_to(app_dir.resolve()):
        raise UsageError(
            f"the app module {module_name!r} resolves to {origin}, outside the code folder: "
            "an installed module shadows it; rename the app's module"
        )
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"the app module {module_name!r} has no attribute {attribute!r}") from None
