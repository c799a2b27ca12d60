"""Connection hand-off: the runtime's end takes exactly one connected TCP socket per message.

The sender side is :func:`hand_off` (what the operator's router calls); every
refusal closes what was received and delivers nothing.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.runtime._handoff import HANDOFF_MESSAGE, HandoffListener, hand_off

LOOPBACK = "127.0.0.1"
#: Bound on waiting for something that should happen at once.
SOON = 5.0


@asynccontextmanager
async def listening(
    path: Path, *, read_timeout: float = 2.0
) -> AsyncIterator[tuple[HandoffListener, asyncio.Queue[socket.socket]]]:
    listener = HandoffListener.bind(
        path, logger=logging.getLogger("test.handoff"), read_timeout=read_timeout
    )
    received: asyncio.Queue[socket.socket] = asyncio.Queue()
    listener.start(asyncio.get_running_loop())
    listener.serve_to(received.put_nowait)
    try:
        yield listener, received
    finally:
        listener.close()
        while not received.empty():
            received.get_nowait().close()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair: (the client's end, the end a server accepted)."""
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def send_raw(path: Path, data: bytes, fds: list[int]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sender:
        sender.connect(str(path))
        control = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sender.sendmsg([data], control)


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Wait until ``text`` is logged: the listener has handled (and closed) what it was sent."""
    async with asyncio.timeout(SOON):
        while text not in caplog.text:
            await asyncio.sleep(0.01)


async def held(listener: HandoffListener, count: int) -> None:
    """Wait until the listener holds ``count`` connections for the next server."""
    async with asyncio.timeout(SOON):
        while len(listener._waiting) < count:
            await asyncio.sleep(0.01)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def run(body: Callable[[], object]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await body()  # type: ignore[misc]

    asyncio.run(bounded())


def test_a_handed_off_connection_is_delivered_and_carries_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "handoff.sock"

    async def body() -> None:
        async with listening(path) as (_, received):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            client, accepted = tcp_pair()
            with client, accepted:
                client.sendall(b"peeked, not read")
                assert hand_off(path, accepted)
                accepted.close()  # the router's copy; the runtime holds its own
                sock = await asyncio.wait_for(received.get(), SOON)
                with sock:
                    assert sock.getpeername() == client.getsockname()
                    assert not sock.getblocking()
                    sock.setblocking(True)
                    assert sock.recv(100) == b"peeked, not read"
                    sock.sendall(b"answer")
                    assert client.recv(100) == b"answer"

    run(body)


def test_connections_wait_until_a_server_takes_them(tmp_path: Path) -> None:
    path = tmp_path / "handoff.sock"

    async def body() -> None:
        async with listening(path) as (listener, received):
            listener.serve_to(None)  # between the configuration and the app servers
            client, accepted = tcp_pair()
            with client, accepted:
                assert hand_off(path, accepted)
                await held(listener, 1)  # taken from the socket, not delivered
                assert received.empty()
                listener.serve_to(received.put_nowait)
                (await asyncio.wait_for(received.get(), SOON)).close()

    run(body)


def test_hand_off_says_false_when_nobody_listens(tmp_path: Path) -> None:
    client, accepted = tcp_pair()
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as gone:
        gone.bind(str(stale))
    with client, accepted:
        assert not hand_off(tmp_path / "missing.sock", accepted)
        assert not hand_off(stale, accepted)
        accepted.sendall(b"still ours")
        assert client.recv(100) == b"still ours"


def test_a_long_path_works_both_ways(tmp_path: Path) -> None:
    folder = tmp_path / ("d" * 60) / ("e" * 60)
    folder.mkdir(parents=True)
    path = folder / "handoff.sock"
    assert len(os.fsencode(path)) > 108

    async def body() -> None:
        async with listening(path) as (_, received):
            client, accepted = tcp_pair()
            with client, accepted:
                assert hand_off(path, accepted)
                (await asyncio.wait_for(received.get(), SOON)).close()

    run(body)


@pytest.mark.parametrize(
    "case",
    ["pipe", "unix socket", "listening tcp", "two descriptors", "wrong message", "no descriptor"],
)
def test_anything_but_one_connected_tcp_socket_is_refused_and_closed(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "handoff.sock"

    async def body() -> None:
        async with listening(path) as (_, received):
            client, accepted = tcp_pair()
            read_end, write_end = os.pipe()
            unix_a, unix_b = socket.socketpair()
            listener = socket.socket()
            listener.bind((LOOPBACK, 0))
            listener.listen(1)
            message, fds = {
                "pipe": (HANDOFF_MESSAGE, [read_end]),
                "unix socket": (HANDOFF_MESSAGE, [unix_a.fileno()]),
                "listening tcp": (HANDOFF_MESSAGE, [listener.fileno()]),
                "two descriptors": (HANDOFF_MESSAGE, [accepted.fileno(), accepted.fileno()]),
                "wrong message": (b"X", [accepted.fileno()]),
                "no descriptor": (HANDOFF_MESSAGE, []),
            }[case]
            before = fd_count()
            with caplog.at_level(logging.WARNING, logger="test.handoff"):
                send_raw(path, message, fds)
                await logged(caplog, "hand-off refused")
            assert received.empty()
            assert "hand-off refused" in caplog.text
            assert fd_count() == before  # what came in was closed again
            for resource in (client, accepted, unix_a, unix_b, listener):
                resource.close()
            os.close(read_end)
            os.close(write_end)

    run(body)


def test_a_sender_that_sends_nothing_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "handoff.sock"

    async def body() -> None:
        async with listening(path, read_timeout=0.3) as (_, received):
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as silent:
                silent.connect(str(path))
                with caplog.at_level(logging.WARNING, logger="test.handoff"):
                    await logged(caplog, "sent nothing")
                silent.settimeout(SOON)
                assert silent.recv(1) == b""  # closed by the runtime
            assert received.empty()
            assert "sent nothing" in caplog.text

    run(body)


def test_bind_replaces_a_stale_socket_and_refuses_any_other_file(tmp_path: Path) -> None:
    stale = tmp_path / "handoff.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as gone:
        gone.bind(str(stale))
    listener = HandoffListener.bind(stale, logger=logging.getLogger("test"))
    listener.close()
    assert not stale.exists()  # closing removes it

    regular = tmp_path / "regular"
    regular.write_text("data")
    with pytest.raises(UsageError, match="exists and is not a socket"):
        HandoffListener.bind(regular, logger=logging.getLogger("test"))
    assert regular.read_text() == "data"
    with pytest.raises(UsageError, match="cannot listen on --handoff"):
        HandoffListener.bind(
            tmp_path / "no" / "such" / "folder.sock", logger=logging.getLogger("t")
        )
