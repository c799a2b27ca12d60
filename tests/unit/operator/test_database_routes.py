"""Routes read from the shared database by every replica's router (DatabaseRoutes, ADR 0023).

What the supervisor wrote in the apps table is what each replica routes, within one
refresh; a router that cannot read the database routes nothing once its table is older
than the staleness bound (fail closed).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from confide.errors import UsageError
from confide.operator import Database
from confide.operator._models import Account, App, Project
from confide.operator._router import Route, RouteMode
from confide.operator._routes import DatabaseRoutes, read_route_rows
from confide.wire import AppStatus

BASE = "apps.example"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def add_app(database: Database, **fields: Any) -> uuid.UUID:
    """An app row as the API and the supervisor leave it (``fields`` override)."""
    with database.session() as s:
        account = s.query(Account).filter_by(name="alice").one_or_none()
        if account is None:
            account = Account(name="alice", created_at=NOW)
            s.add(account)
            s.flush()
            s.add(Project(account_id=account.id, name="default", created_at=NOW))
            s.flush()
        project = s.query(Project).filter_by(account_id=account.id).one()
        values: dict[str, Any] = {
            "id": uuid.uuid4(),
            "account_id": account.id,
            "project_id": project.id,
            "name": "hello",
            "application": "app:app",
            "healthcheck": "/",
            "plan": "small",
            "expires_at": NOW + timedelta(days=1),
            "tls": "ratls",
            "package_sha256": "00" * 32,
            "package_size": 1,
            "launch_manifest": "{}",
            "status": AppStatus.RUNNING.value,
            "desired_state": "run",
            "delete_requested": False,
            "runtime_host": "10.0.0.1",
            "runtime_port": 8443,
            "runtime_pid": 1,
            "restarts": 0,
            "created_at": NOW,
            "updated_at": NOW,
        }
        values.update(fields)
        s.add(App(**values))
        s.commit()
        return uuid.UUID(str(values["id"]))


def update_app(database: Database, app_id: uuid.UUID, **fields: Any) -> None:
    with database.session() as s:
        app = s.get(App, app_id)
        assert app is not None
        for key, value in fields.items():
            setattr(app, key, value)
        s.commit()


def name(app_id: uuid.UUID) -> str:
    return f"{app_id}.{BASE}"


def test_every_replica_routes_what_the_database_says(database: Database) -> None:
    running = add_app(database)
    waiting = add_app(database, status="initializing", tls="operator", runtime_host="10.0.0.2")
    operator_mode = add_app(database, tls="operator", runtime_host="10.0.0.3")
    owner = add_app(database, tls="owner", domain="shop.example.org", runtime_host="10.0.0.4")
    not_routed = [
        add_app(database, status="stopped"),
        add_app(database, status="on_error"),
        add_app(database, desired_state="stop"),
        add_app(database, delete_requested=True),
        add_app(database, status="spawning", runtime_host=None, runtime_port=None),
    ]
    clock = Clock()
    routes = DatabaseRoutes(database, BASE, monotonic=clock)
    assert routes.lookup(name(running)) is None  # never read: nothing routed
    routes.apply(read_route_rows(database), now=clock.now)
    assert routes.lookup(name(running)) == Route(RouteMode.PASSTHROUGH, "10.0.0.1", 8443)
    # Operator mode: passthrough until it runs (its configuration is RA-TLS), then terminated.
    assert routes.lookup(name(waiting)) == Route(RouteMode.PASSTHROUGH, "10.0.0.2", 8443)
    assert routes.lookup(name(operator_mode)) == Route(RouteMode.TERMINATE, "10.0.0.3", 8443)
    assert routes.lookup("shop.example.org") == Route(RouteMode.PASSTHROUGH, "10.0.0.4", 8443)
    assert routes.lookup(name(owner)) is not None
    for app_id in not_routed:
        assert routes.lookup(name(app_id)) is None
    assert len(routes.routes()) == 5  # guard: four apps, one with its own domain


def test_a_change_is_routed_at_the_next_refresh(database: Database) -> None:
    moved = add_app(database)
    stopped = add_app(database, tls="owner", domain="shop.example.org", runtime_host="10.0.0.4")
    clock = Clock()
    routes = DatabaseRoutes(database, BASE, monotonic=clock)
    routes.apply(read_route_rows(database), now=clock.now)
    assert routes.lookup("shop.example.org") is not None
    # The supervisor restarted one runtime elsewhere and stopped the other.
    update_app(database, moved, runtime_host="10.0.9.9", runtime_port=9443)
    update_app(database, stopped, status="spawning", runtime_host=None, runtime_port=None)
    assert routes.lookup(name(moved)) == Route(RouteMode.PASSTHROUGH, "10.0.0.1", 8443)
    clock.now += 1
    routes.apply(read_route_rows(database), now=clock.now)
    assert routes.lookup(name(moved)) == Route(RouteMode.PASSTHROUGH, "10.0.9.9", 9443)
    assert routes.lookup("shop.example.org") is None
    assert routes.lookup(name(stopped)) is None


def test_a_stale_table_routes_nothing(database: Database) -> None:
    app_id = add_app(database)
    clock = Clock()
    routes = DatabaseRoutes(database, BASE, monotonic=clock, interval=1.0, max_staleness=10.0)
    routes.apply(read_route_rows(database), now=clock.now)
    clock.now += 10.0
    assert routes.lookup(name(app_id)) is not None  # at the bound: still fresh
    clock.now += 0.001
    assert routes.lookup(name(app_id)) is None  # past it: fail closed
    assert routes.routes() == {}
    routes.apply(read_route_rows(database), now=clock.now)
    assert routes.lookup(name(app_id)) is not None


def test_the_refresh_must_be_within_the_staleness_bound(database: Database) -> None:
    with pytest.raises(UsageError):
        DatabaseRoutes(database, BASE, interval=10.0, max_staleness=5.0)


def test_a_router_that_loses_the_database_keeps_serving_then_fails_closed(
    database: Database, tmp_path: Path
) -> None:
    app_id = add_app(database)
    clock = Clock()
    routes = DatabaseRoutes(database, BASE, monotonic=clock, interval=0.01, max_staleness=0.5)

    async def body() -> None:
        await routes.refresh()
        assert routes.lookup(name(app_id)) is not None
        # The database goes away: reads fail, the loop goes on.
        routes._db = Database.open(f"sqlite:///{tmp_path / 'missing' / 'gone.db'}")
        stop = asyncio.Event()
        task = asyncio.create_task(routes.run(stop.wait))
        await asyncio.sleep(0.1)
        assert not task.done()
        assert routes.lookup(name(app_id)) is not None  # within the bound
        clock.now += 0.6
        assert routes.lookup(name(app_id)) is None  # past it
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(body())
