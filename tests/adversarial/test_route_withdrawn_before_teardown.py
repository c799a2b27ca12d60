"""A stopped runtime's address leaves the database before the runtime goes (ADR 0023).

Operator replicas route from the apps table (``DatabaseRoutes``). On Kubernetes a pod's
IP is reused once the pod is gone; a row still naming it after the teardown would have
every replica route the app's name to whichever runtime gets that IP next: for an
operator-mode app, its users' plain HTTP. So the supervisor clears the row's runtime
address before it stops the runtime: at the moment the backend is asked to stop it, the
routes read from the database no longer hold it. Guard: while the app runs, they do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from confide.operator import Database, OperatorSettings, Probe, RuntimeHandle
from confide.operator._routes import DatabaseRoutes, read_route_rows
from confide.wire import AppStatus, TlsMode
from support.operator_flow import (
    BASE_DOMAIN,
    FAST,
    START,
    FakeWorld,
    add_app,
    run,
    status_is,
    supervising,
    until,
)

#: The supervisor's wait between clearing an address and the teardown (the replicas'
#: ``ROUTE_DRAIN`` is two refreshes; here the refresh is 0.05 s).
DRAIN = 0.5


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path, database_url: str) -> OperatorSettings:
    return OperatorSettings.load(
        tmp_path / "data",
        runtime_sha256=bytes(32),
        database_url=database_url,
        base_domain=BASE_DOMAIN,
    )


def _routed(database: Database, app_id: uuid.UUID) -> bool:
    return any(r.app_id == app_id for r in read_route_rows(database))


def test_no_replica_routes_to_an_expired_runtime_being_stopped(
    settings: OperatorSettings, database: Database
) -> None:
    """Expiry stops a runtime its owner still asks to run (an owner's stop or delete
    takes the row out of the routes at once: it is no longer asked to run)."""
    app_id = add_app(database, tls=TlsMode.OPERATOR, expires_at=START + timedelta(hours=1))
    routed_at_teardown: list[bool] = []

    async def body() -> None:
        async with supervising(settings, database, FakeWorld()) as host:
            host.prober.default = Probe.HEALTHY
            await status_is(database, app_id, AppStatus.RUNNING)
            assert _routed(database, app_id)  # guard: a running app is routed
            stop = host.backend.stop

            async def recording_stop(handle: RuntimeHandle) -> None:
                routed_at_teardown.append(await asyncio.to_thread(_routed, database, handle.app_id))
                await stop(handle)

            host.backend.stop = recording_stop  # type: ignore[method-assign]
            host.clock.advance(2 * 3600)
            host.supervisor.notify(app_id)
            await status_is(database, app_id, AppStatus.EXPIRED)

    run(body)
    assert routed_at_teardown == [False]


def test_a_replica_reading_the_routes_drops_the_route_before_the_teardown(
    settings: OperatorSettings, database: Database
) -> None:
    """With the drain a replica's own router (``DatabaseRoutes``, refreshing on its own
    schedule) no longer routes the app when the backend is asked to stop its runtime."""
    app_id = add_app(database, tls=TlsMode.OPERATOR, expires_at=START + timedelta(hours=1))
    name = f"{app_id}.{BASE_DOMAIN}"
    routed_at_teardown: list[bool] = []

    async def body() -> None:
        shared = DatabaseRoutes(database, BASE_DOMAIN, interval=0.05, max_staleness=5.0)
        stop_reading = asyncio.Event()
        reading = asyncio.create_task(shared.run(stop_reading.wait))
        options = dataclasses.replace(FAST, route_drain=DRAIN)
        try:
            async with supervising(settings, database, FakeWorld(), options=options) as host:
                host.prober.default = Probe.HEALTHY
                await status_is(database, app_id, AppStatus.RUNNING)
                await until(lambda: shared.lookup(name) is not None, "the replica routes it")
                stop = host.backend.stop

                async def recording_stop(handle: RuntimeHandle) -> None:
                    routed_at_teardown.append(shared.lookup(name) is not None)
                    await stop(handle)

                host.backend.stop = recording_stop  # type: ignore[method-assign]
                host.clock.advance(2 * 3600)
                host.supervisor.notify(app_id)
                await status_is(database, app_id, AppStatus.EXPIRED)
        finally:
            stop_reading.set()
            await asyncio.wait_for(reading, 10)

    run(body)
    assert routed_at_teardown == [False]
