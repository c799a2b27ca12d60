"""The Kubernetes backend on the API stand-in (tests/kube_standin), and a runtime pod's
program run on this machine as its pod would run it: the container's volumes laid out
under a folder from the objects the backend sent, its absolute paths mapped there."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
from lightkube import AsyncClient, KubeConfig

from confide.operator._backend import AppSpec, RuntimeHandle
from confide.operator._kubernetes import KubernetesBackend, KubernetesTarget, pod_name
from confide.operator._settings import TeeBackend
from confide.operator._wheels import WheelCache
from confide.wire import LaunchManifest, RequirementsLock, TlsMode
from kube_standin import AsyncTransport, KubeApi

#: The Kubernetes version whose schemas objects are checked against (the package is pinned).
K8S_VERSION = "1.33.0"
NS = "apps"
APP = uuid.UUID("6f1c2a52-2b3c-4d5e-8f90-123456789abc")
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBpublic\n-----END CERTIFICATE-----\n"
#: The package bytes the stand-in "fetches" (encrypted in real life; never opened here).
PACKAGE = b"encrypted package"
#: Stand-ins for what must never reach an object (the code key, a secret, a private key).
SECRETS = ("c0dekey" * 8, "app-secret-value", "-----BEGIN PRIVATE KEY-----")
TARGET = KubernetesTarget(
    namespace=NS,
    image="registry.example/confide-runtime@sha256:" + "ab" * 32,
    operator_id="op-1",
    blob_url="http://confide-operator.confide:8080/api/v1/blobs",
    simulation_claim="confide-simulation",
)
GRAMINE = dataclasses.replace(TARGET, tee=TeeBackend.GRAMINE, simulation_claim=None)
POD_IP = "10.0.0.7"


def spec(
    tls: TlsMode = TlsMode.OWNER,
    *,
    runtime_sha256: bytes = bytes(range(32)),
    lock: RequirementsLock | None = None,
) -> AppSpec:
    """The app's launch (its plan: 512 MiB, one core), locking ``lock`` if given."""
    manifest = LaunchManifest(
        requirements_sha256=lock.digest() if lock is not None else None,
        runtime_sha256=runtime_sha256,
        package_sha256=hashlib.sha256(PACKAGE).digest(),
        app_id=APP,
        application="app:app",
        tls=tls,
        ratls_expiry=2_000_000_000 if tls == TlsMode.RATLS else None,
        certificate_sha256=hashlib.sha256(b"leaf").digest() if tls == TlsMode.OWNER else None,
        san=("x.confide.localhost",),
        subject=None,
    )
    return AppSpec(
        app_id=APP,
        manifest=manifest,
        package=Path("/blobs/unused"),
        certificate_pem=CERT_PEM if tls == TlsMode.OWNER else None,
        memory_mib=512,
        cores=1,
    )


def kubeconfig() -> KubeConfig:
    return KubeConfig.from_dict(
        {
            "clusters": [{"name": "standin", "cluster": {"server": "http://kube.invalid"}}],
            "users": [{"name": "operator", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "operator"}}],
            "current-context": "c",
        }
    )


def validate_all(api: KubeApi) -> int:
    """Validate every object sent against Kubernetes' strict schemas; how many there were."""
    count = 0
    for _method, _path, body in api.sent:
        if body.get("kind") == "DeleteOptions":
            body = {"apiVersion": "v1", **body}
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        count += 1
    return count


Body = Callable[[KubeApi, KubernetesBackend, RuntimeHandle, str], Awaitable[None]]


def with_backend(
    target: KubernetesTarget, app: AppSpec | None = None, wheels: WheelCache | None = None
) -> Callable[[Body], Callable[[], None]]:
    """Run an async test on a fresh stand-in with ``app`` (default :func:`spec`) started,
    its pod running at :data:`POD_IP`; bounded in time. ``wheels``: the backend's wheel
    cache (an app that locks requirements needs one)."""

    def wrap(test: Body) -> Callable[[], None]:
        def run() -> None:
            async def body() -> None:
                api = KubeApi()
                client = AsyncClient(kubeconfig(), namespace=NS, transport=AsyncTransport(api))
                backend = KubernetesBackend(
                    client, target, stop_timeout=2.0, start_timeout=5.0, wheels=wheels
                )
                try:
                    task = asyncio.create_task(backend.start(app or spec()))
                    name = pod_name(APP, 1)
                    while ("pods", NS, name) not in api.objects:
                        if task.done():  # refused before its pod: say why, do not spin
                            task.result()
                            raise AssertionError("start() returned without a pod")
                        await asyncio.sleep(0)
                    api.run_pod(NS, name, POD_IP)
                    handle = await asyncio.wait_for(task, 5)
                    await asyncio.wait_for(test(api, backend, handle, name), 20)
                finally:
                    await client.close()

            asyncio.run(body())

        run.__name__ = test.__name__
        return run

    return wrap


def sent_pod(
    target: KubernetesTarget, app: AppSpec, wheels: WheelCache | None = None
) -> tuple[KubeApi, dict[str, Any]]:
    """The stand-in after ``app`` started, and the pod the backend created."""
    found: dict[str, Any] = {}

    @with_backend(target, app, wheels)
    async def capture(
        api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
    ) -> None:
        found["api"], found["pod"] = api, api.objects[("pods", NS, name)]

    capture()
    return found["api"], found["pod"]


def pod_path(root: Path, path: str) -> Path:
    """Where an absolute path of the pod's filesystem is under ``root``."""
    return root / PurePosixPath(path).relative_to("/")


def materialise(api: KubeApi, pod: dict[str, Any], root: Path, *, fetched: bool = True) -> None:
    """Lay out the runtime container's volumes under ``root`` as the kubelet mounts them
    (ConfigMaps' files, a ``subPath`` as one file, empty folders for the rest), with what
    the package's init container fetches: :data:`PACKAGE` where its arguments write it
    (``fetched``; else :func:`run_init_containers` runs them)."""
    maps = {k[2]: obj for k, obj in api.objects.items() if k[0] == "configmaps"}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for mount in pod["spec"]["containers"][0]["volumeMounts"]:
        where = pod_path(root, mount["mountPath"])
        source = volumes[mount["name"]]
        if "configMap" in source:
            data = maps[source["configMap"]["name"]]["data"]
            if "subPath" in mount:
                where.parent.mkdir(parents=True, exist_ok=True)
                where.write_text(data[mount["subPath"]])
            else:
                where.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (where / key).write_text(value)
        else:
            where.mkdir(parents=True, exist_ok=True)
    if fetched:
        pod_path(root, pod["spec"]["initContainers"][0]["args"][2]).write_bytes(PACKAGE)


def run_init_containers(pod: dict[str, Any], root: Path, *, timeout: float = 120) -> list[str]:
    """Run the pod's init containers in order as the kubelet would, their absolute paths
    mapped under ``root`` (their volumes are the runtime container's, laid out by
    :func:`materialise`) and ``python3`` the test's interpreter; stop at the first that
    fails. Their names, in the order they ran."""
    ran = []
    for container in pod["spec"]["initContainers"]:
        command = [sys.executable if c == "python3" else c for c in container["command"]]
        args = [pod_path(root, a).as_posix() if a.startswith("/") else a for a in container["args"]]
        done = subprocess.run(  # noqa: S603 - the pod's own program
            [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        ran.append(container["name"])
        if done.returncode != 0:
            raise AssertionError(f"init container {container['name']} failed: {done.stderr}")
    return ran


def pod_program(
    pod: dict[str, Any], root: Path, replace: Mapping[str, str] | None = None
) -> tuple[list[str], Path]:
    """The runtime container's argv (absolute paths mapped under ``root``, arguments in
    ``replace`` swapped) and working folder."""
    runtime = pod["spec"]["containers"][0]
    swapped = [(replace or {}).get(a, a) for a in runtime["args"]]
    args = [pod_path(root, a).as_posix() if a.startswith("/") else a for a in swapped]
    return [*runtime["command"], *args], pod_path(root, runtime.get("workingDir", "/"))


def run_program(
    argv: list[str], cwd: Path, path: list[Path], *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the pod's program with ``path`` as its PATH (Python's ``-I`` ignores the rest)."""
    return subprocess.run(  # noqa: S603 - the pod's own program
        argv,
        cwd=cwd,
        env={**os.environ, "PATH": os.pathsep.join(map(str, path))},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
