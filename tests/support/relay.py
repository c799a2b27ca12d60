"""Driving a relay worker directly, on either engine (ADR 0028).

The test holds the far ends of each pair (the client's and the upstream's);
the worker holds the near ends. ``ENGINES`` parametrizes a test over the
Python loop (the reference) and the compiled one; the compiled one is skipped
only where it is not built, and ``test_relay_core.py`` fails if it is not
built where a C compiler is.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from confide.operator._relay import MIN_CHUNK, Engine, RelayPair, RelayWorker, compiled_core
from confide.operator._router import Direction
from support.router import LOOPBACK, MemoryRecorder

#: Bound on any one blocking step of these tests (seconds).
STEP = 20.0
CHUNK = 4 * MIN_CHUNK
LOG = logging.getLogger("test.relay")

COMPILED = compiled_core() is not None
ENGINES = [
    pytest.param("python", id="python"),
    pytest.param(
        "c",
        id="c",
        marks=pytest.mark.skipif(not COMPILED, reason="confide.operator._relaycore not built"),
    ),
]


class Ends:
    """One relayed pair: the test holds ``client`` and ``upstream``, the worker the rest."""

    def __init__(
        self,
        worker: RelayWorker,
        ident: int,
        small_buffers: bool = False,
        tcp: bool = False,
        add: bool = True,
    ) -> None:
        make = tcp_pair if tcp else socket.socketpair
        self.client, router_client = make()
        router_upstream, self.upstream = make()
        if small_buffers:
            for sock in (self.client, router_client, router_upstream, self.upstream):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        for sock in (self.client, self.upstream):
            sock.settimeout(STEP)
        router_client.setblocking(False)
        router_upstream.setblocking(False)
        self.closed = threading.Event()
        self.calls = 0
        self.pair = RelayPair(ident, router_client, router_upstream, on_closed=self._on_closed)
        if add:
            assert worker.add(self.pair)

    def _on_closed(self) -> None:
        self.calls += 1
        self.closed.set()

    def close(self) -> None:
        self.client.close()
        self.upstream.close()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on loopback (a reset is TCP's, not a socket pair's)."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        near = socket.create_connection(listener.getsockname()[:2], timeout=STEP)
        far, _ = listener.accept()
    near.settimeout(None)
    return near, far


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (linger on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def relay_worker(
    engine: Engine, idle_timeout: float = 60.0, recorder: MemoryRecorder | None = None
) -> Iterator[RelayWorker]:
    record = None
    if recorder is not None:

        def record(ident: int, to_upstream: bool, data: bytes) -> None:
            way = Direction.TO_UPSTREAM if to_upstream else Direction.TO_CLIENT
            recorder.record(ident, way, data)

    worker = RelayWorker(
        chunk=CHUNK, idle_timeout=idle_timeout, log=LOG, record=record, engine=engine
    )
    assert worker.engine == engine, "the engine under test is not the one that runs"
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        worker.join(STEP)
        assert not worker.alive()


def read_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def in_thread(target: Callable[..., object], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
