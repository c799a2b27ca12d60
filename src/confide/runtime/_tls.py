"""Transport: the listening socket, the server TLS context and the hypercorn configuration.

One TLS context factory, :func:`server_ssl_context`, serves both phases (the
configuration endpoint and the app). Python's :mod:`ssl` loads keys only from
files, so the PEM is handed to OpenSSL through anonymous in-memory files
(``memfd_create``, read back through ``/proc/self/fd``): the private key never
has a path in any file system. Where ``memfd_create`` is unavailable, the
fallback is a 0600 file in the runtime's private RAM folder, unlinked as soon
as OpenSSL has read it.

The listening socket is bound once; each server gets a duplicate of it, so the
app takes over the configuration endpoint's port (even a port 0 chosen by the
kernel) with no window where connections are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hypercorn.config import Config, Sockets

from confide.errors import UsageError

#: HTTP/2 first, then HTTP/1.1 (RFC 7301 ALPN).
ALPN_PROTOCOLS: Final = ("h2", "http/1.1")
#: AEAD suites with forward secrecy only, as HTTP/2 requires for TLS 1.2 (RFC 7540 §9.2.2).
_TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: Pending connections a listener queues (the kernel caps it at ``somaxconn``).
LISTEN_BACKLOG: Final = 128


@dataclass(frozen=True, slots=True)
class ServerTimeouts:
    """How long a client may hold a connection; set explicitly for every server.

    No client can block another (each connection is a task), and these bound
    what an idle or slow client costs.
    """

    #: TLS handshake must complete within this (seconds).
    handshake: float
    #: Longest wait for the next bytes from a client that has an open request.
    read: float
    #: An idle connection (no request in progress) is closed after this.
    keep_alive: float
    #: On shutdown, open requests get this long to finish.
    graceful: float


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _in_memory_file(data: bytes, scratch: Path | None) -> Iterator[str]:
    """A path OpenSSL can open that reads back ``data``, and is gone after the block."""
    try:
        fd = os.memfd_create("confide-tls", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    if scratch is None:
        raise UsageError("cannot load TLS keys: memfd_create is unavailable and no RAM folder")
    # Fallback: a private file in the runtime's RAM folder, removed once read.
    fd, name = tempfile.mkstemp(prefix=".tls-", dir=scratch)
    try:
        os.fchmod(fd, 0o600)
        _write_all(fd, data)
        os.close(fd)
        fd = -1
        yield name
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(name)


def server_ssl_context(
    certificate_chain_pem: bytes, private_key_pem: bytes, *, scratch: Path | None = None
) -> ssl.SSLContext:
    """The TLS context of every server of the runtime (configuration endpoint and app).

    - TLS 1.2 at least: RFC 8996 deprecates TLS 1.0 and 1.1, and RFC 7540 §9.2
      requires TLS 1.2 or later for HTTP/2.
    - ``verify_mode = CERT_NONE``: clients are not authenticated by TLS. The
      client authenticates the server (RA-TLS quote or the owner's certificate);
      the configuration request is authorised by its app id, and apps do their
      own authentication.
    - No TLS compression (RFC 7540 §9.2.1; CRIME).
    - ALPN ``h2`` then ``http/1.1``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_ciphers(_TLS12_CIPHERS)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    try:
        with (
            _in_memory_file(certificate_chain_pem, scratch) as certfile,
            _in_memory_file(private_key_pem, scratch) as keyfile,
        ):
            context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    except ssl.SSLError as exc:
        # OpenSSL's reason names the failed check (e.g. KEY_VALUES_MISMATCH), never key bytes.
        raise UsageError(f"cannot load the TLS certificate and key: {exc.reason or exc}") from None
    return context


def bind_listener(
    host: str,
    port: int,
    *,
    backlog: int = LISTEN_BACKLOG,
    role: str | None = None,
    option: str | None = None,
    hint: str | None = None,
) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0: the kernel picks one), non-blocking.

    The one way Confide binds a TCP listener (runtime, router, operator API, proxy,
    local test server). ``role`` names the listener in errors (``the router cannot
    listen on ...``) and ``option`` the option that gave the host; without either,
    they name the runtime's ``--host``.
    """
    who = f"the {role} " if role else ""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        what = option or (f"the {role} host" if role else "--host")
        raise UsageError(f"cannot resolve {what} {host!r}: {exc.strerror}", hint=hint) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted ones
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"{who}cannot listen on {host}:{port}: {exc.strerror or exc}", hint=hint
        ) from None
    return sock


class _ServedSocket(socket.socket):
    """A duplicate of the listening socket that reports when its server closes it."""

    def __init__(self, listener: socket.socket, on_close: Callable[[], None]) -> None:
        super().__init__(
            listener.family, listener.type, listener.proto, fileno=os.dup(listener.fileno())
        )
        self.setblocking(False)
        self._on_close: Callable[[], None] | None = on_close

    def close(self) -> None:
        super().close()
        callback, self._on_close = self._on_close, None
        if callback is not None:
            callback()


class ServerConfig(Config):
    """Hypercorn's configuration, serving a socket and a TLS context we already hold.

    :attr:`stopped_accepting` is set as soon as the server closed its listening
    socket (the first step of its shutdown), before its open connections end:
    the next server can take over the port from then on.
    """

    def __init__(self, listener: socket.socket, context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._listener = listener
        self._context = context
        self.stopped_accepting = asyncio.Event()

    @property
    def ssl_enabled(self) -> bool:
        return self._context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._context

    def create_sockets(self) -> Sockets:
        sock = _ServedSocket(self._listener, self.stopped_accepting.set)
        if self._context is not None:
            return Sockets(secure_sockets=[sock], insecure_sockets=[], quic_sockets=[])
        return Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])


def hypercorn_config(
    listener: socket.socket,
    context: ssl.SSLContext | None,
    timeouts: ServerTimeouts,
    *,
    error_log: logging.Logger,
    max_wsgi_body: int | None = None,
) -> ServerConfig:
    """A hypercorn configuration with these timeouts, serving ``listener``.

    The runtime's HTTP/2 connections use its settings (:mod:`._server`; not its
    sockets); ``confide proxy`` serves with it.
    """
    config = ServerConfig(listener, context)
    config.ssl_handshake_timeout = timeouts.handshake
    config.read_timeout = timeouts.read  # type: ignore[assignment]  # typed int; a wait_for delay
    config.keep_alive_timeout = timeouts.keep_alive
    config.graceful_timeout = timeouts.graceful
    config.accesslog = None
    config.errorlog = error_log
    config.include_server_header = False
    if max_wsgi_body is not None:
        config.wsgi_max_body_size = max_wsgi_body
    return config
