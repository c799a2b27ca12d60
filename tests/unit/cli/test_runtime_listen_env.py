"""`confide runtime` takes where it listens from the two passthrough variables, validated.

Under Gramine the argv is fixed and names no address nor port: the host passes them in
``CONFIDE_LISTEN_HOST``/``CONFIDE_LISTEN_PORT`` (the manifest's only passthroughs). The
runtime reads them as ``--host``/``--port`` and bounds them like the options.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confide.cli import app
from confide.runtime import CodeSource, launch_manifest

ARGS = ["runtime", "--app-id", "0f0f0f0f-0000-4000-8000-000000000002", "--application",
        "app:app", "--state-dir", "/nonexistent-state", "--tee", "simulation"]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"CONFIDE_LISTEN_HOST": "bad host;rm"}, "CONFIDE_LISTEN_HOST"),
        ({"CONFIDE_LISTEN_HOST": "a" * 300}, "CONFIDE_LISTEN_HOST"),
        ({"CONFIDE_LISTEN_PORT": "70000"}, "CONFIDE_LISTEN_PORT"),
        ({"CONFIDE_LISTEN_PORT": "eighty"}, "CONFIDE_LISTEN_PORT"),
    ],
)
def test_a_bad_listen_variable_is_refused_before_anything_runs(
    env: dict[str, str], said: str
) -> None:
    result = CliRunner().invoke(app, ARGS, env=env)
    assert result.exit_code == 2
    assert said in result.output and "Traceback" not in result.output


def test_the_listen_variables_are_read_as_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def capture(**kwargs: object) -> object:
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("confide.cli._runtime.RuntimeSettings.from_arguments", capture)
    env = {"CONFIDE_LISTEN_HOST": "127.0.0.1", "CONFIDE_LISTEN_PORT": "4711"}
    result = CliRunner().invoke(app, ARGS, env=env)
    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 4711)


EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "helloworld"


def test_the_runtime_refuses_a_launch_other_than_the_fixed_copy(tmp_path: Path) -> None:
    """Under Gramine the launch manifest is fixed in the measured environment; the runtime
    computes its own from its argv and files and stops when they differ (so the manifest
    its certificate carries is the one a pinned MRENCLAVE vouches for)."""
    args = ["runtime", "--app-id", "0f0f0f0f-0000-4000-8000-000000000002", "--application",
            "app:app", "--app-dir", str(EXAMPLE), "--plaincode", "--no-ssl", "--san",
            "a.example", "--state-dir", str(tmp_path), "--tee", "simulation"]  # fmt: skip
    other = launch_manifest(
        app_id=uuid.UUID("0f0f0f0f-0000-4000-8000-000000000002"),
        application="app:app",
        code=CodeSource.plaintext_folder(EXAMPLE),
        ratls_expiry=None,
        certificate=None,
        san=("b.example",),
        subject=None,
    )
    result = CliRunner().invoke(
        app, args, env={"CONFIDE_LAUNCH_MANIFEST": other.to_json().decode()}
    )
    assert result.exit_code == 2
    assert "CONFIDE_LAUNCH_MANIFEST" in result.output and "Traceback" not in result.output
