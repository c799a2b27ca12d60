"""End to end: the security table, one test per cell (feature x scenario).

Scenarios, as ``confide deploy`` chooses them from the project file:

- ``zero-trust``: RA-TLS, anyone can verify the enclave;
- ``owner``: "fully encrypted SaaS", ``[cloud.ssl]`` with a certificate from
  a test CA; its key goes only into the attested enclave;
- ``operator``: ``--untrusted-ssl``, the operator terminates TLS.

Features (rows of the table): the code (and secrets) are encrypted when
deployed; the code and data are encrypted while running; the owner verifies
the enclave when deploying; the user verifies it before use; the queries are
protected from the operator.

One operator for the module runs in this process (the harness of
``test_operator_modes``) so its router's recorder sees every relayed byte; the
owner's ``confide deploy`` and the user's ``confide verify`` run in this
process too (typer's runner); the runtimes are real subprocesses. Each
scenario is deployed once (module fixtures); the fingerprint tests deploy an
app that never gets its keys and stop it. ``docs/security.md`` maps each cell
to its mechanism and to the test here.
"""

from __future__ import annotations

import json
import shutil
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from confide.attestation import fetch_peer_certificate
from confide.cli import app
from confide.client import AppContext
from confide.client import _deploy as deploy_module
from confide.operator._router import Direction
from confide.runtime._state import STATE_FILE
from confide.wire import HostPort
from support.inprocess import InProcessOperator, operator_in_thread
from support.operators import (
    router_client,
    wait_status,
)
from support.runtimes import (
    EXAMPLES,
    HOST,
    OwnerPki,
    trusting,
)

pytestmark = pytest.mark.slow

SCENARIOS: Final = ("zero-trust", "owner", "operator")
#: Written into the app's code and into its secrets, per scenario.
CODE_MARKER: Final = "confide-code-marker-7d41b2"
SECRET_MARKER: Final = "confide-secret-marker-90fe3c"
#: Sent in a user's query (path, query string, header and body).
QUERY_MARKER: Final = "confide-query-marker-e2a8f5"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@dataclass
class Project:
    """An owner's project folder: confide.toml, the marked code, secrets, maybe a certificate."""

    scenario: str
    path: Path
    code_marker: str
    secret_marker: str
    domain: str | None = None
    pki: OwnerPki | None = None

    @property
    def markers(self) -> list[bytes]:
        """What must never show outside the enclave (and the owner's machine)."""
        found = [self.code_marker.encode(), self.secret_marker.encode()]
        if self.pki is not None:
            # A line of the base64 body of the owner's private key.
            found.append(self.pki.key_pem.splitlines()[1].encode())
        return found

    def deploy(self, operator: InProcessOperator, *extra: str) -> Result:
        args = ["--untrusted-ssl", "-y"] if self.scenario == "operator" else []
        return cli(
            "deploy",
            "--path",
            str(self.path),
            "--connect",
            f"{HOST}:{operator.router_port}",
            "--url",
            operator.addresses.api_url,
            "--token",
            operator.token,
            "--timeout",
            "1",
            "--allow-simulation",
            *args,
            *extra,
        )


def make_project(root: Path, scenario: str) -> Project:
    """A copy of the helloworld example carrying markers, with its confide.toml."""
    root.mkdir(parents=True)
    tag = f"{scenario}-{uuid.uuid4().hex[:8]}"
    code_marker, secret_marker = f"{CODE_MARKER}-{tag}", f"{SECRET_MARKER}-{tag}"
    code = root / "code"
    shutil.copytree(EXAMPLES / "helloworld", code)
    with (code / "app.py").open("a") as f:
        f.write(f"\n\nMARKER = {code_marker!r}\n")
    (root / "secrets.json").write_text(json.dumps({"api_token": secret_marker}))
    (root / "tests").mkdir()
    text = (
        f'name = "sec-{scenario}"\n'
        'python_application = "app:app"\n'
        'healthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\n'
        "tests_requirements = []\n\n"
        "[cloud]\n"
        'code = "code"\n'
        'tests = "tests"\n'
        'project = "default"\n'
        'hardware = "small"\n'
        'secrets = "secrets.json"\n'
    )
    project = Project(scenario, root / "confide.toml", code_marker, secret_marker)
    if scenario == "owner":
        project.domain = f"app-{uuid.uuid4().hex[:8]}.owner.example"
        project.pki = OwnerPki.generate((project.domain,))
        project.pki.write_certificate(root / "cert.pem")
        (root / "key.pem").write_text(project.pki.key_pem)
        text += (
            "\n[cloud.ssl]\n"
            f'domain_name = "{project.domain}"\n'
            'private_key = "key.pem"\n'
            'certificate = "cert.pem"\n'
        )
    project.path.write_text(text)
    return project


@dataclass
class Deployed:
    """An app deployed with ``confide deploy``, running, and what its owner keeps."""

    project: Project
    context: AppContext
    context_path: Path
    operator: InProcessOperator

    @property
    def scenario(self) -> str:
        return self.project.scenario

    @property
    def server_name(self) -> str:
        """The name users reach the app at: the owner's domain, else the operator's."""
        return self.project.domain or self.context.domains[0]

    @property
    def state_dir(self) -> Path:
        return self.operator.data_dir / "apps" / str(self.context.app_id) / "state"

    def verify(self, *extra: str) -> Result:
        """``confide verify`` as an app user runs it (simulated TEE: the operator's root)."""
        return cli(
            "verify",
            self.server_name,
            "--connect",
            f"{HOST}:{self.operator.router_port}",
            "--operator",
            self.operator.addresses.api_url,
            "--allow-simulation",
            *extra,
        )

    def user(self, tmp_path: Path) -> httpx.Client:
        """A user's client through the router, trusting what this scenario gives users."""
        context: ssl.SSLContext
        if self.scenario == "zero-trust":
            pem = tmp_path / "verified.pem"
            done = self.verify("--context", str(self.context_path), "--output", str(pem))
            assert done.exit_code == 0, done.output
            context = trusting(x509.load_pem_x509_certificate(pem.read_bytes()))
        elif self.scenario == "owner":
            assert self.project.pki is not None
            context = trusting(self.project.pki.ca)
        else:
            with self.operator.client() as api:
                context = ssl.create_default_context(cadata=api.get("/api/v1/ca").text)
        return router_client(self.operator.router_port, self.server_name, context)


def files_under(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leaks(contents: dict[Path, bytes], markers: list[bytes]) -> list[str]:
    return [
        f"{path}: {m.decode()}" for path, data in contents.items() for m in markers if m in data
    ]


def new_app(operator: InProcessOperator, before: set[uuid.UUID]) -> uuid.UUID:
    with operator.client() as api:
        response = api.get("/api/v1/apps")
        assert response.status_code == 200, response.text
        ids = {uuid.UUID(a["id"]) for a in response.json()["apps"]} - before
    assert len(ids) == 1, ids
    return ids.pop()


def app_ids(operator: InProcessOperator) -> set[uuid.UUID]:
    with operator.client() as api:
        return {uuid.UUID(a["id"]) for a in api.get("/api/v1/apps").json()["apps"]}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="operator")
def operator_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessOperator]:
    with operator_in_thread(tmp_path_factory.mktemp("security") / "data") as operator:
        yield operator


def _deployed(
    operator: InProcessOperator, tmp_path_factory: pytest.TempPathFactory, scenario: str
) -> Iterator[Deployed]:
    project = make_project(tmp_path_factory.mktemp(scenario) / "project", scenario)
    done = project.deploy(operator)
    assert done.exit_code == 0, done.output
    (context_path,) = (project.path.parent / ".confide").glob("*.json")
    context = AppContext.load(context_path)
    yield Deployed(project, context, context_path, operator)
    with operator.client() as api:
        api.post(f"/api/v1/apps/{context.app_id}/stop")


@pytest.fixture(scope="module", name="zero_trust")
def zero_trust_fixture(
    operator: InProcessOperator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    yield from _deployed(operator, tmp_path_factory, "zero-trust")


@pytest.fixture(scope="module", name="owner_app")
def owner_fixture(
    operator: InProcessOperator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    yield from _deployed(operator, tmp_path_factory, "owner")


@pytest.fixture(scope="module", name="operator_app")
def operator_ssl_fixture(
    operator: InProcessOperator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    yield from _deployed(operator, tmp_path_factory, "operator")


_FIXTURE: Final = {"zero-trust": "zero_trust", "owner": "owner_app", "operator": "operator_app"}


@pytest.fixture(name="deployed")
def deployed_fixture(request: pytest.FixtureRequest) -> Deployed:
    """The app of the scenario the test is parametrized with (indirectly)."""
    scenario: str = request.param
    found: Deployed = request.getfixturevalue(_FIXTURE[scenario])
    return found


by_scenario: Final[Callable[[Any], Any]] = pytest.mark.parametrize(
    "deployed", SCENARIOS, indirect=True
)


# -- code (and secrets) encrypted when deployed -----------------------------------------------


@by_scenario
def test_code_encrypted_when_deployed(deployed: Deployed) -> None:
    """The operator's storage (database, blobs, logs, app folders) holds no plaintext."""
    data_dir = deployed.operator.data_dir
    stored = files_under(data_dir)
    database = b"".join(d for p, d in stored.items() if p.name.startswith("operator.db"))
    blobs = {p: d for p, d in stored.items() if (data_dir / "blobs") in p.parents}
    # Controls: the package is in the blobs, the app's metadata in the database.
    assert any(d.startswith(b"CONFIDEP") for d in blobs.values()), list(blobs)
    assert f"sec-{deployed.scenario}".encode() in database
    assert leaks(stored, deployed.project.markers) == []


# -- code and data encrypted while running ----------------------------------------------------


@by_scenario
def test_code_and_data_encrypted_while_running(deployed: Deployed, tmp_path: Path) -> None:
    """The app runs with its secrets; its state folder holds only the sealed state."""
    with deployed.user(tmp_path) as user:
        health = user.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["secrets"] == ["api_token"]
    state = files_under(deployed.state_dir)
    assert [p.name for p in state] == [STATE_FILE]
    assert state[deployed.state_dir / STATE_FILE].startswith(b"CONFSTAT\x01")
    assert leaks(state, deployed.project.markers) == []


# -- the owner verifies when deploying --------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_owner_verifies_when_deploying(
    scenario: str,
    operator: InProcessOperator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another expected fingerprint: the deploy aborts, no configuration leaves the CLI, and
    the deploy stops the app it created (issue 9, point 11)."""
    project = make_project(tmp_path / "project", scenario)
    monkeypatch.setattr(deploy_module, "runtime_code_hash", lambda: bytes(32))
    sent: list[str] = []

    def no_channel(address: HostPort, name: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(name)
        raise AssertionError("a configuration channel was opened")

    monkeypatch.setattr(deploy_module, "pinned_client", no_channel)
    before = app_ids(operator)
    done = project.deploy(operator)
    assert done.exit_code == 1, done.output
    assert "code fingerprint mismatch: expected" in done.output
    assert sent == []
    assert not (project.path.parent / ".confide").exists()
    app_id = new_app(operator, before)
    with operator.client() as api:
        body = wait_status(api, app_id, "stopped")
        assert body["status_detail"] == "stopped by owner"
        assert "configured" not in api.get(f"/api/v1/apps/{app_id}/logs").text


# -- the user verifies before use -------------------------------------------------------------


def test_user_verifies_zero_trust(zero_trust: Deployed) -> None:
    done = zero_trust.verify("--context", str(zero_trust.context_path))
    assert done.exit_code == 0, done.output
    assert "VERIFIED SIMULATED SGX" in done.output
    assert zero_trust.context.fingerprint.hex() in done.output


@pytest.mark.parametrize("deployed", ["owner", "operator"], indirect=True)
def test_user_cannot_verify(deployed: Deployed) -> None:
    """The app serves the owner's or the operator's certificate: no quote to check."""
    cert = fetch_peer_certificate(
        HOST, deployed.operator.router_port, server_name=deployed.server_name, timeout=10
    )
    if deployed.project.pki is not None:
        assert cert == deployed.project.pki.certificate
    done = deployed.verify()
    assert done.exit_code == 1, done.output
    assert "cannot verify" in done.output


# -- protection of queries --------------------------------------------------------------------


@by_scenario
def test_queries_protected_from_the_operator(deployed: Deployed, tmp_path: Path) -> None:
    """What the router relays: ciphertext in zero trust and owner modes, plaintext with
    ``--untrusted-ssl`` (the operator terminates TLS: that is what the mode means)."""
    recording = deployed.operator.recording
    with deployed.user(tmp_path) as user:
        recording.clear()
        response = user.post(
            f"/{QUERY_MARKER}?q={QUERY_MARKER}",
            headers={"X-Marker": QUERY_MARKER},
            content=QUERY_MARKER.encode(),
        )
        answer = user.get("/")
    assert response.status_code in (404, 405), response.text
    assert answer.text == "Hello world"
    relayed = recording.seen()
    assert relayed, "the router relayed nothing"
    marker = QUERY_MARKER.encode()
    if deployed.scenario == "operator":
        assert marker in recording.seen(Direction.TO_UPSTREAM)
        assert b"Hello world" in recording.seen(Direction.TO_CLIENT)
    else:
        assert marker not in relayed
        assert b"Hello world" not in relayed
        assert b"X-Marker" not in relayed and b"x-marker" not in relayed
