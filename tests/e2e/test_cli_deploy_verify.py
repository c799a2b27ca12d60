"""End to end: ``confide deploy`` and ``confide verify`` against a real operator.

One ``confide operator serve`` subprocess (simulated TEE, loopback, port 0)
for the module; the CLI runs in this process (typer's runner), so a test can
change what the owner's machine computes (its runtime hash) and show that the
key never leaves it when the enclave does not measure to the expected value.
"""

from __future__ import annotations

import json
import shutil
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from confide.client import (
    AppContext,
    pinned_client,
)
from confide.client import _deploy as deploy_module
from confide.wire import HostPort
from support.cli import (
    cli,
    deploy,
    router,
)
from support.operators import (
    BASE_DOMAIN,
    OperatorProcess,
    app_body,
    create_token,
    wait_status,
)
from support.runtimes import (
    EXAMPLES,
    HOST,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="token")
def token_fixture(operator: OperatorProcess) -> str:
    return create_token(operator.data_dir, "owner")


@pytest.fixture(name="project")
def project_fixture(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    project = tmp_path / "confide.toml"
    project.write_text(
        'name = "hello"\n'
        'python_application = "app:app"\n'
        'healthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\n'
        "tests_requirements = []\n\n"
        "[cloud]\n"
        f"code = {json.dumps(str(EXAMPLES / 'helloworld'))}\n"
        'tests = "tests"\n'
        'project = "default"\n'
        'hardware = "small"\n'
    )
    return project


def only_app(api: httpx.Client) -> uuid.UUID:
    response = api.get("/api/v1/apps")
    assert response.status_code == 200, response.text
    ids = [uuid.UUID(a["id"]) for a in response.json()["apps"]]
    return ids[-1]


def test_zero_trust_deploy_then_a_user_verifies_and_calls(
    operator: OperatorProcess, token: str, project: Path
) -> None:
    done = deploy(operator, token, project, "--allow-simulation")
    assert done.exit_code == 0, done.output
    contexts = list((project.parent / ".confide").glob("*.json"))
    assert len(contexts) == 1
    assert stat.S_IMODE(contexts[0].stat().st_mode) == 0o600
    context = AppContext.load(contexts[0])
    assert "code_secret_key" not in contexts[0].read_text()
    domain = context.domains[0]
    assert domain == f"{context.app_id}.{BASE_DOMAIN}"
    with operator.client(token) as api:
        assert app_body(api, context.app_id)["status"] == "running"

    pem = project.parent / "ratls.pem"
    verified = cli(
        "verify",
        domain,
        "--context",
        str(contexts[0]),
        "--connect",
        router(operator),
        "--operator",
        operator.api_url,
        "--allow-simulation",
        "--output",
        str(pem),
    )
    assert verified.exit_code == 0, verified.output
    assert "VERIFIED SIMULATED SGX" in verified.output
    assert context.fingerprint.hex() in verified.output

    # A user who does not name the operator: refused as simulated, before any
    # collateral would be fetched from Intel's PCS.
    unnamed = cli("verify", domain, "--connect", router(operator))
    assert unnamed.exit_code == 1, unnamed.output
    assert "the enclave runs in simulation mode" in unnamed.output
    assert "REJECTED simulation.not_allowed" in unnamed.output  # one code for it (ADR 0015)

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    address = HostPort(HOST, operator.router_port)
    with pinned_client(address, domain, cert, timeout=15) as user:
        assert user.get("/").text == "Hello world"

    # No fingerprint: a genuine enclave launched for this name (its measured manifest says so).
    unpinned = cli(
        "verify",
        domain,
        "--connect",
        router(operator),
        "--operator",
        operator.api_url,
        "--allow-simulation",
    )
    assert unpinned.exit_code == 0, unpinned.output
    assert f"was launched for {domain}" in unpinned.output
    assert "WHICH CODE runs was not checked" in unpinned.output

    # Another expected fingerprint: the user's check fails.
    wrong = cli(
        "verify",
        domain,
        "--fingerprint",
        "00" * 32,
        "--connect",
        router(operator),
        "--operator",
        operator.api_url,
        "--allow-simulation",
    )
    assert wrong.exit_code == 1, wrong.output
    assert "code fingerprint mismatch" in wrong.output

    # The owner's context also ties the plaintext code folder to what was deployed.
    base = ["verify", domain, "--context", str(contexts[0]), "--connect", router(operator)]
    base += ["--operator", operator.api_url, "--allow-simulation"]
    same = cli(*base, "--code", str(EXAMPLES / "helloworld"))
    assert same.exit_code == 0, same.output
    changed = project.parent / "changed-code"
    shutil.copytree(EXAMPLES / "helloworld", changed)
    (changed / "app.py").write_text((changed / "app.py").read_text() + "\n# changed\n")
    other = cli(*base, "--code", str(changed))
    assert other.exit_code == 1, other.output
    assert "is not the code deployed" in other.output


def test_untrusted_ssl_deploys_but_users_cannot_verify(
    operator: OperatorProcess, token: str, project: Path
) -> None:
    done = deploy(operator, token, project, "--allow-simulation", "--untrusted-ssl", "-y", "--json")
    assert done.exit_code == 0, done.output
    assert "CAN READ ALL ITS TRAFFIC" in done.stderr  # warnings and progress: stderr only
    context_path = next((project.parent / ".confide").glob("*.json"))
    context = AppContext.load(context_path)
    assert context.tls.value == "operator"
    # --json: stdout is the one JSON object.
    result = json.loads(done.stdout)
    assert result["id"] == str(context.app_id) and result["status"] == "running"
    assert result["tls"] == "operator" and result["domains"] == list(context.domains)
    assert result["fingerprint"] == context.fingerprint.hex()
    assert (result["attested"], result["simulated"]) == (True, True)
    assert result["context"] == str(context_path)
    assert result["connected_via"] == router(operator)
    checked = cli(
        "verify",
        context.domains[0],
        "--connect",
        router(operator),
        "--operator",
        operator.api_url,
        "--allow-simulation",
    )
    assert checked.exit_code == 1, checked.output
    assert "cannot verify" in checked.output


def test_another_measurement_gets_no_key(
    operator: OperatorProcess, token: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our runtime hash differs from what the enclave runs: the fingerprint cannot match."""
    monkeypatch.setattr(deploy_module, "runtime_code_hash", lambda: bytes(32))
    done = deploy(operator, token, project, "--allow-simulation")
    assert done.exit_code == 1, done.output
    assert "code fingerprint mismatch: expected" in done.output
    assert "the enclave reports" in done.output
    assert not (project.parent / ".confide").exists()
    assert "the deployment failed: the app" in done.output
    with operator.client(token) as api:
        app_id = only_app(api)
        # The app the failed deploy created is stopped, not left waiting for a configuration.
        body = wait_status(api, app_id, "stopped")
        assert body["desired_state"] == "stop"
        logs = api.get(f"/api/v1/apps/{app_id}/logs").text
        assert "configured" not in logs  # nothing reached it


def test_simulation_is_refused_without_allow_simulation_before_the_upload(
    operator: OperatorProcess, token: str, project: Path
) -> None:
    with operator.client(token) as api:
        before = api.get("/api/v1/apps").json()["apps"]
    done = deploy(operator, token, project)
    assert done.exit_code == 1, done.output
    assert "the enclave runs in simulation mode: pass --allow-simulation only for tests" in (
        done.output
    )
    assert "nothing was uploaded" in done.output
    assert "uploading" not in done.output
    with operator.client(token) as api:
        assert api.get("/api/v1/apps").json()["apps"] == before
