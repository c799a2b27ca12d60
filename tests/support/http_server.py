"""The runtime's HTTP server under test in this process: a self-signed ``localhost``
certificate, client and server TLS contexts, :func:`serving`, and small ASGI/WSGI apps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, request
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from confide.runtime._server import serve_http
from confide.runtime._tls import ServerTimeouts, bind_listener, server_ssl_context
from support.certs import self_signed_pem

_NOW = datetime.now(UTC)
_PEM = self_signed_pem(
    ["localhost"],
    not_before=_NOW - timedelta(days=1),
    not_after=_NOW + timedelta(days=1),
    with_key=True,
)
CERT_PEM, _, KEY_REST = _PEM.partition("-----BEGIN PRIVATE KEY-----")
KEY_PEM = "-----BEGIN PRIVATE KEY-----" + KEY_REST
LOG = logging.getLogger("test.runtime.server")

#: Short timeouts: keep-alive and read far enough apart to tell which one closed a connection.
FAST = ServerTimeouts(handshake=0.3, read=1.0, keep_alive=0.2, graceful=0.5)
#: Bound on any single wait of a test (seconds): well over every timeout above.
WAIT = 10.0
#: For the admission tests: a stalled handshake is shed, never timed out, within a test.
SLOW_HANDSHAKE = ServerTimeouts(handshake=WAIT, read=WAIT, keep_alive=WAIT, graceful=0.5)

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Any]


def server_context() -> ssl.SSLContext:
    return server_ssl_context(CERT_PEM.encode(), KEY_PEM.encode())


def client_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=CERT_PEM)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


@dataclass
class Served:
    port: int
    tls: bool
    stop: asyncio.Event
    stopped_accepting: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}"


@contextlib.asynccontextmanager
async def serving(
    app: object, *, tls: bool = True, timeouts: ServerTimeouts = FAST, **options: Any
) -> AsyncIterator[Served]:
    listener = bind_listener("127.0.0.1", 0)
    stop = asyncio.Event()
    stopped_accepting = asyncio.Event()
    task = asyncio.create_task(
        serve_http(
            app,
            listener=listener,
            context=server_context() if tls else None,
            timeouts=timeouts,
            error_log=LOG,
            shutdown_trigger=stop.wait,
            stopped_accepting=stopped_accepting,
            **options,
        )
    )
    try:
        yield Served(listener.getsockname()[1], tls, stop, stopped_accepting, task)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, WAIT)
        finally:
            listener.close()


async def read_body(receive: ASGIReceiveCallable) -> bytes | None:
    """The request body, or None if the client went away."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        assert message["type"] == "http.request"
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(send: ASGISendCallable, text: str, status: int = 200) -> None:
    data = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


@dataclass
class EchoApp:
    """An ASGI app: answers ``<method> <body length>``; records its lifespan and requests."""

    events: list[str] = field(default_factory=list)
    #: Set when a request came in; the app then waits for ``release``, if any.
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event | None = None
    delay: float = 0.0

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.events.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        self.events.append(f"request {scope['http_version']}")
        body = await read_body(receive)
        self.arrived.set()
        if body is None:
            self.events.append("disconnected")
            return
        if self.release is not None:
            await self.release.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        await respond(send, f"{scope['method']} {len(body)}")
        self.events.append("answered")


flask_app = Flask(__name__)


@flask_app.route("/", methods=["GET", "POST"])
def flask_index() -> str:
    return f"{request.method} {len(request.get_data())}"


async def closed_within(reader: asyncio.StreamReader) -> float:
    """Seconds until the server closed the connection (EOF or reset); reads what comes."""
    started = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(65536), WAIT):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    return time.monotonic() - started


async def open_tls(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(["http/1.1"]), server_hostname="localhost"
    )


def close(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()
