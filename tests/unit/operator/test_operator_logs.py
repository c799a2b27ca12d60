"""The log source: reading an app's output end, following it, and any source behind the seam."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from confide.operator import MAX_LOG_BYTES, FileLogSource, LogSource
from confide.operator._logs import follow

APP = uuid.UUID(int=7)


def test_a_file_source_reads_the_last_lines_and_follows_from_its_end(tmp_path: Path) -> None:
    logs = FileLogSource(tmp_path)
    assert logs.read_end(APP, 3) == (b"", 0)  # no output yet
    lines = b"".join(b"line %d\n" % i for i in range(20_000))  # more than one block
    logs.log_path(APP).write_bytes(lines)
    assert logs.read_end(APP, 2) == (b"line 19998\nline 19999\n", len(lines))
    assert logs.read_end(APP, 0) == (b"", len(lines))
    assert logs.read_end(APP, None) == (lines, len(lines))
    with logs.log_path(APP).open("ab") as f:
        f.write(b"more\n")
    assert logs.read_from(APP, len(lines)) == (b"more\n", len(lines) + 5)
    logs.log_path(APP).write_bytes(b"rotated\n")  # shorter than the offset: from the start
    assert logs.read_from(APP, len(lines)) == (b"rotated\n", 8)


def test_a_file_source_returns_at_most_the_last_bytes_from_a_line_start(tmp_path: Path) -> None:
    logs = FileLogSource(tmp_path)
    logs.log_path(APP).write_bytes(b"x" * MAX_LOG_BYTES + b"\nlast\n")
    assert logs.read_end(APP, None)[0] == b"last\n"


class _Memory:
    """A log source with no file (as a Kubernetes one would be): output kept in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def log_path(self, app_id: uuid.UUID) -> Path:
        raise AssertionError("following never needs a path")

    def read_end(self, app_id: uuid.UUID, tail: int | None) -> tuple[bytes, int]:
        return self.data, len(self.data)

    def read_from(self, app_id: uuid.UUID, offset: int) -> tuple[bytes, int]:
        return self.data[offset:], len(self.data)


def test_follow_reads_any_source_until_the_app_stops() -> None:
    source = _Memory(b"head\n")
    assert isinstance(source, LogSource)
    checks: list[bool] = []

    def active() -> bool:
        # The app writes a line, then once more just before it stops.
        checks.append(True)
        source.data += b"next\n" if len(checks) == 1 else b"last\n"
        return len(checks) == 1

    async def read() -> list[bytes]:
        return [c async for c in follow(source, APP, None, active=active, poll_interval=0.0)]

    assert asyncio.run(read()) == [b"head\n", b"next\n", b"last\n"]
    assert len(checks) == 2
