"""ASGI pieces shared by the runtime's own apps (the configuration endpoint, the WSGI adapter)
and the client's proxy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope


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


def host_name(value: str) -> str:
    """The name part of a ``Host`` header, as compared: lower case, no port, no final dot
    (``"App.Example.:8443"`` gives ``"app.example"``; ``"[::1]:80"`` gives ``"[::1]"``)."""
    name = value.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        name = name[: end + 1] if end != -1 else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


def _target_authority(raw_path: bytes) -> str | None:
    """The authority of a request target in absolute form (``http://a.example:80/x`` gives
    ``a.example:80``, userinfo and all) or authority form (``a.example:443``); ``None``
    for origin form (``/x``) and ``*``."""
    if raw_path[:1] in (b"/", b"*", b""):
        return None
    text = raw_path.decode("latin-1")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text  # authority form (CONNECT), or no form at all: compared as a name
    return rest.split("/", 1)[0].split("?", 1)[0]


class OwnNamesOnly:
    """Answer 421 to a request whose ``Host`` is not one of the app's names, before the app.

    For a runtime serving plain HTTP behind the operator's TLS (``TlsMode.OPERATOR``):
    there no certificate says which app a connection was meant for, so a route that
    still points at an address another app's runtime now holds (a pod IP freed by a
    crash and reused) would hand this app another app's requests. Exactly one ``Host``
    (HTTP/1.1's rule; HTTP/2's ``:authority`` arrives as it) naming one of ``names`` is
    served; anything else gets 421 Misdirected Request, and a WebSocket is closed before
    it is accepted. A request target in absolute form (``GET http://other.example/``,
    which RFC 9112 section 3.2.2 says names the host instead of ``Host``) or authority form
    must name one of ``names`` too. No names: nothing is served. ``lifespan`` passes
    through.
    """

    def __init__(self, app: ASGIFramework, names: Iterable[str]) -> None:
        self._app = app
        self._names = frozenset(host_name(n) for n in names)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [
                value.decode("latin-1") for key, value in scope["headers"] if key.lower() == b"host"
            ]
            target = _target_authority(scope.get("raw_path", b""))
            if target is not None:
                hosts.append(target)
            if len(hosts) != (1 if target is None else 2) or any(
                host_name(h) not in self._names for h in hosts
            ):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": None})
                    return
                shown = " ".join(h[:100] for h in hosts) or "none"
                # The app's names are not told: the asker may be another app's client.
                body = (
                    f"misdirected request: Host {shown} is not one of this app's names; "
                    "check the app's address\n"
                ).encode()
                await send_response(send, 421, body)
                return
        await self._app(scope, receive, send)
