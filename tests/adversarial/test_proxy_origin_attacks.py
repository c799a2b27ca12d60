"""A web page attacks ``confide proxy`` from the user's own browser (issue 9, point 3).

The proxy runs for real (hypercorn on a loopback port); its upstream is a TCP
listener that counts connections, so "refused" means that nothing reached the
enclave, and a request the proxy must forward shows the count moving.

- DNS rebinding: a page of ``evil.example`` whose name now resolves to
  127.0.0.1 sends requests with ``Host: evil.example:<port>``.
- Cross-site POST: a page of ``evil.example`` submits a form to
  ``http://127.0.0.1:<port>/`` (a "simple" request: no CORS preflight).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
from cryptography import x509

from confide.attestation import RatlsVerified
from confide.client import (
    CertificatePin,
    ProxyApp,
    ProxySettings,
    bind_loopback,
    loopback_hosts,
    serve_proxy,
)
from confide.errors import UsageError

#: Bound on each step of these tests (seconds).
LIMIT = 10.0


class CountingUpstream:
    """A TCP listener standing in for the enclave: counts connections, closes them at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            self.connections += 1
            conn.close()


def refuse(cert: x509.Certificate) -> RatlsVerified:
    raise UsageError("not reached in these tests")


@asynccontextmanager
async def running_proxy() -> AsyncIterator[tuple[str, int, CountingUpstream]]:
    upstream = CountingUpstream()
    listener = bind_loopback("127.0.0.1", 0)
    port = listener.getsockname()[1]
    pin = CertificatePin(
        b"pinned",
        verify=refuse,
        log=lambda line: None,
        valid_until=datetime.now(UTC) + timedelta(hours=1),
    )
    settings = ProxySettings(
        domain="app.example",
        upstream=("127.0.0.1", upstream.port),
        timeout=LIMIT,
        allowed_hosts=loopback_hosts("127.0.0.1", port),
    )
    stop = asyncio.Event()
    upstream_task = asyncio.create_task(upstream.run())
    server = asyncio.create_task(
        serve_proxy(
            ProxyApp(settings, pin, log=lambda line: None), listener, shutdown_trigger=stop.wait
        )
    )
    try:
        yield f"http://127.0.0.1:{port}", port, upstream
    finally:
        stop.set()
        await asyncio.wait_for(server, LIMIT)
        upstream_task.cancel()
        upstream.sock.close()
        listener.close()


async def _send(
    url: str, method: str, headers: dict[str, str], body: bytes = b""
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=LIMIT) as browser:
        return await browser.request(method, "/", headers=headers, content=body)


def test_dns_rebinding_host_is_refused_before_the_enclave_is_reached() -> None:
    async def attack() -> None:
        async with running_proxy() as (url, port, upstream):
            for method in ("GET", "POST"):
                answer = await _send(url, method, {"Host": f"evil.example:{port}"}, b"x=1")
                assert answer.status_code == 421, answer.text
                assert f"Host evil.example:{port}" in answer.text
            assert upstream.connections == 0
            # Guard: the proxy's own name is forwarded (the stand-in drops it: 502).
            own = await _send(url, "GET", {"Host": f"127.0.0.1:{port}"})
            assert own.status_code == 502 and upstream.connections >= 1

    asyncio.run(asyncio.wait_for(attack(), 4 * LIMIT))


def test_cross_site_post_is_refused_before_the_enclave_is_reached() -> None:
    async def attack() -> None:
        async with running_proxy() as (url, port, upstream):
            form = {
                "Origin": "https://evil.example",
                "Content-Type": "application/x-www-form-urlencoded",
                "Sec-Fetch-Site": "cross-site",
                "Sec-Fetch-Mode": "navigate",
            }
            answer = await _send(url, "POST", form, b"transfer=all")
            assert answer.status_code == 403, answer.text
            assert "Origin https://evil.example" in answer.text
            # An older browser without Fetch Metadata: Origin alone is enough.
            del form["Sec-Fetch-Site"], form["Sec-Fetch-Mode"]
            assert (await _send(url, "POST", form, b"transfer=all")).status_code == 403
            # A fetch() with no Origin (no-cors) from another site: Fetch Metadata.
            no_cors = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
            assert (await _send(url, "POST", no_cors, b"transfer=all")).status_code == 403
            assert upstream.connections == 0
            # Guard: the same POST from the proxy's own page is forwarded.
            own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
            answer = await _send(url, "POST", own, b"transfer=all")
            assert answer.status_code == 502 and upstream.connections >= 1

    asyncio.run(asyncio.wait_for(attack(), 4 * LIMIT))
