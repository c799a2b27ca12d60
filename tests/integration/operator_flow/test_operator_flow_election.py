"""Two replicas' supervisors over one database, elected with a Lease on the API stand-in.

The wiring of ``supervisor = "lease"`` (``_serve._Terms`` under :class:`LeaseElection`):
only the leader's supervisor starts what the database asks; a leader cut off from the
API server stops supervising, and the replica that takes over adopts the runtimes that
still run (the shared host of :class:`FakeWorld`) instead of starting them again, then
supervises them (a crash is restarted by it, not by the deposed one). ADR 0023.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from lightkube import AsyncClient, KubeConfig

from confide.operator import BlobStore, Database, OperatorSettings, Probe, Supervisor
from confide.operator._election import LeaseElection, LeaseTiming
from confide.operator._serve import _Terms
from confide.wire import AppStatus
from kube_standin import AsyncTransport, KubeApi
from support.operator_flow import (
    FAST,
    FakeBackend,
    FakeClock,
    FakeProber,
    FakeWorld,
    add_app,
    row,
    run,
    status_is,
    until,
)

TIMING = LeaseTiming(lease_duration=1, renew_deadline=0.6, retry_period=0.1)


def kubeconfig() -> KubeConfig:
    return KubeConfig.from_dict(
        {
            "clusters": [{"name": "standin", "cluster": {"server": "http://kube.invalid"}}],
            "users": [{"name": "operator", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "operator"}}],
            "current-context": "c",
        }
    )


@dataclass
class Replica:
    backend: FakeBackend
    transport: AsyncTransport
    client: AsyncClient
    election: LeaseElection
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def replica(
    name: str, settings: OperatorSettings, database: Database, world: FakeWorld, api: KubeApi
) -> Replica:
    backend = FakeBackend(world)

    def make() -> Supervisor:
        return Supervisor(
            settings,
            database,
            backend,
            BlobStore(settings.blobs_dir),
            prober=FakeProber(Probe.HEALTHY),
            options=FAST,
            clock=FakeClock(),
        )

    transport = AsyncTransport(api)
    client = AsyncClient(kubeconfig(), namespace="confide", transport=transport)
    election = LeaseElection(
        client, name="confide-supervisor", namespace="confide", identity=name, timing=TIMING
    )
    r = Replica(backend, transport, client, election)
    terms = _Terms(make)
    r.task = asyncio.create_task(election.run(terms.lead, r.stop.wait))
    return r


def test_only_the_leader_supervises_and_a_new_leader_adopts(
    settings: OperatorSettings, database: Database
) -> None:
    async def body() -> None:
        api, world = KubeApi(), FakeWorld()
        a = replica("a", settings, database, world, api)
        await until(lambda: a.election.terms == 1, "a to lead")
        b = replica("b", settings, database, world, api)
        try:
            app_id = add_app(database)
            await status_is(database, app_id, AppStatus.RUNNING)
            assert a.backend.starts(app_id) == 1 and b.backend.starts(app_id) == 0
            first = row(database, app_id).runtime_pid

            a.transport.partitioned = True  # a cannot renew: it stops, b takes over
            await until(lambda: b.election.terms == 1, "b to lead", timeout=5)
            assert not a.election.elector.leading(asyncio.get_running_loop().time())
            await asyncio.sleep(5 * FAST.poll_interval)  # b's supervisor passes a few times
            assert b.backend.starts(app_id) == 0  # adopted, not started again
            assert world.pids(app_id) == [first]
            assert a.backend.stopped == [] and b.backend.stopped == []  # nobody stopped it

            world.kill(app_id)  # the runtime crashes: the new leader restarts it
            await until(lambda: b.backend.starts(app_id) == 1, "b to restart the app")
            await status_is(database, app_id, AppStatus.RUNNING)
            assert a.backend.starts(app_id) == 1  # the deposed leader did nothing
        finally:
            for r in (a, b):
                r.transport.partitioned = False
                r.stop.set()
            for r in (a, b):
                if r.task is not None:
                    await asyncio.wait({r.task}, timeout=5)
                    assert r.task.done()
                    r.task.result()
                await r.client.close()

    run(body)
