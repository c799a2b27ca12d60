"""``confide.client.OperatorClient`` against a real operator API, on both backends.

Also ``GET /api/v1/simulation``: no authentication, ``{"simulated": false}`` for
a real TEE, the root and fresh collateral for a simulated one.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import Policy, verify_quote
from confide.client import (
    AppContext,
    OperatorClient,
)
from confide.errors import Error, OperatorError
from confide.operator import App, record_status
from confide.tee import SimulatedPlatform
from confide.wire import AppStatus, HostPort, TlsMode
from confide.wire import AppStatus as Status
from confide.wire.api import DeployManifest
from support.operator_api import (
    EXPIRES,
    RUNTIME_SHA256,
    SIM_ROOT_PEM,
    START,
    Operator,
    OperatorFactory,
    certificate,
)

LIMIT = 64 * 1024


def _manifest(**changes: object) -> DeployManifest:
    fields: dict[str, object] = {
        "name": "hello",
        "project": "demo",
        "application": "app:app",
        "plan": "small",
        "expires_at": datetime.fromisoformat(EXPIRES),
        "tls": TlsMode.RATLS,
    }
    fields.update(changes)
    return DeployManifest(**fields)


@pytest.fixture(name="package_file")
def package_file_fixture(package: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "app.pkg"
    path.write_bytes(package)
    return path


def _set_status(operator: Operator, app_id: uuid.UUID, status: AppStatus) -> None:
    """What the supervisor does."""
    with operator.database.session() as s:
        app = s.get(App, app_id)
        assert app is not None
        record_status(s, app, Status(status.value), now=operator.clock())
        s.commit()


def test_an_owner_deploys_inspects_and_deletes(operator: Operator, package_file: Path) -> None:
    token = operator.token("alice")
    progress: list[tuple[int, int]] = []
    with OperatorClient(operator.url, token) as client:
        account = client.me()
        assert account.account == "alice" and account.apps == 0
        assert [p.name for p in client.plans()] == [p.name for p in operator.settings.plans]
        record = client.create_app(
            package_file, _manifest(), progress=lambda a, b: progress.append((a, b))
        )
        size = package_file.stat().st_size
        assert progress[-1] == (size, size)
        assert record.status is AppStatus.SPAWNING and record.name == "hello"
        assert record.router == HostPort("127.0.0.1", 9443)
        assert record.domains == (f"{record.id}.confide.test",)
        # The operator's fingerprint is the measurement of the launch manifest it sent.
        assert record.fingerprint_agrees
        assert record.launch.runtime_sha256 == RUNTIME_SHA256
        assert record.launch.ratls_expiry == int(datetime.fromisoformat(EXPIRES).timestamp())
        assert record.package_size == size

        assert [a.id for a in client.list_apps()] == [record.id]
        assert client.list_apps(project="other") == []
        assert [(p.name, p.apps) for p in client.projects()] == [("demo", 1)]
        assert client.get_app(record.id) == record

        _set_status(operator, record.id, AppStatus.RUNNING)
        metrics = client.metrics(record.id)
        assert metrics.status is AppStatus.RUNNING and metrics.restarts == 0

        log = operator.settings.logs_dir / f"{record.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("one\ntwo\nthree\n")
        assert client.logs(record.id) == "one\ntwo\nthree\n"
        assert client.logs(record.id, tail=1) == "three\n"

        stopped = client.stop_app(record.id)
        assert stopped.desired_state == "stop"
        _set_status(operator, record.id, AppStatus.STOPPED)
        assert client.delete_app(record.id).delete_requested
        with pytest.raises(OperatorError) as err:
            client.get_app(record.id)
    assert err.value.code == "operator.not_found"
    assert f"no app {record.id} on this operator (or not yours)" in str(err.value)


def test_the_context_of_a_deployed_app(operator: Operator, package_file: Path) -> None:
    with OperatorClient(operator.url, operator.token("alice")) as client:
        record = client.create_app(package_file, _manifest())
        context = AppContext.from_record(client.get_app(record.id), client.base_url)
    assert AppContext.from_json(context.to_json()) == context
    assert context.fingerprint == record.operator_fingerprint
    assert context.operator_url == operator.url


def test_follow_logs_until_the_app_stops(operator: Operator, package_file: Path) -> None:
    with OperatorClient(operator.url, operator.token("alice")) as client:
        record = client.create_app(package_file, _manifest())
        log = operator.settings.logs_dir / f"{record.id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("old\n")
        lines: list[str] = []
        first = threading.Event()

        def read() -> None:
            for line in client.follow_logs(record.id):
                lines.append(line)
                first.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert first.wait(30)
        with log.open("a") as f:
            f.write("new\nlast")
        _set_status(operator, record.id, AppStatus.STOPPED)
        reader.join(30)
        assert not reader.is_alive()
    assert lines == ["old", "new", "last"]


ERRORS = [
    # (what, expected code, words)
    ("bad token", "operator.unauthorized", "confide login"),
    ("another account's app", "operator.not_found", "(or not yours)"),
    ("unknown plan", "operator.invalid", "manifest.plan: no plan 'huge'"),
    ("past expiry", "operator.invalid", "manifest.expires_at: expires_at must be in the future"),
    ("owner certificate with a key", "usage", "private key"),
]


@pytest.mark.parametrize(("what", "code", "words"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(operator: Operator, package_file: Path, what: str, code: str, words: str) -> None:
    alice, bob = operator.token("alice"), operator.token("bob")
    with OperatorClient(operator.url, bob) as bobs_client:
        bobs = bobs_client.create_app(package_file, _manifest())
    with OperatorClient(operator.url, alice) as client:
        with pytest.raises(Error) as err:
            if what == "bad token":
                with OperatorClient(operator.url, "cft_nope") as stranger:
                    stranger.me()
            elif what == "another account's app":
                client.get_app(bobs.id)
            elif what == "unknown plan":
                client.create_app(package_file, _manifest(plan="huge"))
            elif what == "past expiry":
                client.create_app(package_file, _manifest(expires_at=START - timedelta(days=1)))
            else:
                pem = certificate(["a.example"], with_key=True)
                client.create_app(
                    package_file,
                    _manifest(tls=TlsMode.OWNER, domain="a.example", certificate=pem),
                )
    assert err.value.code == code
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_package_over_the_limit(operators: OperatorFactory, tmp_path: Path) -> None:
    # Within the multipart allowance: the operator reads it all, then answers 413. (A body
    # declared far too large is refused before it is read; hypercorn may then hang up before
    # the 413 reaches the client, so that case is not asserted here.)
    operator = operators.start(max_package_size=LIMIT)
    big = tmp_path / "big.pkg"
    big.write_bytes(b"x" * (LIMIT + 1))
    with OperatorClient(operator.url, operator.token("alice")) as client:
        with pytest.raises(OperatorError) as err:
            client.create_app(big, _manifest())
    assert err.value.code == "operator.too_large" and err.value.limit == LIMIT
    assert str(err.value) == "the package is too large for this operator (its limit is 65536 bytes)"


def test_an_operator_that_is_not_there() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with OperatorClient(url, "t", timeout=5) as client, pytest.raises(OperatorError) as err:
        client.me()
    assert err.value.code == "operator.unreachable"
    assert str(err.value).startswith(f"cannot reach the operator at {url}: ")


# -- GET /api/v1/simulation ------------------------------------------------------------------


def test_simulation_publishes_the_root_and_fresh_collateral(
    operators: OperatorFactory, tmp_path: Path, package_file: Path
) -> None:
    platform = SimulatedPlatform.open(tmp_path / "sim", now=START)
    root_pem = platform.root_certificate.public_bytes(Encoding.PEM)
    asked: list[datetime] = []

    def collateral(now: datetime) -> str:
        asked.append(now)
        return platform.collateral(now).to_json()

    operator = operators.start(
        sim_root_provider=lambda: root_pem, sim_collateral_provider=collateral
    )
    with operator.client() as c:  # no token
        r = c.get("/api/v1/simulation")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"simulated", "root_ca_pem", "collateral"}
        assert body["simulated"] is True and body["root_ca_pem"] == root_pem.decode()
        assert isinstance(body["collateral"], dict)
        assert asked == [START]  # the operator's clock
        # Not signed anew for every caller: the same collateral for an hour.
        operator.clock.advance(3599)
        assert c.get("/api/v1/simulation").json() == body and asked == [START]
        operator.clock.advance(1)
        assert c.get("/api/v1/simulation").json() != body
        assert asked == [START, START + timedelta(hours=1)]

    with OperatorClient(operator.url, None) as client:
        info = client.simulation()
    assert info is not None and info.root_ca == platform.root_certificate
    assert info.collateral is not None
    # What is published is enough to verify the platform's quotes.
    quote = platform.quote(bytes(64), mr_enclave=bytes(32), mr_signer=bytes(32))
    verified = verify_quote(
        quote,
        info.collateral,
        now=START + timedelta(hours=1, minutes=1),
        policy=Policy(allow_simulation=True),
        trust_anchor=info.root_ca,
    )
    assert verified.simulated


def test_simulation_without_a_collateral_provider(operator: Operator) -> None:
    with operator.client() as c:
        body = c.get("/api/v1/simulation").json()
    assert body == {"simulated": True, "root_ca_pem": SIM_ROOT_PEM.decode()}


def test_a_real_tee_is_not_simulated(operators: OperatorFactory) -> None:
    operator = operators.start(tee="gramine", sim_collateral_provider=lambda now: "{}")
    with operator.client() as c:
        r = c.get("/api/v1/simulation")
    assert r.status_code == 200 and r.json() == {"simulated": False}
    with OperatorClient(operator.url, None) as client:
        assert client.simulation() is None


def test_simulation_is_in_the_openapi_document(operator: Operator) -> None:
    with operator.client() as c:
        doc = c.get("/openapi.json").json()
    operation = doc["paths"]["/api/v1/simulation"]["get"]
    assert "security" not in operation
    assert json.dumps(operation).count("SimulationOut") >= 1


def test_the_ca_certificate(operators: OperatorFactory, tmp_path: Path) -> None:
    platform = SimulatedPlatform.open(tmp_path / "sim", now=START)
    pem = platform.root_certificate.public_bytes(Encoding.PEM)

    class Ca:
        def certificate_pem(self) -> bytes:
            return pem

    operator = operators.start(ca_provider=Ca())
    with OperatorClient(operator.url, None) as client:
        assert client.ca_certificate() == platform.root_certificate
        assert client.health().ok


def test_the_transport_is_injectable(operator: Operator) -> None:
    """A transport of one's own (here: plain httpx) reaches the same server."""
    transport = httpx.HTTPTransport(retries=0)
    with OperatorClient(operator.url, operator.token("alice"), transport=transport) as client:
        assert client.me().account == "alice"
