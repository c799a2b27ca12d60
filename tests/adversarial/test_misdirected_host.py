"""A runtime behind the operator's TLS answers 421 to a request for a host not its own
(ADR 0023, review of session 6): bytes an attacker chooses, sent to the real server.

The check is ``OwnNamesOnly`` on ``Host``; these are the ways around it an attacker may
try: a request target in absolute form (RFC 9112 section 3.2.2: it names the host
instead of ``Host``), userinfo, HTTP/2's ``:authority`` against a ``host`` field, and a
runtime given no names at all. Each row is sent on a fresh connection; a guard row for
each shape shows the same bytes with the app's own name are served.
"""

from __future__ import annotations

import asyncio
from typing import Final

import h2.config
import h2.connection
import h2.events
import pytest

from support.http_server import WAIT, EchoApp, client_context, serving

NAMES: Final = ("0b6f.apps.example", "shop.example")

#: (row, request bytes, expected status).
HTTP1: Final[dict[str, tuple[bytes, int]]] = {
    "guard: origin form, own Host": (b"GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n", 200),
    "guard: absolute form, own name": (
        b"GET http://shop.example/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        200,
    ),
    "origin form, another Host": (b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n", 421),
    "absolute form naming another host": (
        b"GET http://other.example/ HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        421,
    ),
    "absolute form, https, another host and port": (
        b"GET https://other.example:8443/?a=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        421,
    ),
    "absolute form with our name as userinfo": (
        b"GET http://shop.example@other.example/ HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        421,
    ),
    "Host with our name as userinfo": (
        b"GET / HTTP/1.1\r\nHost: shop.example@other.example\r\n\r\n",
        421,
    ),
}


async def _status(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), WAIT)
    finally:
        writer.close()
    return int(line.split()[1])


@pytest.mark.parametrize("row", HTTP1, ids=list(HTTP1))
def test_http1_requests_for_another_host_are_misdirected(row: str) -> None:
    request, expected = HTTP1[row]

    async def main() -> int:
        async with serving(EchoApp(), tls=False, own_names=NAMES) as served:
            return await _status(served.port, request)

    assert asyncio.run(main()) == expected


async def _h2_status(port: int, headers: list[tuple[str, str]]) -> int:
    """One HTTP/2 request over TLS (the runtime speaks HTTP/2 only there: behind the
    operator's TLS it takes no h2c, so there ``Host`` is all there is); 0 when the server
    resets the stream. The client does not check its own headers: an attacker's would not."""
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=True)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(["h2"]), server_hostname="localhost"
    )
    try:
        writer.write(conn.data_to_send())
        await writer.drain()
        while True:
            data = await asyncio.wait_for(reader.read(65536), WAIT)
            if not data:
                raise AssertionError("the server closed without answering")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    return int(dict(event.headers)[b":status"])
                if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return 0
            writer.write(conn.data_to_send())
    finally:
        writer.close()


def _h2(authority: str, host: str | None) -> list[tuple[str, str]]:
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", authority)]
    return headers + ([("host", host)] if host is not None else [])


#: (row, headers, expected status; 0: the stream is reset). ``:authority`` is what the
#: server checks; one that differs from a ``host`` field is refused by the protocol itself.
HTTP2: Final[dict[str, tuple[list[tuple[str, str]], int]]] = {
    "guard: own :authority": (_h2("shop.example", None), 200),
    "another :authority": (_h2("other.example", None), 421),
    "another :authority, our name in host": (_h2("other.example", "shop.example"), 0),
    "our :authority, another name in host": (_h2("shop.example", "other.example"), 0),
}


@pytest.mark.parametrize("row", HTTP2, ids=list(HTTP2))
def test_http2_authority_is_what_is_checked(row: str) -> None:
    headers, expected = HTTP2[row]

    async def main() -> int:
        async with serving(EchoApp(), own_names=NAMES) as served:
            return await _h2_status(served.port, headers)

    assert asyncio.run(main()) == expected


def test_a_runtime_given_no_names_serves_no_host() -> None:
    """Review: ``own_names=()`` (an operator-mode runtime started without ``--san``) served
    every Host, the check skipped as if not asked for; now it serves none."""

    async def main() -> tuple[int, int]:
        async with serving(EchoApp(), tls=False, own_names=()) as served:
            empty = await _status(served.port, HTTP1["guard: origin form, own Host"][0])
        async with serving(EchoApp(), tls=False) as served:  # guard: no check asked
            unchecked = await _status(served.port, HTTP1["origin form, another Host"][0])
        return empty, unchecked

    assert asyncio.run(main()) == (421, 200)
