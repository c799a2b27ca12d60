"""An app's runtime output: where the backend writes it, and how the API reads and follows it.

The backend appends the runtime's stdout and stderr to :meth:`LogSource.log_path`;
the API reads the end of it (:meth:`LogSource.read_end`, bounded by
:data:`MAX_TAIL` lines and :data:`MAX_LOG_BYTES`) and follows what is appended
(:func:`follow`) until the app is no longer active. :class:`FileLogSource`
keeps one file per app; another backend (Kubernetes, ADR 0007) reads its own.

Example::

    >>> logs = FileLogSource(Path("/var/lib/confide/logs"))  # doctest: +SKIP
    >>> data, offset = logs.read_end(app_id, tail=10)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

# The API's worker threads (anyio's), not the event loop's default executor: many
# followers must not queue the supervisor's database writes behind their reads.
from fastapi.concurrency import run_in_threadpool

#: Most lines ``?tail=`` returns.
MAX_TAIL: Final = 100_000
#: Most bytes of log returned at once (the end of the file).
MAX_LOG_BYTES: Final = 4 * 1024 * 1024
_LOG_BLOCK: Final = 64 * 1024


@runtime_checkable
class LogSource(Protocol):
    """Where the backend writes an app's runtime output (stdout and stderr, appended)."""

    def log_path(self, app_id: uuid.UUID) -> Path: ...

    def read_end(self, app_id: uuid.UUID, tail: int | None) -> tuple[bytes, int]:
        """The last ``tail`` lines (all, when ``None``) within the last :data:`MAX_LOG_BYTES`,
        and the offset where following goes on from."""
        ...

    def read_from(self, app_id: uuid.UUID, offset: int) -> tuple[bytes, int]:
        """What follows ``offset`` (at most a block), and the offset after it."""
        ...


class FileLogSource:
    """The default :class:`LogSource`: ``<logs_dir>/<app-id>.log``."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = logs_dir

    def log_path(self, app_id: uuid.UUID) -> Path:
        return self.logs_dir / f"{app_id}.log"

    def read_end(self, app_id: uuid.UUID, tail: int | None) -> tuple[bytes, int]:
        return _read_end(self.log_path(app_id), tail)

    def read_from(self, app_id: uuid.UUID, offset: int) -> tuple[bytes, int]:
        return _read_from(self.log_path(app_id), offset)


async def follow(
    source: LogSource,
    app_id: uuid.UUID,
    tail: int | None,
    *,
    active: Callable[[], bool],
    poll_interval: float,
) -> AsyncIterator[bytes]:
    """The log's end, then what is appended, until ``active()`` (run in a thread) is false."""
    head, offset = await run_in_threadpool(source.read_end, app_id, tail)
    if head:
        yield head
    while True:
        chunk, offset = await run_in_threadpool(source.read_from, app_id, offset)
        if chunk:
            yield chunk
            continue
        if not await run_in_threadpool(active):
            # A last read: what the runtime wrote just before it stopped.
            chunk, offset = await run_in_threadpool(source.read_from, app_id, offset)
            if chunk:
                yield chunk
            return
        await asyncio.sleep(poll_interval)


def _read_end(path: Path, tail: int | None) -> tuple[bytes, int]:
    """The last ``tail`` lines (all, when ``None``) within the last :data:`MAX_LOG_BYTES`.

    Returns them and the file's size (where following goes on from).
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return b"", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - MAX_LOG_BYTES)
        if tail is not None:
            # Walk back block by block until tail + 1 line ends are seen.
            position, data = size, b""
            while position > start and data.count(b"\n") <= tail:
                step = min(_LOG_BLOCK, position - start)
                position -= step
                f.seek(position)
                data = f.read(step) + data
            lines = data.splitlines(keepends=True)
            kept = lines[-tail:] if tail else []
            return b"".join(kept), size
        f.seek(start)
        data = f.read(size - start)
        if start > 0:
            # Do not start in the middle of a line.
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""
        return data, size


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0  # truncated or rotated: start over
            f.seek(offset)
            data = f.read(_LOG_BLOCK)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)
