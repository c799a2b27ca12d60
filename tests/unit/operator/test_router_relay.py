"""The relay worker: routed passthrough bytes cross intact, half-closed, bounded and timed out.

The worker is driven directly over socket pairs (the test holds the client's
and the upstream's far ends), then through the router over TCP. Each test runs
on both engines: the Python loop and the compiled one (ADR 0028). No assertion
is about time: waits are bounded, and what they wait for is an outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import select
import socket

import pytest

from confide.operator._relay import Engine, RelayPair
from confide.operator._router import Direction
from support.relay import (
    CHUNK,
    COMPILED,
    ENGINES,
    STEP,
    Ends,
    in_thread,
    read_all,
    relay_worker,
)
from support.router import (
    APP,
    LOOPBACK,
    DictRoutes,
    MemoryRecorder,
    client_hello,
    close_writer,
    fast_settings,
    passthrough,
    run,
    running_router,
)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each test of the worker runs on both engines (ADR 0028)."""
    value: Engine = request.param
    return value


def test_large_transfers_cross_intact_both_ways_at_once(engine: Engine) -> None:
    size = 8 * 1024 * 1024
    to_upstream, to_client = os.urandom(size), os.urandom(size)
    received: dict[str, bytes] = {}
    # A recorder is Python: the compiled engine runs without one.
    recorder = MemoryRecorder() if engine == "python" else None
    with relay_worker(engine, recorder=recorder) as worker:
        ends = Ends(worker, 1)

        def send(sock: socket.socket, data: bytes) -> None:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        def receive(name: str, sock: socket.socket) -> None:
            received[name] = read_all(sock)

        threads = [
            in_thread(send, ends.client, to_upstream),
            in_thread(send, ends.upstream, to_client),
            in_thread(receive, "upstream", ends.upstream),
            in_thread(receive, "client", ends.client),
        ]
        for thread in threads:
            thread.join(STEP)
        assert ends.closed.wait(STEP), "both ways ended but the pair was not closed"
        ends.close()
    assert hashlib.sha256(received["upstream"]).digest() == hashlib.sha256(to_upstream).digest()
    assert hashlib.sha256(received["client"]).digest() == hashlib.sha256(to_client).digest()
    if recorder is not None:  # it saw exactly what crossed, in order
        assert recorder.seen(Direction.TO_UPSTREAM) == to_upstream
        assert recorder.seen(Direction.TO_CLIENT) == to_client


def test_half_close_is_passed_on_and_the_other_way_carries_on(engine: Engine) -> None:
    with relay_worker(engine) as worker:
        # The client ends its stream first: the upstream answers after that end.
        ends = Ends(worker, 1)
        ends.client.sendall(b"question")
        ends.client.shutdown(socket.SHUT_WR)
        assert read_all(ends.upstream) == b"question"
        assert not ends.closed.is_set()
        ends.upstream.sendall(b"answer after your end")
        ends.upstream.shutdown(socket.SHUT_WR)
        assert read_all(ends.client) == b"answer after your end"
        assert ends.closed.wait(STEP)
        ends.close()
        # The upstream ends first: the client still sends, and it arrives.
        ends = Ends(worker, 2)
        ends.upstream.sendall(b"greeting")
        ends.upstream.shutdown(socket.SHUT_WR)
        assert read_all(ends.client) == b"greeting"
        ends.client.sendall(b"late words")
        ends.client.shutdown(socket.SHUT_WR)
        assert read_all(ends.upstream) == b"late words"
        assert ends.closed.wait(STEP)
        ends.close()


def test_a_client_that_stops_reading_stalls_the_upstream_with_bounded_memory(
    engine: Engine,
) -> None:
    payload = os.urandom(64 * 1024 * 1024)
    with relay_worker(engine) as worker:
        ends = Ends(worker, 1, small_buffers=True)
        ends.upstream.setblocking(False)
        sent = 0
        # Write until the path is full: not writable for a while means stalled (if the
        # relay buffered without bound, this would push the whole payload through).
        while sent < len(payload):
            _, writable, _ = select.select([], [ends.upstream], [], 2.0)
            if not writable:
                break
            try:
                sent += ends.upstream.send(payload[sent : sent + 65536])
            except BlockingIOError:
                continue
        assert sent < len(payload) // 8, f"{sent} bytes went into a client that reads nothing"
        assert ends.pair.buffered() <= 2 * CHUNK
        # Nothing was lost: the client, reading at last, gets exactly what was sent.
        ends.upstream.setblocking(True)
        ends.upstream.shutdown(socket.SHUT_WR)
        assert hashlib.sha256(read_all(ends.client)).digest() == (
            hashlib.sha256(payload[:sent]).digest()
        )
        ends.client.shutdown(socket.SHUT_WR)
        assert ends.closed.wait(STEP)
        ends.close()


def test_an_idle_pair_is_cut_and_a_busy_one_is_not(engine: Engine) -> None:
    with relay_worker(engine, idle_timeout=0.5) as worker:
        quiet = Ends(worker, 1)
        busy = Ends(worker, 2)
        rounds = 0
        while not quiet.closed.is_set():  # paced traffic on the busy pair until the cut
            busy.client.sendall(b"ping")
            assert busy.upstream.recv(4) == b"ping"
            rounds += 1
            assert rounds < 400, "the idle pair was never cut"
            quiet.closed.wait(0.05)
        assert quiet.client.recv(1) == b""  # the cut reached the client
        assert not busy.closed.is_set()
        busy.upstream.sendall(b"pong")
        assert busy.client.recv(4) == b"pong"
        quiet.close()
        busy.close()


def test_abort_and_stop_close_the_sockets_and_report_it(engine: Engine) -> None:
    with relay_worker(engine) as worker:
        first, second = Ends(worker, 1), Ends(worker, 2)
        worker.abort(first.pair)
        assert first.closed.wait(STEP)
        assert first.client.recv(1) == b""
        assert first.upstream.recv(1) == b""
        worker.stop()
        assert second.closed.wait(STEP)
        assert second.client.recv(1) == b""
        spare_a, spare_b = socket.socketpair()
        late = RelayPair(3, spare_a, spare_b, on_closed=lambda: None)
        assert not worker.add(late), "a stopping worker took a pair"
        spare_a.close()
        spare_b.close()
        first.close()
        second.close()


async def _echo_upstream() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, LOOPBACK, 0)
    return server, server.sockets[0].getsockname()[1]


async def read_or_reset(reader: asyncio.StreamReader, size: int) -> bytes:
    """Up to ``size`` bytes; ``b""`` when the peer closed or reset the connection."""
    try:
        return await reader.read(size)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize("recording", [True, False], ids=["recorder", "no-recorder"])
def test_router_relays_large_transfers_over_tcp_and_frees_the_app_cap(
    recording: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With a recorder the router relays on the Python engine; without one, on the compiled
    one where it is built. It says which, once."""
    payload = os.urandom(4 * 1024 * 1024)
    hello = client_hello(APP)
    caplog.set_level(logging.INFO, logger="confide.operator._router")

    async def body() -> None:
        server, port = await _echo_upstream()
        recorder = MemoryRecorder() if recording else None
        settings = fast_settings(max_connections_per_app=1, buffer_size=16 * 1024)
        async with (
            server,
            running_router(
                settings, DictRoutes({APP: passthrough(port)}), recorder=recorder
            ) as router,
        ):
            reader, writer = await asyncio.open_connection(LOOPBACK, router.port)
            writer.write(hello + payload)
            echoed = await reader.readexactly(len(hello) + len(payload))
            assert echoed == hello + payload
            # The app's one relayed slot is taken: another client is closed.
            other_reader, other_writer = await asyncio.open_connection(LOOPBACK, router.port)
            other_writer.write(hello)
            assert await read_or_reset(other_reader, 1) == b""
            await close_writer(other_writer)
            # Half-close through the router: the echo server ends, and so does the relay.
            writer.write_eof()
            assert await reader.read(1) == b""
            await close_writer(writer)
            # The worker closed the pair; its slot comes back to the app.
            for _ in range(200):
                reader, writer = await asyncio.open_connection(LOOPBACK, router.port)
                writer.write(hello)
                answer = await read_or_reset(reader, len(hello))
                await close_writer(writer)
                if answer:
                    break
                await asyncio.sleep(0.05)
            assert answer == hello[: len(answer)] and answer, "the app's slot never came back"
        if recorder is not None:
            assert recorder.seen(Direction.TO_CLIENT).startswith(hello + payload)

    run(body)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("relay engine:")]
    expected = "compiled" if COMPILED and not recording else "Python"
    assert len(said) == 1 and said[0].startswith(f"relay engine: {expected} ("), said
