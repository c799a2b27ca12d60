"""The on-disk cache of fetched collateral responses (see :class:`CollateralCache`)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Final

from confide.errors import UsageError

from ._fetcher import MAX_RESPONSE_SIZE, FetchResponse, aware, one_line
from ._pcs import CACHED_HEADERS

#: Largest cache file read back (base64 body plus headers and metadata).
MAX_CACHE_FILE_SIZE: Final = 2 * MAX_RESPONSE_SIZE
_CACHE_FORMAT: Final = 1


class CollateralCache:
    """Fetched responses on disk, keyed by URL, each kept until its own ``nextUpdate``.

    One file per URL (named by the URL's SHA-256) holds the body, the issuer
    chain headers and the expiry. :meth:`get` returns an entry only while
    ``now`` is before its expiry; a missing, unreadable or corrupt file is a
    miss. Writes are atomic (a temporary file, then ``os.replace``); the
    directory is created 0700 and files are 0600.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, url: str) -> Path:
        return self.directory / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def get(self, url: str, *, now: datetime) -> FetchResponse | None:
        now = aware(now)
        try:
            with self.path_for(url).open("rb") as f:
                raw = f.read(MAX_CACHE_FILE_SIZE + 1)
        except OSError:
            return None
        if len(raw) > MAX_CACHE_FILE_SIZE:
            return None
        try:
            entry = json.loads(raw)
            if (
                not isinstance(entry, dict)
                or entry.get("format") != _CACHE_FORMAT
                or entry.get("url") != url
            ):
                return None
            expires = datetime.fromisoformat(entry["expires"])
            headers = entry["headers"]
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                return None
            body = base64.b64decode(entry["body"], validate=True)
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        if expires.tzinfo is None or not now < expires:
            return None
        return FetchResponse(200, headers, body)

    def _make_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            mode = self.directory.stat().st_mode
            if not stat.S_ISDIR(mode) or mode & 0o022:
                raise UsageError(
                    f"the collateral cache {self.directory} is not a directory only its "
                    f"owner can write (mode {stat.S_IMODE(mode):o}); use a private directory"
                ) from None

    def put(self, url: str, response: FetchResponse, *, expires: datetime) -> None:
        """Store ``response`` for ``url`` until ``expires``; raise :class:`UsageError` if the
        cache directory cannot be written."""
        expires = aware(expires)
        entry = {
            "format": _CACHE_FORMAT,
            "url": url,
            "expires": expires.isoformat(),
            "headers": {
                name: response.headers[name] for name in CACHED_HEADERS if name in response.headers
            },
            "body": base64.b64encode(response.body).decode(),
        }
        data = json.dumps(entry).encode()
        tmp: str | None = None
        try:
            self._make_directory()
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path_for(url))
            tmp = None
        except OSError as exc:
            raise UsageError(
                f"cannot write the collateral cache in {self.directory}: {one_line(exc)}"
            ) from exc
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
