"""The owner's stored credentials: which operator, and the API token for it.

``confide login`` checks a token with the operator, then stores it in
``$XDG_CONFIG_HOME/confide/credentials.json`` (``~/.config/confide`` by
default): the folder mode 0700, the file 0600, written atomically (a new
file renamed over the old one, so a crash never leaves half a token).
Reading refuses a file that others could read, or that is not the user's.

Format, version 1::

    {"version": 1, "url": "https://operator.example", "token": "<API token>"}

Example::

    >>> import os
    >>> store = CredentialsStore(credentials_path(os.environ))  # doctest: +SKIP
    >>> store.save(Credentials("https://operator.example", token))  # doctest: +SKIP
    >>> store.load().url  # doctest: +SKIP
    'https://operator.example'
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from confide import strictjson
from confide.errors import JsonError, UsageError
from confide.runtime import write_atomically

from ._api import normalize_url

CREDENTIALS_FILE: Final = "credentials.json"
CREDENTIALS_VERSION: Final = 1
#: Largest credentials file read.
MAX_CREDENTIALS_SIZE: Final = 64 * 1024
#: Longest token accepted (the operator's are far shorter).
MAX_TOKEN_LENGTH: Final = 4096
_LOGIN_AGAIN: Final = "remove the file and run `confide login` again"


@dataclass(frozen=True, slots=True)
class Credentials:
    """An operator's API URL and a bearer token for it (never shown in ``repr``)."""

    url: str
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalize_url(self.url))
        token = self.token
        if not 0 < len(token) <= MAX_TOKEN_LENGTH or not all("!" <= c <= "~" for c in token):
            raise UsageError(
                f"a token is 1 to {MAX_TOKEN_LENGTH} printable ASCII characters with no spaces"
            )


def config_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/confide``, or ``~/.config/confide`` (a relative XDG path is ignored)."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if base and Path(base).is_absolute():
        return Path(base) / "confide"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / "confide"


def credentials_path(environ: Mapping[str, str]) -> Path:
    return config_dir(environ) / CREDENTIALS_FILE


class CredentialsStore:
    """Load, save and delete the credentials file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Credentials | None:
        """The stored credentials, or ``None`` when there is no file."""
        raw = read_private(
            self.path, "the credentials file", MAX_CREDENTIALS_SIZE, remedy=_LOGIN_AGAIN
        )
        return None if raw is None else self._parse(raw)

    def save(self, credentials: Credentials) -> None:
        """Write atomically: folder 0700, file 0600."""
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if folder.stat().st_mode & 0o077:
                folder.chmod(0o700)
            doc = {
                "version": CREDENTIALS_VERSION,
                "url": credentials.url,
                "token": credentials.token,
            }
            data = json.dumps(doc, indent=2).encode() + b"\n"
            write_atomically(self.path, data)
            _sync_folder(folder)
        except OSError as exc:
            raise UsageError(
                f"cannot write the credentials {self.path}: {exc.strerror or exc}"
            ) from None

    def delete(self) -> bool:
        """Remove the file; ``False`` if there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise UsageError(
                f"cannot remove the credentials {self.path}: {exc.strerror or exc}"
            ) from None
        return True

    def _parse(self, raw: bytes) -> Credentials:
        try:
            doc = strictjson.loads(raw, what="it", max_bytes=MAX_CREDENTIALS_SIZE)
        except JsonError:
            doc = None
        if not isinstance(doc, dict) or set(doc) != {"version", "url", "token"}:
            raise UsageError(
                f"the credentials {self.path} are not a Confide credentials file",
                hint="run `confide login` again",
            )
        if doc["version"] != CREDENTIALS_VERSION:
            raise UsageError(
                f"the credentials {self.path} have version {doc['version']!r}; "
                f"this Confide reads version {CREDENTIALS_VERSION}",
                hint="run `confide login` again",
            )
        if not isinstance(doc["url"], str) or not isinstance(doc["token"], str):
            raise UsageError(f"the credentials {self.path} are malformed")
        try:
            return Credentials(doc["url"], doc["token"])
        except UsageError as exc:
            raise UsageError(f"the credentials {self.path} are malformed: {exc}") from None


def read_private(path: Path, what: str, limit: int, *, remedy: str = "") -> bytes | None:
    """The bytes of a regular file (not a link) of this user that only this user can read;
    ``None`` when there is none. ``remedy`` (what to do) ends the hints."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror or exc}",
            hint="it must be a regular file, not a link" + (f"; {remedy}" if remedy else ""),
        ) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{what} {path} is not a regular file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise UsageError(
                f"{what} {path} belongs to another user (uid {info.st_uid})", hint=remedy or None
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UsageError(
                f"{what} {path} is readable by others (mode {mode:04o})",
                hint=f"run `chmod 600 {path}`",
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} {path} is larger than {limit} bytes")
    return data


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
