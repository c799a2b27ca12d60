"""End to end: two operator replicas share one PostgreSQL and one data volume (ADR 0023).

Replica A supervises (``supervisor = "always"``); replica B is an API and router
replica only (``supervisor = "never"``), whose router reads the routes from the
database. An app deployed through A's API is verified, configured and used through
B's router, B's API reports it, and a stop asked through B's API stops B's routing.
Both share the data folder, as replicas share a ReadWriteMany volume in Kubernetes
(the CA, the simulated platform and the packages); each has its own configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.attestation import fetch_peer_certificate
from confide.errors import FetchError
from support.database import fresh_database_url
from support.operators import (
    BASE_DOMAIN,
    Deployed,
    OperatorProcess,
    configure_when_ready,
    create_token,
    deploy,
    kill_runtimes,
    package,
    router_client,
    wait_status,
)
from support.runtimes import HOST, poll, trusting

pytestmark = pytest.mark.slow


@pytest.fixture(name="postgres_url")
def postgres_url_fixture(tmp_path: Path) -> Iterator[str]:
    with fresh_database_url("postgresql", tmp_path / "unused.db") as url:
        yield url


def routed(router_port: int, app: Deployed) -> bool:
    try:
        fetch_peer_certificate(HOST, router_port, server_name=app.name, timeout=5)
    except FetchError:
        return False
    return True


def test_an_app_deployed_through_one_replica_is_served_by_the_other(
    tmp_path: Path, postgres_url: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "operator.toml").write_text(f'database_url = "{postgres_url}"\n')
    replica = tmp_path / "replica-b.toml"
    replica.write_text(f'database_url = "{postgres_url}"\nsupervisor = "never"\n')
    a = OperatorProcess(data, "--stop-apps-on-exit")
    b: OperatorProcess | None = None
    try:
        b = OperatorProcess(data, "--config", str(replica))
        assert b.router_port != a.router_port
        token = create_token(data, "alice")
        with a.client(token) as api_a, b.client(token) as api_b:
            app = deploy(api_a, package(tmp_path), name="replicated")
            wait_status(api_b, app.id, "initializing")  # B's API reads the same database
            # B's router learns the route from the database within its refresh.
            poll(lambda: routed(b.router_port, app), "replica B to route the app", 15)
            cert = configure_when_ready(b.router_port, app, data)
            wait_status(api_b, app.id, "running")
            with router_client(b.router_port, app.name, trusting(cert)) as user:
                assert user.get("/").text == "Hello world"
            assert app.name.endswith(BASE_DOMAIN)

            # A stop asked through B reaches A's supervisor through the database, and B's
            # router stops routing the app.
            assert api_b.post(f"/api/v1/apps/{app.id}/stop").status_code == 202
            wait_status(api_a, app.id, "stopped")
            poll(lambda: not routed(b.router_port, app), "replica B to stop routing", 15)
        assert "supervisor: never" in b.stderr
    finally:
        if b is not None:
            b.kill()
        a.kill()
        kill_runtimes(data)
