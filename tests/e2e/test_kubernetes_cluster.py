"""Opt-in: the Kubernetes backend on a real cluster, with the simulated TEE (ADR 0007).

Skipped unless ``KUBECONFIG`` is set, and then unless the cluster side is described:

- ``CONFIDE_K8S_IMAGE``: a runtime image built from this tree (``Containerfile``),
  pullable by the cluster;
- ``CONFIDE_K8S_NAMESPACE``: a namespace the kubeconfig's user may manage pods,
  PersistentVolumeClaims and ConfigMaps in;
- ``CONFIDE_K8S_SIMULATION_CLAIM``: a claim in it holding a simulated platform's state;
- ``CONFIDE_K8S_HOST``: this machine's address as the cluster's pods reach it (the test
  serves the package from here, on a free port).

It packages the example app, starts its runtime as a pod through
:class:`KubernetesBackend` (the init container fetches the package by digest and checks
it), waits until the runtime reports it is waiting for its configuration (it measured
the launch and got a simulated quote), reads that through the pod log, then stops the
pod and removes the app's objects. The owner's configuration and the users' verification
through the router are the same code as on one host and are not repeated here.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod

from confide.operator import AppSpec
from confide.operator._kubernetes import (
    KubernetesBackend,
    KubernetesLogSource,
    KubernetesTarget,
)
from confide.runtime import runtime_code_hash
from confide.wire import LaunchManifest, TlsMode
from support.runtimes import EXAMPLES, CodeUnderTest

_NEEDED = (
    "CONFIDE_K8S_IMAGE",
    "CONFIDE_K8S_NAMESPACE",
    "CONFIDE_K8S_SIMULATION_CLAIM",
    "CONFIDE_K8S_HOST",
)
_MISSING = [name for name in ("KUBECONFIG", *_NEEDED) if not os.environ.get(name)]

pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason="needs a Kubernetes cluster: set " + ", ".join(_MISSING) + " (see the module doc)",
)


def test_a_runtime_runs_as_a_pod(tmp_path: Path) -> None:
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "package")
    served = tmp_path / "blobs"
    served.mkdir()
    (served / code.digest.hex()).write_bytes(code.path.read_bytes())
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)  # noqa: S104 - pods fetch
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app_id = uuid.uuid4()
    namespace = os.environ["CONFIDE_K8S_NAMESPACE"]
    target = KubernetesTarget(
        namespace=namespace,
        image=os.environ["CONFIDE_K8S_IMAGE"],
        operator_id=f"e2e-{app_id.hex[:8]}",
        blob_url=f"http://{os.environ['CONFIDE_K8S_HOST']}:{server.server_address[1]}",
        simulation_claim=os.environ["CONFIDE_K8S_SIMULATION_CLAIM"],
    )
    manifest = LaunchManifest(
        runtime_sha256=runtime_code_hash(),
        package_sha256=code.digest,
        app_id=app_id,
        application="app:app",
        tls=TlsMode.RATLS,
        ratls_expiry=int((datetime.now(UTC) + timedelta(days=1)).timestamp()),
        certificate_sha256=None,
        san=("localhost",),
        subject=None,
    )
    spec = AppSpec(app_id, manifest, code.path, None, memory_mib=512, cores=1)

    async def flow() -> None:
        config = KubeConfig.from_env()
        client = AsyncClient(config, namespace=namespace)
        backend = KubernetesBackend(client, target)
        logs = KubernetesLogSource(Client(config, namespace=namespace), target)
        try:
            handle = await backend.start(spec)
            assert await backend.is_alive(handle)
            deadline = asyncio.get_running_loop().time() + 120
            while b"waiting for the configuration" not in logs.read_end(app_id, None)[0]:
                assert await backend.is_alive(handle), backend.exit_reason(handle)
                assert asyncio.get_running_loop().time() < deadline, "the runtime did not start"
                await asyncio.sleep(1)  # polling a remote log, not waiting for readiness
            assert [h.app_id for h in await backend.discover()] == [app_id]
            await backend.stop(handle)
            assert not await backend.is_alive(handle)
        finally:
            backend.remove_app(app_id)
            await backend.wait_removed()
            selector: dict[str, Any] = {"confide.dev/app-id": str(app_id)}
            for kind in (Pod, PersistentVolumeClaim, ConfigMap):
                left = [o async for o in client.list(kind, namespace=namespace, labels=selector)]
                assert not left or kind is Pod  # pods may still be terminating
            await client.close()
            server.shutdown()

    asyncio.run(flow())
