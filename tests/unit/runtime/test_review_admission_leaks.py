"""REVIEW (attacker's review of issue 9 points 1, 2, 14): holes in the runtime's admission.

Each test here demonstrates one finding of the review of commit 9723ffe. A
test marked ``xfail(strict=True)`` FAILS on the code under review: the
marker says which finding it shows; remove it with the fix (strict: the
suite turns red when the fix lands and the marker stays). Real sockets on
loopback; sources are 127.0.0.x addresses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import os
import socket
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import PingAckReceived
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketCloseEvent

from confide.runtime import APP_TIMEOUTS, ConnectionLimits
from confide.runtime._server import _Server, _TlsProtocol
from confide.runtime._tls import ServerTimeouts, bind_listener
from support.http_server import (
    LOG,
    SLOW_HANDSHAKE,
    WAIT,
    client_context,
    flask_app,
    respond,
    server_context,
    serving,
)

ATTACKER = "127.0.0.2"


class WebSocketRefusingApp:
    """An ASGI app that answers HTTP and refuses every WebSocket (as most apps do)."""

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            close: WebsocketCloseEvent = {"type": "websocket.close", "code": 1008, "reason": None}
            await send(close)
            return
        await receive()
        await respond(send, "ok")


def upgrade_request() -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


async def refused_websocket(port: int) -> bytes:
    """One WebSocket upgrade, refused by the app; returns what the server sent, once closed."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        port,
        ssl=client_context(["http/1.1"]),
        server_hostname="localhost",
        local_addr=(ATTACKER, 0),
    )
    writer.write(upgrade_request())
    answer = b""
    try:
        async with asyncio.timeout(WAIT):
            while chunk := await reader.read(65536):
                answer += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    writer.close()
    return answer


def test_websocket_upgrades_that_ended_do_not_keep_their_connection_slots() -> None:
    """REVIEW finding 1: uvicorn hands an upgraded connection to its WebSocket protocol, so
    the HTTP/1.1 protocol's connection_lost() (which released the ticket) never ran: every
    upgrade request took a connection slot for good, and ``connections`` of them shut every
    client out of an ASGI app until it restarted."""
    limits = ConnectionLimits(
        handshakes=2, handshakes_per_source=2, connections=4, connections_per_source=4
    )

    async def body() -> None:
        async with serving(WebSocketRefusingApp(), limits=limits, timeouts=SLOW_HANDSHAKE) as s:
            for _ in range(limits.connections):
                answer = await refused_websocket(s.port)
                assert answer.startswith(b"HTTP/1.1 403"), answer  # guard: it was upgraded
            # Every one of those connections has ended: the runtime holds none of them.
            async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client:
                response = await client.get(s.url)
            assert response.status_code == 200

    asyncio.run(body())


async def held_open(reader: asyncio.StreamReader) -> bool:
    """Whether the server still holds the connection (no EOF or reset within a moment)."""
    try:
        async with asyncio.timeout(0.3):
            while await reader.read(65536):
                pass
        return False
    except TimeoutError:
        return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def running_server(limits: ConnectionLimits) -> AsyncIterator[_Server]:
    """The runtime's server itself (not :func:`serve_http`), to hand it connections directly."""
    listener = bind_listener("127.0.0.1", 0)
    server = _Server(
        WebSocketRefusingApp(),
        websockets=True,
        listener=listener,
        context=server_context(),
        timeouts=SLOW_HANDSHAKE,
        error_log=LOG,
        limits=limits,
    )
    stop = asyncio.Event()
    accepting = asyncio.Event()
    task = asyncio.create_task(server.serve(stop.wait, accepting, None))
    try:
        async with asyncio.timeout(WAIT):
            while server._accepting is None:
                await asyncio.sleep(0.01)
        yield server
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, WAIT)
        finally:
            listener.close()


@contextlib.contextmanager
def connection_pair() -> Iterator[tuple[socket.socket, socket.socket, object]]:
    """A real TCP connection from ATTACKER: (the client's end, the server's end, its address)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), source_address=(ATTACKER, 0))
        accepted, address = listener.accept()
    try:
        yield client, accepted, address
    finally:
        client.close()
        accepted.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closed (EOF or reset) ``sock`` already."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_handshake_shed_before_its_transport_started_is_cut_all_the_same() -> None:
    """REVIEW finding 2: a handshake shed in the loop turn between its transport's creation
    and its protocol's connection_made() was released from the books but never cut (its
    on_shed found no transport yet), and ran on uncounted until the handshake timeout."""
    limits = ConnectionLimits(
        handshakes=1, handshakes_per_source=1, connections=8, connections_per_source=8
    )

    async def body() -> None:
        async with running_server(limits) as server:
            with (
                connection_pair() as (first, first_end, address),
                connection_pair() as (
                    second,
                    second_end,
                    second_address,
                ),
            ):
                server._admit(first_end, address)
                # One loop turn: the first connection's transport exists; its protocol's
                # connection_made() is scheduled, not run.
                await asyncio.sleep(0)
                server._admit(second_end, second_address)  # sheds the first (its share: 1)
                assert server.admission.shed_count == 1  # guard
                assert server.admission.pending == 1
                async with asyncio.timeout(WAIT / 2):
                    while not closed_by_peer(first):
                        await asyncio.sleep(0.05)
                assert not closed_by_peer(second)

    asyncio.run(body())


def test_failed_handshakes_leave_no_error_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """REVIEW finding 3: every failed handshake logged an ERROR with a traceback.

    The handshake's waiter future got the handshake's exception and nobody
    retrieved it, so asyncio logged "Future exception was never retrieved" for
    each one: any client could write to the app's log (on the operator's disk,
    unbounded) as fast as it could open connections.
    """
    attempts = 5

    async def body() -> None:
        async with serving(WebSocketRefusingApp(), timeouts=SLOW_HANDSHAKE) as s:
            for _ in range(attempts):
                reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # not TLS
                assert await reader.read() == b""  # guard: the handshake failed
                writer.close()
            gc.collect()  # asyncio logs an unretrieved exception when its future is freed
            await asyncio.sleep(0)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        asyncio.run(body())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """Trace Python's allocations (what the server holds; not the allocator's leftovers)."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


@contextlib.asynccontextmanager
async def _traced() -> AsyncIterator[None]:
    with tracing():
        yield


def traced_bytes() -> int:
    """Bytes Python allocated and has not freed, since :func:`tracing` began."""
    return tracemalloc.get_traced_memory()[0]


def test_partial_request_bodies_cost_the_runtime_a_bounded_amount_of_memory() -> None:
    """REVIEW finding 5 (older than the change, against its goal): the WSGI adapter reads a
    whole request body (up to MAX_WSGI_BODY, 16 MiB) into memory before the app runs, for
    every request at once: 1024 connections could make the runtime hold 16 GiB, and one
    HTTP/2 connection 100 streams times 16 MiB. ADR 0013 promises about 100 KiB per
    connection. Here 24 connections each send 2 MiB of a declared 15 MB body and wait."""
    connections, sent_each = 24, 2 * 1024 * 1024
    bound = 16 * 1024 * 1024  # far over the ~100 KiB per connection ADR 0013 promises
    payload = memoryview(b"x" * sent_each)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with serving(flask_app, tls=False, timeouts=SLOW_HANDSHAKE) as s, _traced():
            before = traced_bytes()
            socks = []
            senders = []
            for _ in range(connections):
                sock = socket.create_connection(("127.0.0.1", s.port))
                sock.setblocking(False)
                head = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 15000000\r\n\r\n"
                await loop.sock_sendall(sock, head)
                socks.append(sock)
                senders.append(asyncio.create_task(loop.sock_sendall(sock, payload)))
            try:
                async with asyncio.timeout(3.0):
                    while traced_bytes() - before < bound:
                        await asyncio.sleep(0.1)
            except TimeoutError:
                pass  # it held back: what it holds is measured below
            grown = traced_bytes() - before
            for task in senders:
                task.cancel()
            for sock in socks:
                sock.close()
            assert grown < bound, f"the runtime holds {grown >> 20} MiB for {connections} clients"

    asyncio.run(body())


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A request head sent one byte every 0.2 s, never finished (h11 takes 16 KiB)."""
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    while True:
        await asyncio.sleep(0.2)
        writer.write(b"a")
        await writer.drain()


def test_a_few_sources_sending_request_heads_slowly_cannot_keep_others_out() -> None:
    """REVIEW finding 6: the sweep closes a partial request only after ``read`` seconds
    with no byte at all, so a byte every few seconds holds a connection for as long as
    h11's 16 KiB head limit lasts (days); and at the connection caps a newcomer can only
    displace a *pending handshake*, never a served connection. With the defaults, four
    sources (four IPv4 addresses, or one IPv6 /62) holding 256 such connections each shut
    everyone else out. Small limits here: two sources of two connections fill four."""
    limits = ConnectionLimits(
        handshakes=2, handshakes_per_source=2, connections=4, connections_per_source=2
    )
    fast = ServerTimeouts(handshake=WAIT, read=1.5, keep_alive=1.5, graceful=0.5)

    async def body() -> None:
        async with serving(WebSocketRefusingApp(), limits=limits, timeouts=fast) as s:
            slow = []
            for source in ("127.0.0.2", "127.0.0.3"):
                for _ in range(limits.connections_per_source):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1",
                        s.port,
                        ssl=client_context(["http/1.1"]),
                        server_hostname="localhost",
                        local_addr=(source, 0),
                    )
                    slow.append(asyncio.create_task(trickle(reader, writer)))
            try:
                await asyncio.sleep(2 * fast.read)  # well past the read timeout
                async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client:
                    response = await client.get(s.url)
                assert response.status_code == 200
            finally:
                for task in slow:
                    task.cancel()
                await asyncio.gather(*slow, return_exceptions=True)

    asyncio.run(body())


class _NoMemory(_TlsProtocol):
    """A TLS protocol that cannot be made: its read buffer finds no memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise MemoryError


def test_a_connection_whose_setup_fails_gives_its_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REVIEW finding 7: ``_connect`` builds the TLS protocol (a 64 KiB buffer) outside its
    ``try``, and catches only OSError: a MemoryError there (what a runtime near its plan's
    address-space limit raises) left the task failed, the socket open and the ticket held
    for as long as the runtime runs. Enough of them refuse every client."""
    limits = ConnectionLimits(
        handshakes=1, handshakes_per_source=1, connections=1, connections_per_source=1
    )

    async def body() -> None:
        async with running_server(limits) as server:
            monkeypatch.setattr("confide.runtime._server._TlsProtocol", _NoMemory)
            with connection_pair() as (client, accepted, address):
                server._admit(accepted, address)
                async with asyncio.timeout(WAIT):
                    while server._handshakes:  # the setup task ran (and failed)
                        await asyncio.sleep(0.01)
                monkeypatch.undo()
                assert server.admission.open == 0
                assert closed_by_peer(client)

    asyncio.run(body())


async def _answered_ping(
    h2: H2Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Send a PING and wait for its answer: HTTP/2 frames are handled in order, so the
    server has then read every frame sent before it."""
    h2.ping(b"inflight")
    writer.write(h2.data_to_send())
    await writer.drain()
    async with asyncio.timeout(WAIT):
        while True:
            data = await reader.read(65536)
            assert data, "the server closed the connection"
            if any(isinstance(event, PingAckReceived) for event in h2.receive_data(data)):
                return


def test_one_http2_connection_costs_the_runtime_a_bounded_amount_of_memory() -> None:
    """REVIEW finding 5, over HTTP/2: the runtime counts one connection (one ticket) while
    its streams (hypercorn allows 100) each buffer a WSGI request body of up to 16 MiB.
    Here one connection opens 24 streams and sends 1 MiB on each of declared 15 MB."""
    streams, sent_each, frame = 24, 1024 * 1024, 16 * 1024
    bound = 16 * 1024 * 1024
    chunk = b"x" * frame

    async def body() -> None:
        async with serving(flask_app, timeouts=SLOW_HANDSHAKE) as s, _traced():
            before = traced_bytes()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", s.port, ssl=client_context(["h2"]), server_hostname="localhost"
            )
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            h2 = H2Connection(H2Configuration(client_side=True))
            h2.initiate_connection()
            ids = [1 + 2 * n for n in range(streams)]
            for stream_id in ids:
                h2.send_headers(
                    stream_id,
                    [
                        (":method", "POST"),
                        (":path", "/"),
                        (":scheme", "https"),
                        (":authority", "localhost"),
                        ("content-length", "15000000"),
                    ],
                )
            sent = dict.fromkeys(ids, 0)
            try:
                async with asyncio.timeout(WAIT):
                    while any(n < sent_each for n in sent.values()):
                        for stream_id in ids:
                            while (
                                sent[stream_id] < sent_each
                                and h2.local_flow_control_window(stream_id) >= frame
                            ):
                                h2.send_data(stream_id, chunk)
                                sent[stream_id] += frame
                        writer.write(h2.data_to_send())
                        await writer.drain()
                        if any(n < sent_each for n in sent.values()):
                            data = await reader.read(65536)
                            assert data, "the server closed the connection"
                            h2.receive_data(data)  # its WINDOW_UPDATEs
                            writer.write(h2.data_to_send())
            except TimeoutError:
                pass  # it held back (flow control): what it holds is measured below
            await _answered_ping(h2, reader, writer)  # the server read what is in flight
            grown = traced_bytes() - before
            writer.transport.abort()
            assert grown < bound, f"the runtime holds {grown >> 20} MiB for one connection"

    asyncio.run(body())


def test_the_apps_handshake_timeout_is_what_adr_0013_says() -> None:
    """REVIEW finding 10: ADR 0013 and the changelog say the app's TLS handshake timeout
    became 10 s (from 30 s); APP_TIMEOUTS still said 30 s. Fixed with this test."""
    assert APP_TIMEOUTS.handshake == 10.0
