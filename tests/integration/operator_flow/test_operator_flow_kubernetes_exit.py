"""The supervisor over the Kubernetes backend on the API stand-in: an app whose runtime pod
said ``error: app unusable: ...`` and exited 4 goes on_error at once (issue 15, 5), with
the missing name and the fix in its status, even when the pod's node (so its log) is gone;
a pod that crashed with no such line is restarted as before."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from lightkube import AsyncClient

from confide.operator import BlobStore, Database, OperatorSettings, Probe, Supervisor
from confide.operator._kubernetes import KubernetesBackend, KubernetesTarget, pod_name
from confide.wire import EXIT_APP_UNUSABLE, AppStatus
from kube_standin import AsyncTransport, KubeApi
from support.kube_pods import GRAMINE, NS, TARGET, kubeconfig
from support.operator_flow import FAST, FakeClock, FakeProber, add_app, row, run, status_is, until

UNUSABLE = (
    "error: app unusable: the app imports the module 'pandas', which is not installed "
    "in the enclave; add it to the requirements"
)


@asynccontextmanager
async def supervising_pods(
    settings: OperatorSettings, database: Database, target: KubernetesTarget
) -> AsyncIterator[KubeApi]:
    """A running supervisor whose backend is the Kubernetes one, on a fresh stand-in."""
    api = KubeApi()
    client = AsyncClient(kubeconfig(), namespace=NS, transport=AsyncTransport(api))
    backend = KubernetesBackend(client, target, stop_timeout=1.0, start_timeout=10.0)
    supervisor = Supervisor(
        settings,
        database,
        backend,
        BlobStore(settings.blobs_dir),
        prober=FakeProber(default=Probe.DOWN),
        options=dataclasses.replace(FAST, max_restarts=5),
        clock=FakeClock(),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop.wait))
    try:
        yield api
    finally:
        stop.set()
        await task
        await client.close()


async def running_pod(api: KubeApi, database: Database, app_id: uuid.UUID, n: int) -> str:
    """Play the kubelet: run the app's ``n``-th pod once the supervisor created it."""
    name = pod_name(app_id, n)
    await until(lambda: ("pods", NS, name) in api.objects, f"pod {name}")
    api.run_pod(NS, name, f"10.0.0.{n}")
    await until(lambda: row(database, app_id).runtime_pid == n, f"{app_id} to run pod {n}")
    return name


@pytest.mark.parametrize("target", [TARGET, GRAMINE], ids=["simulation", "gramine"])
def test_an_unusable_app_in_a_pod_is_on_error_at_once_with_its_node_gone(
    settings: OperatorSettings, database: Database, target: KubernetesTarget
) -> None:
    app_id = add_app(database)

    async def body() -> None:
        async with supervising_pods(settings, database, target) as api:
            name = await running_pod(api, database, app_id, 1)
            api.write_log(NS, name, f"starting\n{UNUSABLE}\n")
            api.end_pod(NS, name, EXIT_APP_UNUSABLE)
            api.lose_node(NS, name)
            await status_is(database, app_id, AppStatus.ON_ERROR)
            stored = row(database, app_id)
            assert stored.restarts == 0 and stored.runtime_pid is None
            assert stored.status_detail is not None
            assert "the module 'pandas'" in stored.status_detail
            assert "add it to the requirements" in stored.status_detail
            assert ("pods", NS, pod_name(app_id, 2)) not in api.objects  # never restarted

    run(body)


def test_a_pod_that_crashed_without_that_line_is_restarted(
    settings: OperatorSettings, database: Database
) -> None:
    """Guard: the classification is not every ended pod's."""
    app_id = add_app(database)

    async def body() -> None:
        async with supervising_pods(settings, database, TARGET) as api:
            name = await running_pod(api, database, app_id, 1)
            api.write_log(NS, name, "error: the package does not decrypt\n")
            api.end_pod(NS, name, 1)
            api.lose_node(NS, name)
            await running_pod(api, database, app_id, 2)
            assert row(database, app_id).restarts == 1

    run(body)
