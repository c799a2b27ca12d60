"""An app with locked requirements runs in a Kubernetes pod; a wheel swapped in the operator's
cache is refused by the pod's runtime (ADR 0024, 0030).

The Kubernetes backend sends its objects to the API stand-in, with the operator's wheel
cache; a real operator API (SQLite) serves the blob endpoint. The pod is then run on this
machine as the kubelet would: its volumes laid out under a folder from the objects sent,
its init containers run (the package and every locked wheel fetched by hash from the
operator over HTTP, with no check of the wheels), then its runtime container's command
(``confide runtime`` on the simulated TEE). With the genuine wheel the runtime installs it,
waits for its owner and serves an RA-TLS certificate whose measurement is the launch
manifest's, requirements lock included ("exactly this code" covers the dependencies).
With another file under the locked hash's name in the cache, the runtime refuses it with
``requirements.hash_mismatch`` and both hashes, and exits ``EXIT_APP_UNUSABLE`` (the
supervisor then puts the app ``on_error`` without a restart, as
tests/integration/operator_flow/test_operator_flow_kubernetes_exit.py shows).

Not a cluster: no kubelet, no image. The port is a free one of 127.0.0.1 instead of the
pod's 0.0.0.0:8443, the only change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import update

from confide.operator import App, BlobStore
from confide.operator._backend import free_port
from confide.operator._kubernetes import RUNTIME_PORT
from confide.operator._settings import KubernetesSettings
from confide.operator._wheels import WheelCache
from confide.runtime import runtime_code_hash
from confide.wire import API_PREFIX, EXIT_APP_UNUSABLE, TlsMode
from support.kube_pods import (
    PACKAGE,
    TARGET,
    materialise,
    pod_program,
    run_init_containers,
    sent_pod,
    spec,
)
from support.operator_api import Operator, OperatorFactory
from support.operator_flow import add_app
from support.runtimes import new_platform, running, verify_enclave
from support.wheels import cache_wheel, lock_of, wheel_bytes

pytestmark = pytest.mark.slow

K8S: Final = KubernetesSettings(
    namespace="apps", image="img", operator_id="op", blob_url="http://op:8080/api/v1/blobs"
)
GENUINE: Final = wheel_bytes("tinydep", "1.0")
#: The same name and version with a payload: what a malicious cache would serve.
BACKDOORED: Final = wheel_bytes(
    "tinydep", "1.0", {"tinydep/__init__.py": b"VERSION = '1.0'\nBACKDOOR = True\n"}
)
LOCK: Final = lock_of(("tinydep", "1.0", GENUINE))


@pytest.fixture(name="operator")
def operator_fixture(tmp_path: Path) -> Iterator[Operator]:
    factory = OperatorFactory(tmp_path, f"sqlite:///{tmp_path / 'db' / 'operator.db'}")
    try:
        yield factory.start(kubernetes=K8S)
    finally:
        factory.close()


def _run_pod(operator: Operator, tmp_path: Path, wheel: bytes) -> tuple[int, str, int]:
    """Deploy the locked app (``wheel`` in the cache under the locked hash) and run its pod:
    the runtime's exit code (0: it waited for its owner and its RA-TLS certificate verified
    with the launch manifest's measurement; it was then stopped), its output, its port."""
    app = spec(TlsMode.RATLS, runtime_sha256=runtime_code_hash(), lock=LOCK)
    cache = WheelCache(operator.settings.wheels_dir)
    cache.put_lock(LOCK)
    cache_wheel(cache.root, wheel, sha256=LOCK.requirements[0].sha256)
    BlobStore(operator.settings.blobs_dir).put(io.BytesIO(PACKAGE), limit=len(PACKAGE))
    row = add_app(operator.database)
    with operator.database.session() as s:  # live, with this package and this lock
        s.execute(
            update(App)
            .where(App.id == row)
            .values(
                package_sha256=app.manifest.package_sha256.hex(),
                launch_manifest=app.manifest.to_json().decode(),
            )
        )
        s.commit()
    target = dataclasses.replace(TARGET, blob_url=f"{operator.url}{API_PREFIX}/blobs")
    api, pod = sent_pod(target, app, cache)
    root = tmp_path / "pod"
    materialise(api, pod, root, fetched=False)
    assert run_init_containers(pod, root) == ["fetch-package", "fetch-wheels"]
    platform = new_platform(root / "simulation")
    port = free_port("127.0.0.1")
    argv, _ = pod_program(pod, root, {str(RUNTIME_PORT): str(port), "0.0.0.0": "127.0.0.1"})  # noqa: S104
    assert argv[:2] == ["confide", "runtime"]
    with running(argv[2:]) as runtime:
        line = runtime.wait_for(r"waiting for the configuration|error: app unusable")
        if "error" in line.group(0):
            return runtime.wait_exit(), runtime.text, port
        _, verified = verify_enclave(port, platform, app.manifest.measurement())
        assert verified is not None
        return 0, runtime.text, port


def test_a_locked_app_runs_in_a_pod_with_its_wheels_fetched_from_the_operator(
    operator: Operator, tmp_path: Path
) -> None:
    code, output, _ = _run_pod(operator, tmp_path, GENUINE)
    assert code == 0, output
    assert f"installed 1 locked wheel(s) (lock sha256 {LOCK.digest().hex()})" in output
    fetched = tmp_path / "pod" / "wheels" / LOCK.requirements[0].sha256.hex()[:2]
    assert (fetched / LOCK.requirements[0].sha256.hex()[2:]).read_bytes() == GENUINE


def test_a_wheel_swapped_in_the_operator_cache_is_refused_by_the_pods_runtime(
    operator: Operator, tmp_path: Path
) -> None:
    code, output, _ = _run_pod(operator, tmp_path, BACKDOORED)
    expected = hashlib.sha256(GENUINE).hexdigest()
    observed = hashlib.sha256(BACKDOORED).hexdigest()
    assert code == EXIT_APP_UNUSABLE, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: app unusable: requirements.hash_mismatch: ")
    assert f"observed {observed}" in last and f"expected {expected}" in last
    assert "Traceback" not in output
    # Guard: the swapped file is what the pod fetched (the transport did not check it).
    fetched = tmp_path / "pod" / "wheels" / expected[:2] / expected[2:]
    assert fetched.read_bytes() == BACKDOORED
