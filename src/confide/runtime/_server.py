"""The runtime's HTTP server: uvicorn's h11 protocol for HTTP/1.1, hypercorn for HTTP/2.

:func:`serve_http` serves both phases of the runtime (the configuration
endpoint and the app) on a duplicate of the one listening socket. Each
connection goes, once its TLS handshake is done, to the protocol its ALPN
picked:

- ``h2``: hypercorn's per-connection server (as before; HTTP/2 over TLS only);
- anything else (``http/1.1``, no ALPN, or plain HTTP): uvicorn's
  :class:`~uvicorn.protocols.http.h11_impl.H11Protocol`, which is much
  cheaper per request than hypercorn's HTTP/1.1 (see ``bench/bench_runtime.py``
  and docs/adr/0008-runtime-http-server.md).

The server around them is ours, not uvicorn's ``Server`` (which installs
signal handlers, builds its TLS context from files and has no handshake
timeout): an accept loop of its own, a sweep that applies
:class:`~._tls.ServerTimeouts` to the HTTP/1.1 connections, and a graceful
shutdown. Every connection, accepted or handed off, is admitted by
:class:`~._admission.Admission` (which bounds and sheds them) before anything is
spent on it. TLS runs in asyncio's own TLS protocol with a smaller read buffer
(:data:`~._admission.TLS_READ_BUFFER` instead of 256 KiB per connection).

A WSGI app is wrapped once in our :class:`~._wsgi.WsgiAdapter` (one thread hop
per request) and its request bodies are bounded by :data:`MAX_WSGI_BODY` each and
by a :class:`~._admission.BodyBudget` (:data:`~._admission.BODY_BUDGET`) in all:
a request whose body does not fit in what is left of the budget is answered
503 before any of it is read. Both paths serve the same ASGI app. The ASGI
lifespan runs once: startup before the first connection is accepted, shutdown
after the last one ended. Connections handed off by the operator's router
(:mod:`._handoff`) are served like accepted ones.

Timeouts, on both paths: the TLS handshake is bounded by ``handshake``; a
connection that sends no request is closed after ``keep_alive``; a client that
sent part of a request (or stopped reading the response) and stalls is closed
after ``read``; a request head must be complete within
:data:`REQUEST_HEAD_DEADLINE` (or ``read``, if shorter) of its first byte,
however steadily it trickles in; a request the app is still working on is not
cut. On HTTP/2, hypercorn applies ``read`` and ``keep_alive`` as it always
did, to at most :data:`H2_MAX_STREAMS` streams per connection.

Example::

    >>> import asyncio, logging
    >>> from confide.runtime._tls import ServerTimeouts, bind_listener
    >>> async def app(scope, receive, send): ...
    >>> stop = asyncio.Event()
    >>> asyncio.run(serve_http(  # doctest: +SKIP
    ...     app,
    ...     listener=bind_listener("127.0.0.1", 0),
    ...     context=None,
    ...     timeouts=ServerTimeouts(handshake=10, read=30, keep_alive=5, graceful=2),
    ...     error_log=logging.getLogger("server"),
    ...     shutdown_trigger=stop.wait,
    ... ))
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import ssl
import time
from asyncio import sslproto
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, Final, cast

import h11
import uvicorn
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    Scope,
)
from hypercorn.utils import is_asgi
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from uvicorn.server import ServerState

from confide.errors import UsageError

from ._admission import (
    BODY_BUDGET,
    TLS_READ_BUFFER,
    Admission,
    BodyBudget,
    ConnectionLimits,
    Ticket,
    source_of,
)
from ._asgi import OwnNamesOnly
from ._challenge import ChallengeApp, ChallengeResponder, channel_of
from ._handoff import HandoffListener
from ._tls import LISTEN_BACKLOG, ServerTimeouts, hypercorn_config
from ._wsgi import WsgiAdapter, WsgiApp

#: The releases whose internals this module builds on (H11Protocol's state, TCPServer's
#: constructor, LifespanOn, ServerState): pinned in pyproject.toml, and checked by
#: tests/unit/runtime/test_server_internals.py before any upgrade can land.
BUILT_ON: Final = {"uvicorn": "0.54.0", "hypercorn": "0.18.0", "h11": "0.16.0"}

#: Largest request body a WSGI app is handed (hypercorn's default, which the runtime had).
MAX_WSGI_BODY: Final = 16 * 1024 * 1024
#: Seconds an HTTP/1.1 request head may take from its first byte to its last (at most
#: the ``read`` timeout): a head trickled in a byte at a time holds a connection no longer.
REQUEST_HEAD_DEADLINE: Final = 10.0
#: Streams one HTTP/2 connection may have open at once (hypercorn's default is 100): each
#: is a request the runtime holds for one connection's ticket.
H2_MAX_STREAMS: Final = 32
#: Request body chunks (of at most 16 KiB) queued per HTTP/2 stream for the app (hypercorn's
#: default is 10); a stream's next chunk waits, and with it the connection's reading.
_H2_APP_QUEUE: Final = 2
#: The sweep of the HTTP/1.1 connections runs at least this often (seconds); it also
#: refreshes the Date header.
_SWEEP_PERIOD: Final = 1.0
#: ... and at least four times per timeout, so that a timeout fires within 1.5 times its value.
_SWEEPS_PER_TIMEOUT: Final = 4
#: How often a graceful shutdown checks whether its connections have ended (seconds).
_DRAIN_POLL: Final = 0.02
#: After the graceful timeout, how long aborted connections and cancelled requests get
#: to run their last callbacks (seconds).
_SETTLE: Final = 0.25
#: Read limit of the stream under a hypercorn HTTP/2 connection (bytes).
_STREAM_LIMIT: Final = 2**16
#: Connections accepted per wake-up of the listener, so other work is not starved.
_ACCEPTS_PER_WAKE: Final = 64
#: After accept() fails for lack of descriptors or memory, the listener rests this long (s).
_ACCEPT_PAUSE: Final = 0.5


async def serve_http(
    app: object,
    *,
    listener: socket.socket,
    context: ssl.SSLContext | None,
    timeouts: ServerTimeouts,
    error_log: logging.Logger,
    shutdown_trigger: Callable[[], Awaitable[object]],
    stopped_accepting: asyncio.Event | None = None,
    max_wsgi_body: int = MAX_WSGI_BODY,
    handoff: HandoffListener | None = None,
    limits: ConnectionLimits | None = None,
    body_budget: int = BODY_BUDGET,
    challenge: ChallengeResponder | None = None,
    own_names: tuple[str, ...] | None = None,
) -> None:
    """Serve ``app`` (ASGI or WSGI) on a duplicate of ``listener`` until ``shutdown_trigger()``.

    ``context`` is the TLS context (None: plain HTTP). ``stopped_accepting`` is
    set as soon as this server stopped accepting connections (the first step of
    its shutdown), before its open connections end: the next server can take
    over ``listener`` from then on. Returns once every connection ended, or was
    aborted ``timeouts.graceful`` seconds after the trigger. Errors of the app
    and of the protocols go to ``error_log``. A WSGI app's request bodies over
    ``max_wsgi_body`` bytes are answered 413, and those that do not fit in
    what is left of ``body_budget`` (bytes buffered for all of them at once;
    at least ``max_wsgi_body``) 503. ``handoff``: while this server
    accepts, it also serves the connections handed off there. ``limits``
    (default :class:`ConnectionLimits`) bound the connections it holds.
    ``challenge``: every connection answers fresh-attestation challenges with it
    (:class:`~._challenge.ChallengeApp`, in front of the app), given only when
    ``context`` serves its RA-TLS certificate. ``own_names``: when given (even empty: then
    every request), a request whose ``Host`` is not one of them is answered 421 before the
    app (:class:`~._asgi.OwnNamesOnly`).
    """
    if body_budget < max_wsgi_body:
        raise UsageError(
            f"the request body budget ({body_budget} bytes) is below the largest body "
            f"({max_wsgi_body} bytes): raise the budget or lower max_wsgi_body"
        )
    served = _as_asgi(app, max_wsgi_body, BodyBudget(body_budget))
    if own_names is not None:
        served = OwnNamesOnly(served, own_names)
    server = _Server(
        served,
        websockets=is_asgi(app),
        listener=listener,
        context=context,
        timeouts=timeouts,
        error_log=error_log,
        limits=limits if limits is not None else ConnectionLimits(),
        challenge=challenge,
    )
    await server.serve(shutdown_trigger, stopped_accepting or asyncio.Event(), handoff)


def _as_asgi(app: object, max_wsgi_body: int, budget: BodyBudget) -> ASGIFramework:
    """``app`` itself if it is an ASGI app, else ``app`` as a WSGI app (:class:`WsgiAdapter`).

    Detected as hypercorn did (a coroutine function, or an object whose ``__call__`` is
    one), never as uvicorn's "auto" does (which takes a Flask app for ASGI 2).
    """
    if is_asgi(app):
        return cast(ASGIFramework, app)
    if not callable(app):
        raise UsageError(f"the app is {type(app).__name__}, neither an ASGI nor a WSGI app")
    wsgi = cast(ASGIFramework, WsgiAdapter(cast(WsgiApp, app)))
    return _BoundedBody(wsgi, max_wsgi_body, budget)


class _Refused(Exception):
    """A request body the runtime will not buffer: answered ``status`` before the app runs."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _BoundedBody:
    """Answers 413 to a request body over ``limit`` bytes, and 503 to one that does not fit
    in what is left of ``budget``, before the app runs.

    The adapter reads a request's whole body before it calls the WSGI app (and sends
    nothing before), so every byte of it is reserved in the runtime-wide ``budget``
    before it is read, and given back when the request ends (the adapter frees the
    body then). A declared ``Content-Length`` is checked and reserved whole before
    anything is read (the protocols hold the body to it), so a request let in is
    not cut halfway for want of budget unless its body stalls (the budget sheds
    a body slower than :data:`~._admission.MIN_BODY_RATE` for a newcomer: it is
    answered 503 then); a body of unknown length (chunked, or HTTP/2 with no
    length) reserves its bytes as they come.
    """

    def __init__(self, app: ASGIFramework, limit: int, budget: BodyBudget) -> None:
        self._app = app
        self._limit = limit
        self._budget = budget

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        http2 = scope["http_version"] == "2"
        declared = 0
        if length is not None:
            if not length.isdigit() or int(length) > self._limit:
                await self._refuse(receive, send, http2, 413)
                return
            declared = int(length)
        elif not (chunked or http2):
            await self._app(scope, receive, send)  # no body (RFC 9112 section 6.3)
            return
        loop = asyncio.get_running_loop()
        hold = self._budget.hold(declared, loop.time())
        if hold is None:
            await self._refuse(receive, send, http2, 503)
            return
        task = asyncio.current_task()

        def shed() -> None:
            if task is not None:
                task.cancel()  # the wait for the body ends: answered 503

        async def metered() -> ASGIReceiveEvent:
            hold.on_shed = shed  # only while it waits for the client
            try:
                message = await receive()
            except asyncio.CancelledError:
                if hold.shed and task is not None and task.uncancel() == 0:
                    raise _Refused(503) from None
                raise
            finally:
                hold.on_shed = None
            if message["type"] == "http.request":
                hold.received += len(message.get("body", b""))
                if hold.received > hold.size:
                    if hold.received > self._limit:
                        raise _Refused(413)
                    if not hold.grow(hold.received - hold.size):
                        raise _Refused(503)
            return message

        try:
            await self._app(scope, metered, send)
        except _Refused as refused:
            hold.release()  # before the rest of an HTTP/2 body is read and dropped
            await self._refuse(receive, send, http2, refused.status)
        finally:
            hold.release()

    async def _refuse(
        self, receive: ASGIReceiveCallable, send: ASGISendCallable, http2: bool, status: int
    ) -> None:
        if status == 413:
            text = f"the request body is over the {self._limit}-byte limit\n".encode()
        else:
            text = (
                f"the server is buffering other request bodies (at most "
                f"{self._budget.limit} bytes at once): retry shortly\n"
            ).encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(text)).encode()),
        ]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        if http2:
            # Hypercorn 0.18 ends the whole connection if body data comes for a stream it
            # has answered: read (and drop) up to another ``limit`` bytes of it first.
            await _discard(receive, self._limit)
        else:  # the rest of the body is not read: end the connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text, "more_body": False})


async def _discard(receive: ASGIReceiveCallable, limit: int) -> None:
    """Read and drop the rest of a request body, at most ``limit`` bytes of it."""
    dropped = 0
    while dropped <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


def _protocol_log(error_log: logging.Logger) -> logging.Logger:
    """The log given to uvicorn's protocols and lifespan: ``error_log``'s handlers, warnings up.

    Uvicorn logs its lifespan steps at INFO (left out, as hypercorn did), and a request
    cancelled at the end of a graceful shutdown as an "Exception in ASGI application"
    with a traceback (left out: :class:`_Server` logs one line for them). The logger is
    not registered with :mod:`logging`: it only forwards to ``error_log``.
    """
    log = logging.Logger(error_log.name)
    log.parent = error_log
    log.setLevel(max(logging.WARNING, error_log.getEffectiveLevel()))
    log.addFilter(_not_cancelled)
    return log


def _not_cancelled(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def _uvicorn_config(app: ASGIFramework, *, websockets: bool, keep_alive: float) -> uvicorn.Config:
    """Uvicorn's settings for its protocols; no server of uvicorn's runs."""
    config = uvicorn.Config(
        app,
        http="h11",
        ws="wsproto" if websockets else "none",
        interface="asgi3",
        lifespan="auto",
        log_config=None,
        proxy_headers=False,  # clients reach the runtime directly or through a TLS passthrough
        server_header=False,
        date_header=True,
    )
    # Uvicorn types it int; it only goes to loop.call_later.
    config.timeout_keep_alive = keep_alive  # type: ignore[assignment]
    # What Config.load() sets, without its app loading: it calls an app object with no
    # arguments to find out whether it is a factory.
    config.loaded_app = app
    config.ws_protocol_class = WSProtocol if websockets else None
    config.loaded = True
    return config


class _TlsProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a read buffer of :data:`TLS_READ_BUFFER` (not 256 KiB).

    asyncio reserves (and zero-fills) ``max_size`` bytes for every connection
    as soon as it is accepted; that buffer is what a flood of stalled
    handshakes multiplied. A test checks that asyncio still sizes the buffer
    from ``max_size``.
    """

    max_size = TLS_READ_BUFFER

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        waiter: asyncio.Future[None],
        timeouts: ServerTimeouts,
    ) -> None:
        super().__init__(
            loop,
            app_protocol,
            context,
            waiter,
            server_side=True,
            # typeshed says int; asyncio takes any number of seconds
            ssl_handshake_timeout=cast(int, timeouts.handshake),
            ssl_shutdown_timeout=cast(int, timeouts.graceful),
        )
        self.raw: asyncio.Transport | None = None
        #: Shed before its transport called connection_made(): cut it as soon as it does.
        self.cut = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        super().connection_made(transport)
        if self.cut:
            self.raw.abort()

    def shed(self) -> None:
        """Cut the connection now (its handshake is still under way)."""
        self.cut = True
        if self.raw is not None:
            self.raw.abort()


def _handshake_ended(waiter: asyncio.Future[None], ticket: Ticket) -> None:
    """A TLS handshake ended: its failure is the client's (retrieved, so never logged)."""
    if not waiter.cancelled():
        waiter.exception()  # else asyncio logs every failed handshake as an error
    if ticket.pending:
        ticket.close()


class _H11Connection(H11Protocol):
    """Uvicorn's HTTP/1.1 protocol, noting whether the client made progress since the last sweep."""

    def __init__(self, server: _Server, ticket: Ticket) -> None:
        super().__init__(server.config, server.state, server.app_state, _loop=server.loop)
        self.ticket = ticket
        if self.ws_protocol_class is not None:
            # A WebSocket upgrade hands the transport to this protocol instead, whose end
            # then releases the ticket (this one's connection_lost() is never called).
            # Uvicorn only calls it, with these keywords.
            self.ws_protocol_class = functools.partial(  # type: ignore[assignment]
                _WsConnection, ticket=ticket, _loop=server.loop
            )
        self.logger = server.log
        self.access_log = False
        #: Set on every read and on every pause or resume of writing; the sweep clears it.
        self.progressed = False
        #: Loop time from which the client made no progress (as the sweep saw it).
        self.quiet_since = server.loop.time()
        #: Loop time the sweep first saw the transport closing.
        self.closing_since: float | None = None
        #: Loop time the first byte of the request head being received came (None: none is).
        self.head_since: float | None = None
        self._head_deadline = server.head_deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Served: while no request runs, a newcomer at the connection limits may take its place.
        self.ticket.idle = self.idle
        self.ticket.on_shed = self.transport.abort

    def idle(self) -> bool:
        """No request is running: waiting for one, or still receiving its head."""
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        self.progressed = True
        if self.head_since is None and self.conn.their_state is h11.IDLE:
            self.head_since = self.loop.time()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self.head_since = None  # the head is complete

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.ticket.close()

    def pause_writing(self) -> None:
        self.progressed = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.progressed = True
        super().resume_writing()

    def sweep(self, now: float, timeouts: ServerTimeouts) -> None:
        """Close the connection if its client stalled for longer than its timeout, or took
        longer than its deadline to send a request head (progress or not)."""
        head_since = self.head_since
        if head_since is not None and now - head_since > self._head_deadline:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()
                return
        if self.progressed:
            self.progressed = False
            self.quiet_since = now
            return
        quiet = now - self.quiet_since
        transport = self.transport
        if transport.is_closing():
            # A close waits for the write buffer to drain (and over TLS for the client's
            # close_notify): a client that never reads cannot hold it open.
            if self.closing_since is None:
                self.closing_since = now
            elif now - self.closing_since > timeouts.graceful:
                transport.abort()
            return
        if self.flow.write_paused:
            if quiet > timeouts.read:  # the client stopped reading the response
                transport.abort()
            return
        if self.flow.read_paused:
            return  # the app has not read what came yet: nothing is expected from the client
        theirs = self.conn.their_state
        if theirs is h11.IDLE and self.conn.trailing_data[0]:  # part of a request head
            if self.head_since is None:  # pipelined: read from a buffer, not data_received()
                self.head_since = now
            if quiet > timeouts.read:
                transport.close()
        elif theirs is h11.SEND_BODY:
            if quiet > timeouts.read:  # part of a request, then nothing
                transport.close()
        elif theirs is h11.IDLE and self.cycle is None:
            if quiet > timeouts.keep_alive:  # connected, and asked nothing
                transport.close()
        # Otherwise the app is working on a request, or uvicorn's keep-alive timer runs.


class _WsConnection(WSProtocol):
    """Uvicorn's WebSocket protocol, for a connection upgraded from HTTP/1.1: ends its ticket."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        ticket: Ticket,
        _loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop=_loop)
        self.ticket = ticket
        ticket.idle = None  # a WebSocket in use is never shed for a newcomer

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.ticket.close()


class _NewConnection(asyncio.Protocol):
    """A new connection, its TLS handshake done: goes to HTTP/2 or HTTP/1.1 by ALPN."""

    def __init__(self, server: _Server, ticket: Ticket) -> None:
        self._server = server
        self._ticket = ticket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._ticket.closed:  # shed before its transport existed
            cast(asyncio.Transport, transport).abort()
            return
        self._ticket.handshake_done()
        self._server.adopt(cast(asyncio.Transport, transport), self._ticket)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only while no HTTP protocol took the connection over (adopt() refused it).
        self._ticket.close()


class _Server:
    """One server: its HTTP/1.1 and HTTP/2 connections, their timeouts and shutdown."""

    def __init__(
        self,
        app: ASGIFramework,
        *,
        websockets: bool,
        listener: socket.socket,
        context: ssl.SSLContext | None,
        timeouts: ServerTimeouts,
        error_log: logging.Logger,
        limits: ConnectionLimits,
        challenge: ChallengeResponder | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._app = app
        self._challenge = challenge
        self._listener = listener
        self.admission = Admission(limits)
        self._context = context
        self.timeouts = timeouts
        self.log = _protocol_log(error_log)
        self._error_log = error_log
        self.config = _uvicorn_config(app, websockets=websockets, keep_alive=timeouts.keep_alive)
        self.state = ServerState()
        self._lifespan = LifespanOn(self.config)
        self._lifespan.logger = self.log
        #: The lifespan's state, a copy of which every request sees (ASGI lifespan state).
        self.app_state = self._lifespan.state
        self._h2_app = ASGIWrapper(app)
        # Hypercorn's settings for its HTTP/2 connections (its sockets are not used).
        self._h2_config = hypercorn_config(listener, context, timeouts, error_log=error_log)
        self._h2_config.h2_max_concurrent_streams = H2_MAX_STREAMS
        self._h2_config.max_app_queue_size = _H2_APP_QUEUE
        #: How long an HTTP/1.1 request head may take from its first byte (seconds).
        self.head_deadline = min(REQUEST_HEAD_DEADLINE, timeouts.read)
        self._h2_context = WorkerContext(None)
        self._h2: dict[asyncio.Task[None], tuple[asyncio.Transport, Ticket]] = {}
        self._closing = False
        self._date = 0
        #: Connections being set up (their transports created), until connection_made.
        self._handshakes: set[asyncio.Task[None]] = set()
        self._accepting: socket.socket | None = None
        self._resume: asyncio.TimerHandle | None = None

    async def serve(
        self,
        shutdown_trigger: Callable[[], Awaitable[object]],
        stopped_accepting: asyncio.Event,
        handoff: HandoffListener | None,
    ) -> None:
        try:
            await self._lifespan.startup()
            try:
                if self._lifespan.should_exit:
                    raise UsageError("the app's startup failed (ASGI lifespan): see the log above")
                self._refresh_date()
                sock = self._listener.dup()
                try:
                    sock.setblocking(False)
                    sock.listen(LISTEN_BACKLOG)
                except BaseException:
                    sock.close()
                    raise
                self._start_accepting(sock)
                sweeper = self.loop.create_task(self._sweep())
                if handoff is not None:
                    handoff.serve_to(self._handed_off)
                try:
                    await shutdown_trigger()
                finally:
                    if handoff is not None:
                        handoff.serve_to(None)  # the next phase's server takes them
                    self._stop_accepting()  # closes this server's listening socket at once
                    stopped_accepting.set()
                    try:
                        await self._drain()
                    finally:
                        sweeper.cancel()
            finally:
                await self._lifespan.shutdown()
        finally:
            stopped_accepting.set()  # also when it never accepted

    # -- admission ------------------------------------------------------------------------------

    def _start_accepting(self, sock: socket.socket) -> None:
        self._accepting = sock
        self.loop.add_reader(sock.fileno(), self._accept)

    def _stop_accepting(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        sock, self._accepting = self._accepting, None
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    def _accept(self) -> None:
        listener = self._accepting
        for _ in range(_ACCEPTS_PER_WAKE):
            if listener is None or self._accepting is not listener:
                return
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: rest instead of spinning on a ready listener.
                    self._error_log.warning("accept failed (%s); pausing %g s", exc, _ACCEPT_PAUSE)
                    self.loop.remove_reader(listener.fileno())
                    self._resume = self.loop.call_later(
                        _ACCEPT_PAUSE, self._start_accepting, listener
                    )
                return  # ECONNABORTED and the like: that client is gone
            self._admit(sock, address)

    def _handed_off(self, sock: socket.socket) -> None:
        """A connection handed off by the router: served as an accepted one."""
        try:
            address = sock.getpeername()
        except OSError:
            sock.close()  # already gone
            return
        self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: object) -> None:
        """Count a new connection in (or close it), then start its handshake."""
        if self._closing:
            sock.close()
            return
        source = source_of(address)
        ticket = self.admission.admit(source)
        if ticket is None:
            self.log.debug("connection from %s refused: connection limits reached", source)
            sock.close()
            return
        task = self.loop.create_task(self._connect(sock, ticket))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, sock: socket.socket, ticket: Ticket) -> None:
        if ticket.closed:  # shed before it started
            sock.close()
            return
        context = self._context
        try:
            protocol: asyncio.BaseProtocol = _NewConnection(self, ticket)
            if context is not None:
                waiter = self.loop.create_future()
                # Whatever ends a handshake (failure, timeout, the client leaving, a shed)
                # ends here; a completed one has called handshake_done() first.
                waiter.add_done_callback(lambda done: _handshake_ended(done, ticket))
                tls = _TlsProtocol(self.loop, protocol, context, waiter, self.timeouts)
                ticket.on_shed = tls.shed
                protocol = tls
            sock.setblocking(False)
            await self.loop.connect_accepted_socket(lambda: protocol, sock)
        except (OSError, MemoryError) as exc:
            # As for an accepted connection: the client's failure (or a moment without
            # memory for its buffers), not the server's.
            self.log.debug("a connection failed before it was served: %r", exc)
            ticket.close()
            sock.close()
        except BaseException:
            ticket.close()  # aborted at shutdown (or a bug): its slot comes back all the same
            sock.close()
            raise

    def adopt(self, transport: asyncio.Transport, ticket: Ticket) -> None:
        """Serve a new connection with the protocol its ALPN picked."""
        if self._closing:
            transport.abort()  # its handshake ended after the shutdown began
            return
        ssl_object = transport.get_extra_info("ssl_object")
        app = self._connection_app(transport, ssl_object)
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._serve_h2(transport, ticket, app)
            return
        protocol = _H11Connection(self, ticket)
        if app is not None:
            protocol.app = app  # read by uvicorn for each request
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def _connection_app(
        self, transport: asyncio.Transport, ssl_object: ssl.SSLObject | None
    ) -> ChallengeApp | None:
        """This connection's app, when it answers challenges (``None``: the shared one)."""
        if self._challenge is None:
            return None
        binding, version = channel_of(ssl_object)
        return ChallengeApp(
            self._app,
            self._challenge,
            binding=binding,
            tls_version=version,
            source=source_of(transport.get_extra_info("peername")),
        )

    def _serve_h2(
        self, transport: asyncio.Transport, ticket: Ticket, app: ChallengeApp | None
    ) -> None:
        reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=self.loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=self.loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
        connection = TCPServer(
            self._h2_app if app is None else ASGIWrapper(cast(ASGIFramework, app)),
            self.loop,
            self._h2_config,
            self._h2_context,
            self.app_state,
            reader,
            writer,
        )
        task = self.loop.create_task(connection.run())
        self._h2[task] = (transport, ticket)
        task.add_done_callback(self._h2_ended)

    def _h2_ended(self, task: asyncio.Task[None]) -> None:
        _, ticket = self._h2.pop(task, (None, None))
        if ticket is not None:
            ticket.close()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self._closing:
            self._error_log.error("an HTTP/2 connection failed", exc_info=exc)

    def _refresh_date(self) -> None:
        now = int(time.time())
        if now != self._date:
            self._date = now
            self.state.default_headers = [(b"date", formatdate(now, usegmt=True).encode())]

    async def _sweep(self) -> None:
        timeouts = self.timeouts
        period = min(
            _SWEEP_PERIOD,
            timeouts.keep_alive / _SWEEPS_PER_TIMEOUT,
            timeouts.read / _SWEEPS_PER_TIMEOUT,
        )
        while True:
            await asyncio.sleep(period)
            self._refresh_date()
            now = self.loop.time()
            for connection in list(self.state.connections):
                if isinstance(connection, _H11Connection):
                    connection.sweep(now, timeouts)

    def _busy(self) -> bool:
        return bool(
            self.state.connections
            or self.state.tasks
            or self._h2
            or self._handshakes
            or self.admission.pending
        )

    async def _drain(self) -> None:
        """Ask every connection to finish; abort what is left after the graceful timeout."""
        self._closing = True
        self.admission.shed_pending()  # a handshake under way now would be refused anyway
        for connection in list(self.state.connections):
            try:
                connection.shutdown()  # closes at once if idle, else after its response
            except h11.LocalProtocolError:
                connection.transport.abort()  # an HTTP/1.1 connection in error
        await self._h2_context.terminated.set()
        deadline = self.loop.time() + self.timeouts.graceful
        try:
            while self._busy() and self.loop.time() < deadline:
                await asyncio.sleep(_DRAIN_POLL)
        finally:
            if self._busy():
                self._error_log.warning(
                    "%d connection(s) and %d request(s) still open %g s after the stop: aborted",
                    len(self.state.connections) + len(self._h2),
                    len(self.state.tasks),
                    self.timeouts.graceful,
                )
                self._abort()
        settled = self.loop.time() + _SETTLE
        while self._busy() and self.loop.time() < settled:
            await asyncio.sleep(_DRAIN_POLL)

    def _abort(self) -> None:
        for connection in list(self.state.connections):
            connection.transport.abort()
        for task in list(self.state.tasks):
            task.cancel()
        for task, (transport, _) in list(self._h2.items()):
            task.cancel()
            transport.abort()
        for task in list(self._handshakes):
            task.cancel()
