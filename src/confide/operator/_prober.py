"""Liveness probes of runtimes: does it answer, and what.

Liveness only: TLS without verification (the operator is not the party that
verifies an enclave; no data is sent), plain HTTP for an operator-mode app
once configured. A runtime that does not answer is :attr:`Probe.DOWN`, never
an exception. Each probe first opens a bare TCP connection (closed at once):
a runtime still starting does not listen yet, and finding that out costs the
operator's event loop a tenth of what the HTTP client's failed attempt does
(starting runtimes are probed every 0.25 s; issue 14).

Example::

    >>> prober = HttpProber(timeout=3.0)  # doctest: +SKIP
    >>> await prober.probe(handle, tls=TlsMode.RATLS, healthcheck="/health")  # doctest: +SKIP
    <Probe.WAITING: 'waiting'>
"""

from __future__ import annotations

import asyncio
import enum
import socket
import ssl
from typing import Final, Protocol

import httpx

from confide.wire import STATUS_HEADER, ConfigurationStatus, HostPort, TlsMode

from ._backend import RuntimeHandle

#: Most bytes of a probe's answer read.
_PROBE_BODY: Final = 64 * 1024


class Probe(enum.Enum):
    """What a runtime answered."""

    #: Nothing (not listening yet, or no answer in time).
    DOWN = "down"
    #: Its configuration endpoint: waiting for the owner's configuration.
    WAITING = "waiting"
    #: The app answered its healthcheck with a success.
    HEALTHY = "healthy"
    #: The app answered, but not with a success.
    UNHEALTHY = "unhealthy"


class Prober(Protocol):
    """Asks a runtime where it is. Never raises for a runtime that does not answer.

    ``name`` is the app's first name as launched: the ``Host`` of a plain-HTTP probe,
    since a runtime behind the operator's TLS answers only its own names.
    """

    async def probe(
        self, handle: RuntimeHandle, *, tls: TlsMode, healthcheck: str, name: str
    ) -> Probe: ...


def probe_ssl_context() -> ssl.SSLContext:
    """The supervisor's TLS client context for liveness probes.

    - ``CERT_NONE`` and no host name check, deliberately: a probe only asks
      whether the runtime answers (it sends no data and trusts nothing it
      reads); verifying the enclave is the owner's and the users' business, with
      the expected measurement, end to end.
    - TLS 1.2 at least, as the runtime's own server context requires (RFC 8996).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class HttpProber:
    """Probes over HTTP(S) with httpx; one client, no kept-alive connections."""

    def __init__(
        self, *, timeout: float = 3.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            verify=probe_ssl_context(),
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str, *, host: str | None = None) -> httpx.Response | None:
        headers = {"Host": host} if host is not None else None
        try:
            async with self._client.stream("GET", url, headers=headers) as response:
                async for _ in response.aiter_bytes(_PROBE_BODY):
                    break
                return response
        except (httpx.HTTPError, ssl.SSLError, OSError):
            return None

    async def _listening(self, host: str, port: int) -> bool:
        """Whether something accepts TCP connections at ``host:port`` (a bare connect)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setblocking(False)
                async with asyncio.timeout(self._timeout):
                    await loop.sock_connect(sock, (host, port))
        except (OSError, TimeoutError):
            return False
        return True

    async def probe(
        self, handle: RuntimeHandle, *, tls: TlsMode, healthcheck: str, name: str
    ) -> Probe:
        if not await self._listening(handle.host, handle.port):
            return Probe.DOWN  # not listening yet: no HTTP client needed to say so
        address = HostPort(handle.host, handle.port)
        secure = f"https://{address}"
        if tls == TlsMode.OPERATOR:
            # Configured: plain HTTP, where the runtime serves only its own names (421 for
            # any other Host). Not yet: the RA-TLS configuration endpoint.
            response = await self._get(f"http://{address}{healthcheck}", host=name or None)
            if response is not None:
                return Probe.HEALTHY if _success(response) else Probe.UNHEALTHY
            response = await self._get(f"{secure}/")
            return Probe.WAITING if response is not None and _waiting(response) else Probe.DOWN
        response = await self._get(f"{secure}{healthcheck}")
        if response is None:
            return Probe.DOWN
        if _waiting(response):
            return Probe.WAITING
        return Probe.HEALTHY if _success(response) else Probe.UNHEALTHY


def _waiting(response: httpx.Response) -> bool:
    value: str = response.headers.get(STATUS_HEADER, "")
    return value.lower() == ConfigurationStatus.WAITING


def _success(response: httpx.Response) -> bool:
    return bool(200 <= response.status_code < 400 and STATUS_HEADER not in response.headers)
