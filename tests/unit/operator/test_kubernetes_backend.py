"""KubernetesBackend against the in-process API stand-in (tests/kube_standin), and every
object it sends validated against Kubernetes' own JSON schemas (kubernetes-validate)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import kubernetes_validate
import pytest
from lightkube import AsyncClient, Client

from confide.errors import UsageError
from confide.operator._backend import AppSpec, LaunchRefused, RuntimeBackend, RuntimeHandle
from confide.operator._kubernetes import (
    FETCH_SCRIPT,
    REQUIREMENTS_DIR,
    WHEELS_DIR,
    WHEELS_SCRIPT,
    KubernetesBackend,
    KubernetesLogSource,
    KubernetesTarget,
    pod_manifest,
    pod_name,
    requirements_map_name,
)
from confide.operator._settings import TeeBackend
from confide.operator._wheels import WheelCache
from kube_standin import AsyncTransport, KubeApi, SyncTransport
from support.kube_pods import (
    APP,
    CERT_PEM,
    K8S_VERSION,
    NS,
    PACKAGE,
    SECRETS,
    TARGET,
    kubeconfig,
    sent_pod,
    spec,
    validate_all,
    with_backend,
)
from support.wheels import cache_wheel, lock_of, wheel_bytes

#: Two locked wheels (name, version, bytes).
LOCKED = (
    ("tinydep", "1.0", wheel_bytes("tinydep", "1.0")),
    ("other", "2.0", wheel_bytes("other", "2.0")),
)


def with_env(
    test: Callable[[KubeApi, KubernetesBackend], Awaitable[None]],
) -> Callable[[], None]:
    """Run an async test with a fresh stand-in and backend, bounded in time."""

    def run() -> None:
        async def body() -> None:
            api = KubeApi()
            client = AsyncClient(
                kubeconfig(),
                namespace=NS,
                transport=AsyncTransport(api),
            )
            backend = KubernetesBackend(client, TARGET, stop_timeout=2.0, start_timeout=5.0)
            try:
                await asyncio.wait_for(test(api, backend), 20)
            finally:
                await client.close()

        asyncio.run(body())

    run.__name__ = test.__name__
    return run


async def started(
    api: KubeApi, backend: KubernetesBackend, ip: str = "10.0.0.7"
) -> tuple[RuntimeHandle, str]:
    """Start the app and play the scheduler/kubelet once its pod exists."""
    task = asyncio.create_task(backend.start(spec()))
    while not any(k[0] == "pods" for k in api.objects):
        await asyncio.sleep(0)
    name = next(k[2] for k in api.objects if k[0] == "pods")
    api.run_pod(NS, name, ip)
    return await asyncio.wait_for(task, 5), name


@with_env
async def test_start_creates_a_pod_claim_and_map_that_validate(
    api: KubeApi, backend: KubernetesBackend
) -> None:
    assert isinstance(backend, RuntimeBackend)
    handle, name = await started(api, backend)
    assert (handle.host, handle.port, handle.pid) == ("10.0.0.7", 8443, 1)
    assert name == pod_name(APP, 1)
    pod = api.objects[("pods", NS, name)]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    runtime = pod["spec"]["containers"][0]
    assert runtime["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert runtime["args"][0] == "runtime" and "--certificate" in runtime["args"]
    fetch = pod["spec"]["initContainers"][0]
    digest = hashlib.sha256(PACKAGE).hexdigest()
    assert fetch["args"][:2] == [f"{TARGET.blob_url}/{digest}", digest]
    assert ("persistentvolumeclaims", NS, f"confide-{APP}-state") in api.objects
    assert api.objects[("configmaps", NS, f"confide-{APP}-certificate")]["data"] == {
        "certificate.pem": CERT_PEM
    }
    assert validate_all(api) >= 3  # not vacuous: pod, claim, map


def test_sgx_resources_come_from_the_plan_and_validate() -> None:
    target = KubernetesTarget(
        namespace=NS, image="img", operator_id="op", blob_url="http://op/b", tee=TeeBackend.GRAMINE
    )
    pod = pod_manifest(target, spec(), 3, ["--app-id", str(APP)])
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["sgx.intel.com/epc"] == "512Mi"
    assert limits["sgx.intel.com/enclave"] == limits["sgx.intel.com/provision"] == "1"
    assert pod["spec"]["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_an_invalid_object_is_refused_by_the_schemas() -> None:
    """Guard: the validation can fail (a misspelt field under strict schemas)."""
    pod = pod_manifest(TARGET, spec(), 1, [])
    pod["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@with_env
async def test_no_secret_reaches_any_object(api: KubeApi, backend: KubernetesBackend) -> None:
    await started(api, backend)
    await backend.stop((await backend.discover())[0])
    backend.remove_app(APP)
    await backend.wait_removed()
    sent = json.dumps([body for _, _, body in api.sent])
    assert "MIIBpublic" in sent  # guard: the inspection saw the objects
    for secret in SECRETS:
        assert secret not in sent
    pods = [body for _, _, body in api.sent if body.get("kind") == "Pod"]
    assert pods  # guard: there was a pod to look at
    for pod in pods:
        # Nothing of the operator's environment (database URL, tokens) and no Secret.
        assert pod["spec"]["automountServiceAccountToken"] is False
        for container in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
            assert "env" not in container and "envFrom" not in container
        assert all("secret" not in volume for volume in pod["spec"]["volumes"])
    assert "PRIVATE KEY" not in sent and "secretKeyRef" not in sent and '"Secret"' not in sent


@with_env
async def test_status_failure_and_exit_reason(api: KubeApi, backend: KubernetesBackend) -> None:
    handle, name = await started(api, backend)
    assert await backend.is_alive(handle)
    api.write_log(NS, name, "starting\nerror: the package does not decrypt\n")
    api.end_pod(NS, name, 1)
    assert not await backend.is_alive(handle)
    reason = backend.exit_reason(handle)
    assert "exited with code 1" in reason and "does not decrypt" in reason


@with_env
async def test_restart_by_the_supervisor_makes_a_new_generation(
    api: KubeApi, backend: KubernetesBackend
) -> None:
    first, name = await started(api, backend)
    api.end_pod(NS, name, 2)
    assert not await backend.is_alive(first)
    backend.release(first)
    task = asyncio.create_task(backend.start(spec()))
    second_name = pod_name(APP, 2)
    while ("pods", NS, second_name) not in api.objects:
        await asyncio.sleep(0)
    api.run_pod(NS, second_name, "10.0.0.8")
    second = await asyncio.wait_for(task, 5)
    assert second.pid == 2 and second.host == "10.0.0.8"
    assert ("pods", NS, name) not in api.objects  # the ended launch was cleaned up


@with_env
async def test_a_pod_that_fails_before_running_is_refused(
    api: KubeApi, backend: KubernetesBackend
) -> None:
    task = asyncio.create_task(backend.start(spec()))
    while not any(k[0] == "pods" for k in api.objects):
        await asyncio.sleep(0)
    api.end_pod(NS, pod_name(APP, 1), 1)
    with pytest.raises(LaunchRefused, match="ended before it had an address"):
        await asyncio.wait_for(task, 5)


def _locked(tmp_path: Path) -> tuple[AppSpec, WheelCache]:
    """An app locking two wheels, and a wheel cache holding its lock and both wheels."""
    cache = WheelCache(tmp_path / "wheels")
    lock = lock_of(*LOCKED)
    cache.put_lock(lock)
    for _, _, data in LOCKED:
        cache_wheel(cache.root, data)
    return spec(lock=lock), cache


def test_a_locked_app_gets_its_lock_and_a_wheel_fetcher_and_every_object_validates(
    tmp_path: Path,
) -> None:
    """The pod fetches each locked wheel by its hash from the blob endpoint into a volume of
    its own, and the runtime is given the lock (its ConfigMap) and that folder (ADR 0030)."""
    app, cache = _locked(tmp_path)
    lock = cache.read_lock(app.manifest.requirements_sha256 or b"")
    api, pod = sent_pod(TARGET, app, cache)
    assert api.objects[("configmaps", NS, requirements_map_name(APP))]["data"] == {
        "requirements.lock": lock.to_bytes().decode()
    }
    init = {c["name"]: c for c in pod["spec"]["initContainers"]}
    assert list(init) == ["fetch-package", "fetch-wheels"]  # the package first, as before
    fetch = init["fetch-wheels"]
    assert fetch["command"] == ["python3", "-I", "-c", WHEELS_SCRIPT]
    assert fetch["args"][:2] == [TARGET.blob_url, str(WHEELS_DIR)]
    assert fetch["args"][6:] == [r.sha256.hex() for r in lock.requirements]
    assert len(fetch["args"][6:]) == len(LOCKED)  # not vacuous: every wheel, by hash
    runtime = pod["spec"]["containers"][0]
    args = runtime["args"]
    assert args[args.index("--requirements") + 1] == f"{REQUIREMENTS_DIR}/requirements.lock"
    assert args[args.index("--wheels") + 1] == str(WHEELS_DIR)
    mounts = {m["mountPath"]: m for m in runtime["volumeMounts"]}
    assert mounts[str(WHEELS_DIR)]["readOnly"] is True
    assert mounts[str(REQUIREMENTS_DIR)]["readOnly"] is True
    assert validate_all(api) >= 4  # not vacuous: pod, claim, two maps


def test_a_locked_app_is_refused_before_any_object_without_a_wheel_cache() -> None:
    """A backend built without the operator's wheel cache cannot serve the pod its wheels."""
    app = spec(lock=lock_of(*LOCKED))

    @with_env
    async def body(api: KubeApi, backend: KubernetesBackend) -> None:
        with pytest.raises(LaunchRefused, match="locks requirements, which a pod of a backend"):
            await backend.start(app)
        assert api.sent == []

    body()


def test_a_lock_not_in_the_cache_is_refused_before_any_object(tmp_path: Path) -> None:
    app = spec(lock=lock_of(*LOCKED))

    @with_env
    async def body(api: KubeApi, backend: KubernetesBackend) -> None:
        backend.wheels = WheelCache(tmp_path / "empty")
        with pytest.raises(LaunchRefused, match="is not stored"):
            await backend.start(app)
        assert api.sent == []

    body()


def test_the_pod_of_a_locked_app_must_be_given_its_lock() -> None:
    app = spec(lock=lock_of(*LOCKED))
    other = lock_of(LOCKED[0])
    for wrong in (None, other):
        with pytest.raises(UsageError, match="the requirements lock the launch manifest"):
            pod_manifest(TARGET, app, 1, [], wrong)
    with pytest.raises(UsageError, match="the requirements lock the launch manifest"):
        pod_manifest(TARGET, spec(), 1, [], other)


def test_no_secret_reaches_any_object_of_a_locked_app(tmp_path: Path) -> None:
    app, cache = _locked(tmp_path)

    @with_backend(TARGET, app, cache)
    async def body(
        api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
    ) -> None:
        await backend.stop(handle)
        backend.remove_app(APP)
        await backend.wait_removed()
        assert not api.objects  # the requirements map is removed with the app too
        sent = json.dumps([body for _, _, body in api.sent])
        assert "MIIBpublic" in sent and "tinydep==1.0" in sent  # guard: the maps were seen
        for secret in SECRETS:
            assert secret not in sent
        assert "PRIVATE KEY" not in sent and "secretKeyRef" not in sent and '"Secret"' not in sent
        for _, _, sent_body in api.sent:
            if sent_body.get("kind") == "Pod":
                assert all("secret" not in volume for volume in sent_body["spec"]["volumes"])
                for container in (
                    sent_body["spec"]["containers"] + sent_body["spec"]["initContainers"]
                ):
                    assert "env" not in container and "envFrom" not in container

    body()


@with_env
async def test_adoption_and_discovery_after_an_operator_restart(
    api: KubeApi, backend: KubernetesBackend
) -> None:
    handle, _ = await started(api, backend)
    backend.detach()
    client = AsyncClient(kubeconfig(), namespace=NS, transport=AsyncTransport(api))
    again = KubernetesBackend(client, TARGET)
    assert await again.discover() == [handle]
    assert await again.adopt(1, APP) == handle
    assert await again.adopt(2, APP) is None  # no such launch
    assert await again.adopt(1, uuid.uuid4()) is None
    other = KubernetesBackend(
        client,
        KubernetesTarget(NS, TARGET.image, "op-2", TARGET.blob_url, simulation_claim="s"),
    )
    assert await other.discover() == []  # another operator's pods are not ours
    await client.close()


@with_env
async def test_stop_and_delete(api: KubeApi, backend: KubernetesBackend) -> None:
    handle, name = await started(api, backend)
    await backend.stop(handle)
    assert ("pods", NS, name) not in api.objects
    assert not await backend.is_alive(handle)
    backend.remove_app(APP)
    await backend.wait_removed()
    assert not api.objects


@with_env
async def test_logs_through_the_api(api: KubeApi, backend: KubernetesBackend) -> None:
    _, name = await started(api, backend)
    api.write_log(NS, name, "one\ntwo\nthree\n")
    client = Client(kubeconfig(), namespace=NS, transport=SyncTransport(api))
    source = KubernetesLogSource(client, TARGET)
    data, offset = await asyncio.to_thread(source.read_end, APP, 2)
    assert data == b"two\nthree\n"
    api.write_log(NS, name, "four\n")
    more, _ = await asyncio.to_thread(source.read_from, APP, offset)
    assert more == b"four\n"
    assert FETCH_SCRIPT  # the init container's program is a constant, not per-app data


@with_env
async def test_a_watch_from_a_compacted_version_is_read_again(
    api: KubeApi, backend: KubernetesBackend
) -> None:
    """410 Gone while waiting for the pod's address: the backend reads the pod again."""
    fired: list[int] = []

    def compact_now() -> None:
        api.create("configmaps", NS, {"metadata": {"name": "unrelated"}})
        api.compact()
        fired.append(api.compacted)

    api.before_next_watch = compact_now
    task = asyncio.create_task(backend.start(spec()))
    while not fired:
        await asyncio.sleep(0)
    api.run_pod(NS, pod_name(APP, 1), "10.0.0.9")
    handle = await asyncio.wait_for(task, 5)
    assert handle.host == "10.0.0.9"


@with_env
async def test_remove_app_from_a_worker_thread(api: KubeApi, backend: KubernetesBackend) -> None:
    """The supervisor removes an app's files with ``asyncio.to_thread`` (no loop there)."""
    await started(api, backend)
    assert api.objects  # guard
    await asyncio.to_thread(backend.remove_app, APP)
    assert not api.objects
