"""The whole operator in one process: API, router and supervisor, wired from one settings object.

:func:`run_operator` builds everything from :class:`OperatorSettings` (nothing
reads the environment or a global here), then serves until
``shutdown_trigger()`` returns:

1. the database, migrated; the blob store; the runtime logs folder;
2. the operator CA (``<data>/ca``), which the router terminates operator-mode
   TLS with and the API publishes at ``/api/v1/ca``;
3. with ``tee = "simulation"``, the one simulated platform of this operator
   (``<data>/simulation``), created at the first start: every runtime quotes
   on it, and its root is what the API gives clients to verify them with;
4. the backend (:class:`LocalProcessBackend`), the :class:`Supervisor` and
   the route table it keeps; with ``supervisor = "lease"`` or ``"never"``
   (replicas, ADR 0023) the router's routes are read from the database instead
   (:class:`DatabaseRoutes`), and the supervisor runs only while this replica holds
   the ``[kubernetes]`` Lease (:class:`LeaseElection`: a new supervisor for each
   term, cancelled the moment the Lease is lost) or never;
5. the router, then the API, each on its address (port 0: one the kernel
   picks); the API is told the router's real address, as clients need it.

Once both listen, ``<data>/operator.json`` says where (``api`` and
``router``, ``host:port``, and the operator's ``pid``), and ``on_ready`` is
called; the file is removed at a clean exit. If one part fails, the others
stop. Runtimes outlive the operator unless
:attr:`SupervisorOptions.stop_apps_on_exit`; the next operator adopts them.

Example::

    >>> stop = asyncio.Event()
    >>> asyncio.run(run_operator(settings, shutdown_trigger=stop.wait))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from cryptography.hazmat.primitives.serialization import Encoding

from confide.errors import UsageError
from confide.runtime import bind_listener, write_atomically
from confide.tee import SimulatedPlatform
from confide.wire import HostPort

from ._api import create_app, serve_api
from ._backend import LocalProcessBackend, RuntimeBackend
from ._blobs import BlobStore
from ._ca import OperatorCA
from ._db import Database, upgrade_database
from ._gramine import GramineBackend
from ._logs import FileLogSource, LogSource
from ._looplag import LoopLag
from ._router import Recorder, RouterSettings, RouteTable, serve_router
from ._routes import ROUTE_DRAIN, AppRoutes, DatabaseRoutes
from ._seams import (
    Clock,
    MetricsSource,
    NoMetrics,
    SimulationCollateralProvider,
    SimulationRootProvider,
    utc_now,
)
from ._service import app_versions
from ._settings import OperatorSettings, SupervisorMode, TeeBackend
from ._supervisor import Supervisor, SupervisorOptions
from ._tdx import TdxBackend
from ._waits import AppWaits
from ._wheels import WheelCache

if TYPE_CHECKING:  # the confide[kubernetes] extra: imported where used
    from lightkube import KubeConfig

    from ._election import LeaseElection

#: Where the bound addresses are written, in the data folder.
ADDRESSES_FILE: Final = "operator.json"


@dataclass(frozen=True, slots=True)
class OperatorAddresses:
    """Where a running operator listens."""

    api_host: str
    api_port: int
    router_host: str
    router_port: int
    pid: int

    @property
    def api_url(self) -> str:
        return f"http://{HostPort(self.api_host, self.api_port)}"

    @property
    def router(self) -> str:
        return str(HostPort(self.router_host, self.router_port))

    def to_dict(self) -> dict[str, Any]:
        return {
            "api": f"{self.api_host}:{self.api_port}",
            "api_url": self.api_url,
            "router": self.router,
            "api_host": self.api_host,
            "api_port": self.api_port,
            "router_host": self.router_host,
            "router_port": self.router_port,
            "pid": self.pid,
        }


def _write_addresses(path: Path, addresses: OperatorAddresses) -> None:
    write_atomically(path, (json.dumps(addresses.to_dict(), indent=2) + "\n").encode(), mode=0o644)


def _simulation(
    settings: OperatorSettings, clock: Clock
) -> tuple[SimulationRootProvider | None, SimulationCollateralProvider | None]:
    """The simulated platform's root and collateral, published so clients can opt in."""
    if not settings.simulated:
        return None, None
    platform = SimulatedPlatform.open(settings.data_dir / "simulation", now=clock())
    pem = platform.root_certificate.public_bytes(Encoding.PEM)
    tdx = settings.tee in (TeeBackend.SIMULATION_TDX, TeeBackend.TDX)
    tee: Literal["sgx", "tdx"] = "tdx" if tdx else "sgx"
    return (lambda: pem), (lambda now: platform.collateral(now, tee=tee).to_json())


class _Terms:
    """The API's :class:`~._seams.AppEvents` when supervisors come and go with the Lease:
    told to the supervisor of this replica's current term, if any (else the leader finds
    the change at its next pass, within its poll interval)."""

    def __init__(self, make: Callable[[], Supervisor]) -> None:
        self._make = make
        self._current: Supervisor | None = None

    def notify(self, app_id: uuid.UUID) -> None:
        current = self._current
        if current is not None:
            current.notify(app_id)

    async def lead(self) -> None:
        """One term: a fresh supervisor (nothing remembered from an earlier term), run
        until the election cancels it."""
        supervisor = self._make()
        self._current = supervisor
        try:
            await supervisor.run(asyncio.Event().wait)
        finally:
            self._current = None


#: What the ``confide[kubernetes]`` extra installs (the distributions' import names).
_KUBERNETES_MODULES: Final = frozenset({"lightkube", "httpx2", "httpcore2", "msgspec", "yaml"})


def _require_kubernetes_extra() -> None:
    """Import lightkube, or say which extra to install (it is not a requirement of the
    runtime, so it stays out of the enclave's measured environment, ADR 0017)."""
    try:
        import lightkube  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _KUBERNETES_MODULES:
            raise
        raise UsageError(
            f"the [kubernetes] settings need the Kubernetes client ({exc.name} is not installed)",
            hint="install confide[kubernetes]: pip install 'confide[kubernetes]'",
        ) from None


def _kube_config() -> KubeConfig:
    """The cluster's credentials: the pod's service account, else ``KUBECONFIG`` or
    ``~/.kube/config`` (lightkube's ``KubeConfig.from_env``); one line if there are none."""
    _require_kubernetes_extra()
    from lightkube import ConfigError, KubeConfig

    try:
        return KubeConfig.from_env()
    except ConfigError as exc:
        raise UsageError(
            f"no Kubernetes credentials for the [kubernetes] settings: {exc}",
            hint="run in a pod with a service account, or set KUBECONFIG",
        ) from None


def _election(settings: OperatorSettings) -> LeaseElection:
    """The supervisor's election (ADR 0023) with the cluster's credentials, as the backend's."""
    k = settings.kubernetes
    if k is None or k.lease is None:  # pragma: no cover - checked by the settings
        raise UsageError('supervisor = "lease" needs a [kubernetes] lease name')
    config = _kube_config()
    from lightkube import AsyncClient

    from ._election import LeaseElection

    # Unique per process: a restarted replica is a new candidate and waits its turn.
    identity = f"{socket.gethostname()[:200]}_{uuid.uuid4().hex}"
    client = AsyncClient(config, namespace=k.namespace)
    return LeaseElection(client, name=k.lease, namespace=k.namespace, identity=identity)


def _kubernetes(settings: OperatorSettings) -> tuple[RuntimeBackend, LogSource]:
    """The Kubernetes backend and its log source (ADR 0007), with the cluster's credentials
    from the pod's service account or ``KUBECONFIG`` (lightkube's ``KubeConfig.from_env``)."""
    k = settings.kubernetes
    if k is None:  # pragma: no cover - checked by the caller
        raise UsageError("no [kubernetes] settings")
    config = _kube_config()
    from lightkube import AsyncClient, Client

    from ._kubernetes import KubernetesBackend, KubernetesLogSource, KubernetesTarget

    target = KubernetesTarget(
        namespace=k.namespace,
        image=k.image,
        operator_id=k.operator_id,
        blob_url=k.blob_url,
        tee=settings.tee,
        simulation_claim=k.simulation_claim,
        state_size=k.state_size,
        storage_class=k.storage_class,
    )
    # The API serves pods the wheels of live apps' locks from the same cache (ADR 0030).
    wheels = WheelCache(
        settings.wheels_dir,
        index_url=settings.wheel_index_url,
        find_links=settings.wheel_find_links,
    )
    backend = KubernetesBackend(AsyncClient(config, namespace=k.namespace), target, wheels=wheels)
    return backend, KubernetesLogSource(Client(config, namespace=k.namespace), target)


async def run_operator(
    settings: OperatorSettings,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    options: SupervisorOptions = SupervisorOptions(),  # noqa: B008 - frozen
    backend: RuntimeBackend | None = None,
    router_settings: RouterSettings | None = None,
    recorder: Recorder | None = None,
    on_ready: Callable[[OperatorAddresses], None] | None = None,
    clock: Clock = utc_now,
    logger: logging.Logger | None = None,
) -> None:
    """Run the operator until ``shutdown_trigger()`` returns (see the module's description).

    ``router_settings`` defaults to :class:`RouterSettings` on the settings'
    router address; ``recorder`` sees what the router relays (tests).
    """
    log = logger or logging.getLogger("confide.operator")
    data = settings.data_dir
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    addresses_file = data / ADDRESSES_FILE
    addresses_file.unlink(missing_ok=True)
    settings.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    database = Database.open(settings.database_url)
    api_sock: socket.socket | None = None
    local: LocalProcessBackend | None = None
    try:
        await asyncio.to_thread(upgrade_database, database)
        blobs = BlobStore(settings.blobs_dir)
        logs = FileLogSource(settings.logs_dir)
        ca = await asyncio.to_thread(
            OperatorCA.open, data / "ca", base_domain=settings.base_domain, clock=clock
        )
        sim_root, sim_collateral = await asyncio.to_thread(_simulation, settings, clock)
        if settings.tee == TeeBackend.GRAMINE:
            local = GramineBackend(
                data_dir=data,
                log_source=logs,
                clock=clock,
                wheel_index_url=settings.wheel_index_url,
                wheel_find_links=settings.wheel_find_links,
            )
        elif settings.tee == TeeBackend.TDX and settings.tdx is not None:
            local = TdxBackend(
                data_dir=data,
                log_source=logs,
                tdx=settings.tdx,
                clock=clock,
                wheel_index_url=settings.wheel_index_url,
                wheel_find_links=settings.wheel_find_links,
            )
        else:
            local = LocalProcessBackend(
                data_dir=data,
                log_source=logs,
                tee=settings.tee,
                nice=settings.runtime_nice,
                fork=settings.runtime_fork,
                clock=clock,
                wheel_index_url=settings.wheel_index_url,
                wheel_find_links=settings.wheel_find_links,
            )
        runtimes: RuntimeBackend = backend if backend is not None else local
        api_logs: LogSource = logs
        metrics: MetricsSource = local
        if backend is None and settings.kubernetes is not None:
            runtimes, api_logs = _kubernetes(settings)
            metrics = NoMetrics()
        routes = AppRoutes(settings.base_domain)

        mode = settings.supervisor
        supervising = options
        if mode.routes_from_database and options.route_drain < ROUTE_DRAIN:
            supervising = dataclasses.replace(options, route_drain=ROUTE_DRAIN)

        # The API's long-polls, told at once of the supervisor's writes in this process.
        waits = AppWaits(functools.partial(app_versions, database))

        def make_supervisor() -> Supervisor:
            return Supervisor(
                settings,
                database,
                runtimes,
                blobs,
                routes=routes,
                options=supervising,
                clock=clock,
                changes=waits,
            )

        supervisor = make_supervisor()
        terms = _Terms(make_supervisor)
        election = _election(settings) if mode is SupervisorMode.LEASE else None
        router_routes: RouteTable = routes
        shared_routes: DatabaseRoutes | None = None
        if mode.routes_from_database:
            shared_routes = DatabaseRoutes(database, settings.base_domain)
            router_routes = shared_routes
        stop = asyncio.Event()
        router_ready: asyncio.Future[HostPort] = asyncio.get_running_loop().create_future()

        def router_on_ready(address: HostPort) -> None:
            if not router_ready.done():
                router_ready.set_result(address)

        async with asyncio.TaskGroup() as group:
            group.create_task(_stop_when(shutdown_trigger, stop))
            group.create_task(LoopLag().run(stop.wait))  # logs a lagging event loop
            if shared_routes is not None:
                await shared_routes.refresh()  # routes before the router's first connection
                group.create_task(shared_routes.run(stop.wait))
            router_task = group.create_task(
                serve_router(
                    router_settings
                    or RouterSettings(host=settings.router_host, port=settings.router_port),
                    router_routes,
                    ca,
                    shutdown_trigger=stop.wait,
                    recorder=recorder,
                    on_ready=router_on_ready,
                )
            )
            pending: set[asyncio.Future[Any]] = {router_ready, router_task}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if not router_ready.done():
                await router_task  # it failed: raise its error
                return  # pragma: no cover - serve_router returns only after on_ready
            router_address = router_ready.result()
            api_sock = bind_listener(
                settings.api_host,
                settings.api_port,
                backlog=1024,
                role="API",
                hint="choose another --api address or port",
            )
            api_host, api_port = api_sock.getsockname()[:2]
            served = settings.with_overrides(api_port=api_port, router_port=router_address.port)
            api = create_app(
                served,
                database=database,
                blobs=blobs,
                events=supervisor if mode is SupervisorMode.ALWAYS else terms,
                log_source=api_logs,
                metrics=metrics,
                sim_root_provider=sim_root,
                sim_collateral_provider=sim_collateral,
                ca_provider=ca,
                clock=clock,
                migrate=False,
                waits=waits,
            )
            group.create_task(serve_api(api, served, stop.wait, sock=api_sock))
            if mode is SupervisorMode.ALWAYS:
                group.create_task(supervisor.run(stop.wait))
            elif election is not None:
                group.create_task(_elect(election, terms, stop))
            addresses = OperatorAddresses(
                api_host=api_host,
                api_port=api_port,
                router_host=router_address.host,
                router_port=router_address.port,
                pid=os.getpid(),
            )
            await asyncio.to_thread(_write_addresses, addresses_file, addresses)
            log.info(
                "operator %s: API on %s, router on %s, %s TEE, apps at *.%s, supervisor: %s",
                data,
                addresses.api_url,
                addresses.router,
                settings.tee.value,
                settings.base_domain,
                mode.value,
            )
            if on_ready is not None:
                on_ready(addresses)
        addresses_file.unlink(missing_ok=True)
    finally:
        if api_sock is not None:
            api_sock.close()
        if local is not None:
            local.close()  # the runtime parent exits; the runtimes run on (ADR 0031)
        database.dispose()


async def _elect(election: LeaseElection, terms: _Terms, stop: asyncio.Event) -> None:
    """Compete for the Lease and supervise while it is held (ADR 0023), until ``stop``."""
    try:
        await election.run(terms.lead, stop.wait)
    finally:
        await election.aclose()


async def _stop_when(trigger: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Set ``stop`` when ``trigger()`` returns, or when any other part ends (it is cancelled)."""
    try:
        await trigger()
    finally:
        stop.set()
