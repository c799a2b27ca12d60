"""The router relays traffic: passthrough (the operator sees only ciphertext) and terminate.

The client connects to the router's address with SNI ``<id>.<base-domain>``
(as ``curl --resolve`` does) and verifies whichever certificate it expects:
the enclave's own in passthrough mode, the operator CA's in terminate mode.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from confide.operator._router import Direction
from support.router import (
    APP,
    LOOPBACK,
    OTHER_APP,
    DictRoutes,
    MemoryRecorder,
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
    trusting,
)

MARKER = b"confidential-marker-6f1d2c"


def test_passthrough_client_verifies_the_enclave_and_operator_sees_only_ciphertext(
    tmp_path: Path,
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        recorder = MemoryRecorder()
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(
                fast_settings(), DictRoutes({APP: passthrough(upstream.port)}), recorder=recorder
            ) as router,
        ):
            response, der = await get(router.port, APP, enclave.client_context(), MARKER * 3)
        assert response == b"hello enclave"
        assert upstream.bodies == [MARKER * 3]
        assert der == ssl.PEM_cert_to_DER_cert(enclave.cert_file.read_text())
        to_upstream = recorder.seen(Direction.TO_UPSTREAM)
        to_client = recorder.seen(Direction.TO_CLIENT)
        assert to_upstream[:1] == b"\x16" and to_client[:1] == b"\x16"  # TLS records
        assert APP.encode() in to_upstream  # the SNI is in clear in the ClientHello
        for seen in (to_upstream, to_client):
            assert MARKER not in seen
            assert b"POST /" not in seen and b"hello enclave" not in seen

    run(body)


def test_terminate_client_trusts_the_operator_ca_and_operator_sees_plaintext(
    tmp_path: Path,
) -> None:
    ca = operator_ca(tmp_path / "ca")

    async def body() -> None:
        recorder = MemoryRecorder()
        async with (
            http_upstream("app") as upstream,
            running_router(
                fast_settings(),
                DictRoutes({APP: terminate(upstream.port)}),
                tls_provider=ca,
                recorder=recorder,
            ) as router,
        ):
            response, der = await get(router.port, APP, trusting(ca.certificate_pem()), MARKER)
        assert response == b"hello app"
        assert upstream.bodies == [MARKER]
        assert der == ca.server_certificate.public_bytes(Encoding.DER)
        assert MARKER in recorder.seen(Direction.TO_UPSTREAM)
        assert b"hello app" in recorder.seen(Direction.TO_CLIENT)

    run(body)


def test_terminate_negotiates_http11_and_refuses_an_untrusting_client(tmp_path: Path) -> None:
    ca = operator_ca(tmp_path / "ca")
    stranger = ratls_like_identity(tmp_path / "other", APP)

    async def body() -> None:
        async with (
            http_upstream("app") as upstream,
            running_router(
                fast_settings(), DictRoutes({APP: terminate(upstream.port)}), tls_provider=ca
            ) as router,
        ):
            context = trusting(ca.certificate_pem())
            context.set_alpn_protocols(["h2", "http/1.1"])
            reader, writer = await asyncio.open_connection(
                LOOPBACK, router.port, ssl=context, server_hostname=APP
            )
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
            assert await exchange(reader, writer, APP, b"x") == b"hello app"
            await close_writer(writer)
            # A client that does not trust the operator's CA does not get through.
            with pytest.raises(ssl.SSLCertVerificationError):
                await get(router.port, APP, stranger.client_context())
        assert upstream.bodies == [b"x"]

    run(body)


def test_keep_alive_and_large_bodies_cross_in_both_modes(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    ca = operator_ca(tmp_path / "ca")
    big = bytes(range(256)) * 4096  # 1 MiB: more than the router's buffers

    async def body() -> None:
        async with (
            http_upstream("enclave", enclave.server_context()) as tls_upstream,
            http_upstream("app") as plain_upstream,
            running_router(
                fast_settings(buffer_size=16 * 1024),
                DictRoutes(
                    {APP: passthrough(tls_upstream.port), OTHER_APP: terminate(plain_upstream.port)}
                ),
                tls_provider=ca,
            ) as router,
        ):
            for name, context, upstream in (
                (APP, enclave.client_context(), tls_upstream),
                (OTHER_APP, trusting(ca.certificate_pem()), plain_upstream),
            ):
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, router.port, ssl=context, server_hostname=name
                )
                for i in range(3):
                    assert await exchange(reader, writer, name, big[i:]) == (
                        f"hello {upstream.name}".encode()
                    )
                await close_writer(writer)
                assert upstream.bodies == [big, big[1:], big[2:]]

    run(body)


def test_route_changes_apply_to_new_connections(tmp_path: Path) -> None:
    first = ratls_like_identity(tmp_path / "first", APP)
    second = ratls_like_identity(tmp_path / "second", APP)

    async def body() -> None:
        routes = DictRoutes()
        async with (
            http_upstream("first", first.server_context()) as one,
            http_upstream("second", second.server_context()) as two,
            running_router(fast_settings(), routes) as router,
        ):
            with pytest.raises((ConnectionError, ssl.SSLError)):
                await get(router.port, APP, first.client_context())
            routes.routes[APP] = passthrough(one.port)
            assert (await get(router.port, APP, first.client_context()))[0] == b"hello first"
            routes.routes[APP] = passthrough(two.port)  # e.g. the app was redeployed
            assert (await get(router.port, APP, second.client_context()))[0] == b"hello second"
            del routes.routes[APP]
            with pytest.raises((ConnectionError, ssl.SSLError)):
                await get(router.port, APP, second.client_context())
        assert routes.asked == [APP] * 4

    run(body)


def test_unreachable_upstream_closes_the_client_without_a_byte(tmp_path: Path) -> None:
    async def body() -> None:
        async with http_upstream("gone") as gone:
            port = gone.port  # now closed: nothing listens there
        async with running_router(fast_settings(), DictRoutes({APP: passthrough(port)})) as router:
            reader, writer = await raw_connection(router.port)
            writer.write(client_hello(APP))
            assert await bytes_until_closed(reader) == b""
            await close_writer(writer)

    run(body)


def test_handoff_gives_the_connection_to_the_upstream_which_serves_it_end_to_end(
    tmp_path: Path,
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    socket_path = tmp_path / "handoff.sock"

    async def body() -> None:
        recorder = MemoryRecorder()
        async with (
            http_upstream("enclave", enclave.server_context(), handoff=socket_path) as upstream,
            running_router(
                fast_settings(),
                DictRoutes({APP: passthrough(upstream.port, handoff=socket_path)}),
                recorder=recorder,
            ) as router,
        ):
            reader, writer = await asyncio.open_connection(
                LOOPBACK, router.port, ssl=enclave.client_context(), server_hostname=APP
            )
            for n in range(3):  # keep-alive: every request on the handed-off connection
                assert await exchange(reader, writer, APP, MARKER * n) == b"hello enclave"
            await close_writer(writer)
        assert (upstream.handed_off, upstream.accepted) == (1, 0)
        assert upstream.bodies == [b"", MARKER, MARKER * 2]
        # The router saw the ClientHello it routed on, and nothing after it.
        assert [d for _, d, _ in recorder.chunks] == [Direction.TO_UPSTREAM]
        hello = recorder.seen(Direction.TO_UPSTREAM)
        assert hello[:1] == b"\x16" and APP.encode() in hello
        assert MARKER not in hello

    run(body)


def test_handoff_falls_back_to_relaying_when_the_upstream_does_not_take_it(
    tmp_path: Path,
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as gone:
        gone.bind(str(stale))  # a socket file nobody listens on: connect is refused

    async def body() -> None:
        recorder = MemoryRecorder()
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(
                fast_settings(),
                DictRoutes(
                    {
                        APP: passthrough(upstream.port, handoff=stale),
                        OTHER_APP: passthrough(upstream.port, handoff=tmp_path / "missing.sock"),
                    }
                ),
                recorder=recorder,
            ) as router,
        ):
            for name in (APP, OTHER_APP):
                context = trusting(enclave.cert_file.read_bytes())
                context.check_hostname = False  # the certificate names APP only
                assert (await get(router.port, name, context, MARKER))[0] == b"hello enclave"
        assert (upstream.handed_off, upstream.accepted) == (0, 2)
        assert recorder.seen(Direction.TO_CLIENT)[:1] == b"\x16"  # relayed both ways
        assert MARKER not in recorder.seen(Direction.TO_UPSTREAM)

    run(body)


def test_a_clienthello_in_pieces_is_routed_once_complete(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    hello = client_hello(APP)

    async def body() -> None:
        routes = DictRoutes()
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(fast_settings(), routes) as router,
        ):
            routes.routes[APP] = passthrough(upstream.port)
            reader, writer = await raw_connection(router.port)
            for start in range(0, len(hello), 50):
                writer.write(hello[start : start + 50])
                await writer.drain()
                await asyncio.sleep(0.02)
            answer = await reader.read(5)  # the upstream's ServerHello, through the router
            assert answer[:1] == b"\x16"
            await close_writer(writer)
        assert routes.asked == [APP]

    run(body)


def test_a_client_that_closes_mid_clienthello_is_dropped_at_once(tmp_path: Path) -> None:
    async def body() -> None:
        routes = DictRoutes()
        async with running_router(fast_settings(handshake_timeout=20.0), routes) as router:
            reader, writer = await raw_connection(router.port)
            writer.write(client_hello(APP)[:60])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write_eof()
            async with asyncio.timeout(2.0):  # far sooner than the handshake timeout
                assert await bytes_until_closed(reader) == b""
            await close_writer(writer)
        assert routes.asked == []

    run(body)
