"""The operator's end of the runtime parent (:mod:`confide.runtime._parent`; ADR 0031).

:class:`RuntimeParent` starts the parent with one end of a ``SOCK_SEQPACKET``
socketpair (the only descriptor it inherits; no path an app could open), waits for
its ``ready`` with the runtime environment's digest, asks it to fork runtimes, and
collects the exit codes it reports. Every failure to talk to it raises ``OSError``:
the backend then starts the runtime as a fresh process.
"""

from __future__ import annotations

import array
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from confide.runtime import (
    PARENT_CODE,
    PARENT_MAX_MESSAGE,
    PARENT_TITLE_ROOM,
    start_child,
)

#: Seconds the parent gets to import the runtime and say it is ready.
PARENT_START_TIMEOUT: Final = 60.0
#: Seconds a fork request may take to be answered.
LAUNCH_TIMEOUT: Final = 10.0


class RuntimeParent:
    """One running parent, its channel and what it reported."""

    def __init__(
        self, *, environment: Mapping[str, str], log: Path, code: str = PARENT_CODE
    ) -> None:
        """Start the parent (``code``: its Python, :data:`PARENT_CODE`; a test's stand-in
        replaces the runtime's command), and wait for it to be ready."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        self._channel = ours
        #: Exit codes of forked runtimes, by pid (``Popen.returncode``'s convention).
        self.exits: dict[int, int] = {}
        self.closed = False
        try:
            with open(log, "ab") as output:
                self.process: subprocess.Popen[bytes] = start_child(
                    [
                        sys.executable,
                        "-P",
                        "-c",
                        code,
                        str(theirs.fileno()),
                        "." * PARENT_TITLE_ROOM,
                    ],
                    env=environment,
                    output=output,
                    pass_fds=(theirs.fileno(),),
                )
        finally:
            theirs.close()
        ready = self._next(time.monotonic() + PARENT_START_TIMEOUT)
        if not isinstance(ready.get("ready"), int) or not isinstance(ready.get("digest"), str):
            self.close()
            raise OSError(f"the runtime parent's first message is not ready: {ready}")
        #: The runtime environment's digest when the parent imported the runtime.
        self.digest = bytes.fromhex(str(ready["digest"]))

    def _next(self, deadline: float) -> dict[str, object]:
        """The next message that is not an exit report (those are recorded)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the runtime parent did not answer in time")
            readable, _, _ = select.select([self._channel], [], [], left)
            if not readable:
                continue
            message = self._read()
            if message is not None:
                return message

    def _read(self) -> dict[str, object] | None:
        """Read one message; an exit report is recorded and gives ``None``."""
        data = self._channel.recv(PARENT_MAX_MESSAGE)
        if not data:
            self.closed = True
            raise ConnectionError("the runtime parent ended")
        message = json.loads(data)
        if not isinstance(message, dict):
            raise OSError("the runtime parent sent something else than an object")
        pid, code = message.get("exited"), message.get("code")
        if isinstance(pid, int) and isinstance(code, int):
            self.exits[pid] = code
            return None
        return message

    def poll(self) -> None:
        """Record the exit reports that arrived (without waiting)."""
        if self.closed or not self._lock.acquire(blocking=False):
            return
        try:
            while select.select([self._channel], [], [], 0)[0]:
                self._read()
        except OSError:
            self.closed = True
        finally:
            self._lock.release()

    @property
    def alive(self) -> bool:
        return not self.closed and self.process.poll() is None

    def launch(
        self,
        *,
        argv: Sequence[str],
        title: Sequence[str],
        environment: Mapping[str, str],
        cwd: Path,
        limit: int,
        nice: int,
        log_fd: int,
    ) -> int:
        """Fork a runtime running ``confide <argv>`` whose command line reads ``title``."""
        request = {
            "launch": {
                "argv": list(argv),
                "title": list(title),
                "env": dict(environment),
                "cwd": str(cwd),
                "limit": limit,
                "nice": nice,
            }
        }
        data = json.dumps(request).encode()
        if len(data) > PARENT_MAX_MESSAGE:
            raise OSError(f"a launch request of {len(data)} bytes is over {PARENT_MAX_MESSAGE}")
        with self._lock:
            try:
                fds = array.array("i", [log_fd])
                self._channel.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                answer = self._next(time.monotonic() + LAUNCH_TIMEOUT)
            except OSError:
                self.closed = True
                raise
        pid = answer.get("started")
        if not isinstance(pid, int):
            raise OSError(f"the runtime parent refused the launch: {answer.get('refused')}")
        return pid

    def close(self) -> None:
        """Close the channel: the parent exits, its children run on."""
        self.closed = True
        self._channel.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
