"""Shared helpers for the router tests (no tests here): servers on port 0, TLS material, clients.

Everything runs on 127.0.0.1 with ports chosen by the kernel; readiness is a
callback or a bound socket, never a sleep. Each test body runs under
:func:`run`, which bounds it in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confide.attestation._ratls import create_ratls_certificate
from confide.operator._ca import OperatorCA
from confide.operator._router import (
    Direction,
    Route,
    RouteMode,
    RouterSettings,
    TlsProvider,
    serve_router,
)
from confide.runtime._handoff import HandoffListener
from confide.wire import HostPort

LOOPBACK = "127.0.0.1"
BASE_DOMAIN = "confide.test"
APP = f"app1.{BASE_DOMAIN}"
OTHER_APP = f"app2.{BASE_DOMAIN}"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: Bound on any one test body.
TEST_TIMEOUT = 30.0
#: Largest HTTP message the test servers and clients read.
MAX_MESSAGE = 1024 * 1024


def run(body: Callable[[], Awaitable[None]], timeout: float = TEST_TIMEOUT) -> None:
    """Run ``body()`` in a fresh event loop, failing if it takes over ``timeout`` seconds."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await body()

    asyncio.run(bounded())


class DictRoutes:
    """A route table the test changes at run time."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes = dict(routes or {})
        self.asked: list[str] = []

    def lookup(self, server_name: str) -> Route | None:
        self.asked.append(server_name)
        return self.routes.get(server_name)


@dataclass
class MemoryRecorder:
    """Keeps every relayed chunk."""

    chunks: list[tuple[int, Direction, bytes]] = field(default_factory=list)

    def record(self, connection: int, direction: Direction, data: bytes) -> None:
        self.chunks.append((connection, direction, data))

    def seen(self, direction: Direction) -> bytes:
        return b"".join(data for _, d, data in self.chunks if d is direction)


class NoTls:
    """A TLS provider for tests with no terminate route: asking it is a bug."""

    def server_ssl_context(self) -> ssl.SSLContext:
        raise AssertionError("the router asked for a TLS context on a passthrough route")


def passthrough(port: int, handoff: Path | None = None) -> Route:
    return Route(RouteMode.PASSTHROUGH, LOOPBACK, port, handoff=handoff)


def terminate(port: int) -> Route:
    return Route(RouteMode.TERMINATE, LOOPBACK, port)


def fast_settings(**overrides: float | int | str) -> RouterSettings:
    """Router settings on port 0 with short timeouts, overridable per test."""
    values: dict[str, float | int | str] = {
        "host": LOOPBACK,
        "port": 0,
        "handshake_timeout": 5.0,
        "connect_timeout": 5.0,
        "idle_timeout": 10.0,
        "shutdown_timeout": 1.0,
    }
    values.update(overrides)
    return RouterSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_router(
    settings: RouterSettings,
    routes: DictRoutes,
    tls_provider: TlsProvider | None = None,
    recorder: MemoryRecorder | None = None,
) -> AsyncIterator[HostPort]:
    """Serve a router until the block ends; yields its bound address."""
    stop = asyncio.Event()
    ready: asyncio.Future[HostPort] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_router(
            settings,
            routes,
            tls_provider or NoTls(),
            shutdown_trigger=stop.wait,
            recorder=recorder,
            on_ready=ready.set_result,
        )
    )
    waiters: list[asyncio.Future[Any]] = [ready, task]
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        await task  # raises why it could not start
    try:
        yield ready.result()
    finally:
        stop.set()
        await task


# -- TLS material --


@dataclass(frozen=True)
class ServerIdentity:
    """A certificate and key on disk, as a server loads them."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        # Test upstream standing in for an enclave: TLS 1.2+, no client certificates.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts exactly this (self-signed) certificate, name checked."""
        return trusting(self.cert_file.read_bytes())


def trusting(pem: bytes) -> ssl.SSLContext:
    # Test client: verifies the peer against one anchor, with host name checks on.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.load_verify_locations(cadata=pem.decode())
    return context


def ratls_like_identity(folder: Path, name: str) -> ServerIdentity:
    """A self-signed P-256 certificate for ``name`` shaped like an RA-TLS one (dummy quote)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = create_ratls_certificate(
        key,
        b"not a real quote",
        subject=name,
        sans=[name],
        not_before=datetime.now(UTC) - timedelta(hours=1),
        not_after=datetime.now(UTC) + timedelta(days=1),
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ServerIdentity(cert_file, key_file)


def operator_ca(folder: Path) -> OperatorCA:
    """The operator's CA for the test base domain, at the real time (TLS checks validity)."""
    return OperatorCA.open(folder, base_domain=BASE_DOMAIN, clock=lambda: datetime.now(UTC))


def client_hello(server_name: str | None) -> bytes:
    """The ClientHello Python's ssl sends for ``server_name`` (None: no SNI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if server_name is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_name
    )
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# -- a tiny HTTP/1.1 upstream --


@dataclass
class HttpUpstream:
    """A keep-alive HTTP server answering ``hello <name>``; keeps the request bodies."""

    name: str
    port: int = 0
    bodies: list[bytes] = field(default_factory=list)
    #: Connections accepted on the port, and connections received by hand-off.
    accepted: int = 0
    handed_off: int = 0


async def read_http_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head, body) of one HTTP message with Content-Length; None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value.strip())
    if length > MAX_MESSAGE:
        raise ValueError("message too large for the test server")
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def http_upstream(
    name: str, context: ssl.SSLContext | None = None, *, handoff: Path | None = None
) -> AsyncIterator[HttpUpstream]:
    """Serve :class:`HttpUpstream` on 127.0.0.1 (TLS when ``context`` is given).

    With ``handoff``, it also takes connections handed off at that socket path,
    as a runtime started with ``--handoff`` does.
    """
    upstream = HttpUpstream(name)
    handlers: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.accepted += 1
        await handle(reader, writer)

    async def adopt(sock: socket.socket) -> None:
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader, handle)
        await loop.connect_accepted_socket(lambda: protocol, sock, ssl=context)

    def handed(sock: socket.socket) -> None:
        upstream.handed_off += 1
        task = loop.create_task(adopt(sock))
        handlers.add(task)
        task.add_done_callback(handlers.discard)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            while (message := await read_http_message(reader)) is not None:
                upstream.bodies.append(message[1])
                body = f"hello {name}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(accepted, LOOPBACK, 0, ssl=context)
    upstream.port = server.sockets[0].getsockname()[1]
    listener = None
    if handoff is not None:
        listener = HandoffListener.bind(handoff, logger=logging.getLogger("test.upstream"))
        listener.start(loop)
        listener.serve_to(handed)
    try:
        yield upstream
    finally:
        if listener is not None:
            listener.close()
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


# -- clients --


async def get(
    port: int, server_name: str, context: ssl.SSLContext, body: bytes = b""
) -> tuple[bytes, bytes]:
    """POST ``body`` to the router (``curl --resolve`` style: SNI ``server_name``, address
    127.0.0.1); returns (response body, DER of the server's certificate)."""
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=context, server_hostname=server_name
    )
    try:
        response = await exchange(reader, writer, server_name, body)
        tls = writer.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        return response, der or b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, body: bytes
) -> bytes:
    """One request/response on an open connection; the response body."""
    writer.write(
        b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (host.encode(), len(body), body)
    )
    await writer.drain()
    message = await read_http_message(reader)
    if message is None:
        raise ConnectionError("the server closed the connection")
    return message[1]


async def bytes_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the peer sends until it closes (a reset counts as a close)."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
