"""An app cannot answer in place of the proxy's verification page (ADR 0026).

The proxy serves ``/.well-known/confide/`` itself; an app that routes that prefix
(or a path a client could smuggle to it: dot segments, percent-encoding) would
spoof the page if the proxy forwarded it. So would a path only a lenient server
reads as the prefix (``//``, a backslash, another case, ``;params``, double
encoding). Raw requests, not normalised by any client library, go through a real
proxy server; the upstream counts every connection it gets, and must get none.
Guard: a request for the app's own ``/`` does reach it, so the counter works.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from confide.client import (
    CertificatePin,
    EnclavePolicy,
    ProxyApp,
    ProxySettings,
    VerifiedEnclave,
    bind_loopback,
    loopback_hosts,
    serve_proxy,
)

LIMIT = 10.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class CountingUpstream:
    """A TCP server that counts connections and closes them (an app that would answer)."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._server.close()


@contextmanager
def upstream() -> Iterator[CountingUpstream]:
    server = CountingUpstream()
    try:
        yield server
    finally:
        server.close()


async def _raw(port: int, target: str, method: str = "GET") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), LIMIT)
    writer.close()
    return answer


SMUGGLED = [
    "/.well-known/confide/",
    "/.well-known/confide",
    "/.well-known/confide/verification.json",
    "/.well-known/confide/challenge",
    "/.well-known/confide/app-route",
    "/.well-known/./confide/",
    "/app/../.well-known/confide/",
    "/%2Ewell-known/confide/",
    "/.well-known/confide%2Fverification.json",
    "/.well-known/%63onfide/x",
    # Spellings an app's server or framework may take for the prefix (review, session 5).
    "//.well-known/confide/",
    "/.well-known//confide/",
    "/.WELL-KNOWN/confide/",
    "/.well-known/Confide/verification.json",
    "/.well-known/confide;v=1/",
    "/.well-known%5Cconfide/",
    "/%252Ewell-known/confide/",
    "/.well-known/%2563onfide/x",
]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_path_under_the_prefix_reaches_the_app(method: str) -> None:
    with upstream() as app:

        async def attack() -> None:
            listener = bind_loopback("127.0.0.1", 0)
            port = listener.getsockname()[1]
            pin = CertificatePin(
                b"pinned",
                verify=_never,
                log=lambda line: None,
                valid_until=NOW + timedelta(1),
                clock=lambda: NOW,
            )
            settings = ProxySettings(
                domain="app.example",
                upstream=("127.0.0.1", app.port),
                timeout=LIMIT,
                allowed_hosts=loopback_hosts("127.0.0.1", port),
            )
            policy = EnclavePolicy(bytes(32), "app.example")
            proxy = ProxyApp(settings, pin, log=lambda line: None, policy=policy)
            stop = asyncio.Event()
            task = asyncio.create_task(serve_proxy(proxy, listener, shutdown_trigger=stop.wait))
            try:
                for target in SMUGGLED:
                    answer = await _raw(port, target, method)
                    head = answer.split(b"\r\n\r\n", 1)[0].lower()
                    assert b"content-security-policy: default-src 'none'" in head, (target, answer)
                    assert app.connections == 0, target
                # Guard: the app's own path does reach the upstream.
                await _raw(port, "/", method)
                assert app.connections >= 1  # a GET is tried twice on a dropped connection
            finally:
                stop.set()
                await asyncio.wait_for(task, LIMIT)
                listener.close()

        asyncio.run(asyncio.wait_for(attack(), 4 * LIMIT))


def _never(cert: x509.Certificate) -> VerifiedEnclave:
    raise AssertionError("nothing is verified here: the pin holds")
