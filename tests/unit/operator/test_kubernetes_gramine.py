"""Gramine in pods (ADR 0007, ADR 0018): the pod the Kubernetes backend sends under
``tee = "gramine"``, what its entry step does with Gramine's stand-ins (the MRENCLAVE it
signs is the owner's prediction), and exit reasons that carry the runtime's last line so
the supervisor classifies an unusable app."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
from lightkube import AsyncClient, KubeConfig

from confide.client import throwaway_sgx_signer
from confide.gramine import predict_app_mrenclave, render_app, runtime_environment
from confide.operator._backend import AppSpec, RuntimeHandle
from confide.operator._gramine import plan_enclave
from confide.operator._kubernetes import (
    AESMD_DIR,
    APP_DIR,
    GRAMINE_ENTRY,
    RUNTIME_PORT,
    KubernetesBackend,
    KubernetesTarget,
    launch_map_name,
    pod_name,
)
from confide.operator._settings import TeeBackend
from confide.wire import EXIT_APP_UNUSABLE, LaunchManifest, TlsMode, app_unusable
from gramine_standin import StandinConfig, install
from kube_standin import AsyncTransport, KubeApi

#: As in test_kubernetes_backend.py (the stand-in, the schemas' version, the app).
K8S_VERSION = "1.33.0"
NS = "apps"
APP = uuid.UUID("6f1c2a52-2b3c-4d5e-8f90-123456789abc")
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIBpublic\n-----END CERTIFICATE-----\n"
#: Stand-ins for what must never reach an object (the code key, a secret, a private key).
SECRETS = ("c0dekey" * 8, "app-secret-value", "-----BEGIN PRIVATE KEY-----")
TARGET = KubernetesTarget(
    namespace=NS,
    image="registry.example/confide-runtime@sha256:" + "ab" * 32,
    operator_id="op-1",
    blob_url="http://confide-operator.confide:8080/api/v1/blobs",
    simulation_claim="confide-simulation",
)


def spec(tls: TlsMode = TlsMode.OWNER) -> AppSpec:
    manifest = LaunchManifest(
        runtime_sha256=bytes(range(32)),
        package_sha256=hashlib.sha256(b"encrypted package").digest(),
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


GRAMINE = dataclasses.replace(TARGET, tee=TeeBackend.GRAMINE, simulation_claim=None)
#: What the stand-in kubelet keeps of a failed container's output (Kubernetes' documented cap).
UNUSABLE = "error: app unusable: the app imports the module 'pandas'; add it to the requirements"


def with_backend(
    target: KubernetesTarget, tls: TlsMode = TlsMode.OWNER
) -> Callable[
    [Callable[[KubeApi, KubernetesBackend, RuntimeHandle, str], Awaitable[None]]],
    Callable[[], None],
]:
    """Run an async test on a fresh stand-in with the app started (its pod running)."""

    def wrap(
        test: Callable[[KubeApi, KubernetesBackend, RuntimeHandle, str], Awaitable[None]],
    ) -> Callable[[], None]:
        def run() -> None:
            async def body() -> None:
                api = KubeApi()
                client = AsyncClient(kubeconfig(), namespace=NS, transport=AsyncTransport(api))
                backend = KubernetesBackend(client, target, stop_timeout=2.0, start_timeout=5.0)
                try:
                    task = asyncio.create_task(backend.start(spec(tls)))
                    name = pod_name(APP, 1)
                    while ("pods", NS, name) not in api.objects:
                        await asyncio.sleep(0)
                    api.run_pod(NS, name, "10.0.0.7")
                    handle = await asyncio.wait_for(task, 5)
                    await asyncio.wait_for(test(api, backend, handle, name), 20)
                finally:
                    await client.close()

            asyncio.run(body())

        run.__name__ = test.__name__
        return run

    return wrap


# -- the pod ----------------------------------------------------------------------------------


@with_backend(GRAMINE)
async def test_a_gramine_pod_and_its_launch_map_validate(
    api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
) -> None:
    assert (handle.host, handle.port, handle.pid) == ("10.0.0.7", RUNTIME_PORT, 1)
    pod = api.objects[("pods", NS, name)]
    runtime = pod["spec"]["containers"][0]
    assert runtime["command"] == ["python3", "-I", "-c", GRAMINE_ENTRY]
    size, threads = plan_enclave(512, 1)
    assert runtime["args"][:2] == [size, str(threads)]
    assert runtime["workingDir"] == str(APP_DIR)
    limits = runtime["resources"]["limits"]
    assert limits["sgx.intel.com/epc"] == "512Mi"
    assert limits["sgx.intel.com/enclave"] == limits["sgx.intel.com/provision"] == "1"
    assert pod["spec"]["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["aesmd"]["hostPath"] == {"path": str(AESMD_DIR), "type": "Directory"}
    assert volumes["signing-key"]["emptyDir"]["medium"] == "Memory"
    assert "simulation" not in volumes  # a real TEE: no simulated platform in the pod
    mounts = {m["mountPath"]: m for m in runtime["volumeMounts"]}
    assert mounts[str(AESMD_DIR)]["readOnly"] is True
    assert mounts[f"{APP_DIR}/certificate.pem"]["subPath"] == "certificate.pem"
    launch = api.objects[("configmaps", NS, launch_map_name(APP))]["data"]["launch.json"]
    assert LaunchManifest.from_json(launch) == spec().manifest
    kinds = [body.get("kind") for _, _, body in api.sent]
    assert {"Pod", "ConfigMap", "PersistentVolumeClaim"} <= set(kinds)
    assert kinds.count("ConfigMap") == 2  # the certificate's and the launch's
    assert validate_all(api) >= 4  # not vacuous: pod, claim, two maps


def test_the_schemas_refuse_a_wrong_host_path_type() -> None:
    """Guard: the Gramine pod's new fields are checked (a misspelt field fails)."""
    from confide.operator._kubernetes import gramine_arguments, pod_manifest

    pod = pod_manifest(GRAMINE, spec(), 1, gramine_arguments(spec()))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    volumes = pod["spec"]["volumes"]
    next(v for v in volumes if v["name"] == "aesmd")["hostPath"]["typo"] = "Directory"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@with_backend(GRAMINE)
async def test_no_secret_reaches_a_gramine_object(
    api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
) -> None:
    await backend.stop(handle)
    backend.remove_app(APP)
    await backend.wait_removed()
    assert not api.objects  # the launch map is removed with the app too
    sent = json.dumps([body for _, _, body in api.sent])
    assert "MIIBpublic" in sent and '"launch.json"' in sent  # guard: the maps were seen
    for secret in SECRETS:
        assert secret not in sent
    assert "PRIVATE KEY" not in sent and '"Secret"' not in sent and "secretKeyRef" not in sent
    for _, _, body in api.sent:
        if body.get("kind") == "Pod":
            for container in body["spec"]["containers"] + body["spec"]["initContainers"]:
                assert "env" not in container and "envFrom" not in container


def test_the_kubernetes_backend_still_refuses_a_td() -> None:
    from confide.errors import UsageError

    client = AsyncClient(kubeconfig(), namespace=NS, transport=AsyncTransport(KubeApi()))
    target = dataclasses.replace(TARGET, tee=TeeBackend.TDX, simulation_claim=None)
    with pytest.raises(UsageError, match="not tdx"):
        KubernetesBackend(client, target)


# -- what the pod runs: the owner's MRENCLAVE -------------------------------------------------


def _pod_path(root: Path, path: str) -> Path:
    """Where an absolute path of the pod's filesystem is in the test's ``root``."""
    return root / PurePosixPath(path).relative_to("/")


def _materialise(api: KubeApi, pod: dict[str, Any], root: Path) -> None:
    """Lay out the runtime container's volumes under ``root`` as the kubelet mounts them,
    with what the init container fetched: the package, the ConfigMaps' files."""
    maps = {k[2]: obj for k, obj in api.objects.items() if k[0] == "configmaps"}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for mount in pod["spec"]["containers"][0]["volumeMounts"]:
        where = _pod_path(root, mount["mountPath"])
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
    fetched = pod["spec"]["initContainers"][0]["args"][2]
    _pod_path(root, fetched).write_bytes(b"encrypted package")  # its SHA-256 is the manifest's


def _recorder(folder: Path) -> Path:
    """A ``gramine-sgx`` that records how it was started (the enclave itself is not run here:
    tests/e2e/test_gramine_launch.py runs the stand-in's on one host)."""
    folder.mkdir()
    record = folder / "started.json"
    program = (
        "import json,os,sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': dict(os.environ)}}, "
        f"open({str(record)!r}, 'w'))\n"
    )
    tool = folder / "gramine-sgx"
    tool.write_text(f"#!{sys.executable}\n{program}")
    tool.chmod(0o755)
    return record


@dataclasses.dataclass
class PodRun:
    """The runtime container's program, run as its pod would run it (see :func:`run_pod`)."""

    done: subprocess.CompletedProcess[str]
    root: Path
    args: list[str]
    record: Path
    standins: StandinConfig

    @property
    def app(self) -> Path:
        return _pod_path(self.root, str(APP_DIR))


def run_pod(
    tmp_path: Path, tls: TlsMode, before: Callable[[Path], None] = lambda root: None
) -> PodRun:
    """Start the app on the stand-in, lay the runtime container's volumes out under
    ``tmp_path`` from the objects sent, call ``before(root)``, and run its command there with
    Gramine's stand-ins first on PATH (``gramine-sgx`` only records how it was started)."""
    captured: dict[str, Any] = {}

    @with_backend(GRAMINE, tls)
    async def capture(
        api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
    ) -> None:
        captured["api"], captured["pod"] = api, api.objects[("pods", NS, name)]

    capture()
    api, pod = captured["api"], captured["pod"]
    root = tmp_path / "pod"
    _materialise(api, pod, root)
    before(root)
    runtime = pod["spec"]["containers"][0]
    record = _recorder(tmp_path / "launcher")
    standins = install(tmp_path / "bin", tmp_path / "platform")
    path = os.pathsep.join(
        [str(record.parent), str(standins.bin_dir), str(Path(sys.executable).parent)]
    )
    args = [_pod_path(root, a).as_posix() if a.startswith("/") else a for a in runtime["args"]]
    done = subprocess.run(  # noqa: S603 - the pod's own program
        [*runtime["command"], *args],
        cwd=_pod_path(root, runtime["workingDir"]),
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return PodRun(done, root, args, record, standins)


@pytest.mark.parametrize("tls", [TlsMode.OWNER, TlsMode.RATLS])
def test_the_pod_signs_the_mrenclave_the_owner_predicts(
    tmp_path: Path, tls: TlsMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime container's program, run as the pod would (its volumes laid out from the
    objects the backend sent), with Gramine's stand-ins: the SIGSTRUCT it writes holds the
    MRENCLAVE that ``predict_app_mrenclave`` (``confide fingerprint --tee gramine``, the
    owner's deploy) computes from public inputs, though the signing key is the pod's own."""
    run = run_pod(tmp_path, tls)
    done, app, args, record, standins = run.done, run.app, run.args, run.record, run.standins
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mr_enclave" in done.stdout  # the pod's log shows what it signed
    # The launch's key is gone before the enclave starts; nothing else holds a key.
    assert not any(Path(args[3]).parent.iterdir())
    started = json.loads(record.read_text())
    assert started["argv"] == ["confide-runtime"] and started["cwd"] == str(app)
    assert started["env"]["CONFIDE_LISTEN_PORT"] == str(RUNTIME_PORT)
    assert started["env"]["CONFIDE_LISTEN_HOST"] == "0.0.0.0"  # noqa: S104 - the pod's own
    view = subprocess.run(  # noqa: S603 - the stand-in's tool
        [str(standins.bin_dir / "gramine-sgx-sigstruct-view"), "--output-format=json",
         str(app / "confide-runtime.sig")],
        capture_output=True, check=True, timeout=60, text=True,
    )  # fmt: skip
    signed = json.loads(view.stdout)
    # The owner's prediction, from public inputs only: the launch manifest, this
    # environment (the image's), the plan's enclave size and threads, and the certificate.
    size, threads = plan_enclave(512, 1)
    certificate = None
    if tls == TlsMode.OWNER:
        certificate = tmp_path / "owner-certificate.pem"
        certificate.write_text(CERT_PEM)
    monkeypatch.setenv("PATH", f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    environment = runtime_environment()
    # Guard: the pod rendered exactly the owner's manifest, with the plan's values in it.
    rendered = (app / "confide-runtime.manifest").read_text()
    assert rendered == render_app(
        spec(tls).manifest, environment, enclave_size=size, max_threads=threads
    )
    assert f'sgx.enclave_size = "{size}"' in rendered
    predicted = predict_app_mrenclave(
        spec(tls).manifest,
        environment,
        enclave_size=size,
        max_threads=threads,
        signer_pem=throwaway_sgx_signer(),
        certificate=certificate,
    )
    assert signed["mr_enclave"] == predicted.hex()


def test_a_refused_signing_stops_the_pod_with_one_error_line_and_no_key_left(
    tmp_path: Path,
) -> None:
    """The owner's certificate (a trusted file) is missing: the signer refuses, the program
    exits 2 with an ``error:`` line last (the pod's exit reason), the enclave never starts
    and the launch's key was deleted all the same."""
    run = run_pod(
        tmp_path, TlsMode.OWNER, lambda root: (root / "confide-app" / "certificate.pem").unlink()
    )
    assert run.done.returncode == 2, run.done.stderr[-2000:]
    last = run.done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: gramine-sgx-sign failed (exit ")
    assert not any(Path(run.args[3]).parent.iterdir())
    assert not run.record.exists()  # gramine-sgx was not started


# -- exit reasons: the supervisor classifies an unusable app ----------------------------------


@pytest.mark.parametrize("target", [TARGET, GRAMINE], ids=["simulation", "gramine"])
def test_an_unusable_app_is_classified_when_its_node_is_gone(target: KubernetesTarget) -> None:
    """The runtime printed ``error: app unusable: ...`` and exited 4, then its node went away:
    the log cannot be read through the API, but the termination message
    (FallbackToLogsOnError) has the line, and the exit reason carries it with the code."""

    @with_backend(target)
    async def body(
        api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
    ) -> None:
        api.write_log(NS, name, f"starting\n{UNUSABLE}\n")
        api.end_pod(NS, name, EXIT_APP_UNUSABLE)
        api.lose_node(NS, name)
        assert not await backend.is_alive(handle)
        reason = backend.exit_reason(handle)
        assert f"exited with code {EXIT_APP_UNUSABLE}" in reason
        # What the supervisor does with it (_supervisor: app_unusable(exit_reason)).
        assert app_unusable(reason) == UNUSABLE.removeprefix("error: app unusable: ")

    body()


@with_backend(GRAMINE)
async def test_an_unusable_app_is_classified_from_its_log(
    api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
) -> None:
    api.write_log(NS, name, f"mr_enclave: {'ab' * 32}\n{UNUSABLE}\n")
    api.end_pod(NS, name, EXIT_APP_UNUSABLE)
    assert not await backend.is_alive(handle)
    reason = backend.exit_reason(handle)
    assert f"code {EXIT_APP_UNUSABLE}" in reason and app_unusable(reason) is not None


@with_backend(TARGET)
async def test_a_crash_with_no_output_left_is_not_taken_for_an_unusable_app(
    api: KubeApi, backend: KubernetesBackend, handle: RuntimeHandle, name: str
) -> None:
    api.write_log(NS, name, "starting\n")
    api.end_pod(NS, name, 1)
    api.lose_node(NS, name)
    assert not await backend.is_alive(handle)
    reason = backend.exit_reason(handle)
    assert "exited with code 1" in reason and "starting" in reason
    assert app_unusable(reason) is None


def test_the_standin_kubelet_keeps_output_only_under_the_fallback_policy() -> None:
    """The stand-in's termination message follows the policy (guard for the tests above)."""
    api = KubeApi()
    for policy in ("File", "FallbackToLogsOnError"):
        container = {"name": "runtime", "image": "x", "terminationMessagePolicy": policy}
        api.create("pods", NS, {"metadata": {"name": policy.lower()}, "spec": {
            "containers": [container]}})  # fmt: skip
        api.write_log(NS, policy.lower(), "".join(f"line {i}\n" for i in range(100)))
        api.end_pod(NS, policy.lower(), 1)
    kept = api.objects[("pods", NS, "file")]["status"]["containerStatuses"][0]["state"]
    assert "message" not in kept["terminated"]
    fallback = api.objects[("pods", NS, "fallbacktologsonerror")]["status"]
    message = fallback["containerStatuses"][0]["state"]["terminated"]["message"]
    assert message.startswith("line 20\n") and message.endswith("line 99\n")  # 80 lines
