"""Every ``confide runtime`` option is measured or harmless; where plaintext goes is not one.

The table below is ADR 0011's and ``_manifest.py``'s: an option the host could
set to move plaintext, or to change what reaches the app, must be measured
(and then ``confide fingerprint`` takes it too) or not be an option at all.
A new option fails here until it is classified.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer

from confide.cli import app
from confide.crypto import PackageKey, encrypt_package
from confide.runtime import RuntimeSettings

#: Options that are in the launch manifest (so in the fingerprint).
MEASURED = frozenset(
    {
        "--app-id",
        "--application",
        "--package",
        "--app-dir",
        "--plaincode",
        "--ratls",
        "--certificate",
        "--no-ssl",
        "--san",
        "--subject",
        "--requirements",  # the app's requirements lock: its SHA-256 (ADR 0024)
    }
)
#: Options that are not, each for a reason given in ADR 0011.
HARMLESS = frozenset(
    {
        "--host",  # where the listener binds: the host owns the network anyway
        "--port",
        "--handoff",  # gives the runtime connections, no more than connecting to --port
        "--relay-source",  # availability only: whose connections share per-source limits
        "--timeout",  # can only stop the runtime sooner, which the host can anyway
        "--expected-launch",  # can only stop it from starting (measured under Gramine)
        "--state-dir",  # only data sealed to this measurement is written there
        "--tee",  # the quote says which TEE made it; verifiers refuse simulation
        "--simulation-state",
        "--wheels",  # each wheel is checked against the measured lock (ADR 0024)
    }
)
NOW = datetime.now(UTC)


def _options(name: str) -> set[str]:
    group: Any = typer.main.get_command(app)
    command = group.commands[name]
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def test_every_runtime_option_is_classified() -> None:
    options = _options("runtime") - {"--help"}
    assert MEASURED.isdisjoint(HARMLESS)
    assert options == MEASURED | HARMLESS, (
        f"unclassified: {sorted(options - MEASURED - HARMLESS)}; "
        f"gone: {sorted((MEASURED | HARMLESS) - options)}"
    )
    # Where decrypted code and secrets go is the runtime's own choice, not an option.
    assert "--code-dir" not in options


def test_the_owner_can_give_every_measured_option_to_fingerprint() -> None:
    assert _options("fingerprint") >= MEASURED


@pytest.fixture(name="package")
def package_fixture(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("app = None\n")
    out = io.BytesIO()
    encrypt_package(code, out, PackageKey.generate())
    path = tmp_path / "app.pkg"
    path.write_bytes(out.getvalue())
    return path


def _settings(package: Path, **changes: Any) -> RuntimeSettings:
    arguments: dict[str, Any] = {
        "app_id": uuid.UUID(int=7),
        "application": "app:app",
        "package": package,
        "app_dir": None,
        "plaincode": False,
        "host": "127.0.0.1",
        "port": 0,
        "ratls_expiry": int((NOW + timedelta(days=1)).timestamp()),
        "certificate": None,
        "no_ssl": False,
        "san": ("app.example",),
        "subject": None,
        "state_dir": package.parent / "state",
        "timeout": None,
        "now": NOW,
        "runtime_sha256": bytes(32),
        "handoff": None,
    }
    arguments.update(changes)
    return RuntimeSettings.from_arguments(**arguments)


HARMLESS_CHANGES: dict[str, dict[str, Any]] = {
    "--host": {"host": "0.0.0.0"},  # noqa: S104 - a value, nothing binds here
    "--port": {"port": 8443},
    "--handoff": {"handoff": Path("/run/confide/handoff.sock")},
    "--relay-source": {"relay_sources": ("127.0.0.1",)},
    "--timeout": {"timeout": 5.0},
    "--state-dir": {"state_dir": Path("/elsewhere/state")},
}


@pytest.mark.parametrize("option", sorted(HARMLESS_CHANGES))
def test_harmless_options_leave_the_measurement_alone(package: Path, option: str) -> None:
    assert option in HARMLESS
    base = _settings(package)
    changed = _settings(package, **HARMLESS_CHANGES[option])
    assert changed != base  # the option was taken...
    assert changed.measurement == base.measurement  # ...and is not measured
