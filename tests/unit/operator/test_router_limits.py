"""What the router refuses, and the limits that keep one client from holding it.

A connection that is not TLS, or whose ClientHello is malformed, is closed
with zero bytes sent. A well-formed ClientHello for a name the router does not
serve (or with no name) gets one fatal ``unrecognized_name`` alert, so that
its client can tell its user that no app has that name (issue 9, point 14).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator._router import Route, RouteMode, RouterSettings
from support.router import (
    APP,
    LOOPBACK,
    OTHER_APP,
    DictRoutes,
    bytes_until_closed,
    client_hello,
    close_writer,
    exchange,
    fast_settings,
    get,
    http_upstream,
    operator_ca,
    passthrough,
    ratls_like_identity,
    raw_connection,
    run,
    running_router,
    terminate,
)

#: Bound on how long "closed at once" may take (the handshake timeout is far longer).
AT_ONCE = 2.0


async def closed_without_a_byte(port: int, first_bytes: bytes) -> None:
    reader, writer = await raw_connection(port)
    writer.write(first_bytes)
    async with asyncio.timeout(AT_ONCE):
        assert await bytes_until_closed(reader) == b""
    await close_writer(writer)


def hello_with_trailing_byte() -> bytes:
    hello = client_hello(APP)
    length = int.from_bytes(hello[3:5], "big") + 1
    return hello[:3] + length.to_bytes(2, "big") + hello[5:] + b"\x00"


REFUSED = [
    ("plain HTTP", b"GET / HTTP/1.1\r\nHost: app1.confide.test\r\n\r\n"),
    ("SSLv2 hello", b"\x80\x2e\x01\x00\x02" + bytes(43)),
    ("alert record", b"\x15\x03\x03\x00\x02\x02\x28"),
    ("record too long", b"\x16\x03\x01\x40\x01"),
    ("not a ClientHello", b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
    ("bytes past the ClientHello in its record", hello_with_trailing_byte()),
]


@pytest.mark.parametrize(("case", "first_bytes"), REFUSED, ids=[c for c, _ in REFUSED])
def test_refused_connections_get_zero_bytes(case: str, first_bytes: bytes) -> None:
    routes = DictRoutes({APP: passthrough(9)})  # never reached

    async def body() -> None:
        async with running_router(fast_settings(handshake_timeout=20.0), routes) as router:
            await closed_without_a_byte(router.port, first_bytes)

    run(body)
    assert routes.asked in ([], [OTHER_APP])


UNSERVED = [("unknown name", OTHER_APP), ("no SNI", None)]


@pytest.mark.parametrize(("case", "name"), UNSERVED, ids=[c for c, _ in UNSERVED])
def test_unserved_names_get_one_unrecognized_name_alert(case: str, name: str | None) -> None:
    routes = DictRoutes({APP: passthrough(9)})  # never reached
    hello = client_hello(name)

    async def body() -> None:
        async with running_router(fast_settings(handshake_timeout=20.0), routes) as router:
            reader, writer = await raw_connection(router.port)
            writer.write(hello)
            async with asyncio.timeout(AT_ONCE):
                # Alert record (21), the client's record version, level fatal, code 112.
                assert (
                    await bytes_until_closed(reader) == b"\x15" + hello[1:3] + b"\x00\x02\x02\x70"
                )
            await close_writer(writer)

            # What a real client reports: the name, not a reset.
            context = ssl.create_default_context()
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
                await asyncio.open_connection(
                    LOOPBACK, router.port, ssl=context, server_hostname=name or LOOPBACK
                )

    run(body)
    assert set(routes.asked) <= {OTHER_APP}


def test_over_max_connections_is_closed_at_once_and_the_others_are_served(
    tmp_path: Path,
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        settings = fast_settings(max_connections=2, max_unrouted=2, handshake_timeout=20.0)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):
            held = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, router.port, ssl=enclave.client_context(), server_hostname=APP
                )
                assert await exchange(reader, writer, APP, b"1") == b"hello enclave"
                held.append((reader, writer))
            await closed_without_a_byte(router.port, client_hello(APP))
            for reader, writer in held:
                assert await exchange(reader, writer, APP, b"2") == b"hello enclave"
                await close_writer(writer)

    run(body)


def test_silent_clients_cannot_fill_the_router_past_max_unrouted(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        settings = fast_settings(max_connections=10, max_unrouted=2, handshake_timeout=20.0)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):
            # A routed connection does not count against max_unrouted...
            reader, writer = await asyncio.open_connection(
                LOOPBACK, router.port, ssl=enclave.client_context(), server_hostname=APP
            )
            assert await exchange(reader, writer, APP, b"") == b"hello enclave"
            silent = [await raw_connection(router.port) for _ in range(2)]
            # ...but two silent ones fill it: the next client is closed at once.
            await closed_without_a_byte(router.port, client_hello(APP))
            assert await exchange(reader, writer, APP, b"") == b"hello enclave"
            for _, silent_writer in silent:
                await close_writer(silent_writer)
            await close_writer(writer)

    run(body)


@pytest.mark.parametrize(
    "first_bytes", [b"", client_hello(APP)[:100]], ids=["silent", "partial ClientHello"]
)
def test_a_stalled_client_is_dropped_after_the_timeout_while_others_are_served(
    tmp_path: Path, first_bytes: bytes
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    timeout = 1.5

    async def body() -> None:
        settings = fast_settings(handshake_timeout=timeout)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):
            start = time.monotonic()
            stalled_reader, stalled_writer = await raw_connection(router.port)
            stalled_writer.write(first_bytes)
            await stalled_writer.drain()
            closed = asyncio.create_task(bytes_until_closed(stalled_reader))
            for _ in range(3):  # served while the stalled client is still there
                assert (await get(router.port, APP, enclave.client_context()))[0] == (
                    b"hello enclave"
                )
            assert not closed.done()
            assert await closed == b""
            elapsed = time.monotonic() - start
            assert timeout * 0.9 <= elapsed < timeout + AT_ONCE
            await close_writer(stalled_writer)

    run(body)


def test_a_terminate_client_that_stops_mid_handshake_is_dropped(tmp_path: Path) -> None:
    ca = operator_ca(tmp_path / "ca")

    async def body() -> None:
        async with (
            http_upstream("app") as upstream,
            running_router(
                fast_settings(handshake_timeout=1.0),
                DictRoutes({APP: terminate(upstream.port)}),
                tls_provider=ca,
            ) as router,
        ):
            reader, writer = await raw_connection(router.port)
            writer.write(client_hello(APP))
            received = await bytes_until_closed(reader)  # ServerHello..., then closed
            assert received[:1] == b"\x16"
            await close_writer(writer)
        assert upstream.bodies == []

    run(body)


def test_idle_spliced_connection_is_closed_and_a_busy_one_is_not(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    idle = 1.0

    async def body() -> None:
        settings = fast_settings(idle_timeout=idle)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):

            async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection(
                    LOOPBACK, router.port, ssl=enclave.client_context(), server_hostname=APP
                )

            quiet_reader, quiet_writer = await connect()
            busy_reader, busy_writer = await connect()
            assert await exchange(quiet_reader, quiet_writer, APP, b"") == b"hello enclave"
            start = time.monotonic()
            closed = asyncio.create_task(tls_closed(quiet_reader))
            while time.monotonic() - start < 2.5 * idle:  # paced traffic, not readiness
                assert await exchange(busy_reader, busy_writer, APP, b"") == b"hello enclave"
                await asyncio.sleep(idle / 5)
            assert closed.done()
            await closed
            await close_writer(quiet_writer)
            await close_writer(busy_writer)

    run(body)


async def tls_closed(reader: asyncio.StreamReader) -> None:
    """Wait until a TLS stream ends (a cut connection surfaces as EOF or an error)."""
    try:
        assert await reader.read(1) == b""
    except (ConnectionError, ssl.SSLError):
        pass


def test_shutdown_cuts_open_connections_after_the_grace_time(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        async with http_upstream("enclave", enclave.server_context()) as upstream:
            settings = fast_settings(shutdown_timeout=0.5)
            async with running_router(
                settings, DictRoutes({APP: passthrough(upstream.port)})
            ) as router:
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, router.port, ssl=enclave.client_context(), server_hostname=APP
                )
                assert await exchange(reader, writer, APP, b"") == b"hello enclave"
                start = time.monotonic()
            assert 0.4 <= time.monotonic() - start < AT_ONCE
            await tls_closed(reader)
            await close_writer(writer)

    run(body)


def test_a_port_in_use_is_a_usage_error() -> None:
    async def body() -> None:
        with socket.socket() as taken:
            taken.bind((LOOPBACK, 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(UsageError, match=f"cannot listen on {LOOPBACK}:{port}"):
                async with running_router(fast_settings(port=port), DictRoutes()):
                    pass

    run(body)


BAD_SETTINGS: list[tuple[str, dict[str, object]]] = [
    ("port out of range", {"port": 65536}),
    ("no connections", {"max_connections": 0}),
    ("unrouted over total", {"max_connections": 5, "max_unrouted": 6}),
    ("tiny buffers", {"buffer_size": 1024}),
    ("zero handshake timeout", {"handshake_timeout": 0}),
    ("negative idle timeout", {"idle_timeout": -1.0}),
    ("endless connect timeout", {"connect_timeout": 1e9}),
]


@pytest.mark.parametrize(("case", "values"), BAD_SETTINGS, ids=[c for c, _ in BAD_SETTINGS])
def test_settings_out_of_bounds_are_usage_errors(case: str, values: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        RouterSettings(**values)  # type: ignore[arg-type]


BAD_ROUTES: list[tuple[str, tuple[object, str, int]]] = [
    ("mode as a string", ("passthrough", LOOPBACK, 443)),
    ("no host", (RouteMode.PASSTHROUGH, "", 443)),
    ("port zero", (RouteMode.TERMINATE, LOOPBACK, 0)),
    ("port too big", (RouteMode.TERMINATE, LOOPBACK, 70000)),
]


@pytest.mark.parametrize(("case", "args"), BAD_ROUTES, ids=[c for c, _ in BAD_ROUTES])
def test_bad_routes_are_usage_errors(case: str, args: tuple[object, str, int]) -> None:
    with pytest.raises(UsageError):
        Route(*args)  # type: ignore[arg-type]
