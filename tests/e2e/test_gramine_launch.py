"""End to end through the Gramine launch path (``tee = "gramine"``), with Gramine's stand-ins.

An operator configured with ``tee = "gramine"`` and the stand-ins of
``tests/gramine_standin`` first on its PATH: the app's Gramine manifest is
generated in its folder, signed by ``gramine-sgx-sign`` and run by ``gramine-sgx``,
whose ``/dev/attestation`` is backed by the simulated platform in the operator's
data folder. The owner predicts the MRENCLAVE from public inputs (the launch
manifest the API publishes, this environment, the plan and the enclave's port),
as ``confide fingerprint --tee gramine`` does with Gramine's signer, checks it is
what ``gramine-sgx-sigstruct-view`` reads from the operator's SIGSTRUCT, verifies
the enclave through the router against it, sends
the code key, and a user calls the app through the router, which relays the bytes
(no descriptor hand-off). The enclave is then killed: the operator restarts it with
the same MRENCLAVE; and an operator restart adopts the running enclave.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from confide.cli import app as cli
from confide.client import pinned_client
from confide.gramine import simulated_mrenclave
from confide.release import OwnerKey
from confide.wire import LAUNCH_MANIFEST_OID, HostPort, LaunchManifest
from gramine_standin import StandinConfig, install, mount_namespace_support
from support.operators import (
    OperatorProcess,
    configure,
    create_token,
    deploy,
    kill_runtimes,
    package,
    router_client,
    verify_through_router,
    wait_gone,
    wait_status,
)
from support.runtimes import EXAMPLES, HOST, poll, trusting

pytestmark = pytest.mark.slow

_NO_NAMESPACE = mount_namespace_support()


@pytest.fixture(name="standins")
def standins_fixture(tmp_path: Path) -> StandinConfig:
    if _NO_NAMESPACE is not None:
        pytest.skip(_NO_NAMESPACE)
    return install(tmp_path / "bin", tmp_path / "data" / "simulation")


def sigstruct_view(standins: StandinConfig, sig: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(standins.bin_dir / "gramine-sgx-sigstruct-view"), "--output-format=json", str(sig)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    found: dict[str, object] = json.loads(done.stdout)
    return found


@pytest.fixture(name="operator")
def operator_fixture(tmp_path: Path, standins: StandinConfig) -> Iterator[OperatorProcess]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "operator.toml").write_text('tee = "gramine"\nallow_simulated_gramine = true\n')
    env = dict(os.environ, PATH=f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    operator = OperatorProcess(data, env=env)
    try:
        yield operator
    finally:
        operator.kill()
        kill_runtimes(data)


def test_an_app_runs_verifies_and_restarts_through_gramine(
    operator: OperatorProcess,
    standins: StandinConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = create_token(operator.data_dir, "owner")
    with operator.client(token) as api:
        # An app whose imports Confide's own requirements cover (FastAPI): the app's
        # declared requirements are not carried into the launch yet (see ADR 0018).
        app = deploy(api, package(tmp_path, "fastapi_hello"))
        wait_status(api, app.id, "initializing", timeout=180)

        # What runs is gramine-sgx on the app's signed manifest, in the app's folder.
        folder = operator.data_dir / "apps" / str(app.id)
        base = folder / "confide-runtime"
        expanded = Path(f"{base}.manifest.sgx").read_text()
        record = json.loads((folder / "runtime.json").read_text())
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")
        assert str(base).encode() in cmdline
        assert b"runtime" not in cmdline  # the runtime's argv is the manifest's, not the host's
        assert "loader.env.CONFIDE_LAUNCH_MANIFEST" in Path(f"{base}.manifest").read_text()

        # The owner predicts MRENCLAVE from public inputs alone: the launch manifest the API
        # published, this environment and the plan (512 MiB, 1 core); not the port (unmeasured),
        # with ``confide fingerprint --tee gramine`` and Gramine's tools (the stand-ins).
        launch = tmp_path / "launch.json"
        launch.write_text(json.dumps(app.body["launch"]))
        monkeypatch.setenv("PATH", f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
        predicted = CliRunner().invoke(
            cli,
            ["fingerprint", "--tee", "gramine", "--manifest", str(launch), "--json"]
            + ["--enclave-size", "512M", "--max-threads", "32"],
        )
        assert predicted.exit_code == 0, predicted.output
        mrenclave = bytes.fromhex(json.loads(predicted.stdout)["fingerprint"])
        view = sigstruct_view(standins, Path(f"{base}.sig"))
        assert view["mr_enclave"] == mrenclave.hex() == simulated_mrenclave(expanded).hex()
        assert view["debug_enclave"] is False
        cert, verified = verify_through_router(
            operator.router_port, app, operator.data_dir, mrenclave
        )
        assert verified.quote.mr_enclave == mrenclave
        assert verified.quote.mr_signer == bytes.fromhex(str(view["mr_signer"]))
        carried = cert.extensions.get_extension_for_oid(LAUNCH_MANIFEST_OID).value
        assert isinstance(carried, x509.UnrecognizedExtension)
        assert LaunchManifest.from_json(carried.value) == app.manifest
        response = configure(operator.router_port, app, cert)
        assert response.status_code == 200, response.text
        wait_status(api, app.id, "running")

        # A user calls the app through the router (relayed bytes, no hand-off socket).
        with router_client(operator.router_port, app.name, trusting(cert)) as user:
            assert user.get("/").json() == {"message": "Hello world"}
        assert not (folder / "handoff.sock").exists()
        logs = api.get(f"/api/v1/apps/{app.id}/logs").text
        assert "starting the runtime" in logs

        # The enclave dies: the operator restarts it; same manifest, same MRENCLAVE, and
        # the sealed state brings it back configured.
        os.killpg(record["pid"], signal.SIGKILL)
        wait_gone([record["pid"]])

        def restarted() -> bool:
            now = json.loads((folder / "runtime.json").read_text())
            return bool(now["pid"] != record["pid"])

        poll(restarted, "the enclave to be restarted", timeout=180)
        wait_status(api, app.id, "running", timeout=180)
        again = sigstruct_view(standins, Path(f"{base}.sig"))
        assert again["mr_enclave"] == view["mr_enclave"]
        # A new launch quotes afresh: a new RA-TLS certificate, of the same MRENCLAVE.
        cert, _ = verify_through_router(operator.router_port, app, operator.data_dir, mrenclave)
        with router_client(operator.router_port, app.name, trusting(cert)) as user:
            assert user.get("/").json() == {"message": "Hello world"}
        pid = json.loads((folder / "runtime.json").read_text())["pid"]

    # The operator dies; a new one adopts the running enclave (same pid, still serving).
    operator.kill()
    env = dict(os.environ, PATH=f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    second = OperatorProcess(operator.data_dir, env=env)
    try:
        with second.client(token) as api:
            wait_status(api, app.id, "running", timeout=60)
            assert json.loads((folder / "runtime.json").read_text())["pid"] == pid
        with router_client(second.router_port, app.name, trusting(cert)) as user:
            assert user.get("/").json() == {"message": "Hello world"}
    finally:
        second.kill()


def test_the_owner_deploys_and_a_user_verifies_a_gramine_enclave_with_the_cli(
    operator: OperatorProcess,
    standins: StandinConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole flow through the real commands: ``confide deploy`` predicts the enclave's
    MRENCLAVE with Gramine's signer (the stand-ins on PATH) from public inputs (the launch
    manifest recomputed here, this runtime environment, the enclave size and threads the
    app record states), verifies the enclave against it and signs the release over it; a
    user verifies with ``--fingerprint`` and with ``--owner``, and calls the app; with no
    pin the enclave is refused with its own code."""
    monkeypatch.setenv("PATH", f"{standins.bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "user-state"))
    token = create_token(operator.data_dir, "owner")
    router = f"{HOST}:{operator.router_port}"
    (tmp_path / "project" / "tests").mkdir(parents=True)
    project = tmp_path / "project" / "confide.toml"
    project.write_text(
        'name = "hello"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n\n[cloud]\n'
        f"code = {json.dumps(str(EXAMPLES / 'fastapi_hello'))}\n"
        'tests = "tests"\nproject = "default"\nhardware = "small"\n'
    )
    owner_file = tmp_path / "owner" / "owner.key"
    deployed = CliRunner().invoke(
        cli,
        ["deploy", "--path", str(project), "--connect", router, "--url", operator.api_url,
         "--token", token, "--timeout", "4", "--allow-simulation", "--key-file",
         str(owner_file), "--json"],
    )  # fmt: skip
    assert deployed.exit_code == 0, deployed.output
    done = json.loads(deployed.stdout)
    assert done["tee"] == "gramine" and done["status"] == "running"
    assert done["gramine"] == {"enclave_size": "512M", "max_threads": 32}
    fingerprint = bytes.fromhex(done["fingerprint"])
    # What the owner pinned is the MRENCLAVE of the operator's SIGSTRUCT, not the launch
    # manifest's own measurement (which the enclave does not report under Gramine).
    folder = operator.data_dir / "apps" / done["id"]
    view = sigstruct_view(standins, folder / "confide-runtime.sig")
    assert view["mr_enclave"] == fingerprint.hex()
    assert LaunchManifest.from_dict(done["launch"]).measurement() != fingerprint
    assert done["release"]["log_index"] == 0
    domain = done["domains"][0]
    owner = OwnerKey.from_file_bytes(owner_file.read_bytes()).public_key.to_text()

    def verify(*pin: str) -> Result:
        return CliRunner().invoke(
            cli,
            ["verify", domain, *pin, "--connect", router, "--operator", operator.api_url,
             "--allow-simulation", "--json", "--output", str(tmp_path / "ratls.pem")],
        )  # fmt: skip

    by_fingerprint = verify("--fingerprint", fingerprint.hex())
    assert by_fingerprint.exit_code == 0, by_fingerprint.output
    assert json.loads(by_fingerprint.stdout)["mrenclave"] == fingerprint.hex()
    # The owner's context file expects the predicted MRENCLAVE too.
    context = next((tmp_path / "project" / ".confide").glob("*.json"))
    by_context = verify("--context", str(context))
    assert by_context.exit_code == 0, by_context.output
    by_owner = verify("--owner", owner)
    assert by_owner.exit_code == 0, by_owner.output
    assert json.loads(by_owner.stdout)["release"]["fingerprint"] == fingerprint.hex()

    # The user calls the app through the router, pinned to the certificate verified.
    cert = x509.load_pem_x509_certificate((tmp_path / "ratls.pem").read_bytes())
    with pinned_client(HostPort(HOST, operator.router_port), domain, cert, timeout=30) as user:
        assert user.get("/").json() == {"message": "Hello world"}

    # No pin: a Gramine enclave's carried manifest proves nothing on its own.
    unpinned = verify()
    assert unpinned.exit_code == 1, unpinned.output
    assert json.loads(unpinned.stdout)["error"]["code"] == "launch.unpinned"
    assert "--fingerprint" in unpinned.output and "--owner" in unpinned.output
