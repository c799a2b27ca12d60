"""The backend removes the RAM code folders of runtimes that ended, never a live runtime's.

A runtime killed with SIGKILL cannot remove its decrypted code; the operator
does, when it sees the runtime end (kill -9, on_error), when the app is
deleted, before it starts a runtime, and at its own start (ADR 0011). A folder
is kept only while its pid is a live ``confide runtime`` of that app: a pid
reused by another process does not keep it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from confide.operator import FileLogSource, LocalProcessBackend, RuntimeHandle, TeeBackend

T = TypeVar("T")
#: Each asynchronous step of a test is bounded by this (seconds).
STEP_TIMEOUT = 30.0


def run(step: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(STEP_TIMEOUT):
            return await step()

    return asyncio.run(bounded())


@contextmanager
def process(*argv: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process with this command line that runs until the test ends (or is killed)."""
    proc = subprocess.Popen(  # noqa: S603 - this interpreter
        [sys.executable, "-c", "import sys; sys.stdin.read()", *argv], stdin=subprocess.PIPE
    )
    with proc:
        try:
            yield proc
        finally:
            proc.kill()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603 - this interpreter
    child.wait()
    return child.pid


@pytest.fixture(name="backend")
def backend_fixture(tmp_path: Path) -> LocalProcessBackend:
    (tmp_path / "shm").mkdir()
    return LocalProcessBackend(
        data_dir=tmp_path / "data",
        log_source=FileLogSource(tmp_path / "logs"),
        tee=TeeBackend.SIMULATION,
        code_root=tmp_path / "shm",
    )


def folder(backend: LocalProcessBackend, app_id: uuid.UUID, pid: int) -> Path:
    path = backend_root(backend) / f"confide-code-{app_id}-{pid}-x1y2"
    (path / "private").mkdir(parents=True)
    (path / "private" / "secrets.json").write_text('{"db": "secret"}')
    return path


def backend_root(backend: LocalProcessBackend) -> Path:
    return backend.data_dir.parent / "shm"


def test_a_runtime_that_ended_leaves_nothing_and_live_ones_keep_theirs(
    backend: LocalProcessBackend,
) -> None:
    app, other = uuid.uuid4(), uuid.uuid4()
    with (
        process("runtime", "--app-id", str(app)) as live,
        process("runtime", "--app-id", str(other)) as other_runtime,
        process("not-a-runtime") as stranger,
    ):
        killed = dead_pid()
        mine = folder(backend, app, live.pid)
        ended = folder(backend, app, killed)
        reused = folder(backend, app, stranger.pid)  # its pid now runs something else
        wrong_app = folder(backend, app, other_runtime.pid)  # a runtime, of another app
        others = folder(backend, other, killed)

        # kill -9 (and then on_error): the supervisor releases the runtime it saw end.
        backend.release(RuntimeHandle(app, "127.0.0.1", 1, killed))
        assert not ended.exists() and not reused.exists() and not wrong_app.exists()
        assert mine.is_dir() and others.is_dir()  # a live runtime's; another app's

        # Deleting the other app removes its folders.
        backend.remove_app(other)
        assert not others.exists() and mine.is_dir()

        # The operator's own start: whatever a runtime killed meanwhile left goes.
        left = folder(backend, uuid.uuid4(), dead_pid())
        assert run(backend.discover) == []
        assert not left.exists() and mine.is_dir()


def test_a_stopped_runtime_leaves_nothing(backend: LocalProcessBackend) -> None:
    app = uuid.uuid4()
    state = str(backend.state_dir(app))
    with process("runtime", "--app-id", str(app), "--state-dir", state) as runtime:
        mine = folder(backend, app, runtime.pid)
        handle = RuntimeHandle(app, "127.0.0.1", 1, runtime.pid)
        # It ends on SIGTERM without removing its folder (as a runtime killed while stopping).
        run(lambda: backend.stop(handle))
        assert runtime.wait(STEP_TIMEOUT) != 0
        assert not mine.exists()
