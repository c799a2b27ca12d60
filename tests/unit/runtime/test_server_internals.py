"""The runtime's server builds on uvicorn's and hypercorn's internals: pinned, and checked here.

An upgrade of either must come with a review of ``confide.runtime._server``;
these tests fail first, with a message saying what changed.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import h11
import pytest
import uvicorn
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from confide.runtime._server import BUILT_ON

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
REVIEW = (
    "review src/confide/runtime/_server.py, which builds on its internals, then update BUILT_ON"
)


@pytest.mark.parametrize("distribution", sorted(BUILT_ON))
def test_the_installed_release_is_the_one_built_on(distribution: str) -> None:
    installed = metadata.version(distribution)
    assert installed == BUILT_ON[distribution], (
        f"{distribution} {installed} is installed, the runtime builds on "
        f"{BUILT_ON[distribution]}: {REVIEW}"
    )


@pytest.mark.parametrize("distribution", sorted(BUILT_ON))
def test_pyproject_pins_exactly_that_release(distribution: str) -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d for d in dependencies if re.split(r"[=<>!~\[ ]", d, maxsplit=1)[0] == distribution]
    assert pins == [f"{distribution}=={BUILT_ON[distribution]}"], (
        f"pyproject.toml must pin {distribution}=={BUILT_ON[distribution]}, has {pins}: {REVIEW}"
    )


def test_the_constructors_the_server_calls_keep_their_parameters() -> None:
    expected: dict[Callable[..., object], list[str]] = {
        TCPServer.__init__: [
            "self",
            "app",
            "loop",
            "config",
            "context",
            "state",
            "reader",
            "writer",
        ],
        H11Protocol.__init__: ["self", "config", "server_state", "app_state", "_loop"],
        LifespanOn.__init__: ["self", "config"],
    }
    for function, parameters in expected.items():
        found = list(inspect.signature(function).parameters)
        assert found == parameters, f"{function.__qualname__} now takes {found}: {REVIEW}"


def test_the_state_the_sweep_reads_is_still_there() -> None:
    async def body() -> None:
        config = uvicorn.Config(app=lambda scope, receive, send: None, lifespan="on")
        config.load()
        state = ServerState()
        protocol = H11Protocol(config, state, {}, _loop=asyncio.get_running_loop())
        for name in ("conn", "cycle", "flow", "shutdown", "connection_lost"):
            assert hasattr(protocol, name), f"H11Protocol.{name}: {REVIEW}"
        assert isinstance(protocol.conn, h11.Connection)
        assert hasattr(protocol.conn, "trailing_data"), f"h11.Connection.trailing_data: {REVIEW}"
        for name in ("connections", "tasks", "default_headers"):
            assert hasattr(state, name), f"ServerState.{name}: {REVIEW}"
        lifespan = LifespanOn(config)
        for name in ("startup", "shutdown", "should_exit", "state"):
            assert hasattr(lifespan, name), f"LifespanOn.{name}: {REVIEW}"
        assert hasattr(WorkerContext(None), "terminated"), f"WorkerContext.terminated: {REVIEW}"

    asyncio.run(body())
