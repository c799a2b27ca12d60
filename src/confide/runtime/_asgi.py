"""ASGI pieces shared by the runtime's own apps (the configuration endpoint, the WSGI adapter)
and the client's proxy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable


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
