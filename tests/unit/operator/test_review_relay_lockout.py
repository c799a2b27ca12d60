"""REVIEW (attacker's review of issue 9 points 1, 2, 14): one source locks a relayed app out.

A relayed connection (every Gramine runtime, and any failed hand-off)
reaches the runtime from the router's address, so the runtime's per-source
shares (:class:`~confide.runtime.ConnectionLimits`) bound *all* the app's
clients together, while the router lets each source hold
``max_connections_per_source`` connections. With the defaults both are 256:
one anonymous source that completes 256 TLS handshakes through the router
and then idles (a request every keep-alive period keeps them forever) takes
the runtime's whole share, and the runtime closes every other client's
connection at once (none of those 256 is pending, so none is shed).

Fixed: the runtime is told which address relays (``confide runtime
--relay-source``, which the operator's local backend passes), and only the
global limits apply to that address; the router's per-source shares tell the
relayed clients apart. The lockout is shown with the runtime left without its
relay declared, and gone with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from confide.runtime import ConnectionLimits
from confide.runtime._server import serve_http
from confide.runtime._tls import ServerTimeouts, bind_listener
from support.router import (
    APP,
    LOOPBACK,
    DictRoutes,
    fast_settings,
    passthrough,
    ratls_like_identity,
    run,
    running_router,
)

ATTACKER = "127.0.0.2"
LOG = logging.getLogger("test.review.relay")
#: Long enough that nothing times out within the test.
PATIENT = ServerTimeouts(handshake=20.0, read=20.0, keep_alive=20.0, graceful=0.5)


async def hello_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"5"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello", "more_body": False})


@contextlib.asynccontextmanager
async def runtime_server(context: ssl.SSLContext, limits: ConnectionLimits) -> AsyncIterator[int]:
    """The runtime's HTTP server with ``limits``; yields its port."""
    listener = bind_listener(LOOPBACK, 0)
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve_http(
            hello_app,
            listener=listener,
            context=context,
            timeouts=PATIENT,
            error_log=LOG,
            shutdown_trigger=stop.wait,
            limits=limits,
        )
    )
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10.0)
        finally:
            listener.close()


async def call(port: int, context: ssl.SSLContext) -> bytes:
    """One verified call through the router from the legitimate client (127.0.0.1)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port, ssl=context, server_hostname=APP)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {APP}\r\n\r\n".encode())
        return await reader.read()
    finally:
        writer.transport.abort()


@pytest.mark.parametrize(
    ("relays", "served"),
    [(frozenset({LOOPBACK}), True), (frozenset(), False)],
    ids=["relay declared, as the operator launches runtimes", "relay not declared"],
)
def test_one_source_cannot_take_a_relayed_apps_whole_runtime(
    tmp_path: Path, relays: frozenset[str], served: bool
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    router_settings = fast_settings(handshake_timeout=20.0, idle_timeout=20.0)
    share = router_settings.max_connections_per_source  # the router's default
    assert share >= ConnectionLimits().connections_per_source  # guard: the defaults meet

    async def body() -> None:
        async with (
            runtime_server(
                enclave.server_context(), ConnectionLimits(relays=relays)
            ) as runtime_port,
            running_router(router_settings, DictRoutes({APP: passthrough(runtime_port)})) as r,
        ):
            assert (await call(r.port, enclave.client_context())).endswith(b"hello")  # guard
            held = []
            for _ in range(share):
                held.append(
                    await asyncio.open_connection(
                        LOOPBACK,
                        r.port,
                        ssl=enclave.client_context(),
                        server_hostname=APP,
                        local_addr=(ATTACKER, 0),
                    )
                )
            try:
                if served:
                    answer = await call(r.port, enclave.client_context())
                    assert answer.endswith(b"hello"), answer
                else:
                    with pytest.raises((ConnectionError, ssl.SSLError)):
                        await call(r.port, enclave.client_context())
            finally:
                for _, writer in held:
                    writer.transport.abort()

    run(body, timeout=60.0)
