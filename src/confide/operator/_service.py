"""The operator API's service layer: what each call decides and writes, under the routes.

The methods of :class:`AppService` check, decide and write, each in one
transaction, and return the API's bodies. They know nothing of HTTP: a refusal
is one of the errors below, which the routes (:mod:`._api`) map to a status code.
Status, desired state and deletion change only through :mod:`._lifecycle`; after
each change :meth:`AppEvents.notify` wakes the supervisor.

Example::

    >>> service = AppService(settings, database, blobs, events, ...)  # doctest: +SKIP
    >>> service.stop(auth, app_id).desired_state  # doctest: +SKIP
    <DesiredState.STOP: 'stop'>
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Final

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from confide.crypto import HEADER_SIZE, CryptoError, check_package_layout
from confide.errors import UsageError
from confide.wire import (
    AppStatus,
    DesiredState,
    HostPort,
    LaunchManifest,
    RequirementsLock,
    TlsMode,
)
from confide.wire.api import (
    Account,
    AppList,
    AppRecord,
    GramineEnclave,
    LaunchInfo,
    Metrics,
    PackageDigest,
    Plan,
    ProjectInfo,
    ProjectRequest,
    SimulationOut,
)

from ._blobs import BlobStore, PackageTooLarge
from ._db import (
    AuthenticatedToken,
    Database,
    IssuedToken,
    TokenInfo,
    create_token,
    list_tokens,
    lock_account,
    revoke_token,
    status_history,
)
from ._gramine import plan_enclave
from ._lifecycle import record_created, request_delete, request_stop
from ._models import DOMAIN_RELEASED, ApiToken, App, Project
from ._schemas import build_launch_manifest, parse_manifest
from ._seams import (
    AppEvents,
    CertificateAuthority,
    Clock,
    MetricsSource,
    SimulationCollateralProvider,
    SimulationRootProvider,
)
from ._settings import OperatorSettings, TeeBackend
from ._wheels import WheelCache

#: How long simulation collateral is served before a fresh one is asked for (the
#: endpoint needs no token: it must not sign new collateral for every request).
SIMULATION_COLLATERAL_REFRESH: Final = timedelta(hours=1)

_log = logging.getLogger("confide.operator")


class NotFound(UsageError):
    """No such app, or not the caller's (the same answer, on purpose)."""

    code = "not_found"


class Conflict(UsageError):
    """The call conflicts with what exists: a project, an owner's domain, the app limit."""

    code = "conflict"


class TooLarge(UsageError):
    """The package is larger than this operator's limit."""

    code = "too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the package is larger than this operator's limit of {limit} bytes")
        self.limit = limit


class InvalidInput(UsageError):
    """One input is wrong; ``loc`` names it as the API's validation errors do."""

    code = "invalid_input"

    def __init__(
        self, loc: tuple[str, ...], message: str, *, kind: str = "value_error", value: Any = None
    ) -> None:
        super().__init__(message)
        self.loc, self.kind, self.value = loc, kind, value


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One status an app went through, when, and why (the supervisor's detail)."""

    status: AppStatus
    detail: str | None
    at: datetime


def _check_package(package: BinaryIO, limit: int) -> None:
    """413 over the limit; 422 unless it has a package's header and size (no key needed).

    The operator cannot open a package, but it need not store, nor launch a
    runtime for, an upload that is no package at all (empty, another file, a
    truncated or padded package).
    """
    size = package.seek(0, os.SEEK_END)
    if size > limit:
        raise TooLarge(limit)
    package.seek(0)
    head = package.read(HEADER_SIZE)
    package.seek(0)
    try:
        check_package_layout(head, size)
    except CryptoError as exc:
        raise InvalidInput(("body", "package"), exc.message, kind=exc.code) from None


def _domain_taken(domain: str) -> Conflict:
    return Conflict(f"the domain {domain} is already served by another app on this operator")


class AppService:
    """What the API does, under its routes: one per :func:`~._api.create_app`."""

    def __init__(
        self,
        settings: OperatorSettings,
        database: Database,
        blobs: BlobStore,
        events: AppEvents,
        metrics: MetricsSource,
        sim_root_provider: SimulationRootProvider | None,
        sim_collateral_provider: SimulationCollateralProvider | None,
        ca_provider: CertificateAuthority | None,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.db = database
        self.blobs = blobs
        self.events = events
        self.metrics = metrics
        self.sim_root_provider = sim_root_provider
        self.sim_collateral_provider = sim_collateral_provider
        self._sim_collateral: tuple[datetime, dict[str, Any]] | None = None
        self._sim_collateral_lock = threading.Lock()
        self.ca_provider = ca_provider
        self.clock = clock

    # -- rows to bodies ----------------------------------------------------------------------

    def app_out(self, app: App, project: str) -> AppRecord:
        launch = LaunchManifest.from_json(app.launch_manifest)
        domains = [f"{app.id}.{self.settings.base_domain}"]
        if app.domain is not None:
            domains.append(app.domain)
        gramine = None
        if self.settings.tee == TeeBackend.GRAMINE:
            try:
                plan = self.settings.plan(app.plan)
            except UsageError:
                plan = None  # a plan since removed: the app no longer starts, say nothing
            if plan is not None:
                size, threads = plan_enclave(plan.memory_mib, plan.cores)
                gramine = GramineEnclave(enclave_size=size, max_threads=threads)
        sim_root = None
        if self.settings.simulated and self.sim_root_provider is not None:
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
            gramine=gramine,
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
            raise NotFound(f"no app {app_id}")
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
            raise InvalidInput(
                ("body", "manifest", "domain"),
                f"{domain} is under the operator's domain {base}: use your own",
                value=domain,
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
            raise Conflict(
                f"this account already has {self.settings.max_apps_per_account} apps, "
                "the most allowed; delete one first"
            )

    # -- create ------------------------------------------------------------------------------

    def create(
        self,
        auth: AuthenticatedToken,
        raw_manifest: str,
        package: BinaryIO,
        requirements: str | None = None,
    ) -> AppRecord:
        now = self.clock()
        manifest, chain = parse_manifest(
            raw_manifest, plans={p.name: p for p in self.settings.plans}, now=now
        )
        lock: RequirementsLock | None = None
        if requirements is not None:
            try:
                lock = RequirementsLock.from_bytes(
                    requirements.encode("utf-8"), where="the requirements lock"
                )
            except UsageError as exc:
                raise InvalidInput(("body", "requirements"), exc.message) from None
        with self.db.session() as session:
            # Early answers, before the package is stored; checked again below, atomically.
            self.check_app_limit(session, auth.account_id)
            if manifest.domain is not None:
                self.check_owner_domain(session, manifest.domain)
        _check_package(package, self.settings.max_package_size)
        try:
            blob = self.blobs.put(package, limit=self.settings.max_package_size)
        except PackageTooLarge:
            raise TooLarge(self.settings.max_package_size) from None
        app_id = uuid.uuid4()
        launch = build_launch_manifest(
            app_id=app_id,
            manifest=manifest,
            chain=chain,
            package_sha256=blob.sha256,
            runtime_sha256=self.settings.runtime_sha256,
            base_domain=self.settings.base_domain,
            requirements_sha256=lock.digest() if lock is not None else None,
        )
        if lock is not None:
            # Kept by its digest: the backend fetches its wheels and hands it to the runtime,
            # which measures it (ADR 0024).
            WheelCache(self.settings.wheels_dir).put_lock(lock)
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
                restarts=0,
                created_at=now,
                updated_at=now,
            )
            try:
                record_created(session, app, now=now)
            except IntegrityError:
                # uq_apps_domain_held: another app took the domain since the check above.
                if manifest.domain is None:
                    raise
                raise _domain_taken(manifest.domain) from None
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
            request_stop(app, now=now)
            session.commit()
            out = self.app_out(app, app.project.name)
        self.events.notify(app_id)
        return out

    def delete(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> AppRecord:
        now = self.clock()
        with self.db.session() as session:
            app = self.own_app(session, auth, app_id)
            request_delete(session, app, now=now)
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

    def app_versions(self, app_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """The ``updated_at`` of each of these apps that exists (:func:`app_versions`)."""
        return app_versions(self.db, app_ids)

    def app_active(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> bool:
        """The caller's app may still run (its log may still grow)."""
        with self.db.session() as session:
            found = session.scalar(
                select(App.status).where(App.id == app_id, App.account_id == auth.account_id)
            )
        return found is not None and AppStatus(found).active

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

    def plans(self) -> list[Plan]:
        return list(self.settings.plans)

    def launch_info(self) -> LaunchInfo:
        """The operator's TEE and, under Gramine, each plan's enclave size and threads (the
        values :class:`~._gramine.GramineBackend` renders: :func:`~._gramine.plan_enclave`)."""
        gramine = None
        if self.settings.tee == TeeBackend.GRAMINE:
            gramine = {}
            for plan in self.settings.plans:
                size, threads = plan_enclave(plan.memory_mib, plan.cores)
                gramine[plan.name] = GramineEnclave(enclave_size=size, max_threads=threads)
        return LaunchInfo(tee=self.settings.tee.value, gramine=gramine)

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

    def status_history(self, auth: AuthenticatedToken, app_id: uuid.UUID) -> list[StatusChange]:
        """The caller's app's status changes, oldest first; 404 as :meth:`get_app`."""
        with self.db.session() as session:
            app = self.own_app(session, auth, app_id)
            return [
                StatusChange(status=AppStatus(c.status), detail=c.detail, at=c.at)
                for c in status_history(session, app.id)
            ]

    # -- the account's API tokens ------------------------------------------------------------

    def list_tokens(self, auth: AuthenticatedToken) -> list[TokenInfo]:
        """The caller's account's tokens (revoked ones too), oldest first; no secrets."""
        with self.db.session() as session:
            return list_tokens(session, auth.account)

    def create_token(self, auth: AuthenticatedToken) -> IssuedToken:
        """A new token of the caller's account; its secret is in the answer only."""
        with self.db.session() as session:
            issued = create_token(session, auth.account, now=self.clock())
            session.commit()
        _log.info("token %d created for account %s", issued.id, auth.account)
        return issued

    def revoke_token(self, auth: AuthenticatedToken, token_id: int) -> TokenInfo:
        """Revoke one of the caller's account's tokens; another account's is a 404."""
        with self.db.session() as session:
            row = session.get(ApiToken, token_id)
            if row is None or row.account_id != auth.account_id:
                raise NotFound(f"no token {token_id}")
            info = revoke_token(session, token_id, now=self.clock())
            session.commit()
        _log.info("token %d of account %s revoked", token_id, auth.account)
        return info

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
                raise Conflict(f"project {body.name!r} already exists") from None
            return ProjectInfo(name=project.name, created_at=project.created_at, apps=0)

    def simulation(self) -> SimulationOut:
        if not self.settings.simulated:
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


def app_versions(database: Database, app_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """The ``updated_at`` of each of these apps that exists, in one query (the API's
    long-polls, :class:`~._waits.AppWaits`; the callers bound ``app_ids``)."""
    with database.session() as session:
        rows = session.execute(
            select(App.id, App.updated_at).where(App.id.in_(list(app_ids)))
        ).all()
    return {app_id: updated_at for app_id, updated_at in rows}
