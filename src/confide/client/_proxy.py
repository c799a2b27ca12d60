"""A local HTTP proxy to a zero-trust app: the browser speaks plain HTTP on loopback, the
proxy speaks TLS to the enclave, pinned to the RA-TLS certificate it verified.

Trust comes from the quote, never from the operator or a CA:

1. Before serving, the caller verifies the enclave's RA-TLS certificate with
   the one verifier (:class:`~confide.client.EnclaveVerifier`: quote, key
   binding, fingerprint, launch for this name) and hands its DER to
   :class:`CertificatePin`, with that verifier to verify new ones.
2. Every new upstream TLS connection compares the exact DER of the peer's
   certificate with the pin, right after the handshake and before a byte of
   the request is sent. A different certificate (the enclave restarted with a
   new key, or someone else answers) is verified in full again before use;
   if that fails the request gets a 502 with a one-line reason, and that
   certificate keeps being refused.
3. A verification holds until the end of the shortest window it relied on
   (the certificate's notAfter, the collateral's nextUpdate, the PCK chain's
   notAfter: :attr:`~confide.client.VerifiedEnclave.valid_until`). After
   it, the pinned certificate is verified again in full, with fresh
   collateral, before any new connection is used or any request is sent on
   a kept-alive one; an expired certificate is refused from then on.

The proxy answers only its own origin (ADR 0010): a request whose ``Host`` is
not one of the proxy's loopback names (:func:`loopback_hosts`) gets 421, so a
web page cannot reach it by DNS rebinding; a request another site's page made
(an ``Origin`` that is not the proxy's, or ``Sec-Fetch-Site`` cross-site or
same-site, except a top-level GET navigation) gets 403, so a page cannot post
to the app as the user. There is no CORS: no other origin is ever forwarded.
Upstream, the proxy's own origin in ``Origin`` and ``Referer`` becomes the
app's (``https://<domain>``).

Every path under ``/.well-known/confide`` is the proxy's own and never
forwarded (ADR 0026): its verification page of what it verified
(:mod:`confide.client._verifypage`), with ``verification.json`` for scripts. A
request it refuses for the enclave gets, when a browser asks for HTML, that
page with the verifier's error code and one line (still 502); other clients
get the line alone.

Example::

    >>> pin = CertificatePin(verified_der, verify=verify_again, log=print,
    ...                      valid_until=verified.valid_until)  # doctest: +SKIP
    >>> proxy = ProxyApp(ProxySettings(domain="app.example", upstream=("app.example", 443)),
    ...                  pin, log=print)  # doctest: +SKIP
    >>> listener = bind_loopback("127.0.0.1", 0)  # doctest: +SKIP
    >>> asyncio.run(serve_proxy(proxy, listener, shutdown_trigger=stop.wait))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import typing
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpcore
from cryptography import x509
from hypercorn.asyncio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from confide.errors import AttestationError, CollateralError, Error, UsageError
from confide.runtime import (
    ServerTimeouts,
    answer_lifespan,
    bind_listener,
    hypercorn_config,
    send_response,
)

from ._verify import EnclavePolicy, VerifiedEnclave, enclave_tls_context
from ._verifypage import (
    JSON_PATH,
    PAGE_HEADERS,
    PAGE_PATH,
    PAGE_PREFIX,
    STYLE_PATH,
    Refusal,
    is_page_path,
    remove_dot_segments,
    render_page,
    style_sheet,
    verification_document,
    wants_html,
)

#: Headers about one connection, never forwarded (RFC 9110 §7.6.1), plus ``alt-svc``
#: (it would send the browser to the enclave directly, around the proxy).
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "alt-svc",
    }
)
#: Methods a proxy may send twice (RFC 9110 §9.2.2), when the request has no body.
_RETRIABLE: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Certificates that failed verification, remembered so they are refused at once.
_REJECTED_KEPT: Final = 64
_CHUNK: Final = 64 * 1024
#: The browser side: how long a client may hold a connection.
_SERVER_TIMEOUTS: Final = ServerTimeouts(handshake=10.0, read=60, keep_alive=30.0, graceful=5.0)
#: Largest request head (request line and headers) accepted from the browser.
MAX_HEADER_BYTES: Final = 32 * 1024
#: ``Sec-Fetch-Site`` of a request the proxy's own page, or the user, made (Fetch Metadata).
_OWN_SITES: Final = frozenset({b"same-origin", b"none"})
#: Methods a cross-site top-level navigation (a link to the app) may use.
_NAVIGATION_METHODS: Final = frozenset({"GET", "HEAD"})
#: Names of the loopback interface a browser may use for a wildcard listener.
_LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "[::1]")

Log = Callable[[str], None]


class Verified(typing.Protocol):
    @property
    def valid_until(self) -> datetime: ...  # when the verification runs out (VerifiedEnclave's)


Verify = Callable[[x509.Certificate], Verified]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PinRejected(Exception):
    """An upstream connection presented a certificate that is not (or no longer) trusted.

    ``code`` is the verifier's error code (:attr:`confide.errors.Error.code`), ``str()``
    the one line said to the user, ``at`` when the proxy refused it.
    """

    def __init__(self, reason: str, *, code: str, at: datetime) -> None:
        super().__init__(reason)
        self.code = code
        self.at = at


class CertificatePin:
    """The DER of the one enclave certificate upstream connections may present.

    ``verify`` re-verifies a certificate in full (it runs in a worker thread:
    it may fetch collateral) and raises an :class:`~confide.errors.Error`
    when it is not acceptable. ``valid_until`` is when the verification of
    ``der`` runs out (:attr:`VerifiedEnclave.valid_until`); from then on (by
    ``clock``), ``der`` itself is verified again before it is trusted.
    ``verified`` is what verifying ``der`` returned; :attr:`verified` is then
    the result of the verification in force, and :attr:`last_refusal` the
    last certificate refused (both for the verification page, ADR 0026).
    """

    def __init__(
        self,
        der: bytes,
        *,
        verify: Verify,
        log: Log,
        valid_until: datetime,
        clock: Clock = _utc_now,
        verified: Verified | None = None,
    ) -> None:
        if valid_until.tzinfo is None:
            raise UsageError("valid_until must be a timezone-aware datetime")
        self._der = der
        self._valid_until = valid_until
        self._verify = verify
        self._log = log
        self._clock = clock
        self._rejected: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        self._lock = asyncio.Lock()
        self._verified = verified
        self._last_refusal: PinRejected | None = None

    @property
    def der(self) -> bytes:
        return self._der

    @property
    def valid_until(self) -> datetime:
        return self._valid_until

    @property
    def verified(self) -> Verified | None:
        """The result of verifying :attr:`der` (``None``: not given), whether it holds or not."""
        return self._verified

    @property
    def last_refusal(self) -> PinRejected | None:
        """The last certificate refused since :attr:`der` was verified (``None``: none)."""
        return self._last_refusal

    def holds(self) -> bool:
        """Whether the verification of :attr:`der` holds now (by the pin's clock)."""
        return self._holds(self._der)

    def now(self) -> datetime:
        return self._clock()

    def _holds(self, der: bytes | None) -> bool:
        return der is not None and der == self._der and self._clock() <= self._valid_until

    async def check(self, der: bytes | None) -> None:
        """Return if ``der`` is the pinned certificate and its verification still holds, or
        ``der`` verifies now; else :class:`PinRejected`.

        Raises at once for a certificate already rejected.
        """
        if self._holds(der):
            return
        if not der:
            raise self._refuse("the enclave sent no certificate", "ratls.absent")
        if der in self._rejected:
            raise self._refuse(*self._rejected[der])
        async with self._lock:  # one verification at a time; others wait for its outcome
            if self._holds(der):
                return
            if der in self._rejected:
                raise self._refuse(*self._rejected[der])
            renewal = der == self._der
            if renewal:
                self._log(
                    "the verification of the enclave's certificate ran out at "
                    f"{self._valid_until.isoformat()} (its certificate, collateral or TCB "
                    "window ended): verifying it again"
                )
            else:
                self._log("the enclave presents a new certificate: verifying it again")
            try:
                cert = x509.load_der_x509_certificate(der)
                verified = await asyncio.to_thread(self._verify, cert)
            except (Error, ValueError) as exc:
                what = "certificate" if renewal else "new certificate"
                reason = f"the enclave's {what} is not trusted: {_one_line(exc)}"
                code = exc.code if isinstance(exc, Error) else "certificate.format"
                if not isinstance(exc, Error) or (
                    isinstance(exc, AttestationError) and not isinstance(exc, CollateralError)
                ):
                    # The evidence itself is bad: refuse it from now on. Other errors
                    # (collateral could not be fetched, or is out of date) are tried again.
                    self._rejected[der] = (reason, code)
                    while len(self._rejected) > _REJECTED_KEPT:
                        self._rejected.popitem(last=False)
                self._log(reason)
                raise self._refuse(reason, code) from exc
            self._der = der
            self._valid_until = verified.valid_until
            self._verified = verified
            self._last_refusal = None
            self._log(
                f"the enclave's {'certificate' if renewal else 'new certificate'} verified: "
                f"pinned it until {verified.valid_until.isoformat()}"
            )

    def _refuse(self, reason: str, code: str) -> PinRejected:
        self._last_refusal = PinRejected(reason, code=code, at=self._clock())
        return self._last_refusal


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _PinnedStream(httpcore.AsyncNetworkStream):
    """A TCP stream whose TLS upgrade fails unless the peer presents the pinned certificate.

    Once upgraded (``der`` is the peer's certificate), every write checks the pin
    again: a kept-alive connection is not used past the end of the verification
    it was opened under, unless that certificate verifies again.
    """

    def __init__(
        self, stream: httpcore.AsyncNetworkStream, pin: CertificatePin, der: bytes | None = None
    ) -> None:
        self._stream = stream
        self._pin = pin
        self._der = der

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._der is not None:
            await self._pin.check(self._der)
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            await self._pin.check(der)
        except BaseException:
            await tls.aclose()
            raise
        return _PinnedStream(tls, self._pin, der)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pin: CertificatePin) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._pin = pin

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(stream, self._pin)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    #: The app's domain: the SNI and ``Host`` sent upstream.
    domain: str
    #: Where to connect (the router, or the enclave itself).
    upstream: tuple[str, int]
    #: Bound on connecting, each write and each wait for upstream data (seconds).
    timeout: float = 30.0
    #: Upstream connections kept at most (concurrent requests beyond wait, up to ``timeout``).
    max_connections: int = 64
    #: An idle upstream keep-alive connection is closed after this (seconds).
    keepalive_expiry: float = 30.0
    #: ``Host`` values the proxy answers (lower case, with the port): its own loopback
    #: names (:func:`loopback_hosts`). Any other gets 421. Empty: every request is refused.
    allowed_hosts: frozenset[str] = frozenset()


class ProxyApp:
    """The ASGI app: forwards each HTTP request to the pinned enclave and streams the answer.

    Paths under ``/.well-known/confide/`` are the proxy's own, never forwarded
    (ADR 0026): the verification page of what ``pin`` verified against
    ``policy`` (:mod:`confide.client._verifypage`; without a ``policy``, 404).
    A request refused for the enclave (its certificate does not verify, or it
    cannot be reached) gets that page's reason when a browser asks for HTML.
    """

    def __init__(
        self,
        settings: ProxySettings,
        pin: CertificatePin,
        *,
        log: Log,
        policy: EnclavePolicy | None = None,
    ) -> None:
        self.settings = settings
        self.pin = pin
        self.policy = policy
        self._log = log
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=enclave_tls_context(),
            max_connections=settings.max_connections,
            keepalive_expiry=settings.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=_PinnedBackend(pin),
        )
        host, port = settings.upstream
        self._origin = (host.encode("idna"), port)
        self._timeouts = {
            "connect": settings.timeout,
            "read": settings.timeout,
            "write": settings.timeout,
            "pool": settings.timeout,
        }

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send, on_shutdown=self.aclose)
        elif scope["type"] == "http":
            await self._http(typing.cast(dict[str, Any], scope), receive, send)
        # Websockets are not proxied: returning without accepting closes the handshake (403).

    async def _http(
        self, scope: dict[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        method: str = scope["method"]
        path: str = scope["path"]  # logged without the query, which may carry secrets
        refusal = request_refusal(method, scope["headers"], self.settings.allowed_hosts)
        if refusal is not None:
            status, reason = refusal
            await _fail(send, status, reason)
            self._log(f"{method} {path} {status} ({reason})")
            return
        if is_page_path(path):
            status = await self._page(method, path, send)
            self._log(f"{method} {path} {status}")
            return
        html = wants_html(scope["headers"])
        target = scope.get("raw_path") or path.encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers, chunked = _request_headers(
            scope["headers"], self.settings.domain, self.settings.allowed_hosts
        )
        body: AsyncIterator[bytes] | bytes = _request_body(receive) if chunked else b""
        if not chunked and any(k == b"content-length" for k, _ in headers):
            body = _request_body(receive)
        url = httpcore.URL(
            scheme=b"https", host=self._origin[0], port=self._origin[1], target=target
        )
        status = 502
        started = False
        # A keep-alive connection may have died under us (the enclave restarted): a request
        # that is safe to send twice and has no body is tried once more on a new connection.
        tries = 2 if method in _RETRIABLE and isinstance(body, bytes) else 1
        try:
            for attempt in range(1, tries + 1):
                try:
                    async with self._pool.stream(
                        method.encode(),
                        url,
                        headers=headers,
                        content=body,
                        extensions={
                            "timeout": self._timeouts,
                            "sni_hostname": self.settings.domain,
                        },
                    ) as response:
                        status = response.status
                        await send(
                            {
                                "type": "http.response.start",
                                "status": status,
                                "headers": _response_headers(response.headers),
                            }
                        )
                        started = True
                        async for chunk in response.aiter_stream():
                            for i in range(0, len(chunk), _CHUNK):
                                await send(
                                    {
                                        "type": "http.response.body",
                                        "body": chunk[i : i + _CHUNK],
                                        "more_body": True,
                                    }
                                )
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                except (httpcore.ProtocolError, httpcore.NetworkError):
                    if started or attempt == tries:
                        raise
        except PinRejected as exc:
            await self._refused(send, 502, exc.code, str(exc), path if html else None)
        except httpcore.TimeoutException:
            status = 504
            if not started:
                reason = "the enclave did not answer in time"
                await self._refused(send, status, "proxy.timeout", reason, path if html else None)
        except (httpcore.ProtocolError, httpcore.NetworkError) as exc:
            if not started:
                reason = f"cannot reach the enclave: {_one_line(exc)}"
                await self._refused(send, 502, "proxy.unreachable", reason, path if html else None)
        finally:
            self._log(f"{method} {path} {status}")

    async def _refused(
        self, send: ASGISendCallable, status: int, code: str, reason: str, page_for: str | None
    ) -> None:
        """A request not forwarded: the one line, or for a browser (``page_for``: the path
        it asked for) the verification page with the verifier's code and that line."""
        if page_for is None or self.policy is None:
            await _fail(send, status, reason)
            return
        refusal = Refusal(code, reason, self.pin.now())
        document = verification_document(self.policy, None, now=refusal.at, refusal=refusal)
        page = render_page(document, forwarded_path=page_for)
        await send_response(
            send, status, page, PAGE_HEADERS, content_type=b"text/html; charset=utf-8"
        )

    async def _current(self) -> tuple[VerifiedEnclave | None, Refusal | None]:
        """The verification in force (verified again if it ran out), or why none is."""
        try:
            await self.pin.check(self.pin.der)
        except PinRejected as exc:
            return None, Refusal(exc.code, str(exc), exc.at)
        verified = self.pin.verified
        last = self.pin.last_refusal
        refusal = Refusal(last.code, str(last), last.at) if last is not None else None
        return (verified if isinstance(verified, VerifiedEnclave) else None), refusal

    async def _page(self, method: str, path: str, send: ASGISendCallable) -> int:
        """Answer a request for one of the proxy's own paths; return its status."""
        if method not in _NAVIGATION_METHODS:
            await send_response(
                send,
                405,
                f"{method} is not allowed on {PAGE_PATH} (the proxy's pages): GET\n".encode(),
                (*PAGE_HEADERS, (b"allow", b"GET, HEAD")),
            )
            return 405
        head = method == "HEAD"
        normal = remove_dot_segments(path)
        if normal == STYLE_PATH:
            await send_response(
                send, 200, style_sheet(), PAGE_HEADERS, content_type=b"text/css", head=head
            )
            return 200
        if self.policy is None or normal not in (PAGE_PREFIX, PAGE_PATH, JSON_PATH):
            await send_response(
                send,
                404,
                f"no such page of confide proxy; paths under {PAGE_PATH} are the proxy's own "
                "and never reach the app (its verification page is "
                f"{PAGE_PATH if self.policy is not None else 'not served'})\n".encode(),
                PAGE_HEADERS,
                head=head,
            )
            return 404
        verified, refusal = await self._current()
        status = 200 if verified is not None else 502
        document = verification_document(self.policy, verified, now=self.pin.now(), refusal=refusal)
        if normal == JSON_PATH:
            await send_response(send, status, document, PAGE_HEADERS, head=head)
        else:
            await send_response(
                send,
                status,
                render_page(document),
                PAGE_HEADERS,
                content_type=b"text/html; charset=utf-8",
                head=head,
            )
        return status


async def _fail(send: ASGISendCallable, status: int, reason: str) -> None:
    await send_response(send, status, (reason + "\n").encode())


def _dropped(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Hop-by-hop names: the fixed ones and those a ``Connection`` header lists."""
    names = {h.encode() for h in HOP_BY_HOP}
    for key, value in headers:
        if key.lower() == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return names


def loopback_hosts(host: str, port: int, *, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` values of a proxy listening on ``host:port``: its own names, nothing else.

    The listening address as written (an IPv6 one in brackets) and ``localhost``;
    for a wildcard address (``--unsafe-listen-any``) also ``127.0.0.1`` and
    ``[::1]``; and the ``extra`` names the user allowed. Each with ``:port``,
    and bare too when the port is 80 (a browser leaves the default port out).
    """
    literal = f"[{host.strip('[]')}]" if ":" in host else host
    names = {literal.lower(), "localhost"}
    try:
        if ipaddress.ip_address(host.strip("[]")).is_unspecified:
            names.update(_LOOPBACK_NAMES)
    except ValueError:
        pass
    names.update(name.lower() for name in extra)
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:
        hosts |= names
    return frozenset(hosts)


def request_refusal(
    method: str, raw: Iterable[tuple[bytes, bytes]], allowed_hosts: frozenset[str]
) -> tuple[int, str] | None:
    """Why the proxy must not forward this request (status and one line), or ``None``.

    421 when ``Host`` is not one of ``allowed_hosts`` (DNS rebinding: a page of
    another site whose name now resolves to loopback); 403 when another site's
    page made the request (its ``Origin``, or Fetch Metadata's
    ``Sec-Fetch-Site``), except a top-level GET or HEAD navigation (a link).
    """
    items = [(k.lower(), v) for k, v in raw]
    hosts = [v for k, v in items if k == b"host"]
    if len(hosts) != 1 or hosts[0].decode("latin-1").lower() not in allowed_hosts:
        shown = " ".join(v.decode("latin-1")[:100] for v in hosts) or "none"
        return 421, (
            f"this proxy answers only its own loopback names: Host {shown} is not one of "
            f"{', '.join(sorted(allowed_hosts)) or 'none'}"
        )
    origins = {f"http://{h}" for h in allowed_hosts}
    for key, value in items:
        if key == b"origin" and value.decode("latin-1").lower() not in origins:
            return 403, (
                f"cross-origin request refused: Origin {value.decode('latin-1')[:100]} is not "
                "this proxy's (no other site's page may call the app through it)"
            )
    sites = [v.lower() for k, v in items if k == b"sec-fetch-site"]
    modes = [v.lower() for k, v in items if k == b"sec-fetch-mode"]
    navigation = method in _NAVIGATION_METHODS and modes == [b"navigate"]
    if any(site not in _OWN_SITES for site in sites) and not navigation:
        return 403, (
            f"cross-site request refused: Sec-Fetch-Site {sites[0].decode('latin-1')[:30]} "
            "(only this proxy's own pages, or a link followed, may reach the app)"
        )
    return None


def _own_origin(value: bytes, allowed_hosts: frozenset[str], domain: str) -> bytes:
    """``value`` with the proxy's origin (``http://<own host>``) replaced by the app's."""
    text = value.decode("latin-1")
    for host in allowed_hosts:
        own = f"http://{host}"
        if text.lower() == own or text.lower().startswith(own + "/"):
            return f"https://{domain}{text[len(own) :]}".encode("latin-1")
    return value


def _request_headers(
    raw: Iterable[tuple[bytes, bytes]], domain: str, allowed_hosts: frozenset[str] = frozenset()
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Headers to send upstream (``Host`` is the app's domain) and whether the body is chunked.

    ``Origin`` and ``Referer`` of the proxy's own origin become the app's, as
    the app would see them without the proxy (CSRF checks compare them with its host).
    """
    items = [(k.lower(), v) for k, v in raw]
    dropped = _dropped(items) | {b"host"}
    chunked = any(k == b"transfer-encoding" and b"chunked" in v.lower() for k, v in items)
    headers = [(b"host", domain.encode("idna"))]
    headers += [
        (k, _own_origin(v, allowed_hosts, domain) if k in (b"origin", b"referer") else v)
        for k, v in items
        if k not in dropped
    ]
    if chunked:
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"transfer-encoding", b"chunked"))
    return headers, chunked


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    items = [(k.lower(), v) for k, v in raw]
    dropped = _dropped(items)
    return [(k, v) for k, v in items if k not in dropped]


async def _request_body(receive: ASGIReceiveCallable) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise httpcore.WriteError("the client went away")
        chunk = message.get("body", b"")
        if isinstance(chunk, bytes) and chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def bind_loopback(host: str, port: int, *, allow_any: bool = False) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0: the kernel picks one).

    Plain HTTP carries the app's data in the clear, so only a loopback address
    is accepted unless ``allow_any``.
    """
    if not allow_any and not _is_loopback(host):
        raise UsageError(
            f"--listen {host}:{port} is not a loopback address: the proxy serves plain HTTP, "
            "so anyone on that network could read the app's traffic "
            "(use 127.0.0.1, or --unsafe-listen-any)"
        )
    return bind_listener(host, port, backlog=128, option="--listen")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve_proxy(
    proxy: ProxyApp,
    listener: socket.socket,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    error_log: logging.Logger | None = None,
) -> None:
    """Serve ``proxy`` as plain HTTP on ``listener`` until ``shutdown_trigger()`` returns."""
    config = hypercorn_config(
        listener,
        None,
        _SERVER_TIMEOUTS,
        error_log=error_log or logging.getLogger("confide.proxy"),
    )
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    try:
        await serve(proxy, config, shutdown_trigger=shutdown_trigger, mode="asgi")
    finally:
        await proxy.aclose()
