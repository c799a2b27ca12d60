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
   the route table it keeps;
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
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives.serialization import Encoding
from lightkube import AsyncClient, Client, KubeConfig

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
from ._kubernetes import KubernetesBackend, KubernetesLogSource, KubernetesTarget
from ._logs import FileLogSource, LogSource
from ._router import Recorder, RouterSettings, serve_router
from ._routes import AppRoutes
from ._seams import (
    Clock,
    MetricsSource,
    NoMetrics,
    SimulationCollateralProvider,
    SimulationRootProvider,
    utc_now,
)
from ._settings import OperatorSettings, TeeBackend
from ._supervisor import Supervisor, SupervisorOptions

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
    tee: Literal["sgx", "tdx"] = "tdx" if settings.tee == TeeBackend.SIMULATION_TDX else "sgx"
    return (lambda: pem), (lambda now: platform.collateral(now, tee=tee).to_json())


def _kubernetes(settings: OperatorSettings) -> tuple[RuntimeBackend, LogSource]:
    """The Kubernetes backend and its log source (ADR 0007), with the cluster's credentials
    from the pod's service account or ``KUBECONFIG`` (lightkube's ``KubeConfig.from_env``)."""
    k = settings.kubernetes
    if k is None:  # pragma: no cover - checked by the caller
        raise UsageError("no [kubernetes] settings")
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
    config = KubeConfig.from_env()
    backend = KubernetesBackend(AsyncClient(config, namespace=k.namespace), target)
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
    try:
        await asyncio.to_thread(upgrade_database, database)
        blobs = BlobStore(settings.blobs_dir)
        logs = FileLogSource(settings.logs_dir)
        ca = await asyncio.to_thread(
            OperatorCA.open, data / "ca", base_domain=settings.base_domain, clock=clock
        )
        sim_root, sim_collateral = await asyncio.to_thread(_simulation, settings, clock)
        local: LocalProcessBackend
        if settings.tee == TeeBackend.GRAMINE:
            local = GramineBackend(
                data_dir=data,
                log_source=logs,
                clock=clock,
                wheel_index_url=settings.wheel_index_url,
                wheel_find_links=settings.wheel_find_links,
            )
        else:
            local = LocalProcessBackend(
                data_dir=data,
                log_source=logs,
                tee=settings.tee,
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
        supervisor = Supervisor(
            settings, database, runtimes, blobs, routes=routes, options=options, clock=clock
        )
        stop = asyncio.Event()
        router_ready: asyncio.Future[HostPort] = asyncio.get_running_loop().create_future()

        def router_on_ready(address: HostPort) -> None:
            if not router_ready.done():
                router_ready.set_result(address)

        async with asyncio.TaskGroup() as group:
            group.create_task(_stop_when(shutdown_trigger, stop))
            router_task = group.create_task(
                serve_router(
                    router_settings
                    or RouterSettings(host=settings.router_host, port=settings.router_port),
                    routes,
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
                events=supervisor,
                log_source=api_logs,
                metrics=metrics,
                sim_root_provider=sim_root,
                sim_collateral_provider=sim_collateral,
                ca_provider=ca,
                clock=clock,
                migrate=False,
            )
            group.create_task(serve_api(api, served, stop.wait, sock=api_sock))
            group.create_task(supervisor.run(stop.wait))
            addresses = OperatorAddresses(
                api_host=api_host,
                api_port=api_port,
                router_host=router_address.host,
                router_port=router_address.port,
                pid=os.getpid(),
            )
            await asyncio.to_thread(_write_addresses, addresses_file, addresses)
            log.info(
                "operator %s: API on %s, router on %s, %s TEE, apps at *.%s",
                data,
                addresses.api_url,
                addresses.router,
                settings.tee.value,
                settings.base_domain,
            )
            if on_ready is not None:
                on_ready(addresses)
        addresses_file.unlink(missing_ok=True)
    finally:
        if api_sock is not None:
            api_sock.close()
        database.dispose()


async def _stop_when(trigger: Callable[[], Awaitable[object]], stop: asyncio.Event) -> None:
    """Set ``stop`` when ``trigger()`` returns, or when any other part ends (it is cancelled)."""
    try:
        await trigger()
    finally:
        stop.set()
