"""End to end: ``confide operator serve`` runs what owners deploy, reached only through its router.

One operator subprocess (SQLite, loopback, port 0) for the module; each test
deploys its own apps through the API, as an owner's CLI would: an encrypted
package of ``examples/helloworld`` and a manifest, with a token issued by
``confide operator token create``. The owner verifies the enclave through the
router against the measurement of the launch manifest the operator stored,
then configures it through the router.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from confide.attestation import fetch_peer_certificate
from confide.errors import FetchError
from confide.operator import (
    App,
    Database,
    status_history,
)
from confide.operator._backend import RUNTIME_NICE
from confide.wire import AppStatus, LaunchManifest
from support.operators import (
    Deployed,
    OperatorProcess,
    configure_when_ready,
    create_token,
    deploy,
    iso,
    package,
    router_client,
    runtime_pids,
    verify_through_router,
    wait_gone,
    wait_status,
)
from support.runtimes import (
    poll,
    trusting,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", name="token")
def token_fixture(operator: OperatorProcess) -> str:
    return create_token(operator.data_dir, "alice")


@pytest.fixture(name="api")
def api_fixture(operator: OperatorProcess, token: str) -> Iterator[httpx.Client]:
    with operator.client(token) as client:
        yield client


def stored_row(data_dir: Path, app_id: uuid.UUID) -> App:
    """The app's row as the operator stored it (read straight from its database)."""
    db = Database.open(f"sqlite:///{data_dir / 'operator.db'}")
    try:
        with db.session() as session:
            row = session.scalar(select(App).where(App.id == app_id))
            assert row is not None
            return row
    finally:
        db.dispose()


def history(data_dir: Path, app_id: uuid.UUID) -> list[str]:
    db = Database.open(f"sqlite:///{data_dir / 'operator.db'}")
    try:
        with db.session() as session:
            return [change.status for change in status_history(session, app_id)]
    finally:
        db.dispose()


def test_ratls_app_end_to_end_through_the_router(
    operator: OperatorProcess, api: httpx.Client, tmp_path: Path
) -> None:
    app = deploy(api, package(tmp_path))
    assert app.body["status"] == "spawning"
    assert app.body["domains"] == [app.name]
    assert app.body["router"] == f"127.0.0.1:{operator.router_port}"
    wait_status(api, app.id, "initializing")

    # The measurement the owner expects: that of the launch manifest the operator stored
    # (the same as the one its API publishes, and as the fingerprint).
    stored = LaunchManifest.from_json(stored_row(operator.data_dir, app.id).launch_manifest)
    assert stored == app.manifest
    assert stored.measurement().hex() == app.body["fingerprint"]
    cert, verified = verify_through_router(
        operator.router_port, app, operator.data_dir, stored.measurement()
    )
    assert verified.quote.mr_enclave == stored.measurement()
    assert verified.quote.simulated

    response = configure_when_ready(operator.router_port, app, operator.data_dir)
    assert response == cert
    running = wait_status(api, app.id, "running")
    assert running["status_detail"] is None

    with router_client(operator.router_port, app.name, trusting(cert)) as user:
        assert user.get("/").text == "Hello world"
        assert user.get("/health").json()["status"] == "ok"

    row = stored_row(operator.data_dir, app.id)
    assert row.runtime_host == "127.0.0.1" and row.runtime_port and row.runtime_pid
    assert row.started_at is not None and row.restarts == 0
    assert row.runtime_pid in runtime_pids(operator.data_dir)
    assert history(operator.data_dir, app.id) == ["spawning", "initializing", "running"]
    # It runs below the operator's CPU priority (ADR 0029), as a process and as a session
    # (the kernel's autogroup, where it has them: each runtime leads a session of its own).
    operator_nice = os.getpriority(os.PRIO_PROCESS, operator.proc.pid)
    runtime_nice = os.getpriority(os.PRIO_PROCESS, row.runtime_pid)
    assert runtime_nice == min(operator_nice + RUNTIME_NICE, 19) > operator_nice
    autogroup = Path(f"/proc/{row.runtime_pid}/autogroup")
    if autogroup.exists():
        assert autogroup.read_text().split()[-1] == str(RUNTIME_NICE)

    logs = api.get(f"/api/v1/apps/{app.id}/logs")
    assert logs.status_code == 200
    assert "waiting for the configuration" in logs.text
    assert "serving app:app on https://" in logs.text
    assert stored.measurement().hex() in logs.text
    metrics = api.get(f"/api/v1/apps/{app.id}/metrics").json()
    assert metrics["status"] == "running" and metrics["runtime"]["memory_rss_bytes"] > 0

    # An unknown name is not routed: the router closes the connection.
    with pytest.raises(FetchError):
        fetch_peer_certificate(
            "127.0.0.1",
            operator.router_port,
            server_name=f"{uuid.uuid4()}.confide.test",
            timeout=5.0,
        )


def _unrouted(operator: OperatorProcess, app: Deployed) -> bool:
    try:
        fetch_peer_certificate("127.0.0.1", operator.router_port, server_name=app.name, timeout=5)
    except FetchError:
        return True
    return False


def test_stop_then_delete(operator: OperatorProcess, api: httpx.Client, tmp_path: Path) -> None:
    app = deploy(api, package(tmp_path), name="stopped")
    wait_status(api, app.id, "initializing")
    pid = stored_row(operator.data_dir, app.id).runtime_pid
    assert pid is not None

    assert api.post(f"/api/v1/apps/{app.id}/stop").status_code == 202
    stopped = wait_status(api, app.id, "stopped")
    assert stopped["desired_state"] == "stop"
    wait_gone([pid])
    assert _unrouted(operator, app)
    row = stored_row(operator.data_dir, app.id)
    assert row.runtime_pid is None and row.status == AppStatus.STOPPED.value

    assert api.delete(f"/api/v1/apps/{app.id}").status_code == 202
    assert api.get(f"/api/v1/apps/{app.id}").status_code == 404
    assert history(operator.data_dir, app.id)[-2:] == ["stopped", "deleted"]
    folder = operator.data_dir / "apps" / str(app.id)
    poll(lambda: not folder.exists(), "the deleted app's folder to go")

    # Deleting a running app stops it first, then removes its sealed state.
    other = deploy(api, package(tmp_path), name="deleted")
    wait_status(api, other.id, "initializing")
    configure_when_ready(operator.router_port, other, operator.data_dir)
    wait_status(api, other.id, "running")
    pid = stored_row(operator.data_dir, other.id).runtime_pid
    assert pid is not None
    state = operator.data_dir / "apps" / str(other.id)
    assert state.is_dir()
    assert api.delete(f"/api/v1/apps/{other.id}").status_code == 202
    poll(lambda: stored_row(operator.data_dir, other.id).status == "deleted", "deletion", 60)
    wait_gone([pid])
    assert not state.exists()
    assert _unrouted(operator, other)
    assert history(operator.data_dir, other.id)[-2:] == ["stopped", "deleted"]


def test_expiry_stops_the_app(operator: OperatorProcess, api: httpx.Client, tmp_path: Path) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=15)
    app = deploy(api, package(tmp_path), name="shortlived", expires_at=iso(expires))
    assert app.manifest.ratls_expiry == int(expires.timestamp())
    wait_status(api, app.id, "initializing")
    configure_when_ready(operator.router_port, app, operator.data_dir)
    wait_status(api, app.id, "running")
    pid = stored_row(operator.data_dir, app.id).runtime_pid
    assert pid is not None

    expired = wait_status(api, app.id, "expired", timeout=45)
    # The app expires at its measured RA-TLS expiry (whole seconds, at most expires_at):
    # the runtime stops serving there by itself (ADR 0010).
    assert datetime.now(UTC).timestamp() >= int(expires.timestamp())
    assert expired["status_detail"].startswith("expired at")
    wait_gone([pid])
    assert _unrouted(operator, app)
    assert stored_row(operator.data_dir, app.id).runtime_pid is None
