"""The operator's REST API (FastAPI), under ``/api/v1``; OpenAPI at ``/openapi.json``.

Every endpoint but ``/api/v1/health``, ``/api/v1/ca``, ``/api/v1/simulation``, the
transparency log's reads (``GET /api/v1/log...``, :mod:`._logapi`), ``/openapi.json`` and,
with a ``[kubernetes]`` backend, ``GET /api/v1/blobs/<sha256>`` (an encrypted package, or a
wheel of a live app's requirements lock, by its digest, which pods fetch and runtimes
check; ADR 0007, 0030)
needs ``Authorization: Bearer <token>``, checked before anything else (see
:mod:`._auth`). A token sees only its own account's projects and apps; any other app is
answered 404, exactly as one that does not exist.

Status codes: 201 created; 202 a stop or delete was recorded (the supervisor
carries it out); 401 no valid token; 404 no such app (or not yours); 409 a
project that exists, an owner's domain another app holds, or the account
already has ``max_apps_per_account`` apps (both decided in the database: of
concurrent creates, only those that fit win); 413 the package (or the whole
upload) is larger than ``max_package_size``; 415 the upload is not ``multipart/form-data``; 422 the
input is wrong, ``detail[].loc`` naming the field (``["body", "manifest",
"plan"]``); 503 the database is unreachable (health), or too busy to write now
(``Retry-After`` says when to try again; :class:`~._db.DatabaseBusy`).

The operator console (HTML, signed in with a token, ADR 0025) is mounted at
``/console/``: :mod:`._console`.

This module holds the routes: they parse requests and render answers. Under
them, :class:`~._service.AppService` decides and writes; its refusals are
mapped to the status codes above. The API never starts a process: it writes
rows and calls :meth:`AppEvents.notify`; see :mod:`._seams` for the
supervisor's contract.

Example::

    >>> app = create_app(settings, database=Database.open(settings.database_url))  # doctest: +SKIP
    >>> asyncio.run(serve_api(app, settings, shutdown_trigger=stop.wait))  # doctest: +SKIP
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations,
# which use the local ``Auth`` alias, at definition time.
import functools
import logging
import os
import pathlib
import re
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Final

import anyio
from anyio.abc import AsyncResource
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import Framework
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from confide.wire import API_PREFIX, MAX_LOCK_SIZE, HostPort
from confide.wire.api import (
    Account,
    AppList,
    AppRecord,
    Health,
    LaunchInfo,
    ManifestIn,
    Metrics,
    Plan,
    ProjectInfo,
    ProjectRequest,
    SimulationOut,
)

from ._auth import Authenticator
from ._blobs import BlobGate, BlobLimits, BlobShed, BlobStore, LiveWheels, live_package
from ._console import create_console
from ._db import BUSY_RETRY_AFTER, AuthenticatedToken, Database, DatabaseBusy, upgrade_database
from ._logapi import log_router
from ._logs import MAX_TAIL, FileLogSource, LogSource
from ._logs import follow as follow_log
from ._schemas import MAX_MANIFEST_BYTES
from ._seams import (
    AppEvents,
    CertificateAuthority,
    Clock,
    MetricsSource,
    NoEvents,
    NoMetrics,
    SimulationCollateralProvider,
    SimulationRootProvider,
    utc_now,
)
from ._service import AppService, Conflict, InvalidInput, NotFound, TooLarge, app_versions
from ._settings import OperatorSettings
from ._translog import TransparencyLog, load_log_key
from ._waits import MAX_WAIT, AppWaits
from ._wheels import WheelCache

#: Room for the multipart framing and the manifest field on top of the package.
_FORM_OVERHEAD: Final = MAX_MANIFEST_BYTES + MAX_LOCK_SIZE + 64 * 1024
#: The status code of each refusal of the service.
_REFUSALS: Final = {NotFound: 404, Conflict: 409, TooLarge: 413}


async def _refused(request: Request, exc: Exception) -> Response:
    """A refusal of the service, answered as FastAPI answers its own errors."""
    if isinstance(exc, InvalidInput):
        error = {"type": exc.kind, "loc": exc.loc, "msg": exc.message, "input": exc.value}
        return await request_validation_exception_handler(request, RequestValidationError([error]))
    return await http_exception_handler(request, HTTPException(_REFUSALS[type(exc)], str(exc)))


async def _busy(request: Request, exc: Exception) -> Response:
    """503 with ``Retry-After``: the database had no write turn in time (retryable)."""
    return await http_exception_handler(
        request,
        HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            str(exc),
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        ),
    )


async def _shed(request: Request, exc: Exception) -> Response:
    """A blob request over a bound (:class:`BlobGate`): 429 or 503 with ``Retry-After``."""
    if not isinstance(exc, BlobShed):  # pragma: no cover - registered for BlobShed only
        raise exc
    return await http_exception_handler(
        request,
        HTTPException(exc.http_status, str(exc), headers={"Retry-After": str(exc.retry_after)}),
    )


class _BlobResponse(Response):
    """An open blob streamed in ``limits.chunk`` pieces, each sent before the next is read
    (the server's flow control holds at most a piece or two per download), cut after
    ``limits.send_deadline`` seconds; its :class:`BlobGate` slot is given back however it
    ends (done, cut, or the client gone)."""

    def __init__(
        self, file: Any, size: int, gate: BlobGate, source: str, limits: BlobLimits
    ) -> None:
        super().__init__(
            media_type="application/octet-stream", headers={"content-length": str(size)}
        )
        self._file, self._gate, self._source, self._limits = file, gate, source, limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            with anyio.move_on_after(self._limits.send_deadline):
                async with anyio.create_task_group() as group:
                    group.start_soon(self._until_disconnect, receive, group.cancel_scope)
                    await self._stream(send)
                    group.cancel_scope.cancel()
        finally:
            try:
                await _close_quietly(self._file)
            finally:
                self._gate.release(self._source)

    async def _stream(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        while chunk := await self._file.read(self._limits.chunk):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _until_disconnect(receive: Any, scope: anyio.CancelScope) -> None:
        """The client went away: stop reading the file for it."""
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()


async def _close_quietly(resource: AsyncResource) -> None:
    with anyio.CancelScope(shield=True):
        await resource.aclose()


def _manifest_schema() -> dict[str, Any]:
    schema = ManifestIn.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def _multipart_body() -> dict[str, Any]:
    """The OpenAPI request body of ``POST /apps`` (parsed by hand, after authentication)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["package", "manifest"],
                        "properties": {
                            "package": {
                                "type": "string",
                                "format": "binary",
                                "description": "The encrypted package (confide package encrypt).",
                            },
                            "manifest": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": _manifest_schema(),
                                "description": "The app's manifest, JSON.",
                            },
                        },
                    }
                }
            },
        }
    }


class _UploadTooLarge(Exception):
    """The request body grew past what an upload may be."""


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _UploadTooLarge()
        yield chunk


def _too_large(limit: int, *, unread_body: bool = False) -> HTTPException:
    """413; ``unread_body``: the body was not read, so the connection cannot be reused
    (the server closes it, and says so, so that the client does not send its next
    request on a connection that is going away)."""
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=str(TooLarge(limit)),
        headers={"Connection": "close"} if unread_body else None,
    )


async def _read_upload(request: Request, limit: int) -> FormData:
    """Parse the multipart body (only called once the caller is authenticated)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="send multipart/form-data with a package file and a manifest field",
        )
    cap = limit + _FORM_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(limit, unread_body=True)
    parser = MultiPartParser(
        request.headers,
        _limited(request.stream(), cap),
        max_files=1,
        max_fields=2,  # the manifest and, optionally, the requirements lock
        max_part_size=max(MAX_MANIFEST_BYTES, MAX_LOCK_SIZE),
    )
    try:
        return await parser.parse()
    except _UploadTooLarge:
        raise _too_large(limit, unread_body=True) from None
    except MultiPartException as exc:
        raise RequestValidationError(
            [{"type": "multipart", "loc": ("body",), "msg": exc.message, "input": None}]
        ) from None


#: How long the API keeps an idle keep-alive connection (seconds; hypercorn's default is 5).
#: A client polling every 0.2 s (``confide deploy``) never idles that long, but when the
#: event loop lags by more than hypercorn's 5 s (100 apps starting on 2 cores), the idle
#: timer fired before the client's next request, already sent, was read: the connection
#: was closed with it unread and the client got "connection reset by peer".
API_KEEP_ALIVE_TIMEOUT: Final = 75.0

#: A blob's name in ``/api/v1/blobs/<sha256>``: 64 lowercase hex digits.
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


class _Both:
    """An :class:`~._seams.AppEvents` that tells two others (the supervisor, the long-polls)."""

    def __init__(self, first: AppEvents, second: AppEvents) -> None:
        self._first = first
        self._second = second

    def notify(self, app_id: uuid.UUID) -> None:
        self._first.notify(app_id)
        self._second.notify(app_id)


def create_app(
    settings: OperatorSettings,
    *,
    database: Database,
    blobs: BlobStore | None = None,
    events: AppEvents | None = None,
    log_source: LogSource | None = None,
    metrics: MetricsSource | None = None,
    sim_root_provider: SimulationRootProvider | None = None,
    sim_collateral_provider: SimulationCollateralProvider | None = None,
    ca_provider: CertificateAuthority | None = None,
    clock: Clock = utc_now,
    migrate: bool = True,
    log_poll_interval: float = 0.5,
    release_log: TransparencyLog | None = None,
    blob_limits: BlobLimits | None = None,
    waits: AppWaits | None = None,
) -> FastAPI:
    """The operator API as an ASGI app; nothing global, everything passed in.

    ``migrate``: run ``alembic upgrade head`` at startup (the ASGI lifespan).
    Defaults: blobs in ``settings.blobs_dir``, logs read from
    ``settings.logs_dir/<app-id>.log``, no events, no runtime metrics, no CA,
    no simulation root or collateral (both only matter with a simulated TEE), the release
    transparency log in ``database`` signed by the key in ``settings.data_dir/log-key``,
    long-polls of its own (``waits``: ones the supervisor also tells its writes to).
    """
    waits = waits if waits is not None else AppWaits(functools.partial(app_versions, database))
    api = AppService(
        settings=settings,
        database=database,
        blobs=blobs if blobs is not None else BlobStore(settings.blobs_dir),
        # The API's own writes wake its long-polls at once too.
        events=_Both(events if events is not None else NoEvents(), waits),
        metrics=metrics if metrics is not None else NoMetrics(),
        sim_root_provider=sim_root_provider,
        sim_collateral_provider=sim_collateral_provider,
        ca_provider=ca_provider,
        clock=clock,
    )
    logs = log_source if log_source is not None else FileLogSource(settings.logs_dir)
    authenticate = Authenticator(database, clock)
    Auth = Annotated[AuthenticatedToken, Depends(authenticate)]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await run_in_threadpool(upgrade_database, database)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(waits.run)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title="Confide operator API",
        version="1",
        description=__doc__ or "",
        docs_url=None,  # no Swagger UI: it would load scripts from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    for refusal in (*_REFUSALS, InvalidInput):
        app.add_exception_handler(refusal, _refused)
    app.add_exception_handler(DatabaseBusy, _busy)
    app.add_exception_handler(BlobShed, _shed)
    router = APIRouter(prefix=API_PREFIX)

    @router.get("/health", tags=["operator"])
    def health() -> Response:
        """No authentication. 200 when the database answers, else 503."""
        ok = api.health()
        body = Health(status="ok" if ok else "database unreachable")
        return Response(
            content=body.model_dump_json(),
            media_type="application/json",
            status_code=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @router.get(
        "/ca",
        tags=["operator"],
        response_class=Response,
        responses={200: {"content": {"application/x-pem-file": {}}}},
    )
    def ca() -> Response:
        """No authentication. The operator CA's certificate (PEM), which signs the router's."""
        if api.ca_provider is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this operator has no CA")
        return Response(api.ca_provider.certificate_pem(), media_type="application/x-pem-file")

    @router.get("/simulation", tags=["operator"], response_model_exclude_none=True)
    def simulation() -> SimulationOut:
        """No authentication: app users verify without signing in.

        ``{"simulated": false}`` for a real TEE. For a simulated one, the
        simulation root CA (PEM) and collateral (dcap-qvl ``QuoteCollateralV3``
        JSON) issued within the last hour: verify the app's quotes with that root as the trust
        anchor and simulation explicitly allowed. They prove nothing about hardware.
        """
        return api.simulation()

    if settings.kubernetes is not None:
        limits = blob_limits if blob_limits is not None else BlobLimits()
        gate = BlobGate(limits)

        wheels = LiveWheels(WheelCache(settings.wheels_dir))

        def live(sha256: str) -> pathlib.Path | None:
            """The package of a live app, else a wheel of a live app's lock (ADR 0030)."""
            with database.session() as session:
                if live_package(session, sha256):
                    return api.blobs.path(bytes.fromhex(sha256))
                return wheels.path(session, bytes.fromhex(sha256))

        @router.get(
            "/blobs/{sha256}",
            tags=["operator"],
            response_class=Response,
            responses={
                200: {"content": {"application/octet-stream": {}}},
                404: {},
                429: {"description": "too many requests from this source (Retry-After)"},
                503: {"description": "too many downloads under way (Retry-After)"},
            },
        )
        async def blob(sha256: str, request: Request) -> Response:
            """No authentication: an encrypted package (ADR 0006) or a locked wheel
            (ADR 0030) by its SHA-256, for pods.

            Only the package of an app that may launch now (spawning, initializing or
            running, not being deleted), or a wheel its measured requirements lock names
            (from the wheel cache, at most its size bound); any other digest is 404, as one
            never stored. Bounded per source address and in all (429 or 503 with
            ``Retry-After``); a download slower than the deadline is cut. The fetcher checks
            the package's digest, and the runtime each wheel's against its measured lock;
            the package decrypts only in its enclave.
            """
            if not _SHA256_HEX.fullmatch(sha256):
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such blob")
            source = request.client.host if request.client is not None else "-"
            gate.admit(source, time.monotonic())  # before any database or disk work
            try:
                found = await run_in_threadpool(live, sha256)
                if found is None:
                    raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such blob")
                try:
                    file = await anyio.open_file(found, "rb")
                except FileNotFoundError:
                    raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such blob") from None
                size = os.fstat(file.wrapped.fileno()).st_size
            except BaseException:
                gate.release(source)
                raise
            return _BlobResponse(file, size, gate, source, limits)

    @router.get("/me", tags=["account"])
    def me(auth: Auth) -> Account:
        return api.me(auth)

    @router.get("/plans", tags=["operator"])
    def plans(auth: Auth) -> list[Plan]:
        return api.plans()

    @router.get("/launch", tags=["operator"])
    def launch(auth: Auth) -> LaunchInfo:
        """The TEE apps run in and, under Gramine, each plan's enclave size and thread count:
        inputs of an owner's MRENCLAVE prediction, never trusted (a wrong one fails closed)."""
        return api.launch_info()

    @router.get("/projects", tags=["projects"])
    def list_projects(auth: Auth) -> list[ProjectInfo]:
        return api.list_projects(auth)

    @router.post("/projects", tags=["projects"], status_code=status.HTTP_201_CREATED)
    def create_project(auth: Auth, body: ProjectRequest) -> ProjectInfo:
        return api.create_project(auth, body)

    @router.post(
        "/apps",
        tags=["apps"],
        status_code=status.HTTP_201_CREATED,
        openapi_extra=_multipart_body(),
        responses={
            409: {"description": "the account has as many apps as allowed, or the domain is taken"},
            413: {"description": "the package is too large"},
            415: {"description": "not multipart/form-data"},
        },
    )
    async def create_app_(request: Request, auth: Auth) -> AppRecord:
        """Deploy an app: multipart ``package`` (the encrypted package) and ``manifest`` (JSON),
        and optionally ``requirements``: the app's requirements lock (ADR 0024).

        The body is read only now, after authentication. The schema of the
        manifest is ``ManifestIn``.
        """
        form = await _read_upload(request, settings.max_package_size)
        try:
            manifest = form.get("manifest")
            package = form.get("package")
            if not isinstance(manifest, str) or not isinstance(package, UploadFile):
                raise RequestValidationError(
                    [
                        {"type": "missing", "loc": ("body", name), "msg": msg, "input": None}
                        for name, ok, msg in (
                            ("manifest", isinstance(manifest, str), "a JSON manifest is required"),
                            ("package", isinstance(package, UploadFile), "a package is required"),
                        )
                        if not ok
                    ]
                )
            requirements = form.get("requirements")
            if requirements is not None and not isinstance(requirements, str):
                raise RequestValidationError(
                    [
                        {
                            "type": "string_type",
                            "loc": ("body", "requirements"),
                            "msg": "the requirements lock is a text field",
                            "input": None,
                        }
                    ]
                )
            return await run_in_threadpool(api.create, auth, manifest, package.file, requirements)
        finally:
            await form.close()

    @router.get("/apps", tags=["apps"])
    def list_apps(
        auth: Auth,
        project: Annotated[str | None, Query(max_length=63, description="Only this project.")] = (
            None
        ),
    ) -> AppList:
        """The account's apps that are not deleted, oldest first."""
        return api.list_apps(auth, project)

    @router.get("/apps/{app_id}", tags=["apps"], responses={404: {"description": "no such app"}})
    async def get_app(
        auth: Auth,
        app_id: uuid.UUID,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_WAIT,
                description="With `seen`: hold the answer up to this many seconds until the "
                "app's record changes.",
            ),
        ] = 0.0,
        seen: Annotated[
            datetime | None,
            Query(description="The `updated_at` of the record the caller has."),
        ] = None,
    ) -> AppRecord:
        """The app; with ``wait`` and ``seen``, answered once its record is no longer the one
        seen (or at the end of the wait, or at once when too many requests wait)."""
        record = await run_in_threadpool(api.get_app, auth, app_id)
        if wait > 0 and seen is not None and record.updated_at == seen:
            if await waits.wait(auth.account_id, app_id, seen, wait):
                record = await run_in_threadpool(api.get_app, auth, app_id)
        return record

    @router.post("/apps/{app_id}/stop", tags=["apps"], status_code=status.HTTP_202_ACCEPTED)
    def stop_app(auth: Auth, app_id: uuid.UUID) -> AppRecord:
        """Ask for the app to be stopped (``desired_state: stop``)."""
        return api.stop(auth, app_id)

    @router.delete("/apps/{app_id}", tags=["apps"], status_code=status.HTTP_202_ACCEPTED)
    def delete_app(auth: Auth, app_id: uuid.UUID) -> AppRecord:
        """Stop the app and delete it: at once if it is not active, else once it stopped."""
        return api.delete(auth, app_id)

    @router.get(
        "/apps/{app_id}/logs",
        tags=["apps"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def app_logs(
        auth: Auth,
        app_id: uuid.UUID,
        tail: Annotated[
            int | None, Query(ge=0, le=MAX_TAIL, description="Only the last N lines.")
        ] = None,
        follow: Annotated[
            bool, Query(description="Keep streaming until the app stops or you disconnect.")
        ] = False,
    ) -> Response:
        """The runtime's output (stdout and stderr), at most the last 4 MiB."""
        await run_in_threadpool(api.get_app, auth, app_id)  # 404 unless it is the caller's
        media = "text/plain; charset=utf-8"
        if follow:
            active = functools.partial(api.app_active, auth, app_id)
            lines = follow_log(logs, app_id, tail, active=active, poll_interval=log_poll_interval)
            return StreamingResponse(lines, media_type=media)
        data, _ = await run_in_threadpool(logs.read_end, app_id, tail)
        return Response(data, media_type=media)

    @router.get("/apps/{app_id}/metrics", tags=["apps"])
    def app_metrics(auth: Auth, app_id: uuid.UUID) -> Metrics:
        return api.app_metrics(auth, app_id)

    if release_log is None:
        release_log = TransparencyLog(
            database, load_log_key(settings.data_dir, f"{settings.base_domain}/confide-log"), clock
        )
    router.include_router(log_router(release_log, authenticate))
    app.include_router(router)
    # The operator console (ADR 0025): HTML pages over the same service, signed in with a token.
    console = create_console(
        api,
        database=database,
        logs=logs,
        clock=clock,
        poll_interval=log_poll_interval,
        https=settings.console_https,
    )
    app.mount("/console", console)
    return app


async def serve_api(
    app: FastAPI,
    settings: OperatorSettings,
    shutdown_trigger: Callable[[], Awaitable[object]],
    *,
    sock: socket.socket | None = None,
) -> None:
    """Serve the API with hypercorn on ``settings.api_host:api_port`` until the trigger returns.

    ``sock``: an already bound and listening socket to serve on instead (tests
    bind port 0 and read the port back; systemd socket activation). It stays
    the caller's to close.
    """
    config = HypercornConfig()
    if sock is not None:
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
    else:
        config.bind = [str(HostPort(settings.api_host, settings.api_port))]
    config.accesslog = logging.getLogger("confide.operator.access")
    config.errorlog = logging.getLogger("confide.operator.server")
    config.include_server_header = False
    config.keep_alive_timeout = API_KEEP_ALIVE_TIMEOUT
    # FastAPI is an ASGI app; hypercorn's and starlette's type stubs just spell it differently.
    framework: Framework = app  # type: ignore[assignment]
    await hypercorn_serve(framework, config, shutdown_trigger=shutdown_trigger, mode="asgi")
