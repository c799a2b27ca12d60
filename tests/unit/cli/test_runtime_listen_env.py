"""`confide runtime` takes where it listens from the two passthrough variables, validated.

Under Gramine the argv is fixed and names no address nor port: the host passes them in
``CONFIDE_LISTEN_HOST``/``CONFIDE_LISTEN_PORT`` (the manifest's only passthroughs). The
runtime reads them as ``--host``/``--port`` and bounds them like the options.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from confide.cli import app

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
