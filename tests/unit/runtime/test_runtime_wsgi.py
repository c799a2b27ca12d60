"""The runtime's WSGI adapter: PEP 3333 environ and responses, streaming, errors, bounds."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from confide.runtime._wsgi import MAX_PENDING_CHUNKS, WsgiAdapter

Sent = list[dict[str, Any]]


def scope(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/caf\u00e9/x",
        "raw_path": b"/caf%C3%A9/x",
        "root_path": "/base",
        "query_string": b"a=1&b=%20",
        "headers": [
            (b"host", b"app.example"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"11"),
            (b"x-twice", b"one"),
            (b"x-twice", b"two"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ],
        "client": ("192.0.2.7", 51000),
        "server": ("127.0.0.1", 8443),
    }
    values.update(overrides)
    return values


def body_messages(*chunks: bytes) -> Callable[[], Any]:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError("unreachable")

    return receive


def call(app: Any, *, request: dict[str, Any] | None = None, send: Any = None) -> Sent:
    sent: Sent = []

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        adapter: Any = WsgiAdapter(app)
        async with asyncio.timeout(10):
            await adapter(request or scope(), body_messages(b"hello", b" world"), send or record)

    asyncio.run(main())
    return sent


def test_environ_follows_pep_3333_and_the_body_is_readable() -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read()
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-A", "b")])
        return [b"made"]

    sent = call(app)
    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["SCRIPT_NAME"] == "/base"
    assert seen["PATH_INFO"] == "/caf\u00c3\u00a9/x"  # UTF-8 bytes as latin-1 chars
    assert seen["QUERY_STRING"] == "a=1&b=%20"
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.1", "8443")
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("192.0.2.7", "51000")
    assert (seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"]) == ("text/plain", "11")
    assert "HTTP_CONTENT_TYPE" not in seen and "HTTP_CONTENT_LENGTH" not in seen
    assert seen["HTTP_HOST"] == "app.example"
    assert seen["HTTP_X_TWICE"] == "one,two"
    assert seen["HTTP_COOKIE"] == "a=1; b=2"
    assert seen["wsgi.url_scheme"] == "https" and seen["wsgi.version"] == (1, 0)
    assert seen["wsgi.errors"] is sys.stderr
    assert seen["wsgi.multithread"] is True and seen["wsgi.run_once"] is False
    assert seen["body"] == b"hello world"
    assert sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"text/plain"), (b"x-a", b"b")],
        },
        {"type": "http.response.body", "body": b"made", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]


def test_a_streamed_response_keeps_its_order_and_is_closed() -> None:
    closed = threading.Event()

    class Streamed:
        def __iter__(self) -> Iterator[bytes]:
            yield b""  # empty chunks do not start the response
            for i in range(50):
                yield b"%d," % i

        def close(self) -> None:
            closed.set()

    def app(environ: dict[str, Any], start_response: Any) -> Streamed:
        write = start_response("200 OK", [])
        write(b"legacy-write,")
        return Streamed()

    sent = call(app)
    assert sent[0]["type"] == "http.response.start"
    body = b"".join(m["body"] for m in sent[1:])
    assert body == b"legacy-write," + b"".join(b"%d," % i for i in range(50))
    assert sent[-1]["more_body"] is False
    assert closed.is_set()


def test_an_empty_response_still_sends_its_headers() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    sent = call(app)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 204


def test_errors_reach_the_server_and_start_response_follows_pep_3333() -> None:
    def fails(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise KeyError("app bug")

    with pytest.raises(KeyError, match="app bug"):
        call(fails)

    def twice(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("500 Oops", [])
        return [b""]

    with pytest.raises(RuntimeError, match="start_response called twice"):
        call(twice)

    def recovers(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())  # before any body: allowed
        return [b"sorry"]

    assert call(recovers)[0]["status"] == 500

    def too_late(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        try:
            raise ValueError("after the headers")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())
        yield b"never"

    with pytest.raises(ValueError, match="after the headers"):
        call(too_late)

    def no_status(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b"body first"]

    with pytest.raises(RuntimeError, match="before calling start_response"):
        call(no_status)

    def bad_status(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("OK", [])
        return []

    with pytest.raises(ValueError, match="3-digit code"):
        call(bad_status)


def test_a_slow_client_bounds_what_is_buffered_and_a_gone_one_stops_the_app() -> None:
    produced = 0
    closed = threading.Event()
    most_ahead = 0

    def endless(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        nonlocal produced
        start_response("200 OK", [])
        try:
            while True:
                produced += 1
                yield b"x" * 1024
        finally:
            closed.set()

    sent = 0

    async def slow_then_gone(message: dict[str, Any]) -> None:
        nonlocal sent, most_ahead
        await asyncio.sleep(0.005)
        sent += 1
        most_ahead = max(most_ahead, produced - sent)
        if sent == 40:
            raise ConnectionResetError("client gone")

    with pytest.raises(ConnectionResetError):
        call(endless, send=slow_then_gone)
    assert closed.wait(5), "the app's iterator was not closed"
    assert most_ahead <= MAX_PENDING_CHUNKS + 1


def test_lifespan_is_answered_and_websockets_are_not_accepted() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise AssertionError("not called")

    sent: Sent = []
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        adapter: Any = WsgiAdapter(app)
        await adapter({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, record)
        await adapter(scope(type="websocket"), receive, record)

    asyncio.run(main())
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
