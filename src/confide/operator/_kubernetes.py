"""The operator's Kubernetes backend: each app's runtime in a pod (ADR 0007).

:class:`KubernetesBackend` implements :class:`~._backend.RuntimeBackend` with the
Kubernetes API (through lightkube's async client), in one namespace:

- **one pod per app launch**, ``confide-<app id>-<generation>``, running the runtime
  image with exactly ``confide runtime <runtime_arguments(...)>``, ``restartPolicy:
  Never`` (restarts stay the supervisor's), no service-account token, no service
  links; its ``RuntimeHandle.pid`` is the launch's *generation* (1, 2, ...), also a
  label, so the protocol's integer stays a stable reference (the pod's name);
- **resources from the plan**: CPU and memory requests and limits and, for SGX,
  ``sgx.intel.com/epc`` (the plan's memory), ``sgx.intel.com/enclave`` and
  ``sgx.intel.com/provision`` (Intel's device plugin), on nodes labelled
  ``intel.feature.node.kubernetes.io/sgx=true``;
- **the sealed state** on a per-app PersistentVolumeClaim ``confide-<app id>-state``,
  kept across launches and removed with the app;
- **the package fetched by digest**: an init container runs :data:`FETCH_SCRIPT`,
  which downloads ``<blob_url>/<sha256>`` from the operator, checks its SHA-256
  and writes it to the pod's ``/package`` (an ``emptyDir``); a wrong hash fails the
  pod. The package is encrypted (ADR 0006): nothing secret is sent;
- **locked requirements** (ADR 0024, 0030): the operator fetches the lock's wheels into
  its wheel cache first (:class:`~._wheels.WheelCache`, as every backend does); the lock
  (public: names, versions, hashes) goes in a ConfigMap ``confide-<app id>-requirements``,
  and a second init container runs :data:`WHEELS_SCRIPT`, which downloads each wheel by the
  SHA-256 the lock names from ``<blob_url>/<sha256>`` (the API serves only the wheels of
  live apps' locks) into the pod's ``wheels`` folder (an ``emptyDir``), bounded in size,
  without checking it: the runtime checks every wheel against the measured lock while it
  installs it, exactly as for a local app (a wrong one is ``requirements.hash_mismatch``,
  the app ``on_error``). Under Gramine the lock and the wheels are in the app's folder,
  where the manifest the pod renders names them as trusted files with the lock's hashes;
- **the owner's certificate** (certificate mode) in a ConfigMap
  ``confide-<app id>-certificate``: it is public;
- **the simulated platform** (simulated TEEs only) on a claim the operator's
  administrator provides (``simulation_claim``), referenced by name;
- **Gramine** (``tee = "gramine"``): the launch manifest (public) in a ConfigMap
  ``confide-<app id>-launch``; the runtime container runs :data:`GRAMINE_ENTRY` in the
  app's folder :data:`APP_DIR`, which renders the Gramine manifest *in the image* with
  ``confide gramine manifest`` (the image's files are what its trusted files measure: the
  owner's prediction, ``confide fingerprint --tee gramine`` in the same image, renders the
  same text), signs it with ``gramine-sgx-sign`` and a key made in the pod for this launch
  (on a memory ``emptyDir``, deleted once signed: MRENCLAVE does not depend on the signer,
  and the sealing keys are MRENCLAVE-bound, ADR 0018), prints the SIGSTRUCT, then
  ``exec gramine-sgx``. The node's AESM socket folder (``/var/run/aesmd``) is mounted
  read-only for DCAP quotes; the SGX device plugin adds ``/dev/sgx_enclave`` and
  ``/dev/sgx_provision`` for the pod's ``sgx.intel.com`` resources;
- **exit reasons**: the runtime container's ``terminationMessagePolicy`` is
  ``FallbackToLogsOnError``, so a failed container's termination state carries the tail of
  its output even when its log can no longer be read; the reason gives the exit code and
  the runtime's last (error) line, which the supervisor classifies (``error: app unusable``);
- **adoption and discovery by labels**: ``confide.dev/operator``, ``confide.dev/app-id``
  and ``confide.dev/generation``; the launch manifest's measurement is an annotation;
- **logs through the API** (:class:`KubernetesLogSource`).

The code key, the app's secrets and any private key never reach a Kubernetes object:
the runtime receives them from the owner over attested TLS, as with every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lightkube import ApiError, AsyncClient, Client
from lightkube.codecs import from_dict
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod

from confide.errors import UsageError
from confide.gramine import APP_REQUIREMENTS, APP_WHEELS, HOST_VARIABLE, PORT_VARIABLE
from confide.runtime import LaunchTee, runtime_arguments
from confide.wire import RequirementsLock, TlsMode

from ._backend import (
    STOP_TIMEOUT,
    AppSpec,
    LaunchRefused,
    RuntimeHandle,
    fetch_requirements,
    refuse_requirements,
)
from ._gramine import plan_enclave
from ._logs import MAX_LOG_BYTES
from ._settings import TeeBackend
from ._wheels import MAX_WHEEL_SIZE, WheelCache

#: Labels and annotations the backend puts on its objects.
LABEL_OPERATOR: Final = "confide.dev/operator"
LABEL_APP: Final = "confide.dev/app-id"
LABEL_GENERATION: Final = "confide.dev/generation"
ANNOTATION_MEASUREMENT: Final = "confide.dev/measurement"
#: The runtime's port inside its pod (each pod has its own IP).
RUNTIME_PORT: Final = 8443
#: Where the pod's volumes are mounted.
PACKAGE_DIR: Final = Path("/package")
STATE_DIR: Final = Path("/state")
CERTIFICATE_DIR: Final = Path("/certificate")
SIMULATION_DIR: Final = Path("/simulation")
#: Under Gramine: the folder ``gramine-sgx`` runs in (the manifest names ``package``,
#: ``state`` and ``certificate.pem`` relative to it, as an owner's prediction does), the
#: launch manifest's ConfigMap, the launch's signing key (memory only) and the node's AESM.
APP_DIR: Final = Path("/confide-app")
LAUNCH_DIR: Final = Path("/confide-launch")
KEY_DIR: Final = Path("/confide-key")
AESMD_DIR: Final = Path("/var/run/aesmd")
LAUNCH_FILE: Final = "launch.json"
#: Simulated TEEs: where the runtime container has the app's requirements lock (its
#: ConfigMap) and the wheels the init container fetched (ADR 0030).
REQUIREMENTS_DIR: Final = Path("/requirements")
WHEELS_DIR: Final = Path("/wheels")
REQUIREMENTS_FILE: Final = "requirements.lock"
#: Most bytes of wheels one pod fetches (the runtime installs at most as much: its
#: ``MAX_WHEELS_TOTAL``), and the ``wheels`` volume's size limit.
MAX_POD_WHEELS: Final = 4 * 1024 * 1024 * 1024
#: Seconds the wheels' init container may take in all (retries on 429/503 included), and
#: the longest ``Retry-After`` it honours.
WHEELS_TIMEOUT: Final = 1800
WHEELS_RETRY_AFTER_MAX: Final = 30
#: How long a started pod may take to get an IP (scheduling, image pull, package fetch).
START_TIMEOUT: Final = 300.0
#: Most generations kept per app (older failed pods are deleted at the next start).
MAX_GENERATION: Final = 1_000_000
#: Most lines of a log read for an exit reason, and most characters of its line kept.
_REASON_TAIL_LINES: Final = 20
_MAX_REASON_LINE: Final = 500
#: Most characters of a termination message read (the kubelet keeps 2048 bytes of output).
_MAX_TERMINATION_MESSAGE: Final = 4096
#: Fetches argv[1] (a URL), checks that its SHA-256 is argv[2], writes it to argv[3].
#: Runs in the init container with the runtime image's Python; no secret is involved.
FETCH_SCRIPT: Final = (
    "import hashlib,os,sys,urllib.request\n"
    "url,digest,out=sys.argv[1:4]\n"
    "h=hashlib.sha256();tmp=out+'.tmp'\n"
    "with urllib.request.urlopen(url,timeout=60) as r,open(tmp,'wb') as f:\n"
    "    while b:=r.read(1<<20):\n"
    "        h.update(b);f.write(b)\n"
    "if h.hexdigest()!=digest:\n"
    "    sys.exit(f'error: package {url} has SHA-256 {h.hexdigest()}, expected {digest}')\n"
    "os.replace(tmp,out)\n"
)
#: Fetches wheels by digest into a folder laid out as the wheel cache (``<ab>/<cdef...>``):
#: ``python3 -I -c WHEELS_SCRIPT URL OUT MAX_ONE MAX_ALL TIMEOUT RETRY_MAX SHA256...``, each
#: ``URL/<sha256>``. Only a transport, bounded: a digest that is not 64 lowercase hex digits,
#: a wheel over MAX_ONE bytes or all of them over MAX_ALL, an HTTP error other than 429/503
#: (which are retried after their ``Retry-After``, at most RETRY_MAX seconds; one that is not
#: a few ASCII digits counts as 1) or TIMEOUT seconds in all (checked after each read as well
#: as before each request, so a sender that trickles is cut too) stop it with one ``error:``
#: line and exit 1. It checks no hash on purpose:
#: the runtime checks each wheel against the measured lock (ADR 0030). No secret is involved.
WHEELS_SCRIPT: Final = (
    "import os,sys,time,urllib.error,urllib.request\n"
    "url,out=sys.argv[1:3];one,left,limit,most=map(int,sys.argv[3:7])\n"
    "end=time.monotonic()+limit\n"
    "def fail(why):\n"
    "    sys.exit(f'error: fetching the wheels failed: {why}')\n"
    "for d in sys.argv[7:]:\n"
    "    if len(d)!=64 or d.strip('0123456789abcdef'):\n"
    "        fail(f'{d[:80]!r} is not a SHA-256')\n"
    "    os.makedirs(os.path.join(out,d[:2]),exist_ok=True)\n"
    "    final=os.path.join(out,d[:2],d[2:]);tmp=final+'.tmp'\n"
    "    while True:\n"
    "        if time.monotonic()>end:\n"
    "            fail(f'not done after {limit} s')\n"
    "        try:\n"
    "            n=0\n"
    "            t=max(1,min(60,end-time.monotonic()))\n"
    "            with urllib.request.urlopen(f'{url}/{d}',timeout=t) as r,open(tmp,'wb') as f:\n"
    "                while b:=r.read1(1<<20):\n"
    "                    if time.monotonic()>end:\n"
    "                        fail(f'not done after {limit} s')\n"
    "                    n+=len(b)\n"
    "                    if n>min(one,left):\n"
    "                        fail(f'wheel {d} is larger than {min(one,left)} bytes')\n"
    "                    f.write(b)\n"
    "            break\n"
    "        except urllib.error.HTTPError as e:\n"
    "            if e.code not in (429,503):\n"
    "                fail(f'wheel {d}: HTTP {e.code}')\n"
    "            wait=(e.headers.get('Retry-After') or '1').strip()\n"
    "            ok=wait.isascii() and wait.isdigit() and len(wait)<10\n"
    "            time.sleep(min(most,max(1,int(wait))) if ok else 1)\n"
    "        except OSError as e:\n"
    "            fail(f'wheel {d}: {e}')\n"
    "    left-=n;os.replace(tmp,final)\n"
)
#: The runtime container's program under Gramine (``python3 -I -c GRAMINE_ENTRY SIZE THREADS
#: LAUNCH KEY PORT [--requirements requirements.lock]``, in :data:`APP_DIR`; the last two are
#: passed on to ``confide gramine manifest``): a fresh SGX signing key (RSA-3072, exponent 3)
#: for this launch only, written 0600 to a memory volume; the Gramine manifest of the launch
#: manifest rendered in this image by ``confide gramine manifest`` (what ``confide fingerprint
#: --tee gramine`` renders); signed; the key deleted; the SIGSTRUCT printed (the log shows the
#: MRENCLAVE); then ``gramine-sgx`` in this process, so the container's exit code is the
#: runtime's. A failed step prints one ``error:`` line and exits 2. No secret is involved.
GRAMINE_ENTRY: Final = (
    "import os,subprocess,sys\n"
    "from cryptography.hazmat.primitives import serialization as s\n"
    "from cryptography.hazmat.primitives.asymmetric import rsa\n"
    "size,threads,launch,key=sys.argv[1:5]\n"
    "def run(*argv):\n"
    "    if code:=subprocess.run(argv).returncode:\n"
    "        print(f'error: {argv[0]} failed (exit {code}) before the enclave started',\n"
    "              file=sys.stderr)\n"
    "        sys.exit(2)\n"
    "k=rsa.generate_private_key(public_exponent=3,key_size=3072)\n"
    "with os.fdopen(os.open(key,os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o600),'wb') as f:\n"
    "    f.write(k.private_bytes(s.Encoding.PEM,s.PrivateFormat.PKCS8,s.NoEncryption()))\n"
    "try:\n"
    "    run('confide','gramine','manifest','--manifest',launch,'--enclave-size',size,\n"
    "        '--max-threads',threads,'--output','confide-runtime.manifest',*sys.argv[6:])\n"
    "    run('gramine-sgx-sign','--manifest','confide-runtime.manifest',\n"
    "        '--output','confide-runtime.manifest.sgx','--key',key)\n"
    "finally:\n"
    "    os.unlink(key)\n"
    "run('gramine-sgx-sigstruct-view','confide-runtime.sig')\n"
    "sys.stdout.flush()\n"
    f"os.environ.update({{{HOST_VARIABLE!r}:'0.0.0.0',{PORT_VARIABLE!r}:sys.argv[5]}})\n"
    "os.execvp('gramine-sgx',['gramine-sgx','confide-runtime'])\n"
)
_LAUNCH_TEE: Final[dict[TeeBackend, LaunchTee]] = {
    TeeBackend.SIMULATION: "simulation",
    TeeBackend.SIMULATION_TDX: "simulation-tdx",
}


@dataclass(frozen=True, slots=True)
class KubernetesTarget:
    """Where and how the backend runs pods."""

    namespace: str
    #: The runtime image (by digest in production: ``registry/confide-runtime@sha256:...``).
    image: str
    #: This operator's name on its objects (several operators may share a namespace).
    operator_id: str
    #: Where pods fetch packages: ``<blob_url>/<sha256 hex>`` (the operator's
    #: ``/api/v1/blobs``, reachable from the pods).
    blob_url: str
    tee: TeeBackend = TeeBackend.SIMULATION
    #: A claim holding the simulated platform's state (simulated TEEs only).
    simulation_claim: str | None = None
    #: Size of each app's state claim, and its storage class (the cluster's default if None).
    state_size: str = "1Gi"
    storage_class: str | None = None

    def __post_init__(self) -> None:
        if self.tee.simulated != (self.simulation_claim is not None):
            raise UsageError("give a simulation claim exactly with a simulated TEE")


def pod_name(app_id: uuid.UUID, generation: int) -> str:
    return f"confide-{app_id}-{generation}"


def state_claim_name(app_id: uuid.UUID) -> str:
    return f"confide-{app_id}-state"


def certificate_map_name(app_id: uuid.UUID) -> str:
    return f"confide-{app_id}-certificate"


def launch_map_name(app_id: uuid.UUID) -> str:
    return f"confide-{app_id}-launch"


def requirements_map_name(app_id: uuid.UUID) -> str:
    return f"confide-{app_id}-requirements"


def _labels(target: KubernetesTarget, app_id: uuid.UUID) -> dict[str, str]:
    return {LABEL_OPERATOR: target.operator_id, LABEL_APP: str(app_id)}


def pod_resources(spec: AppSpec, *, sgx: bool) -> dict[str, str]:
    """Requests and limits (equal) for the plan: CPU, memory and, for SGX, the plugin's."""
    resources = {"cpu": str(spec.cores), "memory": f"{spec.memory_mib}Mi"}
    if sgx:
        resources |= {
            "sgx.intel.com/epc": f"{spec.memory_mib}Mi",
            "sgx.intel.com/enclave": "1",
            "sgx.intel.com/provision": "1",
        }
    return resources


def gramine_arguments(spec: AppSpec) -> list[str]:
    """The arguments of :data:`GRAMINE_ENTRY` for ``spec``: the plan's enclave size and thread
    count (``plan_enclave``, what the API tells owners), the launch manifest, the key's path
    and the port."""
    enclave_size, max_threads = plan_enclave(spec.memory_mib, spec.cores)
    launch = LAUNCH_DIR / LAUNCH_FILE
    key = KEY_DIR / "enclave-key.pem"
    arguments = [enclave_size, str(max_threads), str(launch), str(key), str(RUNTIME_PORT)]
    if spec.manifest.requirements_sha256 is not None:
        # The lock in the app's folder (its ConfigMap), where the rendered manifest names it.
        arguments += ["--requirements", str(APP_REQUIREMENTS)]
    return arguments


def wheels_fetch_arguments(
    target: KubernetesTarget, lock: RequirementsLock, out: Path
) -> list[str]:
    """The arguments of :data:`WHEELS_SCRIPT` for ``lock``: every file it locks (wheels,
    sdists, build-only wheels), by its SHA-256, into ``out``."""
    return [
        target.blob_url.rstrip("/"),
        str(out),
        str(MAX_WHEEL_SIZE),
        str(MAX_POD_WHEELS),
        str(WHEELS_TIMEOUT),
        str(WHEELS_RETRY_AFTER_MAX),
        *(r.sha256.hex() for r in lock.requirements),
    ]


def pod_manifest(
    target: KubernetesTarget,
    spec: AppSpec,
    generation: int,
    arguments: list[str],
    lock: RequirementsLock | None = None,
) -> dict[str, Any]:
    """The pod of one launch (pure: the tests validate it against Kubernetes' schema).
    ``arguments``: ``confide runtime``'s (simulated TEEs) or :func:`gramine_arguments`;
    ``lock``: the app's requirements lock, exactly when its launch manifest measures one."""
    if (lock is None) != (spec.manifest.requirements_sha256 is None) or (
        lock is not None and lock.digest() != spec.manifest.requirements_sha256
    ):
        raise UsageError("give the requirements lock the launch manifest measures, or none")
    gramine = target.tee == TeeBackend.GRAMINE
    sgx = not target.tee.simulated
    digest = spec.manifest.package_sha256.hex()
    package = str((APP_DIR if gramine else PACKAGE_DIR) / "package")
    resources = pod_resources(spec, sgx=sgx)
    owner = spec.manifest.tls == TlsMode.OWNER
    volumes: list[dict[str, Any]] = [
        {"name": "package", "emptyDir": {}},
        {
            "name": "state",
            "persistentVolumeClaim": {"claimName": state_claim_name(spec.app_id)},
        },
    ]
    if owner:
        volumes.append(
            {"name": "certificate", "configMap": {"name": certificate_map_name(spec.app_id)}}
        )
    if gramine:
        # The app's folder holds the package (fetched), the state claim and the certificate
        # at the relative paths the Gramine manifest names (confide.gramine.app_manifest).
        fetch_mount = {"name": "package", "mountPath": str(APP_DIR)}
        mounts: list[dict[str, Any]] = [
            {"name": "package", "mountPath": str(APP_DIR)},
            {"name": "state", "mountPath": str(APP_DIR / "state")},
            {"name": "launch", "mountPath": str(LAUNCH_DIR), "readOnly": True},
            {"name": "signing-key", "mountPath": str(KEY_DIR)},
            {"name": "aesmd", "mountPath": str(AESMD_DIR), "readOnly": True},
        ]
        if owner:
            mounts.append(
                {
                    "name": "certificate",
                    "mountPath": str(APP_DIR / "certificate.pem"),
                    "subPath": "certificate.pem",
                    "readOnly": True,
                }
            )
        volumes += [
            {"name": "launch", "configMap": {"name": launch_map_name(spec.app_id)}},
            # The launch's signing key: in memory only, and deleted once the manifest is signed.
            {"name": "signing-key", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            # DCAP quotes: Gramine asks the node's AESM (its quoting enclave) over this socket.
            {"name": "aesmd", "hostPath": {"path": str(AESMD_DIR), "type": "Directory"}},
        ]
        runtime: dict[str, Any] = {
            "command": ["python3", "-I", "-c", GRAMINE_ENTRY],
            "args": arguments,
            "workingDir": str(APP_DIR),
        }
    else:
        fetch_mount = {"name": "package", "mountPath": str(PACKAGE_DIR)}
        mounts = [
            {"name": "package", "mountPath": str(PACKAGE_DIR), "readOnly": True},
            {"name": "state", "mountPath": str(STATE_DIR)},
        ]
        if owner:
            mounts.append(
                {"name": "certificate", "mountPath": str(CERTIFICATE_DIR), "readOnly": True}
            )
        runtime = {"command": ["confide"], "args": ["runtime", *arguments]}
    init_containers: list[dict[str, Any]] = [
        {
            "name": "fetch-package",
            "image": target.image,
            "command": ["python3", "-I", "-c", FETCH_SCRIPT],
            "args": [f"{target.blob_url.rstrip('/')}/{digest}", digest, package],
            "volumeMounts": [fetch_mount],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        }
    ]
    if lock is not None:
        # The wheels, fetched by hash (untrusted: the runtime checks each against the lock).
        wheels = APP_DIR / APP_WHEELS if gramine else WHEELS_DIR
        volumes += [
            {"name": "wheels", "emptyDir": {"sizeLimit": str(MAX_POD_WHEELS)}},
            {"name": "requirements", "configMap": {"name": requirements_map_name(spec.app_id)}},
        ]
        mounts.append({"name": "wheels", "mountPath": str(wheels), "readOnly": True})
        if gramine:
            mounts.append(
                {
                    "name": "requirements",
                    "mountPath": str(APP_DIR / APP_REQUIREMENTS),
                    "subPath": REQUIREMENTS_FILE,
                    "readOnly": True,
                }
            )
        else:
            mounts.append(
                {"name": "requirements", "mountPath": str(REQUIREMENTS_DIR), "readOnly": True}
            )
        init_containers.append(
            {
                "name": "fetch-wheels",
                "image": target.image,
                "command": ["python3", "-I", "-c", WHEELS_SCRIPT],
                "args": wheels_fetch_arguments(target, lock, wheels),
                "volumeMounts": [{"name": "wheels", "mountPath": str(wheels)}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            }
        )
    if target.simulation_claim is not None:
        mounts.append({"name": "simulation", "mountPath": str(SIMULATION_DIR)})
        volumes.append(
            {"name": "simulation", "persistentVolumeClaim": {"claimName": target.simulation_claim}}
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "initContainers": init_containers,
        "containers": [
            {
                "name": "runtime",
                "image": target.image,
                **runtime,
                "ports": [{"name": "tls", "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
                "resources": {"requests": resources, "limits": resources},
                "volumeMounts": mounts,
                "securityContext": {"allowPrivilegeEscalation": False},
                # A failed container's termination message is the tail of its output (its
                # error line): the exit reason has it even when the log cannot be read.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    if sgx:
        pod_spec["nodeSelector"] = {"intel.feature.node.kubernetes.io/sgx": "true"}
    labels = _labels(target, spec.app_id) | {LABEL_GENERATION: str(generation)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(spec.app_id, generation),
            "namespace": target.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_MEASUREMENT: spec.manifest.measurement().hex()},
        },
        "spec": pod_spec,
    }


def state_claim_manifest(target: KubernetesTarget, app_id: uuid.UUID) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": target.state_size}},
    }
    if target.storage_class is not None:
        spec["storageClassName"] = target.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": state_claim_name(app_id),
            "namespace": target.namespace,
            "labels": _labels(target, app_id),
        },
        "spec": spec,
    }


def certificate_map_manifest(
    target: KubernetesTarget, app_id: uuid.UUID, certificate_pem: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": certificate_map_name(app_id),
            "namespace": target.namespace,
            "labels": _labels(target, app_id),
        },
        "data": {"certificate.pem": certificate_pem},
    }


def launch_map_manifest(target: KubernetesTarget, spec: AppSpec) -> dict[str, Any]:
    """The launch manifest the pod renders its Gramine manifest from (public: hashes, names)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": launch_map_name(spec.app_id),
            "namespace": target.namespace,
            "labels": _labels(target, spec.app_id),
        },
        "data": {LAUNCH_FILE: spec.manifest.to_json().decode()},
    }


def requirements_map_manifest(
    target: KubernetesTarget, app_id: uuid.UUID, lock: RequirementsLock
) -> dict[str, Any]:
    """The app's requirements lock (public: names, versions and hashes; measured, ADR 0024)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": requirements_map_name(app_id),
            "namespace": target.namespace,
            "labels": _labels(target, app_id),
        },
        "data": {REQUIREMENTS_FILE: lock.to_bytes().decode("ascii")},
    }


def _is(exc: ApiError, code: int) -> bool:
    return exc.status.code == code


class KubernetesBackend:
    """Each app's runtime as a pod (see the module's description)."""

    def __init__(
        self,
        client: AsyncClient,
        target: KubernetesTarget,
        *,
        stop_timeout: float = STOP_TIMEOUT,
        start_timeout: float = START_TIMEOUT,
        logger: logging.Logger | None = None,
        wheels: WheelCache | None = None,
    ) -> None:
        if target.tee not in _LAUNCH_TEE and target.tee != TeeBackend.GRAMINE:
            # A TD per pod needs a VM runtime (Kata) this backend does not drive.
            raise UsageError(
                f"the Kubernetes backend runs simulated TEEs and Gramine, not {target.tee.value}",
                hint="see docs/adr/0007-kubernetes-backend.md",
            )
        self._client = client
        self.target = target
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self._log = logger or logging.getLogger("confide.operator.kubernetes")
        #: The operator's wheel cache (the API serves pods from it); ``None``: an app that
        #: locks requirements is refused.
        self.wheels = wheels
        #: Why each ended pod ended, read when it was seen ended (exit_reason is synchronous).
        self._reasons: dict[tuple[uuid.UUID, int], str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The loop the backend's coroutines run on (remove_app may come from a thread).
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def _ns(self) -> str:
        return self.target.namespace

    # -- starting ------------------------------------------------------------------------------

    async def _app_pods(self, app_id: uuid.UUID) -> list[Pod]:
        selector: dict[str, Any] = {LABEL_OPERATOR: self.target.operator_id, LABEL_APP: str(app_id)}
        return [p async for p in self._client.list(Pod, namespace=self._ns, labels=selector)]

    async def _create(self, obj: dict[str, Any], *, replace: bool = False) -> None:
        resource = from_dict(obj)
        try:
            await self._client.create(resource)  # its metadata names the namespace
        except ApiError as exc:
            if not _is(exc, 409):
                raise
            if replace:
                await self._client.replace(resource)

    async def start(self, spec: AppSpec) -> RuntimeHandle:
        self._loop = asyncio.get_running_loop()
        target = self.target
        if spec.manifest.tls == TlsMode.OWNER and spec.certificate_pem is None:
            raise LaunchRefused(f"app {spec.app_id} has no owner certificate stored")
        if self.wheels is None:
            refuse_requirements(spec, "a pod of a backend without a wheel cache")
        lock = await asyncio.to_thread(self._requirements, spec)
        previous = await self._app_pods(spec.app_id)
        generations = [_generation(p) for p in previous]
        generation = max((g for g in generations if g is not None), default=0) + 1
        if generation > MAX_GENERATION:
            raise LaunchRefused(f"app {spec.app_id} was launched {MAX_GENERATION} times")
        for pod in previous:  # ended launches (the supervisor released them)
            await self._delete_pod(_name(pod))
        await self._create(state_claim_manifest(target, spec.app_id))
        certificate = None
        if spec.manifest.tls == TlsMode.OWNER and spec.certificate_pem is not None:
            await self._create(
                certificate_map_manifest(target, spec.app_id, spec.certificate_pem), replace=True
            )
            certificate = CERTIFICATE_DIR / "certificate.pem"
        requirements = wheels = None
        if lock is not None:
            await self._create(requirements_map_manifest(target, spec.app_id, lock), replace=True)
            requirements, wheels = REQUIREMENTS_DIR / REQUIREMENTS_FILE, WHEELS_DIR
        if target.tee == TeeBackend.GRAMINE:
            # The pod renders and signs the Gramine manifest in the image (GRAMINE_ENTRY);
            # the enclave's runtime refuses to start under another launch manifest.
            await self._create(launch_map_manifest(target, spec), replace=True)
            arguments = gramine_arguments(spec)
        else:
            try:
                arguments = runtime_arguments(
                    spec.manifest,
                    package=PACKAGE_DIR / "package",
                    certificate=certificate,
                    host="0.0.0.0",  # noqa: S104 - the pod's own network namespace
                    port=RUNTIME_PORT,
                    state_dir=STATE_DIR,
                    tee=_LAUNCH_TEE[target.tee],
                    simulation_state=SIMULATION_DIR,
                    requirements=requirements,
                    wheels=wheels,
                )
            except UsageError as exc:
                raise LaunchRefused(exc.message, hint=exc.hint) from None
        await self._create(pod_manifest(target, spec, generation, arguments, lock))
        name = pod_name(spec.app_id, generation)
        ip = await self._wait_ip(name)
        self._log.info("app %s: runtime started as pod %s on %s", spec.app_id, name, ip)
        return RuntimeHandle(spec.app_id, ip, RUNTIME_PORT, generation)

    def _requirements(self, spec: AppSpec) -> RequirementsLock | None:
        """The app's stored lock, its wheels fetched into the cache (none fetched twice), so
        the API can serve them to the pod; ``None`` for an app without one. Not a defence:
        the runtime checks every wheel against the measured lock (ADR 0024, 0030)."""
        if self.wheels is None:
            return None
        return fetch_requirements(self.wheels, spec, self._log)

    async def _wait_ip(self, name: str) -> str:
        """The pod's IP once it has one; :class:`LaunchRefused` if it ends first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while loop.time() < deadline:
            # A list, not a get: its version is the collection's, which a watch can start
            # from; a pod's own version may predate a compaction (410 Gone forever).
            listing = self._client.list(Pod, namespace=self._ns, fields={"metadata.name": name})
            pods = [pod async for pod in listing]
            if not pods:
                raise LaunchRefused(f"pod {name} was deleted before it had an address")
            ip = _ip(pods[0])
            if ip is not None:
                return ip
            if _ended(pods[0]):
                raise LaunchRefused(f"pod {name} ended before it had an address: {_why(pods[0])}")
            version = listing.resourceVersion
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    async for _event, changed in self._client.watch(
                        Pod,
                        namespace=self._ns,
                        fields={"metadata.name": name},
                        resource_version=version,
                    ):
                        if _ip(changed) is not None or _ended(changed):
                            break
            except TimeoutError:
                pass
            except ApiError as exc:
                if not _is(exc, 410):
                    raise
                # 410 Gone: the version was compacted away; read the pod again.
        raise LaunchRefused(f"pod {name} had no address after {self.start_timeout:g} s")

    # -- watching ------------------------------------------------------------------------------

    async def _pod(self, handle: RuntimeHandle) -> Pod | None:
        try:
            return await self._client.get(
                Pod, pod_name(handle.app_id, handle.pid), namespace=self._ns
            )
        except ApiError as exc:
            if _is(exc, 404):
                return None
            raise

    async def is_alive(self, handle: RuntimeHandle) -> bool:
        pod = await self._pod(handle)
        if pod is not None and not _ended(pod) and pod.metadata is not None:
            if pod.metadata.deletionTimestamp is None:
                return True
        key = (handle.app_id, handle.pid)
        if key not in self._reasons:
            reason = "the pod was deleted" if pod is None else _why(pod)
            # The log's tail through the API; else what the kubelet kept of it in the
            # termination message (FallbackToLogsOnError), e.g. when the node is gone.
            last = await self._last_line(pod_name(handle.app_id, handle.pid))
            if last is None and pod is not None:
                last = _termination_line(pod)
            self._reasons[key] = f"{reason}; last output: {last}" if last else reason
        return False

    async def _last_line(self, name: str) -> str | None:
        try:
            lines = [
                line
                async for line in self._client.log(
                    name, namespace=self._ns, container="runtime", tail_lines=_REASON_TAIL_LINES
                )
            ]
        except ApiError:
            return None
        return _last_output("\n".join(lines))

    def exit_reason(self, handle: RuntimeHandle) -> str:
        return self._reasons.get((handle.app_id, handle.pid), "the pod ended")

    # -- stopping ------------------------------------------------------------------------------

    async def _delete_pod(self, name: str, grace: int | None = None) -> None:
        with contextlib.suppress(ApiError):
            await self._client.delete(Pod, name, namespace=self._ns, grace_period=grace)

    async def stop(self, handle: RuntimeHandle) -> None:
        name = pod_name(handle.app_id, handle.pid)
        await self._delete_pod(name, grace=int(self.stop_timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.stop_timeout
        while await self._pod(handle) is not None:
            if loop.time() >= deadline:
                self._log.warning("app %s: pod %s still exists", handle.app_id, name)
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    async for event, _pod in self._client.watch(
                        Pod, namespace=self._ns, fields={"metadata.name": name}
                    ):
                        if event == "DELETED":
                            break
        self._reasons.pop((handle.app_id, handle.pid), None)

    def release(self, handle: RuntimeHandle) -> None:
        # The ended pod stays (its log is the app's last words) until the next start.
        self._reasons.pop((handle.app_id, handle.pid), None)

    def detach(self) -> None:
        """Pods outlive the operator: nothing to let go of."""

    def remove_app(self, app_id: uuid.UUID) -> None:
        """Delete the app's pods, claim and ConfigMaps. The supervisor calls this from a
        worker thread (``asyncio.to_thread``): then it runs on the backend's loop and waits."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                raise UsageError("the Kubernetes backend was never used on an event loop") from None
            future = asyncio.run_coroutine_threadsafe(self._remove(app_id), self._loop)
            future.result(timeout=self.stop_timeout * 4)
            return
        task = loop.create_task(self._remove(app_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, app_id: uuid.UUID) -> None:
        for pod in await self._app_pods(app_id):
            await self._delete_pod(_name(pod), grace=0)
        for kind, name in (
            (PersistentVolumeClaim, state_claim_name(app_id)),
            (ConfigMap, certificate_map_name(app_id)),
            (ConfigMap, launch_map_name(app_id)),
            (ConfigMap, requirements_map_name(app_id)),
        ):
            with contextlib.suppress(ApiError):
                await self._client.delete(kind, name, namespace=self._ns)

    async def wait_removed(self) -> None:
        """Wait for the removals :meth:`remove_app` started (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks)

    # -- after a restart -----------------------------------------------------------------------

    def _handle_of(self, pod: Pod) -> RuntimeHandle | None:
        labels = (pod.metadata.labels if pod.metadata else None) or {}
        if labels.get(LABEL_OPERATOR) != self.target.operator_id:
            return None
        generation = _generation(pod)
        ip = _ip(pod)
        try:
            app_id = uuid.UUID(labels.get(LABEL_APP, ""))
        except ValueError:
            return None
        if generation is None or ip is None or _ended(pod):
            return None
        if pod.metadata is None or pod.metadata.deletionTimestamp is not None:
            return None
        return RuntimeHandle(app_id, ip, RUNTIME_PORT, generation)

    async def adopt(self, pid: int, app_id: uuid.UUID) -> RuntimeHandle | None:
        pod = await self._pod(RuntimeHandle(app_id, "", RUNTIME_PORT, pid))
        if pod is None:
            return None
        handle = self._handle_of(pod)
        return handle if handle is not None and handle.app_id == app_id else None

    async def discover(self) -> list[RuntimeHandle]:
        self._loop = asyncio.get_running_loop()
        selector: dict[str, Any] = {LABEL_OPERATOR: self.target.operator_id}
        found = []
        async for pod in self._client.list(Pod, namespace=self._ns, labels=selector):
            handle = self._handle_of(pod)
            if handle is not None:
                found.append(handle)
        return found


class KubernetesLogSource:
    """An app's runtime log, read through the API from its newest pod.

    :meth:`read_end` and :meth:`read_from` run in the API's worker threads, hence the
    synchronous client. A byte offset is a position in the current pod's log as the
    API returns it (bounded by :data:`~._logs.MAX_LOG_BYTES`).
    """

    def __init__(self, client: Client, target: KubernetesTarget) -> None:
        self._client = client
        self.target = target

    def log_path(self, app_id: uuid.UUID) -> Path:
        """No file: pods' logs are the cluster's (``kubectl logs``)."""
        return Path(f"/kubernetes/{self.target.namespace}/{app_id}")

    def _newest(self, app_id: uuid.UUID) -> str | None:
        selector: dict[str, Any] = {LABEL_OPERATOR: self.target.operator_id, LABEL_APP: str(app_id)}
        pods = list(self._client.list(Pod, namespace=self.target.namespace, labels=selector))
        ranked = [(g, _name(p)) for p in pods if (g := _generation(p)) is not None]
        return max(ranked)[1] if ranked else None

    def _log(self, app_id: uuid.UUID) -> bytes:
        name = self._newest(app_id)
        if name is None:
            return b""
        try:
            text = "".join(
                self._client.log(name, namespace=self.target.namespace, container="runtime")
            )
        except ApiError:
            return b""
        return text.encode()[-MAX_LOG_BYTES:]

    def read_end(self, app_id: uuid.UUID, tail: int | None) -> tuple[bytes, int]:
        data = self._log(app_id)
        if tail is None:
            return data, len(data)
        lines = data.splitlines(keepends=True)
        return b"".join(lines[-tail:] if tail else []), len(data)

    def read_from(self, app_id: uuid.UUID, offset: int) -> tuple[bytes, int]:
        data = self._log(app_id)
        if len(data) < offset:
            offset = 0  # a new pod: start over
        return data[offset:], len(data)


def _name(pod: Pod) -> str:
    return pod.metadata.name if pod.metadata and pod.metadata.name else ""


def _generation(pod: Pod) -> int | None:
    labels: Mapping[str, str] = (pod.metadata.labels if pod.metadata else None) or {}
    raw = labels.get(LABEL_GENERATION, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_GENERATION else None


def _ip(pod: Pod) -> str | None:
    if pod.status is None or _ended(pod):
        return None
    return pod.status.podIP or None


def _ended(pod: Pod) -> bool:
    return pod.status is not None and pod.status.phase in ("Succeeded", "Failed")


def _last_output(text: str) -> str | None:
    """The runtime's last error line in ``text`` (else its last line), bounded."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines)[-1][:_MAX_REASON_LINE] if lines else None


def _termination_line(pod: Pod) -> str | None:
    """The last output line in the runtime container's termination message, if any."""
    status = pod.status
    for container in (status.containerStatuses or []) if status else []:
        ended = container.state.terminated if container.state else None
        if container.name == "runtime" and ended is not None and ended.message:
            return _last_output(ended.message[-_MAX_TERMINATION_MESSAGE:])
    return None


def _why(pod: Pod) -> str:
    """The runtime container's termination, in words."""
    status = pod.status
    for container in (status.containerStatuses or []) if status else []:
        if container.name != "runtime" or container.state is None:
            continue
        ended = container.state.terminated
        if ended is not None:
            words = f"the runtime exited with code {ended.exitCode}"
            return f"{words} ({ended.reason})" if ended.reason else words
    for container in (status.initContainerStatuses or []) if status else []:
        ended = container.state.terminated if container.state else None
        if ended is not None and ended.exitCode != 0:
            what = "the wheels" if container.name == "fetch-wheels" else "the package"
            return f"fetching {what} failed with code {ended.exitCode}"
    phase = status.phase if status else None
    return f"the pod is {phase or 'gone'}"
