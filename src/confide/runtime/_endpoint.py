"""The configuration endpoint: a small ASGI app in front of a :class:`Configurator`.

``GET /`` (or ``HEAD``) answers 200 ``waiting for configuration`` with
``Confide-Status: waiting`` and, for Cosmian Enclave's clients,
``Mse-Status: Waiting``. ``POST /`` takes the configuration (see
:mod:`._payload`): a body over :data:`MAX_CONFIGURATION_SIZE` answers 413,
both from its ``Content-Length`` and while it is read. Refusals answer JSON
``{"error": code, "message": text}``; success answers 200 and hands the
:class:`AppLaunch` to ``on_configured``, after which every request answers 409.
Configurations are applied one at a time, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from confide.errors import Error
from confide.wire import MAX_CONFIGURATION_SIZE, STATUS_HEADER, ConfigurationStatus

from ._asgi import answer_lifespan, send_response
from ._configure import AppLaunch
from ._payload import ConfigurationRejected

_STATUS: Final = STATUS_HEADER.encode()
_WAITING: Final = ((_STATUS, ConfigurationStatus.WAITING.encode()), (b"mse-status", b"Waiting"))
_CONFIGURED_HEADERS: Final = ((_STATUS, ConfigurationStatus.CONFIGURED.encode()),)


class Configures(Protocol):
    """What the endpoint hands request bodies to (a :class:`Configurator`)."""

    def configure(self, body: bytes) -> AppLaunch: ...


class ConfigurationEndpoint:
    """ASGI app of the configuration phase."""

    def __init__(
        self,
        configurator: Configures,
        on_configured: Callable[[AppLaunch], None],
        *,
        logger: logging.Logger,
        max_body: int = MAX_CONFIGURATION_SIZE,
    ) -> None:
        self._configurator = configurator
        self._on_configured = on_configured
        self._logger = logger
        self._max_body = max_body
        self._lock = asyncio.Lock()
        self._done = False

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: refused by returning without accepting
        method = scope["method"]
        status = _CONFIGURED_HEADERS if self._done else _WAITING
        if scope["path"] != "/":
            await send_response(
                send, 404, {"error": "not_found", "message": "only / is served"}, status
            )
            return
        if method in ("GET", "HEAD"):
            if self._done:
                await send_response(send, 409, _ALREADY, status)
            else:
                await send_response(
                    send, 200, b"waiting for configuration\n", status, head=method == "HEAD"
                )
            return
        if method != "POST":
            await send_response(
                send,
                405,
                {"error": "method", "message": "use GET or POST"},
                (*status, (b"allow", b"GET, HEAD, POST")),
            )
            return
        try:
            body = await self._read_body(scope["headers"], receive)
            launch = await self._configure(body)
        except ConfigurationRejected as exc:
            self._logger.info("configuration refused (%d): %s", exc.status, exc.message)
            status = _CONFIGURED_HEADERS if self._done else _WAITING
            await send_response(
                send, exc.status, {"error": exc.code, "message": exc.message}, status
            )
            return
        self._logger.info("configured: starting the app")
        await send_response(send, 200, {"status": "configured"}, _CONFIGURED_HEADERS)
        self._on_configured(launch)

    async def _configure(self, body: bytes) -> AppLaunch:
        async with self._lock:
            if self._done:
                raise ConfigurationRejected(
                    409, "configuration.done", "the runtime is already configured"
                )
            try:
                launch = await asyncio.to_thread(self._configurator.configure, body)
            except ConfigurationRejected:
                raise
            except Error as exc:
                raise ConfigurationRejected(500, "configuration.failed", str(exc)) from None
            self._done = True
            return launch

    async def _read_body(
        self, headers: Iterable[tuple[bytes, bytes]], receive: ASGIReceiveCallable
    ) -> bytes:
        too_large = ConfigurationRejected(
            413,
            "configuration.too_large",
            f"the request body is over the {self._max_body}-byte limit",
        )
        for name, value in headers:
            if name.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ConfigurationRejected(
                        400, "configuration.content_length", "Content-Length is not a number"
                    ) from None
                if length > self._max_body:
                    raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConfigurationRejected(400, "configuration.disconnect", "client went away")
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


_ALREADY: Final = {"error": "configuration.done", "message": "the runtime is already configured"}
