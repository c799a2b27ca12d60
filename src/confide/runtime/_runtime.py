"""The enclave runtime: attest, wait for the owner's configuration, then serve the app.

1. Unseal the state (or create it): the enclave's X25519 key pair and its TLS
   P-256 key survive restarts; another measurement cannot unseal them.
2. Quote ``ratls_report_data(TLS public key, X25519 public key)`` and build
   the RA-TLS certificate around it.
3. If the state is not configured yet, serve the configuration endpoint over
   RA-TLS, whatever the app's TLS mode: the owner verifies the enclave before
   sending keys. Stop with an error at ``--timeout``, or when the configuration
   certificate expires.
4. Serve the app on the same socket (:func:`~._server.serve_http`: uvicorn's
   h11 for HTTP/1.1, hypercorn for HTTP/2): with the RA-TLS certificate, the
   owner's certificate, or plain HTTP.
5. In RA-TLS mode, stop at the measured ``--ratls`` expiry, in either phase:
   :meth:`EnclaveRuntime.run` then returns :attr:`RuntimeEnd.EXPIRED` (the
   command exits with :data:`EXIT_EXPIRED`), so no client is served by an
   enclave whose certificate, and launch, have run out (ADR 0010).

The RA-TLS certificate is valid from a minute before launch (clock skew) until
``--ratls`` in RA-TLS mode; in the other modes it only serves the
configuration phase and is valid for :data:`CONFIGURATION_CERT_VALIDITY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import logging
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from confide.attestation import create_ratls_certificate, ratls_report_data
from confide.crypto import X25519KeyPair, private_key_pem
from confide.errors import TeeError, UsageError
from confide.tee import Tee, TeeKind
from confide.wire import LAUNCH_MANIFEST_OID, HostPort, RequirementsLock, TlsMode

from ._admission import ConnectionLimits
from ._challenge import ChallengeResponder
from ._configure import AppLaunch, Configurator
from ._endpoint import ConfigurationEndpoint
from ._handoff import HandoffListener
from ._requirements import install_locked
from ._server import serve_http
from ._settings import RuntimeSettings
from ._state import SealedState, StateStore
from ._tls import ServerTimeouts, bind_listener, server_ssl_context
from ._workspace import Workspace, load_app, remove_orphans

#: Validity of the RA-TLS certificate of the configuration phase, outside RA-TLS mode.
CONFIGURATION_CERT_VALIDITY: Final = timedelta(hours=24)
#: The RA-TLS certificate is valid from this long before launch (clients' clock skew).
CLOCK_SKEW: Final = timedelta(minutes=1)
#: Subject common name of the RA-TLS certificate without ``--subject`` or ``--san``.
DEFAULT_SUBJECT: Final = "Confide enclave"
#: The configuration endpoint: short, since it only takes one small request.
CONFIGURATION_TIMEOUTS: Final = ServerTimeouts(
    handshake=10.0, read=30, keep_alive=5.0, graceful=2.0
)
#: Seconds a stopping server may take beyond its graceful timeout before it is cancelled.
_SHUTDOWN_MARGIN: Final = 1.0
#: The app: more room for slow clients and long requests.
APP_TIMEOUTS: Final = ServerTimeouts(handshake=10.0, read=120, keep_alive=30.0, graceful=10.0)
#: Exit code of ``confide runtime`` stopped by its measured RA-TLS expiry (the operator's
#: supervisor shows the app as expired, and does not restart it).
EXIT_EXPIRED: Final = 3

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RuntimeEnd(enum.Enum):
    """Why :meth:`EnclaveRuntime.run` returned."""

    #: SIGTERM or SIGINT (``stop`` was set).
    STOPPED = "stopped"
    #: The measured RA-TLS expiry passed: the runtime stopped serving.
    EXPIRED = "expired"


def new_state() -> SealedState:
    """Fresh keys for a first launch: a P-256 TLS key and an X25519 key pair."""
    return SealedState(
        tls_key_pem=private_key_pem(ec.generate_private_key(ec.SECP256R1())),
        enclave_private_key=X25519KeyPair.generate().private_key,
    )


@dataclass(frozen=True, slots=True)
class EnclaveIdentity:
    """The enclave's keys and the RA-TLS certificate that binds them to a fresh quote."""

    tls_key: ec.EllipticCurvePrivateKey = field(repr=False)
    enclave_key: X25519KeyPair = field(repr=False)
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def tls_key_pem(self) -> bytes:
        return private_key_pem(self.tls_key)

    @classmethod
    def attest(
        cls, tee: Tee, state: SealedState, settings: RuntimeSettings, *, now: datetime
    ) -> EnclaveIdentity:
        key = serialization.load_pem_private_key(state.tls_key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TeeError("the sealed TLS key is not an EC key")
        enclave_key = X25519KeyPair.from_private_key(state.enclave_private_key)
        quote = tee.get_quote(ratls_report_data(key.public_key(), enclave_key.public_key))
        not_after = settings.ratls_expiry or now + CONFIGURATION_CERT_VALIDITY
        subject = settings.subject or (settings.san[0] if settings.san else DEFAULT_SUBJECT)
        certificate = create_ratls_certificate(
            key,
            quote,
            subject=subject,
            sans=settings.san,
            not_before=now - CLOCK_SKEW,
            not_after=not_after,
            # The manifest measured into this enclave: a client without the fingerprint
            # learns from it, checked against MRENCLAVE, which names it was launched for.
            extensions=[
                x509.UnrecognizedExtension(LAUNCH_MANIFEST_OID, settings.manifest.to_json())
            ],
        )
        return cls(tls_key=key, enclave_key=enclave_key, certificate=certificate)


class EnclaveRuntime:
    """One launch of the runtime. :meth:`run` returns when ``stop`` is set, or at the
    measured RA-TLS expiry (read on ``clock``)."""

    def __init__(
        self,
        settings: RuntimeSettings,
        tee: Tee,
        *,
        now: datetime,
        logger: logging.Logger,
        clock: Clock = _utc_now,
    ) -> None:
        if now.tzinfo is None:
            raise UsageError("now must be a timezone-aware datetime")
        self._settings = settings
        self._tee = tee
        self._now = now
        self._clock = clock
        self._log = logger
        self._server_log = logger.getChild("server")
        #: Connections handed off by the operator's router (``--handoff``), if any.
        self._handoff: HandoffListener | None = None
        self._limits = ConnectionLimits(relays=settings.relay_sources)

    def _until_expiry(self) -> float | None:
        """Seconds left before the measured RA-TLS expiry (``None``: no expiry)."""
        expiry = self._settings.ratls_expiry
        if expiry is None:
            return None
        return max((expiry - self._clock()).total_seconds(), 0.0)

    def _expired(self) -> bool:
        left = self._until_expiry()
        return left is not None and left <= 0

    async def run(self, stop: asyncio.Event) -> RuntimeEnd:
        settings = self._settings
        store: StateStore | None = None
        if self._tee.kind is TeeKind.TDX:
            # A TD has no sealing key (ADR 0020): nothing is kept; after a restart the
            # runtime has new keys and waits for its owner to configure it again.
            state = new_state()
        else:
            store = StateStore(settings.state_dir, sealing_key=self._tee.sealing_key())
            loaded = store.load()
            if loaded is None:
                loaded = new_state()
                store.save(loaded)
            state = loaded
        identity = EnclaveIdentity.attest(self._tee, state, settings, now=self._now)
        self._log.info(
            "measurement %s (%s TEE); enclave X25519 public key %s",
            self._tee.measurement.hex(),
            self._tee.kind.value,
            identity.enclave_key.public_key.hex(),
        )
        async with contextlib.AsyncExitStack() as stack:
            listener = bind_listener(settings.host, settings.port)
            stack.callback(listener.close)
            if settings.handoff is not None:
                handoff = HandoffListener.bind(settings.handoff, logger=self._server_log)
                stack.callback(handoff.close)
                handoff.start(asyncio.get_running_loop())
                self._handoff = handoff
            orphans = remove_orphans()
            if orphans:
                self._log.info(
                    "removed %d code folder(s) left by runtimes that did not stop cleanly",
                    len(orphans),
                )
            workspace = Workspace.create(settings.app_id)
            stack.callback(workspace.remove)
            if settings.lock is not None and settings.wheels is not None:
                self._install_requirements(settings.lock, settings.wheels, workspace)
            leftovers: list[asyncio.Task[None]] = []
            stack.push_async_callback(_finish_all, leftovers)
            configurator = Configurator(settings, state=state, store=store, workspace=workspace)
            launch: AppLaunch | None
            if state.configured:
                self._log.info("configured before: resuming the app from the sealed state")
                launch = configurator.resume()
            else:
                launch = await self._configuration_phase(
                    listener, identity, configurator, workspace, stop, leftovers
                )
            if launch is not None and not stop.is_set():
                await self._app_phase(listener, identity, launch, workspace, stop)
        if not stop.is_set() and self._expired():
            return RuntimeEnd.EXPIRED
        return RuntimeEnd.STOPPED

    def _install_requirements(
        self, lock: RequirementsLock, wheels: Path, workspace: Workspace
    ) -> None:
        """Install the measured lock's wheels, each checked by its hash (ADR 0024), into the
        code folder's ``site``, put after the app's folder on ``sys.path``."""
        started = time.monotonic()
        install_locked(lock, wheels, workspace.site_dir, workspace.root / "wheels")
        sys.path.insert(0, str(workspace.site_dir))
        importlib.invalidate_caches()
        self._log.info(
            "installed %d locked wheel(s) (lock sha256 %s) in %.2f s",
            len(lock.requirements),
            lock.digest().hex(),
            time.monotonic() - started,
        )

    def _responder(self, identity: EnclaveIdentity) -> ChallengeResponder:
        """Answers fresh-attestation challenges on connections served with the RA-TLS
        certificate of ``identity``."""
        der = identity.certificate.public_bytes(serialization.Encoding.DER)
        return ChallengeResponder(self._tee, der)

    def _where(self, listener_port: int, tls: bool) -> str:
        return f"{'https' if tls else 'http'}://{HostPort(self._settings.host, listener_port)}"

    async def _configuration_phase(
        self,
        listener: socket.socket,
        identity: EnclaveIdentity,
        configurator: Configurator,
        workspace: Workspace,
        stop: asyncio.Event,
        leftovers: list[asyncio.Task[None]],
    ) -> AppLaunch | None:
        """Serve the configuration endpoint until configured (or stopped, or out of time).

        Returns as soon as the endpoint stopped accepting connections; its
        open connections are left to finish in the background (``leftovers``),
        so a slow client cannot delay the app.
        """
        loop = asyncio.get_running_loop()
        configured: asyncio.Future[AppLaunch] = loop.create_future()

        def on_configured(launch: AppLaunch) -> None:
            if not configured.done():
                configured.set_result(launch)

        endpoint = ConfigurationEndpoint(configurator, on_configured, logger=self._log)
        context = server_ssl_context(
            identity.certificate_pem, identity.tls_key_pem, scratch=workspace.root
        )
        stopped_accepting = asyncio.Event()
        wait = (identity.certificate.not_valid_after_utc - self._clock()).total_seconds()
        if self._settings.timeout is not None:
            wait = min(wait, self._settings.timeout)

        async def shutdown_trigger() -> None:
            stopped = asyncio.ensure_future(stop.wait())
            waiters: set[asyncio.Future[Any]] = {configured, stopped}
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()

        self._log.info(
            "waiting for the configuration on %s (RA-TLS)",
            self._where(listener.getsockname()[1], tls=True),
        )
        server = asyncio.create_task(
            serve_http(
                endpoint,
                listener=listener,
                context=context,
                timeouts=CONFIGURATION_TIMEOUTS,
                error_log=self._server_log,
                shutdown_trigger=shutdown_trigger,
                stopped_accepting=stopped_accepting,
                handoff=self._handoff,
                limits=self._limits,
                challenge=self._responder(identity),
            )
        )
        leftovers.append(server)
        closed = asyncio.ensure_future(stopped_accepting.wait())
        try:
            await asyncio.wait({server, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if server.done():
            leftovers.remove(server)
            await server  # it ended on its own: raise what it raised
        if stop.is_set():
            return None
        if configured.done():
            return configured.result()
        if self._expired():
            return None  # run() says why
        raise UsageError(
            f"not configured within {wait:g} seconds (--timeout, or the expiry of the "
            "configuration certificate); stopping",
            hint="send the configuration sooner, or raise --timeout",
        )

    def _app_context(
        self, identity: EnclaveIdentity, launch: AppLaunch, workspace: Workspace
    ) -> ssl.SSLContext | None:
        settings = self._settings
        if settings.tls == TlsMode.RATLS:
            return server_ssl_context(
                identity.certificate_pem, identity.tls_key_pem, scratch=workspace.root
            )
        if settings.tls == TlsMode.OWNER:
            if settings.certificate is None or launch.owner_key_pem is None:
                raise UsageError("certificate mode needs the owner's certificate and key")
            return server_ssl_context(
                settings.certificate.chain_pem(), launch.owner_key_pem, scratch=workspace.root
            )
        return None

    async def _app_phase(
        self,
        listener: socket.socket,
        identity: EnclaveIdentity,
        launch: AppLaunch,
        workspace: Workspace,
        stop: asyncio.Event,
    ) -> None:
        settings = self._settings
        context = self._app_context(identity, launch, workspace)
        # Apps written for Cosmian Enclave read their secrets' paths from the environment.
        os.environ.update(launch.env)
        tempfile.tempdir = None  # taken again from $TMPDIR: the app's temporary files in RAM
        os.chdir(workspace.app_dir)
        app = load_app(workspace.app_dir, settings.application)
        self._log.info(
            "serving %s on %s (%s)",
            settings.application,
            self._where(listener.getsockname()[1], tls=context is not None),
            settings.tls.launch,
        )
        # At the measured expiry the server stops as on SIGTERM: no new connection, open
        # ones get the graceful timeout. Its certificate ends there too (RA-TLS mode).
        ending = asyncio.Event()
        left = self._until_expiry()
        timer = None
        if left is not None:
            timer = asyncio.get_running_loop().call_later(left, ending.set)
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: ending.set())
        server = asyncio.create_task(
            serve_http(
                app,
                listener=listener,
                context=context,
                timeouts=APP_TIMEOUTS,
                error_log=self._server_log,
                shutdown_trigger=ending.wait,
                handoff=self._handoff,
                limits=self._limits,
                # Only the RA-TLS certificate is bound by the quotes (ADR 0021).
                challenge=self._responder(identity) if settings.tls == TlsMode.RATLS else None,
                # Plain HTTP behind the operator's TLS: no certificate names the app a
                # connection was meant for, so Host must (a reused address; 421 otherwise).
                # No SAN: nothing is served (fail closed), not every Host.
                own_names=settings.san if settings.tls == TlsMode.OPERATOR else None,
            )
        )
        ended = asyncio.ensure_future(ending.wait())
        try:
            await asyncio.wait({server, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            stopping.cancel()
            if timer is not None:
                timer.cancel()
        await _finish(server, APP_TIMEOUTS.graceful + _SHUTDOWN_MARGIN)


async def _finish_all(servers: list[asyncio.Task[None]]) -> None:
    for server in servers:
        await _finish(server, CONFIGURATION_TIMEOUTS.graceful + _SHUTDOWN_MARGIN)


async def _finish(server: asyncio.Task[None], limit: float) -> None:
    """Give a server told to stop ``limit`` seconds to close its connections, then cancel it.

    :func:`serve_http` aborts the connections still open after its graceful
    timeout; this bounds the rest (an app's lifespan shutdown, a connection
    that does not end): a client that never answers must not hold the runtime.
    """
    done, _ = await asyncio.wait({server}, timeout=limit)
    if done:
        await server
        return
    server.cancel()
    # Hypercorn 0.18 (HTTP/2 connections) can raise InvalidStateError when cancelled while
    # a request is still open (pgjones/hypercorn#184); the server has stopped either way,
    # and asyncio.run cancels the tasks it leaves behind.
    with contextlib.suppress(asyncio.CancelledError, asyncio.InvalidStateError):
        await server


def _quiet_cancellations(
    logger: logging.Logger,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler that only notes connections cancelled at shutdown.

    Python 3.11's asyncio streams and hypercorn report a connection task that
    was cancelled (a client still connected when a server stops) as an error
    with a traceback; it is the expected end of such a connection. Everything
    else goes to the default handler.
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), asyncio.CancelledError):
            logger.debug("a connection was cancelled at shutdown")
            return
        loop.default_exception_handler(context)

    return handle


def run_runtime(
    settings: RuntimeSettings,
    tee: Tee,
    *,
    now: datetime,
    logger: logging.Logger,
    clock: Clock = _utc_now,
) -> RuntimeEnd:
    """Run until SIGTERM or SIGINT, or the measured RA-TLS expiry (then say which), or raise
    an :class:`~confide.errors.Error`."""

    async def main() -> RuntimeEnd:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(sig: signal.Signals) -> None:
            if not stop.is_set():
                logger.info("stopping on %s", sig.name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        loop.set_exception_handler(_quiet_cancellations(logger))
        runtime = EnclaveRuntime(settings, tee, now=now, logger=logger, clock=clock)
        return await runtime.run(stop)

    return asyncio.run(main())
