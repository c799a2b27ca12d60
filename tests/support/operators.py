"""Helpers to run ``confide operator serve`` as a subprocess and use it as owners and users do.

The operator listens on 127.0.0.1 port 0 for its API and its router; the
ports are read from ``<data>/operator.json`` (written once both listen, with
the operator's pid, so a file left by an earlier operator is never taken for
the new one). Apps are reached through the router only: a connection to the
router's address that sends the app's name as SNI (``curl --resolve`` style).
Every wait polls with a deadline; nothing sleeps for readiness.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography import x509

from confide.attestation import Policy, RatlsVerified, fetch_peer_certificate
from confide.attestation import verify_ratls_certificate as verify_ratls
from confide.runtime import start_child
from confide.tee import SimulatedPlatform
from confide.wire import LaunchManifest
from support.runtimes import CONFIDE, DEADLINE, EXAMPLES, HOST, CodeUnderTest, poll, trusting

BASE_DOMAIN: Final = "confide.test"
#: Starting an operator, or an app reaching a status.
START_DEADLINE: Final = 60.0
#: Far enough in the future for every test run.
EXPIRES: Final = datetime.now(UTC) + timedelta(days=7)


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class OperatorProcess:
    """A running ``confide operator serve``; its stderr goes to ``<data>/../operator.err``."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        data_dir_option: bool = True,
    ) -> None:
        """``data_dir_option=False``: no ``--data-dir``; ``data_dir`` is where it should go."""
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.err_path = data_dir.parent / f"{data_dir.name}-operator.err"
        self.args = [
            str(CONFIDE),
            "operator",
            "serve",
            *(["--data-dir", str(data_dir)] if data_dir_option else []),
            "--api",
            f"{HOST}:0",
            "--router",
            f"{HOST}:0",
            "--base-domain",
            BASE_DOMAIN,
            *extra,
        ]
        with self.err_path.open("ab") as err:
            self.proc = start_child(self.args, env=env, output=err)
        self.addresses = self._wait_ready()
        self.api_url = str(self.addresses["api_url"])
        self.router_port = int(self.addresses["router_port"])

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def _wait_ready(self) -> dict[str, Any]:
        path = self.data_dir / "operator.json"
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if path.is_file():
                try:
                    found: dict[str, Any] = json.loads(path.read_text())
                except ValueError:
                    found = {}
                if found.get("pid") == self.proc.pid:
                    return found
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the operator exited ({self.proc.returncode}):\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the operator did not start:\n{self.stderr}")
            time.sleep(0.05)

    def terminate(self, timeout: float = START_DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean anything up."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


def runtime_pids(data_dir: Path) -> list[int]:
    """Processes whose command line names this operator's apps folder (its runtimes)."""
    marker = str(data_dir / "apps") + os.sep
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().decode(errors="replace")
            state = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if marker in cmdline and state[state.rfind(")") + 2] not in "ZX":
            pids.append(int(entry.name))
    return pids


def kill_runtimes(data_dir: Path) -> None:
    """Kill what this test's operator started and left behind (each in its own group)."""
    for pid in runtime_pids(data_dir):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def operator_running(data_dir: Path, *extra: str) -> Iterator[OperatorProcess]:
    """An operator that stops its apps when it stops; everything is killed at the end."""
    operator = OperatorProcess(data_dir, "--stop-apps-on-exit", *extra)
    try:
        yield operator
    finally:
        operator.kill()
        kill_runtimes(data_dir)


def create_token(data_dir: Path, account: str) -> str:
    """A token from the CLI, as an operator's administrator issues it."""
    done = subprocess.run(
        [
            str(CONFIDE),
            "operator",
            "token",
            "create",
            "--account",
            account,
            "--data-dir",
            str(data_dir),
            "--json",
        ],
        check=True,
        capture_output=True,
        timeout=DEADLINE,
    )
    token: str = json.loads(done.stdout)["token"]
    return token


@dataclass
class Deployed:
    """An app deployed through the API, with what its owner keeps."""

    body: dict[str, Any]
    code: CodeUnderTest = field(repr=False)

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.body["id"])

    @property
    def name(self) -> str:
        return f"{self.id}.{BASE_DOMAIN}"

    @property
    def manifest(self) -> LaunchManifest:
        """The launch manifest the API published, parsed (unknown fields would fail)."""
        return LaunchManifest.from_json(json.dumps(self.body["launch"]))


def package(tmp: Path, app: str = "helloworld") -> CodeUnderTest:
    """An encrypted package of an example, made with confide.crypto as the owner's CLI does."""
    return CodeUnderTest.package(EXAMPLES / app, tmp / f"{app}-{uuid.uuid4().hex[:8]}.pkg")


def deploy(
    client: httpx.Client, code: CodeUnderTest, *, name: str = "hello", **manifest: Any
) -> Deployed:
    doc: dict[str, Any] = {
        "name": name,
        "application": "app:app",
        "plan": "small",
        "expires_at": iso(EXPIRES),
        "tls": "ratls",
        "healthcheck": "/health",
    }
    doc.update(manifest)
    response = client.post(
        "/api/v1/apps",
        files={"package": ("app.pkg", code.path.read_bytes(), "application/octet-stream")},
        data={"manifest": json.dumps(doc)},
    )
    assert response.status_code == 201, response.text
    return Deployed(response.json(), code)


def app_body(client: httpx.Client, app_id: uuid.UUID) -> dict[str, Any]:
    response = client.get(f"/api/v1/apps/{app_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def only_app(client: httpx.Client) -> dict[str, Any]:
    """The record of the account's one app that is not stopped (there must be exactly one)."""
    apps = client.get("/api/v1/apps").json()["apps"]
    (app,) = [a for a in apps if a["status"] not in ("stopped",)]
    return app_body(client, uuid.UUID(str(app["id"])))


def wait_status(
    client: httpx.Client, app_id: uuid.UUID, *statuses: str, timeout: float = START_DEADLINE
) -> dict[str, Any]:
    """The app once its status is one of ``statuses``; fails at once on an unexpected end."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        body = app_body(client, app_id)
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in statuses:
            return body
        if body["status"] in ("on_error", "expired", "stopped") and body["status"] not in statuses:
            raise AssertionError(f"app {app_id} went {seen}: {body['status_detail']}")
        if time.monotonic() > deadline:
            raise AssertionError(f"app {app_id} did not reach {statuses} in {timeout}s: {seen}")
        time.sleep(0.05)


# -- through the router -----------------------------------------------------------------------


def router_client(
    port: int, name: str, verify: ssl.SSLContext | None = None, *, timeout: float = 15.0
) -> httpx.Client:
    """HTTPS to the router's address with SNI and Host ``name`` (``curl --resolve`` style)."""
    return httpx.Client(
        base_url=f"https://{HOST}:{port}",
        headers={"Host": name},
        verify=verify if verify is not None else ssl.create_default_context(),
        timeout=timeout,
        event_hooks={"request": [lambda request: _sni(request, name)]},
    )


def _sni(request: httpx.Request, name: str) -> None:
    request.extensions["sni_hostname"] = name


def simulation_root(app: dict[str, Any]) -> x509.Certificate:
    """The operator's simulation root, as its API tells clients."""
    pem = app["simulation_root_ca"]
    assert pem, "the operator publishes no simulation root"
    return x509.load_pem_x509_certificate(pem.encode())


def verify_through_router(
    port: int, app: Deployed, data_dir: Path, measurement: bytes
) -> tuple[x509.Certificate, RatlsVerified]:
    """Fetch the app's RA-TLS certificate through the router; verify it is ``measurement``.

    The collateral comes from the operator's simulated platform (on this
    machine); the trust anchor is the root the API publishes, checked to be
    that platform's.
    """
    cert = fetch_peer_certificate(HOST, port, server_name=app.name, timeout=10.0)
    root = simulation_root(app.body)
    platform = SimulatedPlatform.open(data_dir / "simulation", now=datetime.now(UTC))
    assert platform.root_certificate == root
    now = datetime.now(UTC)
    verified = verify_ratls(
        cert,
        platform.collateral(now),
        now=now,
        policy=Policy(mr_enclave=measurement, allow_simulation=True),
        trust_anchor=root,
    )
    return cert, verified


def configure(
    port: int, app: Deployed, cert: x509.Certificate, *, name: str | None = None, **extra: Any
) -> httpx.Response:
    """Send the configuration (the code key) through the router to the verified enclave.

    ``name`` is the server name to use (default the app's operator domain); the
    RA-TLS certificate names the app's SANs, which in owner mode are the owner's domain.
    """
    assert app.code.key is not None
    with router_client(port, name or app.name, trusting(cert)) as owner:
        return owner.post(
            "/", json={"uuid": str(app.id), "code_secret_key": app.code.key.hex(), **extra}
        )


def configure_when_ready(port: int, app: Deployed, data_dir: Path) -> x509.Certificate:
    """Verify the enclave (its fingerprint as the API states it) and configure it."""
    cert, _ = verify_through_router(port, app, data_dir, bytes.fromhex(app.body["fingerprint"]))
    response = configure(port, app, cert)
    assert response.status_code == 200, response.text
    return cert


def wait_gone(pids: Sequence[int], timeout: float = DEADLINE) -> None:
    def gone() -> bool:
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if state[state.rfind(")") + 2] not in "ZX":
                return False
        return True

    poll(gone, f"processes {list(pids)} to end", timeout)
