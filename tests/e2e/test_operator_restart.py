"""End to end: runtimes survive crashes, and the operator's own ``kill -9``, losing nothing.

- A runtime killed behind the operator's back is restarted, resumes from its
  sealed state and runs again: no reconfiguration, same enclave key.
- The operator killed with SIGKILL leaves its runtimes running; the next one,
  on the same data folder, adopts them (same pids), keeps their status and
  restarts those that died in between. An app still waiting for its
  configuration is adopted too, and can be configured afterwards.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from confide.operator import App, Database
from support.operators import (
    OperatorProcess,
    configure_when_ready,
    create_token,
    deploy,
    kill_runtimes,
    package,
    router_client,
    runtime_pids,
    verify_through_router,
    wait_gone,
    wait_status,
)
from support.runtimes import trusting

pytestmark = pytest.mark.slow


def row(data_dir: Path, app_id: uuid.UUID) -> App:
    db = Database.open(f"sqlite:///{data_dir / 'operator.db'}")
    try:
        with db.session() as session:
            found = session.scalar(select(App).where(App.id == app_id))
            assert found is not None
            return found
    finally:
        db.dispose()


def test_crash_restart_then_operator_kill_and_adoption(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = OperatorProcess(data)  # leaves its runtimes running when it stops
    try:
        token = create_token(data, "alice")
        with first.client(token) as api:
            app = deploy(api, package(tmp_path))
            waiting = deploy(api, package(tmp_path), name="waiting")
            wait_status(api, app.id, "initializing")
            cert = configure_when_ready(first.router_port, app, data)
            wait_status(api, app.id, "running")
            wait_status(api, waiting.id, "initializing")

            # 1. The runtime crashes: restarted from its sealed state, running again.
            crashed = row(data, app.id).runtime_pid
            assert crashed is not None
            os.kill(crashed, signal.SIGKILL)
            wait_status(api, app.id, "spawning")
            body = wait_status(api, app.id, "running")
            restarted = row(data, app.id)
            assert restarted.runtime_pid not in (None, crashed)
            assert restarted.restarts == 1
            assert api.get(f"/api/v1/apps/{app.id}/metrics").json()["restarts"] == 1
            assert body["status_detail"] is None
            logs = api.get(f"/api/v1/apps/{app.id}/logs").text
            assert "resuming the app from the sealed state" in logs
            again, _ = verify_through_router(
                first.router_port, app, data, bytes.fromhex(app.body["fingerprint"])
            )
            assert again.public_key() == cert.public_key()  # the same sealed key
            with router_client(first.router_port, app.name, trusting(again)) as user:
                assert user.get("/").text == "Hello world"

        # 2. kill -9 the operator: its runtimes go on.
        before = {a: row(data, a) for a in (app.id, waiting.id)}
        first.kill()
        pids = {a: r.runtime_pid for a, r in before.items()}
        assert set(pids.values()) <= set(runtime_pids(data))

        # One of them dies while no operator watches.
        orphan_pid = pids[waiting.id]
        assert orphan_pid is not None
        os.killpg(orphan_pid, signal.SIGKILL)
        wait_gone([orphan_pid])

        second = OperatorProcess(data, "--stop-apps-on-exit")
        try:
            assert second.router_port != first.router_port or second.api_url != first.api_url
            with second.client(token) as api:
                body = wait_status(api, app.id, "running")
                adopted = row(data, app.id)
                assert adopted.runtime_pid == pids[app.id]  # adopted, not restarted
                assert adopted.restarts == 1 and adopted.status == "running"
                assert "adopted its runtime pid" in second.stderr
                with router_client(second.router_port, app.name, trusting(again)) as user:
                    assert user.get("/").text == "Hello world"

                # The one that died is restarted, still waits for its configuration, and
                # takes it from its owner now.
                wait_status(api, waiting.id, "initializing")
                assert row(data, waiting.id).runtime_pid not in (None, orphan_pid)
                assert row(data, waiting.id).restarts == 1
                configure_when_ready(second.router_port, waiting, data)
                wait_status(api, waiting.id, "running")
            # A clean stop with --stop-apps-on-exit stops the runtimes.
            remaining = runtime_pids(data)
            assert second.terminate() == 0
            wait_gone(remaining)
            assert row(data, app.id).runtime_pid is None
        finally:
            second.kill()
    finally:
        first.kill()
        kill_runtimes(data)


def test_operator_stopped_cleanly_leaves_apps_running(tmp_path: Path) -> None:
    """Without --stop-apps-on-exit, SIGTERM leaves runtimes for the next operator."""
    data = tmp_path / "data"
    first = OperatorProcess(data)
    try:
        token = create_token(data, "bob")
        with first.client(token) as api:
            app = deploy(api, package(tmp_path))
            wait_status(api, app.id, "initializing")
        pid = row(data, app.id).runtime_pid
        assert first.terminate() == 0
        assert pid in runtime_pids(data)
        assert not (data / "operator.json").exists()
        second = OperatorProcess(data, "--stop-apps-on-exit")
        try:
            with second.client(token) as api:
                wait_status(api, app.id, "initializing")
                assert row(data, app.id).runtime_pid == pid
                configure_when_ready(second.router_port, app, data)
                wait_status(api, app.id, "running")
            assert second.terminate() == 0
            wait_gone([pid] if pid is not None else [])
            # Stopped with the operator: ready to start again with the next one.
            stopped = row(data, app.id)
            assert stopped.status == "spawning" and stopped.runtime_pid is None
        finally:
            second.kill()
    finally:
        first.kill()
        kill_runtimes(data)
