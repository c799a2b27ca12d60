"""``deploy`` against a real operator API: what it refuses before uploading, and the app it
stops when it fails after the upload (no supervisor runs: the app never leaves spawning)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from confide.client import (
    DeployOptions,
    OperatorClient,
    ProjectConfig,
    deploy,
)
from confide.errors import Error, SimulationError, UsageError
from confide.release import OwnerKey
from confide.tee import SimulatedPlatform
from confide.wire import AppStatus, TlsMode
from support.operator_api import (
    START,
    Operator,
    OperatorFactory,
    manifest,
    upload,
)


@dataclass
class Events:
    said: list[str] = field(default_factory=list)

    def step(self, text: str) -> None:
        self.said.append(text)

    def warn(self, text: str) -> None:
        self.said.append(f"warning: {text}")

    def upload(self, sent: int, total: int) -> None:
        pass

    def status(self, status: AppStatus, detail: str | None) -> None:
        self.said.append(f"status: {status.value}")


def _no_collateral(*_: Any) -> Any:
    raise AssertionError("no collateral is fetched in these tests")


def _project(
    root: Path,
    app_dir: Path,
    *,
    plan: str = "small",
    extra: str = "",
    name: str = "hello",
    application: str = "app:app",
    healthcheck: str = "/",
) -> ProjectConfig:
    path = root / "confide.toml"
    (root / "tests").mkdir(exist_ok=True)
    path.write_text(
        f"name = {json.dumps(name)}\n"
        f"python_application = {json.dumps(application)}\n"
        f"healthcheck_endpoint = {json.dumps(healthcheck)}\n"
        'tests_cmd = "pytest"\n'
        "tests_requirements = []\n\n"
        "[cloud]\n"
        f"code = {json.dumps(str(app_dir))}\n"
        'tests = "tests"\n'
        'project = "default"\n'
        f'hardware = "{plan}"\n' + extra
    )
    return ProjectConfig.load(path)


def _deploy(operator: Operator, token: str, config: ProjectConfig, **options: Any) -> Events:
    events = Events()
    options.setdefault("allow_simulation", True)
    options.setdefault("wait", 5.0)  # no supervisor runs: a deploy that got this far fails
    options.setdefault("owner_key", OwnerKey(bytes(32)))
    with OperatorClient(operator.url, token, timeout=30) as client:
        deploy(
            client,
            config,
            DeployOptions(tls=TlsMode.RATLS, workspace=config.path.parent / "ws", **options),
            events,
            _no_collateral,
            clock=operator.clock,
        )
    return events


def _start(operators: OperatorFactory, **settings: Any) -> Operator:
    """An operator whose simulated TEE publishes a real simulation root (the deploy parses it)."""
    platform = SimulatedPlatform.open(operators.tmp_path / "sim", now=START)
    root = platform.root_certificate.public_bytes(Encoding.PEM)
    return operators.start(sim_root_provider=lambda: root, **settings)


def _apps(operator: Operator, token: str) -> list[dict[str, Any]]:
    with operator.client(token) as c:
        apps: list[dict[str, Any]] = c.get("/api/v1/apps").json()["apps"]
    return apps


CASES = {
    "unknown plan": ({"plan": "huge"}, {}, UsageError, "the operator has no plan 'huge'"),
    "expiry past the plan's lifetime": (
        {"extra": "expiration_date = 2031-06-01T00:00:00Z\n"},
        {},
        UsageError,
        "plan small allows at most 365 days",
    ),
    "a name the operator refuses": (
        {"name": "Merge Join"},
        {},
        UsageError,
        r"the deploy manifest is refused: name: .*pattern",
    ),
    "an application that is not module:attribute": (
        {"application": "app.py"},
        {},
        UsageError,
        "python_application: observed 'app.py', expected module:attribute",
    ),
    "a health check that is not a path": (
        {"healthcheck": "health"},
        {},
        UsageError,
        "healthcheck_endpoint: observed 'health', expected a URL path",
    ),
    "an expiry already past": (
        {"extra": "expiration_date = 2020-06-01T00:00:00Z\n"},
        {},
        UsageError,
        "which is in the past",
    ),
    "simulated TEE not allowed": (
        {},
        {"allow_simulation": False},
        SimulationError,
        "the enclave runs in simulation mode",
    ),
}


@pytest.mark.parametrize(
    ("project", "options", "error", "message"), CASES.values(), ids=list(CASES)
)
def test_refused_before_anything_is_uploaded(
    operators: OperatorFactory,
    app_dir: Path,
    tmp_path: Path,
    project: dict[str, Any],
    options: dict[str, Any],
    error: type[Error],
    message: str,
) -> None:
    operator = _start(operators)
    token = operator.token("alice")
    with pytest.raises(error, match=message) as info:
        # Loading the project file is the deploy's first step: it refuses some fields itself.
        config = _project(tmp_path, app_dir, **project)
        _deploy(operator, token, config, **options)
    loaded = "config" in locals()
    assert not loaded or "nothing was uploaded" in str(info.value)
    assert _apps(operator, token) == [] and operator.blob_files() == []


def test_no_room_for_another_app_or_too_large_a_package(
    operators: OperatorFactory, app_dir: Path, tmp_path: Path, package: bytes
) -> None:
    operator = _start(operators, max_apps_per_account=1, max_package_size=len(package))
    token = operator.token("alice")
    with operator.client(token) as c:
        assert upload(c, package, manifest(name="first")).status_code == 201
    with pytest.raises(UsageError, match="has 1 apps, the most it may have"):
        _deploy(operator, token, _project(tmp_path, app_dir))
    bob = operator.token("bob")
    (app_dir / "more.bin").write_bytes(bytes(len(package)))
    with pytest.raises(UsageError, match="more than the operator's limit") as info:
        _deploy(operator, bob, _project(tmp_path, app_dir))
    assert "nothing was uploaded" in str(info.value)
    assert _apps(operator, bob) == [] and len(operator.blob_files()) == 1


def test_a_failure_after_the_upload_stops_the_app(
    operators: OperatorFactory, app_dir: Path, tmp_path: Path
) -> None:
    operator = _start(operators)
    token = operator.token("alice")
    config = _project(tmp_path, app_dir)
    # No supervisor: the app never gets to initializing, so the wait fails after the upload.
    with pytest.raises(UsageError, match="still spawning after 0 s"):
        _deploy(operator, token, config, wait=0.05)
    (app,) = _apps(operator, token)
    assert app["desired_state"] == "stop"
    # The supervisor was told: of the create, then of the stop.
    assert operator.events.notified == [uuid.UUID(app["id"])] * 2
    assert not (tmp_path / "ws").exists()


def test_an_interrupted_deploy_stops_the_app(
    operators: OperatorFactory, app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while waiting after the upload: the app is stopped, and the interrupt goes on."""
    operator = _start(operators)
    token = operator.token("alice")

    def interrupted(self: OperatorClient, app_id: object, **_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(OperatorClient, "get_app", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _deploy(operator, token, _project(tmp_path, app_dir))
    (app,) = _apps(operator, token)
    assert app["desired_state"] == "stop"


def test_a_name_cosmian_accepted_is_uploaded(
    operators: OperatorFactory, app_dir: Path, tmp_path: Path
) -> None:
    """``merge_join`` (an underscore: not a DNS label) is an app name; the app's domain comes
    from its id, never from its name."""
    operator = _start(operators)
    token = operator.token("alice")
    config = _project(tmp_path, app_dir, name="merge_join")
    # No supervisor: the deploy fails waiting, after the upload the name used to be refused at.
    with pytest.raises(UsageError, match="still spawning"):
        _deploy(operator, token, config, wait=0.05)
    (app,) = _apps(operator, token)
    assert app["name"] == "merge_join"
    assert app["domains"][0].startswith(f"{app['id']}.")
