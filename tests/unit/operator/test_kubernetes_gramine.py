from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
from lightkube import AsyncClient

from confide.client import throwaway_sgx_signer
from confide.gramine import predict_app_mrenclave, render_app, runtime_environment
from confide.operator._backend import RuntimeHandle
from confide.operator._gramine import plan_enclave
from confide.operator._kubernetes import (
    AESMD_DIR,
    APP_DIR,
    GRAMINE_ENTRY,
    RUNTIME_PORT,
    KubernetesBackend,
    KubernetesTarget,
    gramine_arguments,
    launch_map_name,
    pod_manifest,
)
from confide.operator._settings import TeeBackend
from confide.operator._wheels import WheelCache
from confide.wire import (
    EXIT_APP_UNUSABLE,
    LaunchManifest,
    RequirementsLock,
    TlsMode,
    app_unusable,
)
from gramine_standin import StandinConfig, install
from kube_standin import AsyncTransport, KubeApi
from support.kube_pods import (
    APP,
    CERT_PEM,
    GRAMINE,
    K8S_VERSION,
    NS,
    SECRETS,
    TARGET,
    kubeconfig,
    materialise,
    pod_path,
    pod_program,
    run_program,
    sent_pod,
    spec,
    validate_all,
    with_backend,
)
from support.wheels import cache_wheel, lock_of, wheel_bytes

#: The runtime's line when it cannot import the app (issue 15: EXIT_APP_UNUSABLE).
UNUSABLE = "error: app unusable: the app imports the module 'pandas'; add it to the requirements"


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
        return pod_path(self.root, str(APP_DIR))


def run_pod(
    tmp_path: Path,
    tls: TlsMode,
    before: Callable[[Path], None] = lambda root: None,
    lock: RequirementsLock | None = None,
    wheels: WheelCache | None = None,
) -> PodRun:
    """Start the app on the stand-in, lay the runtime container's volumes out under
    ``tmp_path`` from the objects sent, call ``before(root)``, and run its command there with
    Gramine's stand-ins first on PATH (``gramine-sgx`` only records how it was started)."""
    api, pod = sent_pod(GRAMINE, spec(tls, lock=lock), wheels)
    root = tmp_path / "pod"
    materialise(api, pod, root)
    before(root)
    record = _recorder(tmp_path / "launcher")
    standins = install(tmp_path / "bin", tmp_path / "platform")
    argv, cwd = pod_program(pod, root)
    done = run_program(argv, cwd, [record.parent, standins.bin_dir, Path(sys.executable).parent])
    args = argv[4:]
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


def test_a_locked_apps_pod_signs_the_mrenclave_the_owner_predicts_from_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under Gramine the lock (its ConfigMap, at ``requirements.lock``) and the wheels the
    init container fetched (``wheels/<ab>/<cdef...>`` in the app's folder) are trusted files
    with the lock's hashes, as for a local Gramine enclave (ADR 0024, 0030): the manifest the
    pod renders with ``--requirements`` is the owner's, and so is the MRENCLAVE it signs."""
    wheel = wheel_bytes("tinydep", "1.0")
    lock = lock_of(("tinydep", "1.0", wheel))
    cache = WheelCache(tmp_path / "cache")
    cache.put_lock(lock)
    cache_wheel(cache.root, wheel)

    def fetched(root: Path) -> None:  # what the wheels' init container writes
        cache_wheel(pod_path(root, str(APP_DIR / "wheels")), wheel)

    api, pod = sent_pod(GRAMINE, spec(TlsMode.RATLS, lock=lock), cache)
    assert validate_all(api) >= 4  # the pod, the claim, the launch and requirements maps
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[f"{APP_DIR}/requirements.lock"]["subPath"] == "requirements.lock"
    assert mounts[f"{APP_DIR}/wheels"]["readOnly"] is True
    run = run_pod(tmp_path, TlsMode.RATLS, fetched, lock=lock, wheels=cache)
    assert run.done.returncode == 0, run.done.stderr[-2000:]
    assert run.args[-2:] == ["--requirements", "requirements.lock"]
    assert (run.app / "requirements.lock").read_bytes() == lock.to_bytes()
    size, threads = plan_enclave(512, 1)
    monkeypatch.setenv("PATH", f"{run.standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    environment = runtime_environment()
    manifest = spec(TlsMode.RATLS, lock=lock).manifest
    rendered = (run.app / "confide-runtime.manifest").read_text()
    assert rendered == render_app(
        manifest, environment, enclave_size=size, max_threads=threads, lock=lock
    )
    digest = lock.requirements[0].sha256.hex()
    assert f'sha256 = "{digest}"' in rendered  # guard: the wheel is a trusted file
    view = subprocess.run(  # noqa: S603 - the stand-in's tool
        [str(run.standins.bin_dir / "gramine-sgx-sigstruct-view"), "--output-format=json",
         str(run.app / "confide-runtime.sig")],
        capture_output=True, check=True, timeout=60, text=True,
    )  # fmt: skip
    predicted = predict_app_mrenclave(
        manifest,
        environment,
        enclave_size=size,
        max_threads=threads,
        signer_pem=throwaway_sgx_signer(),
        lock=lock,
    )
    assert json.loads(view.stdout)["mr_enclave"] == predicted.hex()
    unlocked = predict_app_mrenclave(
        spec(TlsMode.RATLS).manifest,
        environment,
        enclave_size=size,
        max_threads=threads,
        signer_pem=throwaway_sgx_signer(),
    )
    assert unlocked != predicted  # guard: the lock is part of what was signed


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
