"""The supervisor's liveness probes (:class:`confide.operator._prober.HttpProber`): a runtime
that does not listen yet is found DOWN by a bare connect, without the HTTP client (each of
its failed attempts cost the event loop ten times more, at four probes a second per
starting runtime); one that listens is asked over HTTP(S) as before."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import pytest

from confide.operator import Probe, RuntimeHandle
from confide.operator._prober import HttpProber
from confide.wire import STATUS_HEADER, ConfigurationStatus, TlsMode


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("tls", [TlsMode.RATLS, TlsMode.OPERATOR])
def test_a_runtime_not_listening_yet_is_down_without_an_http_request(tls: TlsMode) -> None:
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, headers={STATUS_HEADER: ConfigurationStatus.WAITING})

    async def main() -> Probe:
        prober = HttpProber(timeout=5.0, transport=httpx.MockTransport(answer))
        try:
            handle = RuntimeHandle(uuid.uuid4(), "127.0.0.1", _closed_port(), 1)
            return await prober.probe(handle, tls=tls, healthcheck="/health", name="")
        finally:
            await prober.aclose()

    assert asyncio.run(main()) is Probe.DOWN
    assert asked == []


def test_a_listening_runtime_is_asked_over_http() -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, headers={STATUS_HEADER: ConfigurationStatus.WAITING})

    async def main() -> Probe:
        prober = HttpProber(timeout=5.0, transport=httpx.MockTransport(answer))
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            port = listener.getsockname()[1]
            try:
                handle = RuntimeHandle(uuid.uuid4(), "127.0.0.1", port, 1)
                return await prober.probe(handle, tls=TlsMode.RATLS, healthcheck="/health", name="")
            finally:
                await prober.aclose()

    assert asyncio.run(main()) is Probe.WAITING
    assert len(asked) == 1 and asked[0].endswith("/health")
