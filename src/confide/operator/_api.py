"""The operator's REST API (FastAPI), under ``/api/v1``; OpenAPI at ``/openapi.json``.

Every endpoint but ``/api/v1/health``, ``/api/v1/ca``, ``/api/v1/simulation``
and ``/openapi.json`` needs ``Authorization: Bearer <token>``, checked before
anything else (see :mod:`._auth`). A token sees only its own account's projects and apps; any
other app is answered 404, exactly as one that does not exist.

Status codes: 201 created; 202 a stop or delete was recorded (the supervisor
carries it out); 401 no valid token; 404 no such app (or not yours); 409 a
project that exists, an owner's domain another app holds, or the account
already has ``max_apps_per_account`` apps (both decided in the database: of
concurrent creates, only those that fit win); 413 the package (or the whole
upload) is larger than ``max_package_size``; 415 the upload is not ``multipart/form-data``; 422 the
input is wrong, ``detail[].loc`` naming the field (``["body", "manifest",
"plan"]``); 503 the database is unreachable (health).

The API never starts a process: it writes rows and calls
:meth:`AppEvents.notify`; see :mod:`._seams` for the supervisor's contract.

Example::

    >>> app = create_app(settings, database=Database.open(settings.database_url))  # doctest: +SKIP
    >>> asyncio.run(serve_api(app, settings, shutdown_trigger=stop.wait))  # doctest: +SKIP
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations,
# which use the local ``Auth`` alias, at definition time.
import asyncio
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import Framework
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from confide.crypto import HEADER_SIZE, CryptoError, check_package_layout
from confide.wire import API_PREFIX, AppStatus, DesiredState, HostPort, LaunchManifest, TlsMode
from confide.wire.api import (
    Account,
    AppList,
    AppRecord,
    Health,
    ManifestIn,
    Metrics,
    PackageDigest,
    Plan,
    ProjectInfo,
    ProjectRequest,
    SimulationOut,
)

from ._auth import Authenticator
from ._blobs import BlobStore, PackageTooLarge
from ._db import (
    AuthenticatedToken,
    Database,
    lock_account,
    record_status,
    status_history,
    upgrade_database,
)
from ._models import DOMAIN_RELEASED, App, Project
from ._schemas import MAX_MANIFEST_BYTES, build_launch_manifest, parse_manifest
from ._seams import (
    AppEvents,
    CertificateAuthority,
    Clock,
    FileLogSource,
    LogSource,
    MetricsSource,
    NoEvents,
    NoMetrics,
    SimulationCollateralProvider,
    SimulationRootProvider,
    utc_now,
)
from ._settings import OperatorSettings, TeeBackend

__all__ = [
    "MAX_LOG_BYTES",
    "MAX_TAIL",
    "SIMULATION_COLLATERAL_REFRESH",
    "create_app",
    "serve_api",
]

#: Most lines ``?tail=`` returns.
MAX_TAIL: Final = 100_000
#: Most bytes of log returned at once (the end of the file).
MAX_LOG_BYTES: Final = 4 * 1024 * 1024
#: Room for the multipart framing and the manifest field on top of the package.
_FORM_OVERHEAD: Final = MAX_MANIFEST_BYTES + 64 * 1024
_LOG_BLOCK: Final = 64 * 1024
#: How long simulation collateral is served before a fresh one is asked for (the
#: endpoint needs no token: it must not sign new collateral for every request).
SIMULATION_COLLATERAL_REFRESH: Final = timedelta(hours=1)

_log = logging.getLogger("confide.operator")


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
        detail=f"the package is larger than this operator's limit of {limit} bytes",
        headers={"Connection": "close"} if unread_body else None,
    )


def _check_package(package: BinaryIO, limit: int) -> None:
    """413 over the limit; 422 unless it has a package's header and size (no key needed).

    The operator cannot open a package, but it need not store, nor launch a
    runtime for, an upload that is no package at all (empty, another file, a
    truncated or padded package).
    """
    size = package.seek(0, os.SEEK_END)
    if size > limit:
        raise _too_large(limit)
    package.seek(0)
    head = package.read(HEADER_SIZE)
    package.seek(0)
    try:
        check_package_layout(head, size)
    except CryptoError as exc:
        raise RequestValidationError(
            [{"type": exc.code, "loc": ("body", "package"), "msg": exc.message, "input": None}]
        ) from None


def _domain_taken(domain: str) -> HTTPException:
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail=f"the domain {domain} is already served by another app on this operator",
    )


def _not_found(app_id: uuid.UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no app {app_id}")


class _Api:
    """The handlers' shared state; one per :func:`create_app`."""

    def __init__(
        self,
        settings: OperatorSettings,
        database: Database,
        blobs: BlobStore,
        events: AppEvents,
        log_source: LogSource,
        metrics: MetricsSource,
        sim_root_provider: SimulationRootProvider | None,
        sim_collateral_provider: SimulationCollateralProvider | None,
        ca_provider: CertificateAuthority | None,
        clock: Clock,
        log_poll_interval: float,
    ) -> None:
        self.settings = settings
        self.db = database
        self.blobs = blobs
        self.events = events
        self.log_source = log_source
        self.metrics = metrics
        self.sim_root_provider = sim_root_provider
        self.sim_collateral_provider = sim_collateral_provider
        self._sim_collateral: tuple[datetime, dict[str, Any]] | None = None
        self._sim_collateral_lock = threading.Lock()
        self.ca_provider = ca_provider
        self.clock = clock
        self.log_poll_interval = log_poll_interval

    # -- rows to bodies ----------------------------------------------------------------------

    def app_out(self, app: App, project: str) -> AppRecord:
        launch = LaunchManifest.from_json(app.launch_manifest)
        domains = [f"{app.id}.{self.settings.base_domain}"]
        if app.domain is not None:
            domains.append(app.domain)
        sim_root = None
        if self.settings.tee == TeeBackend.SIMULATION and self.sim_root_provider is not None:
            sim_root = self.sim_root_provider().decode("ascii")
        return AppRecord(
            id=app.id,
            name=app.name,
            project=project,
            application=app.application,
            healthcheck=app.healthcheck,
            plan=app.plan,
            expires_at=app.expires_at,
            tls=TlsMode(app.tls),
            domain=app.domain,
            certificate=app.certificate_pem,
            package=PackageDigest(sha256=bytes.fromhex(app.package_sha256), size=app.package_size),
            status=AppStatus(app.status),
            status_detail=app.status_detail,
            desired_state=DesiredState(app.desired_state),
            delete_requested=app.delete_requested,
            domains=tuple(domains),
            router=HostPort.parse(self.settings.router_address, "the router address"),
            tee=self.settings.tee.value,
            launch=launch,
            fingerprint=launch.measurement(),
            simulation_root_ca=sim_root,
            created_at=app.created_at,
            updated_at=app.updated_at,
        )

    def own_app(self, session: Session, auth: AuthenticatedToken, app_id: uuid.UUID) -> App:
        """The caller's app, not deleted; 404 otherwise (another account's app included)."""
        app = session.scalar(
            select(App).where(
                App.id == app_id,
                App.account_id == auth.account_id,
                App.status != AppStatus.DELETED.value,
            )
        )
        if app is None:
            raise _not_found(app_id)
        return app

    def count_apps(self, session: Session, account_id: int) -> int:
        return (
            session.scalar(
                select(func.count())
                .select_from(App)
                .where(App.account_id == account_id, App.status != AppStatus.DELETED.value)
            )
            or 0
        )

    def check_owner_domain(self, session: Session, domain: str) -> None:
        """An owner's domain is routed to one app only, and never shadows the operator's names.

        A check ahead of the insert, for a clear answer before the package is
        stored; the unique index ``uq_apps_domain_held`` is what decides a race.
        """
        base = self.settings.base_domain.lower()
        name = domain.lower().rstrip(".")
        if name == base or name.endswith("." + base):
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", "manifest", "domain"),
                        "msg": f"{domain} is under the operator's domain {base}: use your own",
                        "input": domain,
                    }
                ]
            )
        taken = session.scalar(
            select(func.count())
            .select_from(App)
            .where(func.lower(App.domain) == name, App.status.not_in(DOMAIN_RELEASED))
        )
        if taken:
            raise _domain_taken(domain)

    def check_app_limit(self, session: Session, account_id: int) -> None:
        """409 when the account has as many apps as allowed (exact under :func:`lock_account`)."""
        if self.count_apps(session, account_id) >= self.settings.max_apps_per_account:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=(
                    f"this account already has {self.settings.max_apps_per_account} apps, "
                    "the most allowed; delete one first"
                ),
            )

    # -- create ------------------------------------------------------------------------------

    async def read_upload(self, request: Request) -> FormData:
        """Parse the multipart body (only called once the caller is authenticated)."""
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail="send multipart/form-data with a package file and a manifest field",
            )
        limit = self.settings.max_package_size
        cap = limit + _FORM_OVERHEAD
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _too_large(limit, unread_body=True)
        parser = MultiPartParser(
            request.headers,
            _limited(request.stream(), cap),
            max_files=1,
            max_fields=1,
            max_part_size=MAX_MANIFEST_BYTES,
        )
        try:
            return await parser.parse()
        except _UploadTooLarge:
            raise _too_large(limit, unread_body=True) from None
        except MultiPartException as exc:
            raise RequestValidationError(
                [{"type": "multipart", "loc": ("body",), "msg": exc.message, "input": None}]
            ) from None

    def create(self, auth: AuthenticatedToken, raw_manifest: str, package: BinaryIO) -> AppRecord:
        now = self.clock()
        manifest, chain = parse_manifest(
            raw_manifest, plans={p.name: p for p in self.settings.plans}, now=now
        )
        with self.db.session() as session:
            # Early answers, before the package is stored; checked again below, atomically.
            self.check_app_limit(session, auth.account_id)
            if manifest.domain is not None:
                self.check_owner_domain(session, manifest.domain)
        _check_package(package, self.settings.max_package_size)
        try:
            blob = self.blobs.put(package, limit=self.settings.max_package_size)
        except PackageTooLarge:
            raise _too_large(self.settings.max_package_size) from None
        app_id = uuid.uuid4()
        launch = build_launch_manifest(
            app_id=app_id,
            manifest=manifest,
            chain=chain,
            package_sha256=blob.sha256,
            runtime_sha256=self.settings.runtime_sha256,
            base_domain=self.settings.base_domain,
        )
        with self.db.session() as session:
            # One create (or none) per account at a time from here to the commit: the count
            # sees every app committed before, so concurrent creates cannot pass the limit.
            lock_account(session, auth.account_id)
            self.check_app_limit(session, auth.account_id)
            project = self._project(session, auth.account_id, manifest.project, now)
            app = App(
                id=app_id,
                account_id=auth.account_id,
                project_id=project.id,
                name=manifest.name,
                application=manifest.application,
                healthcheck=manifest.healthcheck,
                plan=manifest.plan,
                expires_at=manifest.expires_at,
                tls=manifest.tls.value,
                domain=manifest.domain,
                certificate_pem=manifest.certificate,
                package_sha256=blob.sha256_hex,
                package_size=blob.size,
                launch_manifest=launch.to_json().decode("utf-8"),
                status=AppStatus.SPAWNING.value,
                desired_state=DesiredState.RUN.value,
                delete_requested=False,
                restarts=0,
                created_at=now,
                updated_at=now,
            )
            session.add(app)
            try:
                session.flush()
            except IntegrityError:
                # uq_apps_domain_held: another app took the domain since the check above.
                if manifest.domain is None:
                    raise
                raise _domain_taken(manifest.domain) from None
            record_status(session, app, AppStatus.SPAWNING, now=now)
            session.commit()
            out = self.app_out(app, project.name)
        _log.info(
            "app %s created for account %s (package %s, %d bytes%s)",
            app_id,
            auth.account,
            blob.sha256_hex,
            blob.size,
            "" if blob.created else ", deduplicated",
        )
        self.events.notify(app_id)
        return out

    def _project(self, session: Session, account_id: int, name: str, now: datetime) -> Project:
        query = select(Project).where(Project.account_id == account_id, Project.name == name)
        project = session.scalar(query)
        if project is not None:
            return project
        try:
            with session.begin_nested():
                project = Project(account_id=account_id, name=name, created_at=now)
                session.add(project)
        except IntegrityError:
            # Created by a concurrent request in the meantime.
            project = session.scalar(query)
            if project is None:
                raise
        return project

    # -- change ------------------------------------------------------------------------------

    def stop(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> AppRecord:
        now = self.clock()
        with self.db.session() as session:
            app = self.own_app(session, auth, app_id)
            app.desired_state = DesiredState.STOP.value
            app.updated_at = now
            session.commit()
            out = self.app_out(app, app.project.name)
        self.events.notify(app_id)
        return out

    def delete(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> AppRecord:
        now = self.clock()
        with self.db.session() as session:
            app = self.own_app(session, auth, app_id)
            app.desired_state = DesiredState.STOP.value
            app.delete_requested = True
            app.updated_at = now
            if not AppStatus(app.status).active:
                record_status(session, app, AppStatus.DELETED, now=now, detail="deleted by owner")
            session.commit()
            out = self.app_out(app, app.project.name)
        self.events.notify(app_id)
        return out

    # -- read --------------------------------------------------------------------------------

    def list_apps(self, auth: AuthenticatedToken, project: str | None) -> AppList:
        with self.db.session() as session:
            query = (
                select(App, Project.name)
                .join(Project, App.project_id == Project.id)
                .where(App.account_id == auth.account_id, App.status != AppStatus.DELETED.value)
                .order_by(App.created_at, App.id)
            )
            if project is not None:
                query = query.where(Project.name == project)
            rows = session.execute(query).all()
            return AppList(apps=[self.app_out(app, name) for app, name in rows])

    def get_app(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> AppRecord:
        with self.db.session() as session:
            app = self.own_app(session, auth, app_id)
            return self.app_out(app, app.project.name)

    def app_status(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> AppStatus | None:
        """The app's status, or ``None`` once it is gone (deleted)."""
        with self.db.session() as session:
            found = session.scalar(
                select(App.status).where(App.id == app_id, App.account_id == auth.account_id)
            )
        return None if found is None else AppStatus(found)

    def app_metrics(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> Metrics:
        now = self.clock()
        with self.db.session() as session:
            app = self.own_app(session, auth, app_id)
            history = status_history(session, app.id)
            durations: dict[str, float] = {}
            for change, following in zip(history, [*history[1:], None], strict=True):
                end = following.at if following is not None else now
                seconds = max((end - change.at).total_seconds(), 0.0)
                durations[change.status] = durations.get(change.status, 0.0) + seconds
            uptime = None
            if app.status == AppStatus.RUNNING.value and app.started_at is not None:
                uptime = max((now - app.started_at).total_seconds(), 0.0)
            current, restarts = AppStatus(app.status), app.restarts
        runtime = {k: float(v) for k, v in self.metrics.runtime_metrics(app_id).items()}
        return Metrics(
            app_id=app_id,
            status=current,
            restarts=restarts,
            uptime_seconds=uptime,
            status_seconds=durations,
            runtime=runtime,
        )

    def me(self, auth: AuthenticatedToken) -> Account:
        with self.db.session() as session:
            count = self.count_apps(session, auth.account_id)
        return Account(
            account=auth.account,
            token_id=auth.token_id,
            apps=count,
            max_apps=self.settings.max_apps_per_account,
            max_package_size=self.settings.max_package_size,
        )

    def list_projects(self, auth: AuthenticatedToken) -> list[ProjectInfo]:
        with self.db.session() as session:
            counts = (
                select(App.project_id, func.count().label("n"))
                .where(App.status != AppStatus.DELETED.value)
                .group_by(App.project_id)
                .subquery()
            )
            rows = session.execute(
                select(Project, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.project_id == Project.id)
                .where(Project.account_id == auth.account_id)
                .order_by(Project.name)
            ).all()
            return [ProjectInfo(name=p.name, created_at=p.created_at, apps=int(n)) for p, n in rows]

    def create_project(self, auth: AuthenticatedToken, body: ProjectRequest) -> ProjectInfo:
        now = self.clock()
        with self.db.session() as session:
            project = Project(account_id=auth.account_id, name=body.name, created_at=now)
            session.add(project)
            try:
                session.commit()
            except IntegrityError:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, detail=f"project {body.name!r} already exists"
                ) from None
            return ProjectInfo(name=project.name, created_at=project.created_at, apps=0)

    def simulation(self) -> SimulationOut:
        if self.settings.tee != TeeBackend.SIMULATION:
            return SimulationOut(simulated=False)
        root = None
        if self.sim_root_provider is not None:
            root = self.sim_root_provider().decode("ascii")
        collateral = None
        if self.sim_collateral_provider is not None:
            collateral = self.simulation_collateral(self.sim_collateral_provider)
        return SimulationOut(simulated=True, root_ca_pem=root, collateral=collateral)

    def simulation_collateral(self, provider: SimulationCollateralProvider) -> dict[str, Any]:
        """Collateral issued within :data:`SIMULATION_COLLATERAL_REFRESH` of now."""
        now = self.clock()
        with self._sim_collateral_lock:
            cached = self._sim_collateral
            if cached is not None and timedelta(0) <= now - cached[0] < (
                SIMULATION_COLLATERAL_REFRESH
            ):
                return cached[1]
            collateral = json.loads(provider(now))
            if not isinstance(collateral, dict):
                raise TypeError("the simulation collateral provider did not return a JSON object")
            self._sim_collateral = (now, collateral)
            return collateral

    def health(self) -> bool:
        try:
            with self.db.session() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            _log.exception("health check: the database is unreachable")
            return False
        return True

    # -- logs --------------------------------------------------------------------------------

    async def follow_log(
        self, auth: AuthenticatedToken, app_id: uuid.UUID, path: Path, tail: int | None
    ) -> AsyncIterator[bytes]:
        """The log's end, then what is appended, until the app is no longer active."""
        head, offset = await run_in_threadpool(_read_log_end, path, tail)
        if head:
            yield head
        while True:
            chunk, offset = await run_in_threadpool(_read_from, path, offset)
            if chunk:
                yield chunk
                continue
            state = await run_in_threadpool(self.app_status, auth, app_id)
            if state is None or not state.active:
                # A last read: what the runtime wrote just before it stopped.
                chunk, offset = await run_in_threadpool(_read_from, path, offset)
                if chunk:
                    yield chunk
                return
            await asyncio.sleep(self.log_poll_interval)


def _read_log_end(path: Path, tail: int | None) -> tuple[bytes, int]:
    """The last ``tail`` lines (all, when ``None``) within the last :data:`MAX_LOG_BYTES`.

    Returns them and the file's size (where following goes on from).
    """
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return b"", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - MAX_LOG_BYTES)
        if tail is not None:
            # Walk back block by block until tail + 1 line ends are seen.
            position, data = size, b""
            while position > start and data.count(b"\n") <= tail:
                step = min(_LOG_BLOCK, position - start)
                position -= step
                f.seek(position)
                data = f.read(step) + data
            lines = data.splitlines(keepends=True)
            kept = lines[-tail:] if tail else []
            return b"".join(kept), size
        f.seek(start)
        data = f.read(size - start)
        if start > 0:
            # Do not start in the middle of a line.
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""
        return data, size


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < offset:
                offset = 0  # truncated or rotated: start over
            f.seek(offset)
            data = f.read(_LOG_BLOCK)
    except FileNotFoundError:
        return b"", offset
    return data, offset + len(data)


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
) -> FastAPI:
    """The operator API as an ASGI app; nothing global, everything passed in.

    ``migrate``: run ``alembic upgrade head`` at startup (the ASGI lifespan).
    Defaults: blobs in ``settings.blobs_dir``, logs read from
    ``settings.logs_dir/<app-id>.log``, no events, no runtime metrics, no CA,
    no simulation root or collateral (both only matter with a simulated TEE).
    """
    api = _Api(
        settings=settings,
        database=database,
        blobs=blobs if blobs is not None else BlobStore(settings.blobs_dir),
        events=events if events is not None else NoEvents(),
        log_source=log_source if log_source is not None else FileLogSource(settings.logs_dir),
        metrics=metrics if metrics is not None else NoMetrics(),
        sim_root_provider=sim_root_provider,
        sim_collateral_provider=sim_collateral_provider,
        ca_provider=ca_provider,
        clock=clock,
        log_poll_interval=log_poll_interval,
    )
    authenticate = Authenticator(database, clock)
    Auth = Annotated[AuthenticatedToken, Depends(authenticate)]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await run_in_threadpool(upgrade_database, database)
        yield

    app = FastAPI(
        title="Confide operator API",
        version="1",
        description=__doc__ or "",
        docs_url=None,  # no Swagger UI: it would load scripts from a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
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

    @router.get("/me", tags=["account"])
    def me(auth: Auth) -> Account:
        return api.me(auth)

    @router.get("/plans", tags=["operator"])
    def plans(auth: Auth) -> list[Plan]:
        return list(settings.plans)

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
        """Deploy an app: multipart ``package`` (the encrypted package) and ``manifest`` (JSON).

        The body is read only now, after authentication. The schema of the
        manifest is ``ManifestIn``.
        """
        form = await api.read_upload(request)
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
            return await run_in_threadpool(api.create, auth, manifest, package.file)
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
    def get_app(auth: Auth, app_id: uuid.UUID) -> AppRecord:
        return api.get_app(auth, app_id)

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
        path = api.log_source.log_path(app_id)
        media = "text/plain; charset=utf-8"
        if follow:
            return StreamingResponse(api.follow_log(auth, app_id, path, tail), media_type=media)
        data, _ = await run_in_threadpool(_read_log_end, path, tail)
        return Response(data, media_type=media)

    @router.get("/apps/{app_id}/metrics", tags=["apps"])
    def app_metrics(auth: Auth, app_id: uuid.UUID) -> Metrics:
        return api.app_metrics(auth, app_id)

    app.include_router(router)
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
        host = settings.api_host
        config.bind = [
            f"[{host}]:{settings.api_port}" if ":" in host else f"{host}:{settings.api_port}"
        ]
    config.accesslog = logging.getLogger("confide.operator.access")
    config.errorlog = logging.getLogger("confide.operator.server")
    config.include_server_header = False
    # FastAPI is an ASGI app; hypercorn's and starlette's type stubs just spell it differently.
    framework: Framework = app  # type: ignore[assignment]
    await hypercorn_serve(framework, config, shutdown_trigger=shutdown_trigger, mode="asgi")
