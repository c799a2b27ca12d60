"""The runtime parent: one pre-imported process that forks runtimes (issue 14; ADR 0031).

A fresh ``confide runtime`` spends about 0.6 s of its 0.9 s start importing its own
modules. The local process backend instead starts one parent per operator, which
imports only those modules (nothing of any app, no key, no secret exists in it),
records the runtime environment's digest, and then serves launch requests on the one
descriptor it inherits: a ``SOCK_SEQPACKET`` socket whose other end only the operator
holds. For each request it forks a child that becomes the runtime a fresh process
would have been (:func:`_become`): its own session, the lower CPU priority and address
space limit, no descriptor but its log on stdout/stderr, the request's environment and
folder, ``random`` reseeded, its command line rewritten to the runtime's (what
adoption and discovery read from ``/proc/<pid>/cmdline``), and a runtime refuses to
start when the installed files no longer measure as the parent's imports did.

The protocol (one JSON object per datagram, at most :data:`PARENT_MAX_MESSAGE` bytes):

- parent to operator, once: ``{"ready": <pid>, "digest": "<hex>"}``;
- operator to parent: ``{"launch": {"argv": [...], "title": [...], "env": {...},
  "cwd": "...", "limit": <bytes>, "nice": <increment>}}`` with the log's
  descriptor in ``SCM_RIGHTS``; the parent answers ``{"started": <pid>}`` or
  ``{"refused": "<why>"}``;
- parent to operator, for every child that ends: ``{"exited": <pid>, "code": <int>}``
  (``Popen.returncode``'s convention: negative for a signal).

The parent exits when the operator's end closes; its children run on, and are
watched by the operator as adopted runtimes.

Run as ``python -P -c "from confide.runtime._parent import main; main()" <fd> <room>``:
``<room>`` is blank space in the parent's own command line that each child
overwrites with its runtime's.
"""

from __future__ import annotations

import array
import atexit
import json
import os
import random
import resource
import select
import signal
import socket
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Final

#: Largest message on the channel, either way.
PARENT_MAX_MESSAGE: Final = 256 * 1024
#: Bytes of command line each child can rewrite (the parent starts with this much room).
PARENT_TITLE_ROOM: Final = 16 * 1024
#: The exit code of a runtime that refuses to start because the installed files changed
#: since its parent imported them (the operator starts a new parent).
EXIT_STALE_PARENT: Final = 75
#: The Python code that runs the parent (the backend's command line).
PARENT_CODE: Final = "from confide.runtime._parent import main; main()"


def _send(channel: socket.socket, message: Mapping[str, object]) -> None:
    channel.send(json.dumps(message).encode())


def _retitle(argv: Sequence[str]) -> None:
    """Make ``/proc/self/cmdline`` read ``argv``: overwrite the command line's memory."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read(4096)
    fields = stat[stat.rfind(b")") + 2 :].split()
    # Fields 48 and 49 of proc(5) (arg_start, arg_end), counted from 1; ours start at 3.
    start, end = int(fields[45]), int(fields[46])
    data = b"\0".join(os.fsencode(arg) for arg in argv) + b"\0"
    if len(data) > end - start:
        raise OSError(f"the command line needs {len(data)} bytes; the parent left {end - start}")
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        mem.write(data.ljust(end - start, b"\0"))


def _become(request: Mapping[str, object], log_fd: int, digest: bytes) -> int:
    """In the forked child: become the runtime a fresh process would be; its exit code."""
    os.setsid()
    limit = int(str(request["limit"]))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # As the fresh launcher: the process's nice value and its new session's autogroup.
    nice = int(str(request["nice"]))
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    environment = request["env"]
    if not isinstance(environment, dict):
        return 2
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in environment.items()})
    os.chdir(str(request["cwd"]))
    random.seed()
    title = [str(arg) for arg in request["title"]] if isinstance(request["title"], list) else []
    argv = [str(arg) for arg in request["argv"]] if isinstance(request["argv"], list) else []
    _retitle(title)
    sys.argv = title
    from confide.runtime import runtime_code_hash

    found = runtime_code_hash()
    if found != digest:
        print(
            f"error: the installed runtime changed since its parent imported it "
            f"(environment {found.hex()}, expected {digest.hex()}); the operator starts a new "
            "parent",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_STALE_PARENT
    from confide.cli import load_commands

    try:
        load_commands(argv)(args=argv, prog_name="confide")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def _child(request: Mapping[str, object], log_fd: int, digest: bytes) -> None:
    """The forked child's whole life: never returns into the parent's loop."""
    code = 1
    try:
        code = _become(request, log_fd, digest)
    except BaseException:  # noqa: BLE001 - a child never returns to the parent's code
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _receive(channel: socket.socket) -> tuple[dict[str, object], int | None] | None:
    """One request and its descriptor; ``None`` when the operator's end closed."""
    fds = array.array("i")
    data, ancillary, _flags, _address = channel.recvmsg(
        PARENT_MAX_MESSAGE, socket.CMSG_SPACE(fds.itemsize)
    )
    if not data:
        return None
    log_fd: int | None = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                if log_fd is None:
                    log_fd = fd
                else:
                    os.close(fd)
    message = json.loads(data)
    return (message if isinstance(message, dict) else {}), log_fd


def _reap(channel: socket.socket, children: set[int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            children.discard(pid)
            continue
        if done:
            children.discard(pid)
            _send(channel, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(channel: socket.socket, digest: bytes) -> None:
    """Fork a runtime for each request on ``channel`` until the operator closes it."""
    children: set[int] = set()
    # An ended child wakes the loop: SIGCHLD writes a byte to this pipe.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    _send(channel, {"ready": os.getpid(), "digest": digest.hex()})
    while True:
        readable, _, _ = select.select([channel.fileno(), wake_r], [], [])
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 4096):
                        break
                except BlockingIOError:
                    break
        _reap(channel, children)
        if channel.fileno() not in readable:
            continue
        received = _receive(channel)
        if received is None:
            return
        message, log_fd = received
        request = message.get("launch")
        if not isinstance(request, dict) or log_fd is None:
            if log_fd is not None:
                os.close(log_fd)
            _send(channel, {"refused": "a launch request needs its fields and its log"})
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            channel.close()
            _child(request, log_fd, digest)
        os.close(log_fd)
        children.add(pid)
        _send(channel, {"started": pid})


def main() -> None:
    """The parent's entry: argv[1] is the channel's descriptor."""
    fd = int(sys.argv[1])
    channel = socket.socket(fileno=fd)
    # Every module a runtime imports before any app or key exists; nothing else.
    from confide.cli import load_commands

    load_commands(["runtime"])
    from confide.runtime import runtime_code_hash

    digest = runtime_code_hash()
    serve(channel, digest)
