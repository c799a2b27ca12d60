"""WSGI apps (PEP 3333) under the runtime's ASGI server, with one thread hop per request.

:class:`WsgiAdapter` reads the request body (bounded before it: see
``_server._BoundedBody``), builds the environ, and runs the app and the
iteration of its response in a worker thread. The thread queues the ASGI
messages and wakes the event loop, which sends them; no step waits for a
round trip between the two. At most :data:`MAX_PENDING_CHUNKS` body chunks
wait to be sent: a streaming app that produces faster than the client reads
blocks in its own thread, not in memory. If the client goes away or sending
fails, the thread's next chunk raises and the response's ``close()`` runs.
The body's buffer is freed when the request ends (also when the app's thread
still runs after the client left): the server gives its bytes back to its
budget then.

Errors: an exception of the app before it produced anything propagates to the
server, which answers 500 and logs it; after the headers were sent, the server
aborts the connection. ``start_response`` follows PEP 3333: a second call needs
``exc_info``, and re-raises it once the headers are sent.

(Why not a2wsgi, or uvicorn's built-in adapter: the first took twice the CPU
per request of the second in ``bench/bench_runtime.py``, and the second is
deprecated; see ADR 0008.)
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Final

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)

from ._asgi import answer_lifespan

#: Worker threads running WSGI requests (requests beyond wait for one).
WSGI_THREADS: Final = 10
#: Response chunks produced by the app and not yet sent, per request.
MAX_PENDING_CHUNKS: Final = 16

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Abandoned(Exception):
    """Raised in the worker thread when the event loop side stopped sending."""


class WsgiAdapter:
    """An ASGI app that serves the WSGI app ``app`` (HTTP only; lifespan answered)."""

    def __init__(self, app: WsgiApp, *, threads: int = WSGI_THREADS) -> None:
        self._app = app
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # WebSockets: not accepted (the server closes them)
        body = io.BytesIO()
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away before its body was complete
                body.write(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body.seek(0)
            environ = _environ(scope, body)
            loop = asyncio.get_running_loop()
            exchange = _Exchange(loop)
            work = loop.run_in_executor(self._executor, exchange.run, self._app, environ)
            await exchange.forward(send, work)
        finally:
            # The server gives the body's bytes back to its budget when this returns: free
            # them now, also when an abandoned app thread still holds the environ.
            body.close()


def _latin1(text: str) -> str:
    """A str of the UTF-8 bytes of ``text``, one char per byte (PEP 3333 "native strings")."""
    return text.encode("utf-8").decode("latin-1")


def _environ(scope: HTTPScope, body: io.BytesIO) -> dict[str, Any]:
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": _latin1(scope.get("root_path", "")),
        "PATH_INFO": _latin1(scope["path"]),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] if server[1] is not None else 80),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if client is not None:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = name
        else:
            key = f"HTTP_{name}"
        # Repeated headers are joined with commas (RFC 9110 section 5.3); cookies with "; ".
        if key in environ:
            joiner = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = f"{environ[key]}{joiner}{value}"
        else:
            environ[key] = value
    return environ


def _consume(work: asyncio.Future[None]) -> None:
    if not work.cancelled():
        work.exception()


class _Exchange:
    """One request: the worker thread produces ASGI messages, the event loop sends them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._messages: deque[ASGISendEvent] = deque()
        self._wake = asyncio.Event()
        self._slots = threading.Semaphore(MAX_PENDING_CHUNKS)
        self._abandoned = False
        self._status: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._started = False  # the headers were queued

    # -- the worker thread --

    def run(self, app: WsgiApp, environ: dict[str, Any]) -> None:
        result = app(environ, self._start_response)
        try:
            for chunk in result:
                if chunk:
                    self._begin()
                    self._push({"type": "http.response.body", "body": chunk, "more_body": True})
            self._begin()
            self._push({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self._started:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self._status is not None:
            raise RuntimeError("start_response called twice without exc_info (PEP 3333)")
        code, _, _ = status.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"WSGI status {status!r} does not start with a 3-digit code")
        self._status = int(code)
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        return self._write

    def _write(self, data: bytes) -> None:
        """The legacy ``write`` callable of PEP 3333."""
        if data:
            self._begin()
            self._push({"type": "http.response.body", "body": data, "more_body": True})

    def _begin(self) -> None:
        if self._started:
            return
        if self._status is None:
            raise RuntimeError("the WSGI app produced a body before calling start_response")
        self._started = True
        self._push(
            {"type": "http.response.start", "status": self._status, "headers": self._headers}
        )

    def _push(self, message: ASGISendEvent) -> None:
        self._slots.acquire()
        if self._abandoned:
            raise _Abandoned("the response is no longer being sent")
        self._messages.append(message)
        self._loop.call_soon_threadsafe(self._wake.set)

    # -- the event loop --

    async def forward(self, send: ASGISendCallable, work: asyncio.Future[None]) -> None:
        """Send what the thread queues until the last message; raise what the app raised."""
        work.add_done_callback(lambda _: self._wake.set())
        try:
            while True:
                while self._messages:
                    message = self._messages.popleft()
                    self._slots.release()
                    await send(message)
                    if message["type"] == "http.response.body" and not message.get(
                        "more_body", False
                    ):
                        await work
                        return
                if work.done():
                    await work  # raises the app's error
                    if not self._messages:  # pragma: no cover - the last message ends the loop
                        return
                    continue
                self._wake.clear()
                if not self._messages and not work.done():
                    await self._wake.wait()
        finally:
            if not work.done():
                # Sending failed or was cancelled: let the thread stop at its next chunk
                # (it raises _Abandoned there, which nobody needs to see).
                self._abandoned = True
                for _ in range(MAX_PENDING_CHUNKS):
                    self._slots.release()
                work.add_done_callback(_consume)
