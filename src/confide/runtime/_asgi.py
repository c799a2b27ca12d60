"""ASGI pieces shared by the runtime's own apps (the configuration endpoint, the WSGI adapter)."""

from __future__ import annotations

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable


async def answer_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The ASGI lifespan of an app with nothing to start or stop: acknowledge both steps."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
