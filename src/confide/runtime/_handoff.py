"""Connection hand-off: the operator's router gives a routed TCP connection to the runtime.

Once the router has read the server name from a ClientHello it only *peeked*
at (the bytes stay in the kernel), it can pass the client's socket itself to
the enclave runtime that serves the name, instead of copying every byte
between two sockets. The runtime then reads the ClientHello and does the TLS
handshake as if it had accepted the connection; the router is out of the
path, so the operator does not even see the ciphertext after the ClientHello.

Wire format, over a ``SOCK_SEQPACKET`` Unix socket that the runtime listens on
(``--handoff PATH``): one connection per hand-off, carrying one message of
exactly :data:`HANDOFF_MESSAGE` with exactly one file descriptor in an
``SCM_RIGHTS`` control message. Anything else is refused (every received
descriptor is closed).

What the runtime trusts: nothing. The socket file is in a 0700 folder and is
itself 0600, and each descriptor received must be a connected TCP stream
socket (IPv4 or IPv6), or it is closed: a hand-off can give the runtime no
more than a client connecting to its port could.

Paths: ``AF_UNIX`` addresses are limited to 107 bytes; a longer path is
reached through ``/proc/self/fd/N/<name>`` where ``N`` is a descriptor of its
folder, so any folder works.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from confide.errors import UsageError

#: The one byte each hand-off message carries (with its descriptor).
HANDOFF_MESSAGE: Final = b"C"
#: Hand-offs not yet read by the runtime (listen backlog of the Unix socket).
MAX_PENDING_HANDOFFS: Final = 256
#: A hand-off connection must deliver its message within this (seconds).
HANDOFF_READ_TIMEOUT: Final = 2.0
#: Longest path usable directly as an AF_UNIX address (sun_path is 108 bytes, NUL included).
_MAX_SUN_PATH: Final = 107
_FD_SIZE: Final = array.array("i").itemsize


@contextlib.contextmanager
def _unix_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits in ``sun_path``, valid inside the block."""
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def hand_off(path: Path, connection: socket.socket) -> bool:
    """Pass ``connection`` to the runtime listening at ``path``; never blocks.

    Returns ``False`` (and the caller keeps the connection) when the runtime
    is not there or its queue is full; the caller then relays the bytes itself.
    On ``True`` the runtime holds its own descriptor: the caller closes its copy.
    """
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
    try:
        with _unix_address(path) as address:
            sender.connect(address)
        fds = array.array("i", [connection.fileno()])
        sender.sendmsg([HANDOFF_MESSAGE], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError:
        return False
    finally:
        sender.close()
    return True


def _adopt(fd: int) -> socket.socket | None:
    """``fd`` as a non-blocking socket if it is a connected TCP stream, else close it."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        sock = socket.socket(fileno=fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        return None
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != (
            socket.SOCK_STREAM
        ):
            raise OSError("not a TCP stream socket")
        sock.getpeername()  # connected (raises ENOTCONN otherwise)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    except OSError:
        sock.close()
        return None
    return sock


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_SIZE
            fds.extend(array.array("i", data[:usable]))
    return fds


class HandoffListener:
    """The runtime's end: receives hand-offs and gives each connection to ``deliver``.

    ``deliver`` is set with :meth:`serve_to` by the server of the current
    phase; between phases, connections wait (up to
    :data:`MAX_PENDING_HANDOFFS`, then they are closed).
    """

    def __init__(
        self,
        sock: socket.socket,
        path: Path,
        logger: logging.Logger,
        *,
        read_timeout: float = HANDOFF_READ_TIMEOUT,
    ) -> None:
        self._sock = sock
        self._path = path
        self._log = logger
        self._read_timeout = read_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Callable[[socket.socket], None] | None = None
        self._waiting: list[socket.socket] = []
        self._readers: dict[socket.socket, asyncio.TimerHandle] = {}

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    def bind(
        cls, path: Path, *, logger: logging.Logger, read_timeout: float = HANDOFF_READ_TIMEOUT
    ) -> HandoffListener:
        """Listen at ``path`` (replacing a stale socket file; refusing any other file)."""
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(f"cannot use --handoff {path}: {exc.strerror or exc}") from None
        else:
            if not stat.S_ISSOCK(mode):
                raise UsageError(
                    f"--handoff {path} exists and is not a socket",
                    hint="give a path in a private folder, not an existing file",
                )
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
        try:
            with _unix_address(path) as address:
                sock.bind(address)
            os.chmod(path, 0o600)
            sock.listen(MAX_PENDING_HANDOFFS)
        except OSError as exc:
            sock.close()
            raise UsageError(f"cannot listen on --handoff {path}: {exc.strerror or exc}") from None
        return cls(sock, path, logger, read_timeout=read_timeout)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._accept)

    def serve_to(self, deliver: Callable[[socket.socket], None] | None) -> None:
        """Give the next connections to ``deliver`` (``None``: hold them until a server is set)."""
        self._deliver = deliver
        if deliver is not None:
            waiting, self._waiting = self._waiting, []
            for sock in waiting:
                deliver(sock)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            for sender, timer in self._readers.items():
                timer.cancel()
                self._loop.remove_reader(sender.fileno())
                sender.close()
        self._readers.clear()
        self._sock.close()
        for sock in self._waiting:
            sock.close()
        self._waiting.clear()
        with contextlib.suppress(OSError):
            self._path.unlink()

    def _accept(self) -> None:
        for _ in range(MAX_PENDING_HANDOFFS):
            try:
                sender, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log.warning("hand-off socket: accept failed: %s", exc)
                return
            sender.setblocking(False)
            if self._receive(sender):
                sender.close()
            else:
                self._wait_for_message(sender)

    def _wait_for_message(self, sender: socket.socket) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - _accept only runs once started
            sender.close()
            return

        def readable() -> None:
            if self._receive(sender):
                self._forget(sender)

        def expired() -> None:
            self._log.warning("hand-off connection sent nothing within %g s", self._read_timeout)
            self._forget(sender)

        self._readers[sender] = loop.call_later(self._read_timeout, expired)
        loop.add_reader(sender.fileno(), readable)

    def _forget(self, sender: socket.socket) -> None:
        timer = self._readers.pop(sender, None)
        if timer is not None:
            timer.cancel()
        if self._loop is not None and sender.fileno() >= 0:
            self._loop.remove_reader(sender.fileno())
        sender.close()

    def _receive(self, sender: socket.socket) -> bool:
        """Read the hand-off message of ``sender``; ``False`` if it is not there yet.

        On ``True`` the caller closes ``sender``: its one message has been handled.
        """
        try:
            data, ancdata, flags, _ = sender.recvmsg(
                len(HANDOFF_MESSAGE) + 1, socket.CMSG_SPACE(_FD_SIZE)
            )
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._log.warning("hand-off connection failed: %s", exc)
            return True
        fds = _received_fds(ancdata)
        truncated = flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)
        if data != HANDOFF_MESSAGE or len(fds) != 1 or truncated:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if data or fds:
                self._log.warning(
                    "hand-off refused: expected one %r message with one descriptor, "
                    "got %d bytes and %d descriptors",
                    HANDOFF_MESSAGE,
                    len(data),
                    len(fds),
                )
            return True
        sock = _adopt(fds[0])
        if sock is None:
            self._log.warning("hand-off refused: the descriptor is not a connected TCP socket")
            return True
        if self._deliver is not None:
            self._deliver(sock)
        elif len(self._waiting) < MAX_PENDING_HANDOFFS:
            self._waiting.append(sock)
        else:
            self._log.warning("hand-off refused: %d connections already wait", len(self._waiting))
            sock.close()
        return True
