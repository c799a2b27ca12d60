"""The runtime's side of fresh attestation: answer a client's nonce with a new quote.

The wire format and the report-data layout are specified in
:mod:`confide.attestation._fresh` (ADR 0021). :class:`ChallengeResponder` is
one per served phase (it knows the TEE and the RA-TLS certificate);
:class:`ChallengeApp` is one per connection, in front of the app, and knows
that connection's channel binding, TLS version and source. It answers
:data:`~confide.attestation.CHALLENGE_PATH` itself (the app never sees it) and
passes every other request to the app.

Each answer costs a quote (an enclave exit and the quoting enclave's work), so
the inputs are bounded: the body is exactly
:data:`~confide.attestation.NONCE_SIZE` bytes (its ``Content-Length`` is
checked before it is read), at most
:data:`~confide.attestation.MAX_CHALLENGES_PER_CONNECTION` per connection, a
token bucket per source (:data:`CHALLENGE_RATE` a second, bursts of
:data:`CHALLENGE_BURST`, over at most :data:`MAX_TRACKED_SOURCES` sources),
and at most :data:`MAX_CONCURRENT_QUOTES` quotes made at once, off the event
loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from typing import Final

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
)

from confide.attestation import (
    CHALLENGE_PATH,
    MAX_CHALLENGES_PER_CONNECTION,
    NONCE_SIZE,
    fresh_report_data,
)
from confide.tee import Tee

from ._asgi import send_response

#: Challenges a second one source may ask, on average (its bucket refills at this rate).
CHALLENGE_RATE: Final = 2.0
#: Challenges one source may ask at once, after a quiet while (its bucket's size).
CHALLENGE_BURST: Final = 8
#: Sources whose buckets are kept; the least recently seen is forgotten first.
MAX_TRACKED_SOURCES: Final = 4096
#: Quotes being made at once for challenges.
MAX_CONCURRENT_QUOTES: Final = 2


class ChallengeResponder:
    """Makes the quotes that answer challenges, for the RA-TLS certificate ``certificate_der``."""

    def __init__(self, tee: Tee, certificate_der: bytes) -> None:
        self._tee = tee
        self._certificate_der = certificate_der
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._quoting = asyncio.Semaphore(MAX_CONCURRENT_QUOTES)

    @property
    def certificate_der(self) -> bytes:
        return self._certificate_der

    def admit(self, source: str, now: float) -> bool:
        """Take one challenge from ``source``'s bucket at loop time ``now`` (False: none left)."""
        tokens, since = self._buckets.pop(source, (float(CHALLENGE_BURST), now))
        tokens = min(float(CHALLENGE_BURST), tokens + (now - since) * CHALLENGE_RATE)
        if len(self._buckets) >= MAX_TRACKED_SOURCES:
            self._buckets.popitem(last=False)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1, now)
        return True

    async def answer(self, nonce: bytes, binding: bytes) -> bytes:
        """The quote answering ``nonce`` on the connection of ``binding``."""
        report_data = fresh_report_data(nonce, self._certificate_der, binding)
        async with self._quoting:
            return await asyncio.to_thread(self._tee.get_quote, report_data)


def channel_of(ssl_object: ssl.SSLObject | None) -> tuple[bytes | None, str | None]:
    """The connection's channel binding and TLS version (``None``: not TLS)."""
    if ssl_object is None:
        return None, None
    return ssl_object.get_channel_binding("tls-unique"), ssl_object.version()


class ChallengeApp:
    """One connection's app: answers challenges on it, passes everything else to ``app``."""

    def __init__(
        self,
        app: ASGIFramework,
        responder: ChallengeResponder,
        *,
        binding: bytes | None,
        tls_version: str | None,
        source: str,
    ) -> None:
        self._app = app
        self._responder = responder
        self._binding = binding
        self._tls_version = tls_version
        self._source = source
        self._asked = 0

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or scope["path"] != CHALLENGE_PATH:
            await self._app(scope, receive, send)
            return
        status, body = await self._challenge(scope, receive)
        retry = ((b"retry-after", b"1"),) if status == 429 else ()
        await send_response(send, status, body, retry, content_type=b"application/octet-stream")

    async def _challenge(
        self, scope: HTTPScope, receive: ASGIReceiveCallable
    ) -> tuple[int, bytes | dict[str, str]]:
        if scope["method"] != "POST":
            return 405, _refusal("method", "only POST is served here")
        if self._binding is None or self._tls_version != "TLSv1.3":
            return 421, _refusal(
                "tls_version",
                f"challenges are answered over TLS 1.3 only, not {self._tls_version or 'plain'}",
            )
        length = dict(scope["headers"]).get(b"content-length")
        if length != str(NONCE_SIZE).encode():
            return 400, _refusal("nonce_size", f"the body must be exactly {NONCE_SIZE} bytes")
        self._asked += 1
        if self._asked > MAX_CHALLENGES_PER_CONNECTION:
            return 429, _refusal(
                "per_connection",
                f"at most {MAX_CHALLENGES_PER_CONNECTION} challenges per connection",
            )
        if not self._responder.admit(self._source, asyncio.get_running_loop().time()):
            return 429, _refusal("rate", "too many challenges from your address: retry shortly")
        nonce = b""
        while True:  # the protocol holds the body to its Content-Length
            message = await receive()
            if message["type"] != "http.request":
                return 400, _refusal("nonce_size", "the request ended before its body")
            nonce += message.get("body", b"")
            if len(nonce) > NONCE_SIZE:
                return 400, _refusal("nonce_size", f"the body must be exactly {NONCE_SIZE} bytes")
            if not message.get("more_body", False):
                break
        if len(nonce) != NONCE_SIZE:
            return 400, _refusal("nonce_size", f"the body must be exactly {NONCE_SIZE} bytes")
        return 200, await self._responder.answer(nonce, self._binding)


def _refusal(code: str, message: str) -> dict[str, str]:
    return {"error": f"challenge.{code}", "message": message}
