"""REVIEW (attacker's review of issue 9 point 2): the router's books, driven directly.

The router's admission (:meth:`_Router.opened`) is called here with
connections from chosen sources, IPv6 ones included, which loopback sockets
cannot come from. Each test failed on the code under review (commit 9723ffe) and
passes with its fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from confide.operator._router import (
    NullRecorder,
    RouterSettings,
    _Peek,
    _Relay,
    _Router,
)
from confide.runtime import source_of
from support.router import (
    DictRoutes,
    NoTls,
    fast_settings,
    passthrough,
    run,
)

LOG = logging.getLogger("test.review.router")


@contextlib.asynccontextmanager
async def books(settings: RouterSettings) -> AsyncIterator[_Router]:
    """A router that does not accept: the test opens its connections itself."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        router = _Router(
            asyncio.get_running_loop(),
            settings,
            DictRoutes({}),
            NoTls(),
            NullRecorder(),
            LOG,
            listener,
        )
        try:
            yield router
        finally:
            for connection in list(router.connections):
                connection.abort()
            await asyncio.sleep(0.05)  # connection_lost runs on the next loop turns


class Pairs(list[tuple[socket.socket, socket.socket]]):
    """Connected (client, server end) TCP pairs on loopback, made on demand."""

    def __init__(self, listener: socket.socket) -> None:
        super().__init__()
        self.listener = listener

    def new(self) -> tuple[socket.socket, socket.socket]:
        client = socket.create_connection(self.listener.getsockname())
        accepted, _ = self.listener.accept()
        self.append((client, accepted))
        return client, accepted


@contextlib.contextmanager
def tcp_pairs() -> Iterator[Pairs]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        made = Pairs(listener)
        try:
            yield made
        finally:
            for client, accepted in made:
                client.close()
                accepted.close()


def open_from(router: _Router, sock: socket.socket, address: tuple[str, ...]) -> _Peek | None:
    router._ids += 1
    peek = _Peek(router, sock, router._ids, source_of((*address, 0)))
    return peek if router.opened(peek) else None


def test_one_ipv6_48_cannot_take_every_unrouted_slot() -> None:
    """REVIEW finding 8: sources are IPv6 /64s, and ``_make_room`` only displaces a source
    that holds more than the newcomer plus one. An attacker with one /48 (a free tunnel
    broker allocation; many hosters give a /48 or /56) holds one idle connection from each
    of ``max_unrouted`` /64s (512 by default: a /55) and every other client is refused.
    The router's rate limit and per-source shares are per /64 too."""
    settings = fast_settings(max_unrouted=8)

    async def body() -> None:
        with tcp_pairs() as pairs:
            async with books(settings) as router:
                held = [
                    open_from(router, pairs.new()[1], (f"2001:db8:0:{n:x}::1",))
                    for n in range(settings.max_unrouted)
                ]
                assert all(held)  # guard: one /48 holds every unrouted slot
                assert router.unrouted == settings.max_unrouted
                assert open_from(router, pairs.new()[1], ("2001:db8:ffff::1",)) is not None

    run(body)


def test_a_connection_displaced_before_it_started_is_cut() -> None:
    """REVIEW finding 9 (low): ``_make_room`` may pick a _Connection whose adoption task has
    not run yet; its abort() finds no transport and does nothing, then connection_made()
    routes it as if nothing happened (``state`` goes from CLOSED back to CONNECTING). The
    newcomer got in, but the victim was never cut: ``unrouted`` exceeds ``max_unrouted``.
    Fixed with this test: connection_made() cuts a connection aborted before it. Since
    issue 14 a passthrough connection is a _Relay until its upstream answers: abort()
    cancels that connection and closes the client at once."""
    settings = fast_settings(max_unrouted=2)

    async def body() -> None:
        with socket.create_server(("127.0.0.1", 0)) as upstream:
            route = passthrough(upstream.getsockname()[1])
            with tcp_pairs() as pairs:
                async with books(settings) as router:
                    victim_client, victim_end = pairs.new()
                    first = open_from(router, victim_end, ("192.0.2.1",))
                    assert first is not None
                    first._route(route, b"")  # relayed: a _Relay, its connection spawned
                    (victim,) = router.unrouted_by_source["192.0.2.1"]
                    assert isinstance(victim, _Relay)  # guard: relayed, not started
                    assert victim.pair is None and not victim.done
                    assert open_from(router, pairs.new()[1], ("192.0.2.1",)) is not None
                    # Every unrouted slot is taken; a newcomer displaces 192.0.2.1's oldest.
                    assert open_from(router, pairs.new()[1], ("198.51.100.1",)) is not None
                    assert victim not in router.unrouted_by_source.get("192.0.2.1", {})
                    await asyncio.sleep(0.2)  # the connecting task would run
                    assert victim.done and victim.pair is None, "the victim was relayed"
                    assert router.unrouted == settings.max_unrouted
                    victim_client.setblocking(False)
                    with pytest.raises((ConnectionError, BlockingIOError)) as raised:
                        if victim_client.recv(1) == b"":
                            raise ConnectionResetError  # closed: what is expected
                    assert raised.type is not BlockingIOError, "the victim is still connected"

    run(body)
