"""A Gramine runtime pod's program run through to a quoting enclave, with Gramine's stand-ins.

The Kubernetes backend (``tee = "gramine"``) sends its objects to the API stand-in; the
runtime container's volumes are laid out under a folder from those objects (the package
the init container fetches, the launch manifest's ConfigMap, the state claim, the key's
memory volume), and the container's command runs there, with the stand-ins of
``tests/gramine_standin`` on PATH: it renders the Gramine manifest with ``confide gramine
manifest``, signs it with a key of its own, and ``gramine-sgx`` starts the runtime in the
stand-in's enclave. The runtime starts (so the manifest names the files where the pod has
them and the enclave's runtime accepts its launch manifest), serves an RA-TLS certificate
whose quote's MRENCLAVE is the owner's prediction (``predict_app_mrenclave``, what
``confide fingerprint --tee gramine`` and ``confide deploy`` compute), and the signer the
quote names is the pod's own, deleted before the enclave started.

Not a cluster: no kubelet, no SGX device plugin, no aesmd (the stand-in's quotes come from
the simulated platform). The port is a free one instead of the pod's 8443, the only change.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from confide.attestation import Quote, SgxReportBody, fetch_peer_certificate, quote_from_certificate
from confide.client import throwaway_sgx_signer
from confide.gramine import predict_app_mrenclave, runtime_environment
from confide.operator._backend import free_port
from confide.operator._gramine import plan_enclave
from confide.operator._kubernetes import APP_DIR, KEY_DIR, RUNTIME_PORT
from confide.wire import TlsMode
from gramine_standin import install, mount_namespace_support
from support.kube_pods import GRAMINE, materialise, pod_path, pod_program, sent_pod, spec
from support.runtimes import new_platform, poll

pytestmark = pytest.mark.slow

_NO_NAMESPACE = mount_namespace_support()
#: Longest the pod's program may take to render, sign and start the enclave (loaded CI).
START_TIMEOUT = 240.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(_NO_NAMESPACE is not None, reason=str(_NO_NAMESPACE))
def test_a_gramine_pod_runs_an_enclave_with_the_predicted_mrenclave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = runtime_environment()
    app = spec(TlsMode.RATLS, runtime_sha256=environment.digest)
    api, pod = sent_pod(GRAMINE, app)
    root = tmp_path / "pod"
    materialise(api, pod, root)
    new_platform(tmp_path / "platform")
    standins = install(tmp_path / "bin", tmp_path / "platform")
    port = free_port("127.0.0.1")
    argv, cwd = pod_program(pod, root, {str(RUNTIME_PORT): str(port)})
    log = tmp_path / "pod.log"
    path = os.pathsep.join([str(standins.bin_dir), str(Path(sys.executable).parent)])
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the pod's own program
            argv,
            cwd=cwd,
            env={**os.environ, "PATH": path},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the pod's program ended: {log.read_text()[-3000:]}")
            return _listening(port)

        poll(ready, "the enclave's runtime to listen", timeout=START_TIMEOUT)
        certificate = fetch_peer_certificate(
            "127.0.0.1", port, server_name="x.confide.localhost", timeout=30
        )
        quote = Quote.from_bytes(quote_from_certificate(certificate))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert isinstance(quote.body, SgxReportBody)
    size, threads = plan_enclave(app.memory_mib, app.cores)
    monkeypatch.setenv("PATH", f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    predicted = predict_app_mrenclave(
        app.manifest,
        environment,
        enclave_size=size,
        max_threads=threads,
        signer_pem=throwaway_sgx_signer(),
    )
    assert quote.body.mr_enclave == predicted
    output = log.read_text()
    assert predicted.hex() in output.lower()  # the pod's log names what it signed
    assert not any(pod_path(root, str(KEY_DIR)).iterdir())  # the launch's key is gone
    # The state claim is where Gramine's encrypted mount put it: the pod's state folder.
    assert pod_path(root, str(APP_DIR / "state")).is_dir()
