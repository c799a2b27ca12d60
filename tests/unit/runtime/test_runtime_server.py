"""The runtime's HTTP server: HTTP/1.1 (uvicorn h11) and HTTP/2 (hypercorn) by ALPN.

Real sockets on 127.0.0.1 (ports the kernel picks), TLS verified against a
self-signed certificate for ``localhost``, timeouts of a fraction of a second.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from confide.errors import UsageError
from confide.runtime import ConnectionLimits
from confide.runtime._admission import TLS_READ_BUFFER
from confide.runtime._server import H2_MAX_STREAMS, _TlsProtocol, serve_http
from confide.runtime._tls import ServerTimeouts, bind_listener
from support.http_server import (
    FAST,
    LOG,
    SLOW_HANDSHAKE,
    WAIT,
    EchoApp,
    client_context,
    close,
    closed_within,
    flask_app,
    open_tls,
    respond,
    server_context,
    serving,
)

# -- protocols ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_both_http_versions_over_tls(kind: str, http2: bool) -> None:
    app = EchoApp() if kind == "asgi" else flask_app

    async def main() -> None:
        async with (
            serving(app) as served,
            httpx.AsyncClient(verify=client_context(), http2=http2, timeout=WAIT) as client,
        ):
            get = await client.get(served.url)
            post = await client.post(served.url, content=b"x" * 70_000)
        for response in (get, post):
            assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert response.status_code == 200
            assert "server" not in response.headers and "date" in response.headers
        assert (get.text, post.text) == ("GET 0", "POST 70000")

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_plain_http(kind: str) -> None:
    app = EchoApp() if kind == "asgi" else flask_app

    async def main() -> None:
        async with (
            serving(app, tls=False) as served,
            httpx.AsyncClient(timeout=WAIT) as client,
        ):
            response = await client.post(served.url, content=b"abc")
        assert (response.http_version, response.text) == ("HTTP/1.1", "POST 3")

    asyncio.run(main())


def test_lifespan_runs_once_around_every_connection() -> None:
    app = EchoApp()

    async def main() -> None:
        async with serving(app) as served:
            for http2 in (False, True, False):
                async with httpx.AsyncClient(
                    verify=client_context(), http2=http2, timeout=WAIT
                ) as client:
                    assert (await client.get(served.url)).status_code == 200
            assert app.events[0] == "startup" and "shutdown" not in app.events

    asyncio.run(main())
    assert app.events == [
        "startup",
        *["request 1.1", "answered", "request 2", "answered", "request 1.1", "answered"],
        "shutdown",
    ]


def test_lifespan_startup_failure_stops_the_server() -> None:
    async def failing(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    async def main() -> None:
        listener = bind_listener("127.0.0.1", 0)
        stopped_accepting = asyncio.Event()
        try:
            with pytest.raises(UsageError, match="startup failed"):
                await serve_http(
                    failing,
                    listener=listener,
                    context=server_context(),
                    timeouts=FAST,
                    error_log=LOG,
                    shutdown_trigger=asyncio.Event().wait,
                    stopped_accepting=stopped_accepting,
                )
        finally:
            listener.close()
        assert stopped_accepting.is_set()

    asyncio.run(main())


def test_an_app_without_lifespan_is_served() -> None:
    async def no_lifespan(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http")
        await respond(send, "ok")

    async def main() -> None:
        async with (
            serving(no_lifespan) as served,
            httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client,
        ):
            assert (await client.get(served.url)).text == "ok"

    asyncio.run(main())


def test_app_errors_answer_500_and_go_to_the_error_log(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http":
            raise ValueError("app bug")

    async def main() -> None:
        async with (
            serving(broken) as served,
            httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client,
        ):
            assert (await client.get(served.url)).status_code == 500

    with caplog.at_level(logging.INFO, logger=LOG.name):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].name == LOG.name
    assert errors[0].exc_info is not None and "app bug" in str(errors[0].exc_info[1])
    # Uvicorn's lifespan chatter (INFO) is left out.
    assert all(r.levelno >= logging.WARNING for r in caplog.records if r.name == LOG.name)


def test_not_an_app_is_refused() -> None:
    async def main() -> None:
        listener = bind_listener("127.0.0.1", 0)
        try:
            with pytest.raises(UsageError, match="neither an ASGI nor a WSGI app"):
                await serve_http(
                    "app:app",
                    listener=listener,
                    context=None,
                    timeouts=FAST,
                    error_log=LOG,
                    shutdown_trigger=asyncio.Event().wait,
                )
        finally:
            listener.close()

    asyncio.run(main())


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_wsgi_request_body_is_bounded(http2: bool) -> None:
    async def chunks(size: int) -> AsyncIterator[bytes]:
        yield b"x" * size

    async def main() -> None:
        async with (
            serving(flask_app, max_wsgi_body=1000) as served,
            httpx.AsyncClient(verify=client_context(), http2=http2, timeout=WAIT) as client,
        ):
            exact = await client.post(served.url, content=b"x" * 1000)
            declared = await client.post(served.url, content=b"x" * 1001)
            streamed = await client.post(served.url, content=chunks(1001))
            streamed_ok = await client.post(served.url, content=chunks(10))
        assert exact.status_code == 200 and exact.text == "POST 1000"
        assert declared.status_code == 413 and "1000-byte limit" in declared.text
        assert streamed.status_code == 413
        # A body of unknown length reaches the app whole; Flask reads none of one without
        # Content-Length (as under hypercorn), but it is answered.
        assert streamed_ok.status_code == 200

    asyncio.run(main())


BODY_HEAD = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"


def test_wsgi_request_bodies_share_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that does not fit in what other requests hold of the budget is answered 503
    (before any of it is read); the budget comes back when those requests end."""
    monkeypatch.setattr("confide.runtime._admission.BODY_GRACE", WAIT)  # nothing is shed
    head = BODY_HEAD

    async def main() -> None:
        async with (
            serving(flask_app, tls=False, max_wsgi_body=1000, body_budget=1500) as served,
            httpx.AsyncClient(timeout=WAIT) as client,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(head + b"x" * 10)  # holds 1000 bytes of the budget, sends 10
            async with asyncio.timeout(WAIT):
                while (refused := await client.post(served.url, content=b"x" * 600)).is_success:
                    await asyncio.sleep(0.01)  # until the server read the first head
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "buffering other request bodies" in refused.text
            assert (await client.post(served.url, content=b"x" * 500)).text == "POST 500"
            writer.write(b"x" * 990)
            answer = await asyncio.wait_for(reader.read(65536), WAIT)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"POST 1000")
            close(writer)
            # The first request ended: its share of the budget is back.
            assert (await client.post(served.url, content=b"x" * 1000)).text == "POST 1000"

    asyncio.run(main())


def test_a_stalled_body_is_shed_for_a_newcomer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose body stalled (past its grace, slower than MIN_BODY_RATE) gives its
    share of the budget to a newcomer, and is answered 503 itself."""
    monkeypatch.setattr("confide.runtime._admission.BODY_GRACE", 0.5)

    async def main() -> None:
        async with (
            serving(
                flask_app,
                tls=False,
                timeouts=SLOW_HANDSHAKE,
                max_wsgi_body=1000,
                body_budget=1000,
            ) as served,
            httpx.AsyncClient(timeout=WAIT) as client,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(BODY_HEAD + b"x" * 10)  # holds the whole budget, sends 10 bytes
            statuses: list[int] = []
            async with asyncio.timeout(WAIT):
                while not statuses or statuses[-1] != 200:
                    statuses.append((await client.post(served.url, content=b"x" * 500)).status_code)
                    await asyncio.sleep(0.05)
            answer = await asyncio.wait_for(reader.read(65536), WAIT)
            close(writer)
        assert set(statuses) <= {200, 503}
        assert answer.startswith(b"HTTP/1.1 503") and b"buffering other request bodies" in answer

    asyncio.run(main())


def test_a_body_budget_below_the_largest_body_is_refused() -> None:
    async def main() -> None:
        listener = bind_listener("127.0.0.1", 0)
        try:
            with pytest.raises(UsageError, match="body budget"):
                await serve_http(
                    flask_app,
                    listener=listener,
                    context=None,
                    timeouts=FAST,
                    error_log=LOG,
                    shutdown_trigger=asyncio.Event().wait,
                    max_wsgi_body=1000,
                    body_budget=999,
                )
        finally:
            listener.close()

    asyncio.run(main())


def test_an_http2_connection_may_open_h2_max_streams_at_once() -> None:
    async def main() -> None:
        async with serving(EchoApp()) as served:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", served.port, ssl=client_context(["h2"]), server_hostname="localhost"
            )
            h2 = H2Connection(H2Configuration(client_side=True))
            h2.initiate_connection()
            writer.write(h2.data_to_send())
            h2.receive_data(await asyncio.wait_for(reader.read(65536), WAIT))  # its SETTINGS
            close(writer)
        assert h2.remote_settings.max_concurrent_streams == H2_MAX_STREAMS < 100

    asyncio.run(main())


# -- timeouts (HTTP/1.1) ------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_a_connection_that_asks_nothing_is_closed_after_keep_alive(tls: bool) -> None:
    async def main() -> None:
        async with serving(EchoApp(), tls=tls) as served:
            if tls:
                reader, writer = await open_tls(served.port)
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            try:
                waited = await closed_within(reader)
            finally:
                close(writer)
        assert FAST.keep_alive <= waited < FAST.read

    asyncio.run(main())


def test_a_connection_idle_after_a_response_is_closed_after_keep_alive() -> None:
    async def main() -> None:
        async with serving(EchoApp()) as served:
            reader, writer = await open_tls(served.port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"GET 0"), WAIT)
                assert head.startswith(b"HTTP/1.1 200 ")
                waited = await closed_within(reader)
            finally:
                close(writer)
        assert FAST.keep_alive <= waited < FAST.read

    asyncio.run(main())


@pytest.mark.parametrize(
    "partial",
    [
        b"GET / HTTP/1.1\r\nHost: local",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
    ids=["headers", "body", "chunked body"],
)
def test_a_client_stalled_in_a_request_is_closed_after_read(partial: bytes) -> None:
    app = EchoApp()

    async def main() -> None:
        async with serving(app) as served:
            reader, writer = await open_tls(served.port)
            try:
                writer.write(partial)
                waited = await closed_within(reader)
            finally:
                close(writer)
        assert FAST.read <= waited < FAST.read + 2.0

    asyncio.run(main())
    if partial.startswith(b"POST"):
        assert app.events[1:3] == ["request 1.1", "disconnected"]


def test_a_request_head_trickled_in_is_cut_at_its_deadline() -> None:
    """A head that keeps coming a byte at a time (never quiet for ``read``) is closed once it
    took longer than its deadline: ``read`` here, shorter than REQUEST_HEAD_DEADLINE."""
    timeouts = ServerTimeouts(handshake=WAIT, read=1.0, keep_alive=WAIT, graceful=0.5)

    async def main() -> None:
        async with serving(EchoApp(), tls=False, timeouts=timeouts) as served:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")

            async def trickle() -> None:
                while not writer.is_closing():
                    await asyncio.sleep(timeouts.read / 10)
                    writer.write(b"a")

            trickling = asyncio.create_task(trickle())
            try:
                elapsed = await closed_within(reader)
            finally:
                trickling.cancel()
                close(writer)
            assert not trickling.done() or trickling.cancelled()  # guard: it kept sending
            assert timeouts.read * 0.9 < elapsed < timeouts.read * 2.5

    asyncio.run(main())


def test_a_request_the_app_works_on_is_not_cut() -> None:
    # The app takes longer than the read and keep-alive timeouts together.
    timeouts = ServerTimeouts(handshake=0.3, read=0.2, keep_alive=0.1, graceful=0.5)
    app = EchoApp(delay=3 * (timeouts.read + timeouts.keep_alive))

    async def main() -> None:
        async with (
            serving(app, timeouts=timeouts) as served,
            httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client,
        ):
            response = await client.post(served.url, content=b"abc")
        assert response.status_code == 200 and response.text == "POST 3"

    asyncio.run(main())


def test_a_client_that_does_not_read_the_response_is_cut_after_read() -> None:
    sent = asyncio.Event()
    chunk = b"x" * 1024 * 1024

    async def flood(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(256):  # far over what the socket buffers hold
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        sent.set()

    async def main() -> None:
        async with serving(flood) as served:
            _, writer = await open_tls(served.port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                started = time.monotonic()
                # The app's sends return once the connection is gone.
                await asyncio.wait_for(sent.wait(), WAIT)
                waited = time.monotonic() - started
            finally:
                close(writer)
        assert FAST.read <= waited < FAST.read + 2.0

    asyncio.run(main())


def test_a_tls_handshake_that_does_not_come_is_cut() -> None:
    async def main() -> None:
        async with serving(EchoApp()) as served:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            try:
                waited = await closed_within(reader)
            finally:
                close(writer)
        assert FAST.handshake <= waited < FAST.read

    asyncio.run(main())


# -- shutdown -----------------------------------------------------------------------------------


def test_shutdown_finishes_open_requests_and_aborts_stuck_clients() -> None:
    release = asyncio.Event()
    app = EchoApp(release=release)

    async def main() -> None:
        async with serving(app) as served:
            # A request the app works on, and a client stuck halfway through its body.
            client = httpx.AsyncClient(verify=client_context(), timeout=WAIT)
            open_request = asyncio.create_task(client.post(served.url, content=b"abc"))
            await asyncio.wait_for(app.arrived.wait(), WAIT)
            reader, writer = await open_tls(served.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n01")
            await writer.drain()
            try:
                served.stop.set()
                started = time.monotonic()
                await asyncio.wait_for(served.stopped_accepting.wait(), WAIT)
                assert not served.task.done()  # still finishing its requests
                release.set()
                response = await asyncio.wait_for(open_request, WAIT)
                await closed_within(reader)
                # From the stop, not from when the open request's answer came (a loaded
                # machine can take a while over it: the cut is still 0.5 s after the stop).
                stuck = time.monotonic() - started
                await asyncio.wait_for(served.task, WAIT)
                stopped = time.monotonic() - started
            finally:
                close(writer)
                await client.aclose()
        assert response.status_code == 200 and response.text == "POST 3"
        assert FAST.graceful <= stuck < FAST.read  # cut by the graceful timeout, not by read
        assert FAST.graceful <= stopped < FAST.graceful + 1.0

    asyncio.run(main())
    assert app.events[-1] == "shutdown"


def test_shutdown_cancels_a_request_the_app_never_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = EchoApp(release=asyncio.Event())  # never released

    async def main() -> None:
        async with (
            serving(app) as served,
            httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client,
        ):
            pending = asyncio.create_task(client.get(served.url))
            await asyncio.wait_for(app.arrived.wait(), WAIT)
            served.stop.set()
            started = time.monotonic()
            await asyncio.wait_for(served.task, WAIT)
            stopped = time.monotonic() - started
            with pytest.raises(httpx.HTTPError):  # the connection was aborted
                await asyncio.wait_for(pending, 1.0)
        assert FAST.graceful <= stopped < FAST.graceful + 1.0

    with caplog.at_level(logging.INFO, logger=LOG.name):
        asyncio.run(main())
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOG.name]
    # One line says what was cut; uvicorn's CancelledError traceback is left out.
    assert [level for level, _ in logged] == [logging.WARNING], logged
    assert "aborted" in logged[0][1]


def test_shutdown_closes_idle_connections_at_once() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    async def main() -> None:
        async with serving(EchoApp()) as served:
            readers: list[asyncio.StreamReader] = []
            writers: list[asyncio.StreamWriter] = []
            for alpn, hello in ((["h2"], preface), (["http/1.1"], b"")):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", served.port, ssl=client_context(alpn), server_hostname="localhost"
                )
                assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == alpn[0]
                writer.write(hello)
                await writer.drain()
                readers.append(reader)
                writers.append(writer)
            await asyncio.sleep(0.05)  # both connections are in
            try:
                served.stop.set()
                started = time.monotonic()
                closed = await asyncio.gather(*(closed_within(reader) for reader in readers))
                await asyncio.wait_for(served.task, WAIT)
                stopped = time.monotonic() - started
            finally:
                for writer in writers:
                    close(writer)
        assert max(closed) < FAST.graceful and stopped < FAST.graceful

    asyncio.run(main())


def test_a_second_server_takes_over_the_listener_with_no_refused_connection() -> None:
    """The configuration phase hands the port to the app as soon as it stopped accepting."""

    async def main() -> None:
        listener = bind_listener("127.0.0.1", 0)
        port = listener.getsockname()[1]
        first_stop, second_stop = asyncio.Event(), asyncio.Event()
        stopped_accepting = asyncio.Event()
        first_app, second_app = EchoApp(release=asyncio.Event()), EchoApp()

        def serve(app: EchoApp, stop: asyncio.Event, **options: Any) -> asyncio.Task[None]:
            return asyncio.create_task(
                serve_http(
                    app,
                    listener=listener,
                    context=server_context(),
                    timeouts=FAST,
                    error_log=LOG,
                    shutdown_trigger=stop.wait,
                    **options,
                )
            )

        try:
            async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client:
                first = serve(first_app, first_stop, stopped_accepting=stopped_accepting)
                url = f"https://localhost:{port}"
                pending = asyncio.create_task(client.get(url))
                await asyncio.wait_for(first_app.arrived.wait(), WAIT)
                first_stop.set()
                await asyncio.wait_for(stopped_accepting.wait(), WAIT)
                second = serve(second_app, second_stop)
                # The first server still finishes its request; the next one goes to the second.
                assert first_app.release is not None
                first_app.release.set()
                assert (await pending).status_code == 200
                async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as fresh:
                    assert (await fresh.get(url)).status_code == 200
                await asyncio.wait_for(first, WAIT)
                second_stop.set()
                await asyncio.wait_for(second, WAIT)
        finally:
            listener.close()
        assert "answered" in second_app.events

    asyncio.run(main())


# -- admission (issue 9, point 1) ---------------------------------------------------------------


def stalled_client_hello() -> bytes:
    """A real ClientHello for ``localhost``; its sender never sends the rest."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def still_open(reader: asyncio.StreamReader) -> bool:
    """Whether the server still holds the connection (no EOF or reset within a moment)."""
    try:
        async with asyncio.timeout(0.2):
            while await reader.read(65536):
                pass
        return False
    except TimeoutError:
        return True
    except OSError:
        return False


def test_stalled_handshakes_of_one_source_are_shed_and_others_are_served() -> None:
    limits = ConnectionLimits(
        handshakes=8, handshakes_per_source=4, connections=16, connections_per_source=8
    )
    hello = stalled_client_hello()

    async def body() -> None:
        async with serving(EchoApp(), limits=limits, timeouts=SLOW_HANDSHAKE) as served:
            stalled = []
            for _ in range(40):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", served.port, local_addr=("127.0.0.2", 0)
                )
                writer.write(hello)
                await writer.drain()
                stalled.append((reader, writer))
            async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client:
                for _ in range(3):
                    response = await client.get(served.url)
                    assert response.status_code == 200
            held = [await still_open(reader) for reader, _ in stalled]
            # The newest handshakes of the flooding source are held, the older ones were shed.
            assert sum(held) == limits.handshakes_per_source
            assert held[-limits.handshakes_per_source :] == [True] * limits.handshakes_per_source
            for _, writer in stalled:
                writer.close()

    asyncio.run(body())


def test_a_source_at_its_connection_share_is_refused_and_others_are_served() -> None:
    limits = ConnectionLimits(
        handshakes=4, handshakes_per_source=2, connections=8, connections_per_source=2
    )

    async def body() -> None:
        async with serving(EchoApp(), limits=limits, timeouts=SLOW_HANDSHAKE) as served:
            # Two served (keep-alive) connections from 127.0.0.2 take its whole share.
            held = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1",
                    served.port,
                    ssl=client_context(),
                    server_hostname="localhost",
                    local_addr=("127.0.0.2", 0),
                )
                held.append((reader, writer))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", served.port, local_addr=("127.0.0.2", 0)
            )
            assert not await still_open(reader)  # closed at once: no pending handshake to shed
            writer.close()
            async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client:
                assert (await client.get(served.url)).status_code == 200
            for _, held_writer in held:
                held_writer.close()

    asyncio.run(body())


def test_at_the_connection_limits_a_newcomer_takes_the_place_of_an_idle_connection() -> None:
    """Two sources fill every slot with served keep-alive connections: a third source's
    newcomer takes the place of the oldest idle one of a source holding two more."""
    limits = ConnectionLimits(
        handshakes=2, handshakes_per_source=2, connections=4, connections_per_source=2
    )

    async def body() -> None:
        async with serving(EchoApp(), limits=limits, timeouts=SLOW_HANDSHAKE) as served:
            held = []
            for source in ("127.0.0.2", "127.0.0.3"):
                for _ in range(limits.connections_per_source):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1",
                        served.port,
                        ssl=client_context(["http/1.1"]),
                        server_hostname="localhost",
                        local_addr=(source, 0),
                    )
                    # One request answered: the connection is served (not a pending
                    # handshake that could be shed instead), then idle.
                    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    answer = await asyncio.wait_for(reader.read(65536), WAIT)
                    assert answer.startswith(b"HTTP/1.1 200")
                    held.append((reader, writer))
            async with httpx.AsyncClient(verify=client_context(), timeout=WAIT) as client:
                assert (await client.get(served.url)).status_code == 200
            still = [await still_open(reader) for reader, _ in held]
            assert still == [False, True, True, True]  # the busiest (first seen) source's oldest
            for _, writer in held:
                close(writer)

    asyncio.run(body())


def test_asyncio_still_sizes_the_tls_read_buffer_from_max_size() -> None:
    """The runtime's smaller TLS read buffer relies on asyncio reading ``max_size``."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        protocol = _TlsProtocol(
            loop, asyncio.Protocol(), server_context(), loop.create_future(), FAST
        )
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
        try:
            assert len(protocol.get_buffer(-1)) == TLS_READ_BUFFER < 256 * 1024, (
                "asyncio no longer sizes its TLS read buffer from SSLProtocol.max_size: "
                "review confide.runtime._server._TlsProtocol"
            )
        finally:
            transport.abort()
            theirs.close()
            await asyncio.sleep(0)  # connection_lost closes the TLS side too

    asyncio.run(body())
