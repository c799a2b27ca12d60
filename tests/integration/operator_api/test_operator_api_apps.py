"""Deploying, reading, stopping and deleting apps through the API, on both backends."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from confide.client import OperatorClient
from confide.crypto import package_digest
from confide.operator import (
    App,
    record_status,
)
from confide.wire import AppStatus, DesiredState, LaunchManifest, TlsMode
from support.operator_api import (
    EXPIRES,
    RUNTIME_SHA256,
    SIM_ROOT_PEM,
    Operator,
    OperatorFactory,
    certificate,
    manifest,
    upload,
)


def _set_status(operator: Operator, app_id: str, status: AppStatus) -> None:
    """What the supervisor does."""
    with operator.database.session() as s:
        app = s.get(App, uuid.UUID(app_id))
        assert app is not None
        record_status(s, app, status, now=operator.clock())
        s.commit()


def test_deploy_returns_everything_a_client_needs_to_verify(
    operator: Operator, package: bytes
) -> None:
    token = operator.token("alice")
    with operator.client(token) as c:
        r = upload(c, package)
        assert r.status_code == 201, r.text
        app = r.json()
        assert r.headers["content-type"] == "application/json"
        assert c.get(f"/api/v1/apps/{app['id']}").json() == app
    app_id = uuid.UUID(app["id"])
    assert app["name"] == "hello" and app["project"] == "demo"
    assert (app["status"], app["desired_state"], app["delete_requested"]) == (
        "spawning",
        "run",
        False,
    )
    assert app["domains"] == [f"{app_id}.confide.test"]
    assert app["router"] == "127.0.0.1:9443"
    assert app["tee"] == "simulation" and app["simulation_root_ca"] == SIM_ROOT_PEM.decode()
    digest = package_digest(io.BytesIO(package))
    assert app["package"] == {"sha256": digest.hex(), "size": len(package)}
    # A client recomputes the fingerprint from the launch inputs.
    launch = LaunchManifest.from_json(json.dumps(app["launch"]))
    assert launch.package_sha256 == digest and launch.runtime_sha256 == RUNTIME_SHA256
    assert launch.app_id == app_id and launch.application == "app:app"
    assert launch.tls is TlsMode.RATLS and launch.san == (f"{app_id}.confide.test",)
    assert launch.ratls_expiry == int(datetime.fromisoformat(EXPIRES).timestamp())
    assert app["fingerprint"] == launch.measurement().hex()
    assert operator.events.notified == [app_id]


def test_packages_are_stored_by_content_once(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    with operator.client(token) as c:
        one = upload(c, package, manifest(name="one")).json()
        two = upload(c, package, manifest(name="two")).json()
    assert one["package"] == two["package"] and one["id"] != two["id"]
    digest = hashlib.sha256(package).hexdigest()
    assert operator.blob_files() == [operator.settings.blobs_dir / digest[:2] / digest[2:]]
    assert operator.blob_files()[0].read_bytes() == package


def test_list_and_projects(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    with operator.client(token) as c:
        a = upload(c, package, manifest(name="a", project="p1")).json()
        operator.clock.advance(1)
        b = upload(c, package, manifest(name="b", project="p2")).json()
        assert [x["id"] for x in c.get("/api/v1/apps").json()["apps"]] == [a["id"], b["id"]]
        only = c.get("/api/v1/apps", params={"project": "p2"}).json()["apps"]
        assert [x["id"] for x in only] == [b["id"]]
        r = c.post("/api/v1/projects", json={"name": "p3"})
        assert r.status_code == 201 and r.json()["apps"] == 0
        assert c.post("/api/v1/projects", json={"name": "p3"}).status_code == 409
        bad = c.post("/api/v1/projects", json={"name": "P 3"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "name"]
        projects = c.get("/api/v1/projects").json()
        assert [(p["name"], p["apps"]) for p in projects] == [("p1", 1), ("p2", 1), ("p3", 0)]
        me = c.get("/api/v1/me").json()
        assert me["account"] == "alice" and me["apps"] == 2 and me["max_apps"] == 20
        plans = c.get("/api/v1/plans").json()
        assert {p["name"] for p in plans} == {"small", "medium", "large"}


def test_stop_then_delete(operator: Operator, package: bytes) -> None:
    token = operator.token("alice")
    with operator.client(token) as c:
        app = upload(c, package).json()
        path = f"/api/v1/apps/{app['id']}"
        stopped = c.post(f"{path}/stop")
        assert stopped.status_code == 202
        assert (stopped.json()["desired_state"], stopped.json()["status"]) == ("stop", "spawning")
        # Deleting an active app waits for the supervisor to stop it.
        pending = c.delete(path)
        assert pending.status_code == 202 and pending.json()["delete_requested"] is True
        assert c.get(path).json()["status"] == "spawning"
        _set_status(operator, app["id"], AppStatus.STOPPED)
        _set_status(operator, app["id"], AppStatus.DELETED)
        assert c.get(path).status_code == 404
        assert c.get("/api/v1/apps").json()["apps"] == []
        assert c.delete(path).status_code == 404
    assert len(operator.events.notified) == 3


@pytest.mark.parametrize("status", [AppStatus.STOPPED, AppStatus.ON_ERROR, AppStatus.EXPIRED])
def test_deleting_an_inactive_app_is_immediate(
    operator: Operator, package: bytes, status: AppStatus
) -> None:
    token = operator.token("alice")
    with operator.client(token) as c:
        app = upload(c, package).json()
        _set_status(operator, app["id"], status)
        r = c.delete(f"/api/v1/apps/{app['id']}")
        assert r.status_code == 202 and r.json()["status"] == "deleted"
        assert c.get(f"/api/v1/apps/{app['id']}").status_code == 404
    with operator.database.session() as s:
        row = s.scalar(select(App).where(App.id == uuid.UUID(app["id"])))
        assert row is not None and row.desired_state == DesiredState.STOP.value


def test_owner_tls(operator: Operator, package: bytes, tmp_path: Path) -> None:
    pem = certificate(["shop.example.com"])
    doc = manifest(tls="owner", domain="shop.example.com", certificate=pem)
    with operator.client(operator.token("alice")) as c:
        r = upload(c, package, doc)
    assert r.status_code == 201, r.text
    app = r.json()
    assert app["domains"] == [f"{app['id']}.confide.test", "shop.example.com"]
    assert app["certificate"] == pem and app["launch"]["tls"] == "certificate"
    assert app["launch"]["certificate_sha256"] is not None


def test_metrics(operator: Operator, package: bytes) -> None:
    with operator.client(operator.token("alice")) as c:
        app = upload(c, package).json()
        operator.clock.advance(10)
        _set_status(operator, app["id"], AppStatus.RUNNING)
        with operator.database.session() as s:
            row = s.get(App, uuid.UUID(app["id"]))
            assert row is not None
            row.started_at, row.restarts = operator.clock(), 2
            s.commit()
        operator.clock.advance(5)
        m = c.get(f"/api/v1/apps/{app['id']}/metrics").json()
    assert m["status"] == "running" and m["restarts"] == 2
    assert m["uptime_seconds"] == 5.0
    assert m["status_seconds"] == {"spawning": 10.0, "running": 5.0}
    assert m["runtime"] == {}


def test_public_endpoints(operator: Operator, operators: OperatorFactory) -> None:
    with operator.client() as c:
        assert c.get("/api/v1/health").json() == {"status": "ok"}
        ca = c.get("/api/v1/ca")
        assert ca.status_code == 200 and ca.text.startswith("-----BEGIN CERTIFICATE-----")
        assert ca.headers["content-type"] == "application/x-pem-file"
        spec = c.get("/openapi.json").json()
    assert "/api/v1/apps" in spec["paths"]
    body = spec["paths"]["/api/v1/apps"]["post"]["requestBody"]["content"]
    schema = body["multipart/form-data"]["schema"]
    assert schema["required"] == ["package", "manifest"]
    assert "expires_at" in schema["properties"]["manifest"]["contentSchema"]["properties"]
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_no_ca_configured_is_404(operators: OperatorFactory) -> None:
    operator = operators.start()
    with operator.client() as c:
        assert c.get("/api/v1/ca").status_code == 404


def test_gramine_operators_give_no_simulation_root(
    operators: OperatorFactory, package: bytes
) -> None:
    operator = operators.start(tee="gramine")
    with operator.client(operator.token("alice")) as c:
        app = upload(c, package).json()
    assert app["tee"] == "gramine" and app["simulation_root_ca"] is None
    # How the enclave is rendered beyond the launch manifest (what the owner predicts with):
    # the plan's memory and 32 threads per core, as the Gramine backend renders them.
    plan = next(p for p in c_plans(operator) if p["name"] == app["plan"])
    assert app["gramine"] == {
        "enclave_size": f"{plan['memory_mib']}M", "max_threads": 32 * plan["cores"],
    }  # fmt: skip


def c_plans(operator: Operator) -> list[dict[str, Any]]:
    with operator.client(operator.token("alice")) as c:
        found: list[dict[str, Any]] = c.get("/api/v1/plans").json()
    return found


def test_other_operators_say_no_gramine_shape(operator: Operator, package: bytes) -> None:
    with operator.client(operator.token("alice")) as c:
        app = upload(c, package).json()
        launch = c.get("/api/v1/launch").json()
    assert app["tee"] != "gramine" and app["gramine"] is None
    assert launch == {"tee": app["tee"], "gramine": None}


def test_a_gramine_operator_says_how_it_renders_each_plan(operators: OperatorFactory) -> None:
    """Before any deploy, an owner reads each plan's enclave size and threads (the inputs of
    its MRENCLAVE prediction beside the launch manifest), through the typed client too."""
    operator = operators.start(tee="gramine")
    plans = c_plans(operator)
    with OperatorClient(operator.url, operator.token("alice")) as client:
        info = client.launch_info()
    assert info.tee == "gramine" and info.gramine is not None
    assert {name: (g.enclave_size, g.max_threads) for name, g in info.gramine.items()} == {
        p["name"]: (f"{p['memory_mib']}M", 32 * p["cores"]) for p in plans
    }


def test_the_api_is_http(operator: Operator) -> None:
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{operator.url}/docs").status_code == 404  # no CDN-loaded Swagger UI
