"""The configuration endpoint as an ASGI app, in process: limits, statuses, one configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypercorn.typing import (
    ASGIReceiveEvent,
    ASGISendEvent,
    ConnectionState,
    HTTPScope,
    LifespanScope,
)

from confide.errors import UsageError
from confide.runtime import AppLaunch, ConfigurationEndpoint, ConfigurationRejected

LIMIT = 1000
LOGGER = logging.getLogger("test.runtime.endpoint")


@dataclass
class StubConfigurator:
    error: Exception | None = None
    bodies: list[bytes] = field(default_factory=list)

    def configure(self, body: bytes) -> AppLaunch:
        self.bodies.append(body)
        if self.error is not None:
            raise self.error
        return AppLaunch(env={"HOME": "/tmp/x"}, owner_key_pem=None)


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    received: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Harness:
    configurator: StubConfigurator = field(default_factory=StubConfigurator)
    launches: list[AppLaunch] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.endpoint = ConfigurationEndpoint(
            self.configurator, self.launches.append, logger=LOGGER, max_body=LIMIT
        )

    async def call(
        self,
        method: str = "GET",
        path: str = "/",
        chunks: Sequence[bytes] = (b"",),
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> Reply:
        scope: HTTPScope = {
            "type": "http",
            "asgi": {"spec_version": "2.3", "version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": list(headers),
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "extensions": {},
            "state": ConnectionState({}),
        }
        pending = list(chunks)
        received = 0
        sent: list[ASGISendEvent] = []

        async def receive() -> ASGIReceiveEvent:
            nonlocal received
            received += 1
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(event: ASGISendEvent) -> None:
            sent.append(event)

        await self.endpoint(scope, receive, send)
        start, body = sent
        assert start["type"] == "http.response.start"
        assert body["type"] == "http.response.body"
        return Reply(
            status=start["status"],
            headers=dict(start["headers"]),
            body=body.get("body", b""),
            received=received,
        )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_get_says_waiting() -> None:
    reply = run(Harness().call("GET"))
    assert reply.status == 200
    assert reply.body == b"waiting for configuration\n"
    assert reply.headers[b"confide-status"] == b"waiting"
    assert reply.headers[b"mse-status"] == b"Waiting"
    head = run(Harness().call("HEAD"))
    assert head.status == 200 and head.body == b""


def test_content_length_over_the_limit_is_refused_unread() -> None:
    h = Harness()
    reply = run(h.call("POST", chunks=[b"x" * 10], headers=[(b"content-length", b"1001")]))
    assert reply.status == 413 and "1000-byte limit" in reply.json()["message"]
    assert reply.received == 0 and h.configurator.bodies == []


def test_body_over_the_limit_is_refused_while_read() -> None:
    h = Harness()
    reply = run(h.call("POST", chunks=[b"x" * 600, b"x" * 600, b"never read"]))
    assert reply.status == 413
    assert reply.received == 2 and h.configurator.bodies == []


def test_bad_content_length() -> None:
    reply = run(Harness().call("POST", headers=[(b"content-length", b"ten")]))
    assert reply.status == 400


def test_success_then_already_configured() -> None:
    h = Harness()

    async def scenario() -> list[Reply]:
        first = await h.call("POST", chunks=[b'{"a":', b" 1}"])
        return [first, await h.call("POST", chunks=[b"{}"]), await h.call("GET")]

    first, again, status = run(scenario())
    assert first.status == 200 and first.json() == {"status": "configured"}
    assert first.headers[b"confide-status"] == b"configured"
    assert h.configurator.bodies == [b'{"a": 1}']
    assert len(h.launches) == 1
    assert again.status == 409 and status.status == 409


def test_concurrent_posts_configure_once() -> None:
    h = Harness()

    async def scenario() -> list[Reply]:
        return list(await asyncio.gather(*(h.call("POST", chunks=[b"{}"]) for _ in range(5))))

    statuses = sorted(r.status for r in run(scenario()))
    assert statuses == [200, 409, 409, 409, 409]
    assert len(h.configurator.bodies) == 1 and len(h.launches) == 1


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigurationRejected(401, "configuration.uuid", "missing or wrong uuid"), 401),
        (ConfigurationRejected(400, "configuration.json", "bad"), 400),
        (UsageError("cannot create the code folder"), 500),
    ],
)
def test_refusals_keep_waiting(error: Exception, status: int) -> None:
    h = Harness(StubConfigurator(error=error))

    async def scenario() -> tuple[Reply, Reply]:
        return await h.call("POST", chunks=[b"{}"]), await h.call("GET")

    reply, after = run(scenario())
    assert reply.status == status
    assert set(reply.json()) == {"error", "message"}
    assert reply.headers[b"confide-status"] == b"waiting"
    assert h.launches == [] and after.status == 200


@pytest.mark.parametrize(("method", "path", "status"), [("PUT", "/", 405), ("GET", "/x", 404)])
def test_other_methods_and_paths(method: str, path: str, status: int) -> None:
    reply = run(Harness().call(method, path))
    assert reply.status == status
    if status == 405:
        assert reply.headers[b"allow"] == b"GET, HEAD, POST"


def test_lifespan() -> None:
    h = Harness()
    messages: list[ASGIReceiveEvent] = [
        {"type": "lifespan.startup"},
        {"type": "lifespan.shutdown"},
    ]
    sent: list[ASGISendEvent] = []

    async def receive() -> ASGIReceiveEvent:
        return messages.pop(0)

    async def send(event: ASGISendEvent) -> None:
        sent.append(event)

    scope: LifespanScope = {
        "type": "lifespan",
        "asgi": {"spec_version": "2.0", "version": "3.0"},
        "state": {},
    }
    run(h.endpoint(scope, receive, send))
    assert [e["type"] for e in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
