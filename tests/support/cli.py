"""The ``confide`` CLI run in this process (typer's runner) against an operator subprocess."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from confide.cli import app
from support.operators import OperatorProcess
from support.runtimes import HOST


def router(operator: OperatorProcess) -> str:
    return f"{HOST}:{operator.router_port}"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def deploy(operator: OperatorProcess, token: str, project: Path, *extra: str) -> Result:
    return cli(
        "deploy",
        "--path",
        str(project),
        "--connect",
        router(operator),
        "--url",
        operator.api_url,
        "--token",
        token,
        "--timeout",
        "1",
        *extra,
    )
