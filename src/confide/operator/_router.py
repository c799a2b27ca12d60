"""The operator's TLS front door: route each connection by SNI to the enclave that serves it.

The router peeks at the ClientHello's server name without reading it from the
socket or terminating TLS (:mod:`._tlsparse`), asks the injected
:class:`RouteTable`, and then either

- **hands off** (passthrough routes with a hand-off socket: local runtimes in
  RA-TLS and owner-certificate modes): passes the client's socket itself to
  the runtime (:mod:`confide.runtime._handoff`, ADR 0009), which reads the ClientHello and
  serves the connection; the router is out of the path from then on;
- **passthrough** (the same modes, other runtimes, or when a hand-off fails):
  relays the ClientHello and then both directions as raw TCP. The operator
  holds no key and sees only ciphertext; the client checks the enclave's own
  certificate end to end;
- **terminate** (operator mode, ``--untrusted-ssl``): completes the TLS
  handshake with the operator's ``*.<base-domain>`` certificate (from the
  injected :class:`TlsProvider`, normally :class:`~._ca.OperatorCA`) and
  relays the plain bytes to the app's HTTP port. The operator reads this
  traffic, which is what that mode means.

A connection whose ClientHello is malformed is closed without a byte sent;
one with no SNI or a name the router does not serve gets a fatal
``unrecognized_name`` TLS alert first, so that its client can say why.

Every resource is bounded by :class:`RouterSettings`: connections (all, and
those not yet routed), the time to route a connection, idle time once
spliced, and the bytes buffered per direction (reading pauses when the other
side's write buffer is full, so a slow reader holds no memory). Once routed, a
passthrough connection's bytes are copied by a relay thread with its own epoll
(:mod:`._relay`; its loop compiled when built, ADR 0028), outside asyncio's transports:
fewer wake-ups and copies. Admission is
fair between sources (an IPv4 address, or an IPv6 /64): each source has a
share of the connections and of the unrouted slots, and a rate of new
connections (a token bucket); when every unrouted slot is taken, a newcomer
takes the oldest slot of the source holding the most, so that one source's
flood of idle connections cannot keep others out. Relayed connections are also
bounded per app (its upstream). A handed-off connection leaves the router's
books at once: the runtime bounds those itself (it sees the client's address),
and the per-source rate bounds how fast any source can hand it new ones.

Example::

    >>> async def main(routes: RouteTable, ca: TlsProvider, stop: asyncio.Event) -> None:
    ...     await serve_router(
    ...         RouterSettings(host="127.0.0.1", port=0), routes, ca,
    ...         shutdown_trigger=stop.wait, on_ready=lambda address: print(address.port),
    ...     )
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from confide.errors import UsageError
from confide.runtime import bind_listener, hand_off, network_of, source_of
from confide.wire import HostPort

from ._relay import RelayPair, RelayWorker, choose_engine
from ._tlsparse import MAX_PEEK_SIZE, NeedMore, Rejected, peek_client_hello

#: Largest plaintext chunk decrypted at once in terminate mode.
_TLS_READ_CHUNK: Final = 64 * 1024
#: After accept() fails for lack of descriptors, the listener rests this long (seconds).
_ACCEPT_PAUSE: Final = 1.0
#: A fatal TLS alert ``unrecognized_name`` (RFC 8446 6.2, code 112), after the record
#: header's content type (alert = 21) and version (copied from the client's record).
_ALERT_TYPE: Final = b"\x15"
_UNRECOGNIZED_NAME: Final = b"\x00\x02\x02\x70"
#: Sources whose rate buckets are remembered; beyond this, full buckets are forgotten.
_MAX_RATE_SOURCES: Final = 65536


class RouteMode(enum.StrEnum):
    """How the router handles a routed connection."""

    #: Relay the TLS bytes untouched (RA-TLS and owner-certificate modes).
    PASSTHROUGH = "passthrough"
    #: Terminate TLS with the operator's certificate, relay plain HTTP (operator mode).
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class Route:
    """Where connections for one server name go."""

    mode: RouteMode
    upstream_host: str
    upstream_port: int
    #: Passthrough only: the upstream's hand-off socket (ADR 0009). When set,
    #: the router passes the client's connection itself to the upstream instead of
    #: relaying its bytes; when the hand-off fails, it relays them.
    handoff: Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, RouteMode):
            raise UsageError(f"route mode must be a RouteMode, got {self.mode!r}")
        if not self.upstream_host or len(self.upstream_host) > 253:
            raise UsageError(f"route upstream host {self.upstream_host!r} is not a host")
        if not 0 < self.upstream_port < 65536:
            raise UsageError(f"route upstream port {self.upstream_port} is not in 1..65535")
        if self.handoff is not None:
            if self.mode is not RouteMode.PASSTHROUGH:
                raise UsageError("only a passthrough route can hand connections off")
            if not self.handoff.is_absolute():
                raise UsageError(f"route hand-off socket {self.handoff} is not an absolute path")


class RouteTable(Protocol):
    """The routes, asked once per connection (so changes apply to new connections)."""

    def lookup(self, server_name: str) -> Route | None:
        """The route for ``server_name`` (lower case, no trailing dot), or ``None``."""
        ...


class TlsProvider(Protocol):
    """Gives the TLS server context for terminate-mode routes."""

    def server_ssl_context(self) -> ssl.SSLContext:
        """The current context (asked once per terminated connection)."""
        ...


class Direction(enum.Enum):
    """Which way bytes cross the router."""

    TO_UPSTREAM = "to_upstream"
    TO_CLIENT = "to_client"


class Recorder(Protocol):
    """Receives every chunk the router relays, as the router holds it.

    In passthrough mode that is the TLS records exactly as they cross (the
    ClientHello included); for a handed-off connection, the ClientHello the
    router peeked at and nothing after it; in terminate mode, the decrypted
    bytes exchanged with the upstream. Tests use it to show what the operator
    can see.
    Called on the event loop, or for passthrough traffic on the router's relay
    thread (:mod:`._relay`): it must not block.
    """

    def record(self, connection: int, direction: Direction, data: bytes) -> None: ...


class NullRecorder:
    """The default recorder: keeps nothing."""

    def record(self, connection: int, direction: Direction, data: bytes) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """The router's address and limits. Times are in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = 8443
    #: Open client connections; one more is closed as soon as it is accepted.
    max_connections: int = 4096
    #: Of those, connections not yet routed (slow or silent clients): when all are taken,
    #: a new one takes the oldest slot of the source holding the most (if it holds more).
    max_unrouted: int = 512
    #: Per source (an IPv4 address or an IPv6 /64): connections held, and unrouted ones.
    max_connections_per_source: int = 256
    max_unrouted_per_source: int = 32
    #: Relayed connections per app (its upstream address).
    max_connections_per_app: int = 1024
    #: New connections accepted per second from one source, in a bucket of ``burst``.
    new_connections_per_second: float = 100.0
    new_connections_burst: int = 400
    #: From accept to a routed connection: ClientHello read, TLS handshake done
    #: (terminate mode) and upstream connected. A client that is silent or sends a
    #: partial ClientHello is dropped when it runs out.
    handshake_timeout: float = 10.0
    #: Connecting to the upstream (also bounded by ``handshake_timeout``).
    connect_timeout: float = 5.0
    #: A routed connection with no byte in either direction for this long is closed.
    idle_timeout: float = 300.0
    #: Bytes buffered towards each side before reading from the other side pauses.
    buffer_size: int = 256 * 1024
    #: Listen backlog.
    backlog: int = 1024
    #: On shutdown, time left to open connections before they are cut.
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise UsageError(f"router port {self.port} is not in 0..65535")
        for name in (
            "max_connections",
            "max_unrouted",
            "max_connections_per_source",
            "max_unrouted_per_source",
            "max_connections_per_app",
            "new_connections_burst",
            "buffer_size",
            "backlog",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"router setting {name} must be at least 1")
        # A share larger than its whole is allowed: the whole binds first.
        if self.max_unrouted > self.max_connections:
            raise UsageError("router setting max_unrouted must not exceed max_connections")
        if not 0 < self.new_connections_per_second <= 1e6:
            raise UsageError("router setting new_connections_per_second must be in (0, 1e6]")
        if self.buffer_size < 4096:
            raise UsageError("router setting buffer_size must be at least 4096")
        for name in ("handshake_timeout", "connect_timeout", "idle_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 24 * 3600:
                raise UsageError(f"router setting {name} must be in (0, 86400] seconds")


async def serve_router(
    settings: RouterSettings,
    routes: RouteTable,
    tls_provider: TlsProvider,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    recorder: Recorder | None = None,
    on_ready: Callable[[HostPort], None] | None = None,
) -> None:
    """Serve the front port until ``shutdown_trigger()`` returns.

    ``on_ready`` is called once the port listens, with its address. On
    shutdown the port closes at once; open connections get
    ``settings.shutdown_timeout`` seconds to end before they are cut.
    ``recorder`` (default: :class:`NullRecorder`) sees every relayed chunk.
    Raises :class:`UsageError` when the port cannot be bound.
    """
    loop = asyncio.get_running_loop()
    listener = bind_listener(
        settings.host,
        settings.port,
        backlog=settings.backlog,
        role="router",
        hint="choose another router address or port",
    )
    router = _Router(
        loop,
        settings,
        routes,
        tls_provider,
        recorder if recorder is not None else NullRecorder(),
        logging.getLogger(__name__),
        listener,
    )
    engine, why = choose_engine("auto", recording=not isinstance(router.recorder, NullRecorder))
    router.log.info("relay engine: %s (%s)", "compiled" if engine == "c" else "Python", why)
    try:
        router.start_accepting()
        host, port = listener.getsockname()[:2]
        if on_ready is not None:
            on_ready(HostPort(host, port))
        await shutdown_trigger()
    finally:
        router.stop_accepting()
        listener.close()
        await router.drain(settings.shutdown_timeout)


class _Router:
    """The state shared by a router's connections (no globals)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: RouterSettings,
        routes: RouteTable,
        tls_provider: TlsProvider,
        recorder: Recorder,
        log: logging.Logger,
        listener: socket.socket,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.routes = routes
        self.tls_provider = tls_provider
        self.recorder = recorder
        self.log = log
        self.listener = listener
        self.connections: set[_Connection | _Relay | _Peek] = set()
        self.unrouted = 0
        #: Per source: connections held, and the unrouted ones oldest first.
        self.held: dict[str, int] = {}
        self.unrouted_by_source: dict[str, dict[_Connection | _Relay | _Peek, None]] = {}
        #: Relayed connections per upstream.
        self.per_app: dict[tuple[str, int], int] = {}
        self.rate = _RateLimiter(
            settings.new_connections_per_second, settings.new_connections_burst
        )
        self.tasks: set[asyncio.Task[None]] = set()
        #: Relays routed passthrough connections; started with the first one.
        self.worker: RelayWorker | None = None
        self.stopping = False
        self._ids = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self._accepting = False
        self._resume: asyncio.TimerHandle | None = None

    def start_accepting(self) -> None:
        self._accepting = True
        self.loop.add_reader(self.listener.fileno(), self._accept)

    def stop_accepting(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self.listener.fileno())

    def _accept(self) -> None:
        for _ in range(self.settings.backlog):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: rest instead of spinning on a ready listener.
                    self.log.error("router: accept failed (%s); pausing %g s", exc, _ACCEPT_PAUSE)
                    self.stop_accepting()
                    self._resume = self.loop.call_later(_ACCEPT_PAUSE, self.start_accepting)
                # ECONNABORTED and the like: that client is gone; the others wait.
                return
            self._ids += 1
            peek = _Peek(self, sock, self._ids, source_of(address))
            if not self.opened(peek):
                sock.close()
                continue
            peek.start()

    def opened(self, peek: _Peek) -> bool:
        """Count a new connection in (as its _Peek), or say no when a limit is reached."""
        s = self.settings
        source = peek.source
        if (
            len(self.connections) >= s.max_connections
            or self.held.get(source, 0) >= s.max_connections_per_source
            or len(self.unrouted_by_source.get(source, ())) >= s.max_unrouted_per_source
            or not self.rate.take(source, self.loop.time())
        ):
            self.log.debug("connection %d from %s refused: limits reached", peek.ident, source)
            return False
        if self.unrouted >= s.max_unrouted and not self._make_room(source):
            return False
        self.connections.add(peek)
        self.held[source] = self.held.get(source, 0) + 1
        self.unrouted += 1
        self.unrouted_by_source.setdefault(source, {})[peek] = None
        self._empty.clear()
        return True

    def _make_room(self, source: str) -> bool:
        """Every unrouted slot is taken: drop the oldest of the source holding the most.

        Sources are compared first by network (:func:`network_of`: an IPv6 /64 counts
        in its /48, which one attacker holds whole for free), then one by one.
        """
        held: dict[str, int] = {}
        for each, queue in self.unrouted_by_source.items():
            key = network_of(each)
            held[key] = held.get(key, 0) + len(queue)
        network = max(held, key=held.__getitem__)
        by_network = held[network] > held.get(network_of(source), 0) + 1
        candidates = [
            s for s in self.unrouted_by_source if not by_network or network_of(s) == network
        ]
        busiest = max(candidates, key=lambda s: len(self.unrouted_by_source[s]))
        mine = len(self.unrouted_by_source.get(source, ()))
        if not by_network and len(self.unrouted_by_source[busiest]) <= mine + 1:
            return False  # no network or source holds more than the newcomer's: it waits
        queue = self.unrouted_by_source[busiest]
        victim = next(iter(queue))
        # Off the queue now: a connection ends on a later loop turn, and the next newcomer
        # must pick another victim, not this one again.
        del queue[victim]
        self.log.debug("connection %d from %s dropped for a newcomer", victim.ident, busiest)
        victim.abort()
        return True

    def adopted(self, peek: _Peek, connection: _Connection | _Relay) -> None:
        """``connection`` carries on, still unrouted, what ``peek`` counted in."""
        self.connections.discard(peek)
        self.connections.add(connection)
        queue = self.unrouted_by_source.get(peek.source)
        if queue is not None and peek in queue:
            # In the peek's place, so that it keeps its age: it is the same client.
            self.unrouted_by_source[peek.source] = {
                (connection if held is peek else held): None for held in queue
            }
        key = connection.app_key
        self.per_app[key] = self.per_app.get(key, 0) + 1

    def relay(self, pair: RelayPair) -> bool:
        """Give a routed passthrough connection to the relay worker; ``False`` if stopping."""
        if self.stopping:
            return False
        if self.worker is None or not self.worker.alive():
            record = None
            if not isinstance(self.recorder, NullRecorder):
                recorder = self.recorder

                def record(ident: int, to_upstream: bool, data: bytes) -> None:
                    way = Direction.TO_UPSTREAM if to_upstream else Direction.TO_CLIENT
                    recorder.record(ident, way, data)

            self.worker = RelayWorker(
                chunk=self.settings.buffer_size,
                idle_timeout=self.settings.idle_timeout,
                log=self.log,
                record=record,
            )
            self.worker.start()
        return self.worker.add(pair)

    def routed(self, connection: _Connection | _Relay | _Peek) -> None:
        """``connection`` is no longer unrouted (routed, or closed before)."""
        self.unrouted -= 1
        queue = self.unrouted_by_source.get(connection.source)
        if queue is not None:
            queue.pop(connection, None)
            if not queue:
                del self.unrouted_by_source[connection.source]

    def app_full(self, route: Route) -> bool:
        key = (route.upstream_host, route.upstream_port)
        return self.per_app.get(key, 0) >= self.settings.max_connections_per_app

    def closed(self, connection: _Connection | _Relay | _Peek) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        left = self.held[connection.source] - 1
        if left:
            self.held[connection.source] = left
        else:
            del self.held[connection.source]
        if isinstance(connection, _Connection | _Relay):
            key = connection.app_key
            count = self.per_app[key] - 1
            if count:
                self.per_app[key] = count
            else:
                del self.per_app[key]
        if not self.connections:
            self._empty.set()

    def spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        """Wait for the connections to end, up to ``timeout``; then cut the rest."""
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()
        except TimeoutError:
            self.log.info("cutting %d connections at shutdown", len(self.connections))
        for connection in list(self.connections):
            connection.abort()
        try:
            async with asyncio.timeout(timeout):
                await self._empty.wait()  # connection_lost runs on the next loop turns
        except TimeoutError:  # pragma: no cover - abort() always ends in connection_lost
            self.log.error("%d connections did not close", len(self.connections))
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.stopping = True
        if self.worker is not None:
            self.worker.stop()
            await asyncio.to_thread(self.worker.join)


class _Peek:
    """A new connection, before routing: its ClientHello is peeked at, never consumed.

    The bytes stay in the kernel, so a passthrough route can hand the socket
    itself to the upstream (:func:`confide.runtime._handoff.hand_off`), which then reads the
    ClientHello as if it had accepted the connection. Otherwise the socket
    becomes a :class:`_Connection` (which reads the same bytes again).

    While the ClientHello is incomplete, ``SO_RCVLOWAT`` is raised past what
    is buffered, so the event loop wakes only when more bytes (or the end of
    the stream) arrive.
    """

    __slots__ = (
        "router",
        "sock",
        "ident",
        "source",
        "deadline",
        "timer",
        "seen",
        "lowat",
        "done",
    )

    def __init__(self, router: _Router, sock: socket.socket, ident: int, source: str) -> None:
        self.router = router
        self.sock = sock
        self.ident = ident
        self.source = source
        self.deadline = router.loop.time() + router.settings.handshake_timeout
        self.timer: asyncio.TimerHandle | None = None
        self.seen = 0
        self.lowat = False
        self.done = False

    def start(self) -> None:
        self.sock.setblocking(False)
        self.router.loop.add_reader(self.sock.fileno(), self._readable)
        self.timer = self.router.loop.call_at(self.deadline, self._expired)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(MAX_PEEK_SIZE + 1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(f"read failed: {exc}")
            return
        if len(data) <= self.seen:  # woken with nothing new: the client closed (or reset)
            self._drop("client closed before it was routed")
            return
        self.seen = len(data)
        result = peek_client_hello(data)
        if isinstance(result, NeedMore):
            if len(data) > MAX_PEEK_SIZE:  # pragma: no cover - the parser bounds this
                self._drop("ClientHello over the peek limit")
                return
            self._wait_beyond(len(data))
            return
        if isinstance(result, Rejected):
            self._drop(f"bad ClientHello: {result.reason}")
            return
        if result.server_name is None:
            self._refuse_name(data, "no SNI")
            return
        route = self.router.routes.lookup(result.server_name)
        if route is None:
            self._refuse_name(data, f"no route for {result.server_name}")
            return
        self._route(route, data)

    def _refuse_name(self, hello: bytes, reason: str) -> None:
        """Tell the client, with a TLS alert, that no app is served under the name it asked for.

        The ClientHello is read first (unread bytes would make the close a reset, which
        the client could see before the alert); the alert fits any socket buffer.
        """
        self.router.log.debug("connection %d closed: %s", self.ident, reason)
        if self._release():
            try:
                self.sock.recv(len(hello))
                self.sock.send(_ALERT_TYPE + hello[1:3] + _UNRECOGNIZED_NAME)
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.router.log.debug("connection %d: alert not sent: %s", self.ident, exc)
        self._close()

    def _wait_beyond(self, buffered: int) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, buffered + 1)
        except OSError as exc:  # pragma: no cover - Linux accepts any positive value
            self._drop(f"cannot wait for the rest of the ClientHello: {exc}")
            return
        self.lowat = True

    def _release(self) -> bool:
        """Stop watching the socket; ``False`` if it cannot be used any more."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.router.loop.remove_reader(self.sock.fileno())
        if self.lowat:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError as exc:  # pragma: no cover - only on a broken socket
                self.router.log.debug("connection %d closed: %s", self.ident, exc)
                return False
        return True

    def _route(self, route: Route, hello: bytes) -> None:
        router = self.router
        if not self._release():
            self._close()
            return
        if route.handoff is not None and hand_off(route.handoff, self.sock):
            router.recorder.record(self.ident, Direction.TO_UPSTREAM, hello)
            self._close()  # the upstream holds its own descriptor of the connection
            return
        if route.handoff is not None:
            router.log.debug(
                "connection %d: hand-off to %s failed; relaying", self.ident, route.handoff
            )
        if router.app_full(route):
            router.log.debug(
                "connection %d closed: %s:%d holds its most relayed connections",
                self.ident,
                route.upstream_host,
                route.upstream_port,
            )
            self._close()
            return
        if route.mode is RouteMode.PASSTHROUGH:
            relay = _Relay(router, self.sock, self.ident, route, self.deadline, self.source)
            router.adopted(self, relay)
            relay.start()
            return
        connection = _Connection(router, self.ident, route, self.deadline, self.source)
        router.adopted(self, connection)
        router.spawn(self._adopt(connection))

    async def _adopt(self, connection: _Connection) -> None:
        try:
            await self.router.loop.connect_accepted_socket(lambda: connection, self.sock)
        except OSError as exc:  # pragma: no cover - the socket was just accepted
            self.router.log.debug("connection %d closed: %s", self.ident, exc)
            connection.connection_lost(exc)
            self.sock.close()

    def _expired(self) -> None:
        self.timer = None
        self._drop(f"not routed within {self.router.settings.handshake_timeout} s")

    def _drop(self, reason: str) -> None:
        self.router.log.debug("connection %d closed: %s", self.ident, reason)
        if not self.done:
            self._release()
        self._close()

    def _close(self) -> None:
        self.sock.close()
        self.router.routed(self)
        self.router.closed(self)

    def abort(self) -> None:
        """Shutdown: drop the connection now."""
        if not self.done:
            self._drop("router stopping")


class _Relay:
    """A routed passthrough connection: connected to its upstream here, relayed by the worker.

    Until the upstream answers it is unrouted (bounded by ``handshake_timeout``
    and ``connect_timeout``, displaceable by a newcomer); then both sockets go
    to the router's :class:`~._relay.RelayWorker`, which reads the ClientHello
    still waiting in the client's socket first. It leaves the router's books
    when the worker says it has closed them.
    """

    __slots__ = (
        "router",
        "sock",
        "upstream",
        "ident",
        "source",
        "route",
        "app_key",
        "deadline",
        "timer",
        "task",
        "pair",
        "unrouted",
        "done",
    )

    def __init__(
        self,
        router: _Router,
        sock: socket.socket,
        ident: int,
        route: Route,
        deadline: float,
        source: str,
    ) -> None:
        self.router = router
        self.sock = sock
        self.upstream: socket.socket | None = None
        self.ident = ident
        self.source = source
        self.route = route
        self.app_key = (route.upstream_host, route.upstream_port)
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.pair: RelayPair | None = None
        self.unrouted = True  # counted so by the _Peek it carries on from
        self.done = False

    def start(self) -> None:
        self.timer = self.router.loop.call_at(self.deadline, self._expired)
        self.task = self.router.spawn(self._connect())

    async def _connect(self) -> None:
        router = self.router
        route = self.route
        where = f"{route.upstream_host}:{route.upstream_port}"
        try:
            async with asyncio.timeout(router.settings.connect_timeout):
                upstream = await _connect_tcp(router.loop, route.upstream_host, route.upstream_port)
        except (OSError, TimeoutError) as exc:
            self.task = None
            router.log.warning("connection %d: upstream %s unreachable: %r", self.ident, where, exc)
            self._end()
            return
        self.task = None
        if self.done:  # pragma: no cover - abort() cancels the task first
            upstream.close()
            return
        self._cancel_timer()
        self.unrouted = False
        router.routed(self)
        for sock in (self.sock, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = upstream
        pair = RelayPair(self.ident, self.sock, upstream, on_closed=self._closed_by_worker)
        if router.relay(pair):
            self.pair = pair
        else:
            self._end()

    def _closed_by_worker(self) -> None:
        """On the worker thread: the sockets are closed; the books follow on the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: so are the books
            self.router.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        self.done = True
        self.router.closed(self)

    def abort(self) -> None:
        """Cut the connection (displaced, or the router stopping)."""
        if self.pair is not None:
            if self.router.worker is not None:
                self.router.worker.abort(self.pair)
            return
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._end()

    def _expired(self) -> None:
        self.timer = None
        self.router.log.debug(
            "connection %d closed: not routed within %s s",
            self.ident,
            self.router.settings.handshake_timeout,
        )
        self.abort()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _end(self) -> None:
        """Close both sockets here (the worker never had them) and leave the books."""
        if self.done:
            return
        self.done = True
        self._cancel_timer()
        self.sock.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.unrouted:
            self.unrouted = False
            self.router.routed(self)
        self.router.closed(self)


async def _connect_tcp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port`` (names resolved off the loop)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure


class _State(enum.Enum):
    ROUTING = "routing"  # routed by its _Peek; not started yet
    TLS = "tls"  # terminate mode: TLS handshake under way
    CONNECTING = "connecting"  # routed; connecting to the upstream, client reads paused
    OPEN = "open"  # spliced
    CLOSED = "closed"


class _Tls:
    """Terminate mode: the operator's TLS server end, driven through memory BIOs."""

    __slots__ = ("incoming", "outgoing", "obj")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)


class _Connection(asyncio.Protocol):
    """One client connection, and its upstream once routed."""

    def __init__(
        self, router: _Router, ident: int, route: Route, deadline: float, source: str
    ) -> None:
        self.router = router
        self.ident = ident
        self.source = source
        self.app_key = (route.upstream_host, route.upstream_port)
        self.chosen = route  # by the _Peek, from the ClientHello still unread in the socket
        self.deadline = deadline  # loop time by which the connection must be routed
        self.state = _State.ROUTING
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # for the upstream, while connecting
        self.tls: _Tls | None = None
        self.route: Route | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.last_activity = 0.0
        self.counted = False
        self.unrouted = False
        self.client_eof = False
        self.upstream_eof = False
        self.client_reading_paused = False  # by backpressure from the upstream
        self.connect_task: asyncio.Task[None] | None = None

    # -- client side (asyncio.Protocol) --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Counted in (connections, unrouted) by the _Peek this connection carries on from.
        self.counted = self.unrouted = True
        if not isinstance(transport, asyncio.Transport):  # pragma: no cover - TCP only
            transport.close()
            self.connection_lost(None)
            return
        self.client = transport
        if self.state is _State.CLOSED:  # aborted (displaced, or the router stopping) before
            transport.abort()  # it started: connection_lost() takes it off the books
            return
        limit = self.router.settings.buffer_size
        transport.set_write_buffer_limits(high=limit, low=limit // 4)
        self.timer = self.router.loop.call_at(self.deadline, self._handshake_expired)
        self._start(self.chosen)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is _State.OPEN:
            self.last_activity = self.router.loop.time()
            if self.tls is None:
                self._to_upstream(data)
            else:
                self._tls_received(data)
        elif state is _State.TLS:
            self._tls_received(data)
        elif state is _State.CONNECTING:  # pragma: no cover - reading is paused then
            self._stop("client data while connecting")

    def eof_received(self) -> bool:
        if self.state is not _State.OPEN:
            self._stop("client closed before it was routed")
            return False
        self.client_eof = True
        if self.upstream_eof:
            self.close()
            return False
        if self.upstream is not None and self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client = None
        if not self.counted:
            return
        self.counted = False
        self._cancel_timer()
        if self.unrouted:
            self.unrouted = False
            self.router.routed(self)
        if self.connect_task is not None:
            self.connect_task.cancel()
        if self.upstream is not None:
            if exc is None:
                self.upstream.close()  # sends what is buffered, then FIN
            else:
                self.upstream.abort()  # the client is gone: nobody wants the rest
        self.state = _State.CLOSED
        self.router.closed(self)

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.state is _State.OPEN:
            self.upstream.resume_reading()

    # -- upstream side (called by _Upstream) --

    def on_upstream_data(self, data: bytes) -> None:
        if self.state is not _State.OPEN or self.client is None:
            return
        self.last_activity = self.router.loop.time()
        self.router.recorder.record(self.ident, Direction.TO_CLIENT, data)
        if self.tls is None:
            self.client.write(data)
            return
        try:
            self.tls.obj.write(data)
        except ssl.SSLError as exc:
            self._stop(f"TLS write failed: {exc}")
            return
        self._flush_tls()

    def on_upstream_eof(self) -> bool:
        self.upstream_eof = True
        if self.tls is not None:
            try:
                self.tls.obj.unwrap()  # queue close_notify; the client's reply is not awaited
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self._stop(f"TLS close failed: {exc}")
                return False
            self._flush_tls()
        if self.client_eof:
            self.close()
            return False
        if self.client is not None and self.client.can_write_eof():
            self.client.write_eof()
        return True

    def on_upstream_lost(self) -> None:
        self.upstream = None
        if self.state is not _State.CLOSED:
            self.close()

    def on_upstream_pause_writing(self) -> None:
        if self.client is not None and not self.client_reading_paused:
            self.client_reading_paused = True
            self.client.pause_reading()

    def on_upstream_resume_writing(self) -> None:
        if self.client is not None and self.client_reading_paused:
            self.client_reading_paused = False
            if self.state is _State.OPEN:
                self.client.resume_reading()

    # -- closing --

    def close(self) -> None:
        """Close both sides after their buffered bytes are sent.

        A client that does not read what is left is cut after ``idle_timeout``:
        a closing connection still counts against ``max_connections``.
        """
        self.state = _State.CLOSED
        self._cancel_timer()
        if self.client is not None:
            self.client.close()
            self.timer = self.router.loop.call_later(self.router.settings.idle_timeout, self.abort)
        if self.upstream is not None:
            self.upstream.close()

    def abort(self) -> None:
        """Cut both sides now, dropping buffered bytes."""
        self.state = _State.CLOSED
        self._cancel_timer()
        if self.connect_task is not None:
            self.connect_task.cancel()
        if self.client is not None:
            self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()

    def _stop(self, reason: str) -> None:
        self.router.log.debug("connection %d closed: %s", self.ident, reason)
        self.abort()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _handshake_expired(self) -> None:
        self.timer = None
        self._stop(f"not routed within {self.router.settings.handshake_timeout} s")

    def _idle_check(self) -> None:
        idle = self.router.settings.idle_timeout
        quiet = self.router.loop.time() - self.last_activity
        if quiet >= idle:
            self.timer = None
            self._stop(f"idle for {idle} s")
        else:
            self.timer = self.router.loop.call_later(idle - quiet, self._idle_check)

    # -- routing --

    def _start(self, route: Route) -> None:
        # Only terminate routes get here: passthrough ones are relayed by _Relay.
        try:
            self.tls = _Tls(self.router.tls_provider.server_ssl_context())
        except (ssl.SSLError, OSError) as exc:
            self.router.log.warning("connection %d: no TLS context: %s", self.ident, exc)
            self.abort()
            return
        self.state = _State.TLS
        self.route = route

    def _connect(self, route: Route) -> None:
        self.state = _State.CONNECTING
        if self.client is not None:
            self.client.pause_reading()
        self.connect_task = self.router.spawn(self._open_upstream(route))

    async def _open_upstream(self, route: Route) -> None:
        loop = self.router.loop
        where = f"{route.upstream_host}:{route.upstream_port}"
        try:
            async with asyncio.timeout(self.router.settings.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Upstream(self), route.upstream_host, route.upstream_port
                )
        except (OSError, TimeoutError) as exc:
            self.connect_task = None
            self.router.log.warning(
                "connection %d: upstream %s unreachable: %r", self.ident, where, exc
            )
            self.abort()
            return
        self.connect_task = None
        if self.state is not _State.CONNECTING or self.client is None:
            transport.abort()
            return
        self._opened()

    def _opened(self) -> None:
        if self.client is None or self.upstream is None:  # pragma: no cover - checked by caller
            return
        self.state = _State.OPEN
        self.unrouted = False
        self.router.routed(self)
        self._cancel_timer()
        limit = self.router.settings.buffer_size
        self.upstream.set_write_buffer_limits(high=limit, low=limit // 4)
        pending, self.pending = self.pending, []
        for chunk in pending:
            self._to_upstream(chunk)
        if self.client_eof and self.upstream.can_write_eof():
            self.upstream.write_eof()
        self.last_activity = self.router.loop.time()
        self.timer = self.router.loop.call_later(
            self.router.settings.idle_timeout, self._idle_check
        )
        if not self.client_reading_paused and not self.client_eof:
            self.client.resume_reading()

    def _to_upstream(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
            return
        self.router.recorder.record(self.ident, Direction.TO_UPSTREAM, data)
        self.upstream.write(data)

    # -- terminate mode --

    def _tls_received(self, data: bytes) -> None:
        tls = self.tls
        if tls is None:  # pragma: no cover - only called in terminate mode
            return
        tls.incoming.write(data)
        if self.state is _State.TLS:
            try:
                tls.obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_tls()
                return
            except (ssl.SSLError, ssl.CertificateError) as exc:
                self._flush_tls()  # the alert, if any
                self._stop(f"TLS handshake failed: {exc}")
                return
            self._flush_tls()
            if self.route is None:  # pragma: no cover - set with self.tls
                self._stop("terminated connection without a route")
                return
            self._connect(self.route)
        self._decrypt()

    def _decrypt(self) -> None:
        tls = self.tls
        if tls is None:  # pragma: no cover - only called in terminate mode
            return
        chunks: list[bytes] = []
        eof = False
        while True:
            try:
                chunk = tls.obj.read(_TLS_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                self._stop(f"TLS read failed: {exc}")
                return
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        self._flush_tls()
        if chunks:
            self._to_upstream(b"".join(chunks))
        if eof and not self.client_eof:
            self.client_eof = True  # close_notify: end of the client's stream
            if self.upstream is not None and self.upstream.can_write_eof():
                if self.upstream_eof:
                    self.close()
                else:
                    self.upstream.write_eof()

    def _flush_tls(self) -> None:
        if self.tls is None or self.client is None:
            return
        out = self.tls.outgoing.read()
        if out:
            self.client.write(out)


class _RateLimiter:
    """New connections per source: a token bucket each, refilled at ``rate`` up to ``burst``."""

    __slots__ = ("rate", "burst", "buckets")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        #: source -> (tokens, loop time of the last update)
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, source: str, now: float) -> bool:
        """Take one token for ``source`` at loop time ``now``; ``False`` when it has none."""
        tokens, then = self.buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self.buckets[source] = (tokens, now)
            return False
        if source not in self.buckets and len(self.buckets) >= _MAX_RATE_SOURCES:
            self._forget_full(now)
        self.buckets[source] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that are full again (their sources are as if never seen)."""
        refill = self.burst / self.rate
        for source, (_, then) in list(self.buckets.items()):
            if now - then >= refill:
                del self.buckets[source]
        if len(self.buckets) >= _MAX_RATE_SOURCES:  # all busy: forget the oldest half
            for source in list(self.buckets)[: _MAX_RATE_SOURCES // 2]:
                del self.buckets[source]


class _Upstream(asyncio.Protocol):
    """The upstream side of a connection: forwards to its :class:`_Connection`."""

    __slots__ = ("connection",)

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self.connection.upstream = transport

    def data_received(self, data: bytes) -> None:
        self.connection.on_upstream_data(data)

    def eof_received(self) -> bool:
        return self.connection.on_upstream_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.on_upstream_lost()

    def pause_writing(self) -> None:
        self.connection.on_upstream_pause_writing()

    def resume_writing(self) -> None:
        self.connection.on_upstream_resume_writing()
