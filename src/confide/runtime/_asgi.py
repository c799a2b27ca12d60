"""ASGI pieces shared by the runtime's own apps (the configuration endpoint, the WSGI adapter)
and the client's proxy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable


async def send_response(
    send: ASGISendCallable,
    status: int,
    body: bytes | Mapping[str, str],
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    head: bool = False,
) -> None:
    """One whole response, never cached: a mapping as a JSON line, bytes as ``content_type``;
    ``headers`` after the content type, length and ``Cache-Control: no-store``."""
    if isinstance(body, bytes):
        data, kind = body, content_type
    else:
        data, kind = json.dumps(body).encode() + b"\n", b"application/json"
    start = [
        (b"content-type", kind),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else data, "more_body": False})


async def answer_lifespan(
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    on_shutdown: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """The ASGI lifespan of an app with nothing to start: acknowledge both steps."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
