"""Fixtures every test folder can use; the code behind them is in ``tests/support``.

- ``sgx``, ``sgx_automata``, ``tdx``, ``tdx_negative``, ``load_vector``: the real DCAP
  vectors in ``../shared/vectors`` (:mod:`support.vectors`);
- ``database_url`` (SQLite and PostgreSQL, one test each) and ``database`` (migrated):
  a database of the test's own for the operator (:mod:`support.database`);
- ``operator``: one ``confide operator serve`` per test module (simulated TEE, loopback,
  ports picked by the kernel), stopped with its apps after the module
  (:mod:`support.operators`; a folder's conftest may give ``operator`` another meaning);
- ``sim_platform`` and ``runtime_launch``: a simulated platform in ``tmp_path/sim`` and a
  ``confide runtime`` launch of ``examples/helloworld`` on it (:mod:`support.runtimes`).

Folders add fixtures of their own in their ``conftest.py``; test modules import helpers
and types from ``support`` (``pythonpath = ["tests"]`` in pyproject), never from a
conftest or from another test module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from confide.operator import Database, upgrade_database
from confide.tee import SimulatedPlatform
from support.database import BACKENDS, fresh_database_url
from support.operators import OperatorProcess, operator_running
from support.runtimes import EXAMPLES, CodeUnderTest, Launch, new_platform
from support.vectors import (
    SGX_AUTOMATA,
    SGX_DCAPQVL,
    TDX_DCAPQVL,
    TDX_NEGATIVE,
    VECTORS_DIR,
    VectorSet,
    load_vector_set,
)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """``../shared/vectors`` relative to the project root."""
    assert VECTORS_DIR.is_dir(), f"the shared vectors are missing: {VECTORS_DIR}"
    return VECTORS_DIR


@pytest.fixture(scope="session")
def load_vector(vectors_dir: Path) -> Callable[[str], VectorSet]:
    """Load a vector set by folder name (read from disk once per session)."""
    return load_vector_set


@pytest.fixture
def sgx(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The SGX v3 set from dcap-qvl (ConfigurationAndSWHardeningNeeded, two advisories)."""
    return load_vector(SGX_DCAPQVL)


@pytest.fixture
def sgx_automata(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The SGX v3 set from Automata (another platform, Platform CA, SWHardeningNeeded)."""
    return load_vector(SGX_AUTOMATA)


@pytest.fixture
def tdx(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The TDX v4 set from dcap-qvl (UpToDate, 70 zero bytes of padding)."""
    return load_vector(TDX_DCAPQVL)


@pytest.fixture
def tdx_negative(load_vector: Callable[[str], VectorSet]) -> VectorSet:
    """The TDX v4 set that must be rejected (no TCB level; 39 non-zero trailing bytes)."""
    return load_vector(TDX_NEGATIVE)


@pytest.fixture(autouse=True, scope="session")
def _user_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user's config and state folders (owner key, logs seen) of this test session: a
    deploy creates an owner key there, never in the real home folder."""
    home = tmp_path_factory.mktemp("user")
    saved = {name: os.environ.get(name) for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_STATE_HOME"] = str(home / "state")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(name="database_url", params=BACKENDS)
def database_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of its own, for each backend.

    Its SQLite file is in ``tmp_path/db``, apart from ``tmp_path/data``, the operator's
    data folder in the tests that start one.
    """
    with fresh_database_url(request.param, tmp_path / "db" / "operator.db") as url:
        yield url


@pytest.fixture(name="database")
def database_fixture(database_url: str) -> Iterator[Database]:
    """A migrated database."""
    db = Database.open(database_url)
    upgrade_database(db)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(scope="module", name="operator")
def operator_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One ``confide operator serve`` for the test module; killed, with its apps, after it.

    Tokens: ``create_token(operator.data_dir, account)``; apps: ``deploy(...)`` and
    ``wait_status(...)`` from :mod:`support.operators`.
    """
    with operator_running(tmp_path_factory.mktemp("operator") / "data") as operator:
        yield operator


@pytest.fixture(name="sim_platform")
def sim_platform_fixture(tmp_path: Path) -> SimulatedPlatform:
    """A simulated platform in ``tmp_path/sim``, made before the runtime to know its root."""
    return new_platform(tmp_path / "sim")


@pytest.fixture(name="runtime_launch")
def runtime_launch_fixture(tmp_path: Path, sim_platform: SimulatedPlatform) -> Launch:
    """``examples/helloworld`` as an encrypted package, launched in RA-TLS mode on
    ``sim_platform`` (state in ``tmp_path/state``): start it with
    ``running(runtime_launch.args())``; ``dataclasses.replace`` it for another mode."""
    code = CodeUnderTest.package(EXAMPLES / "helloworld", tmp_path / "app.pkg")
    return Launch(code, tmp_path / "state", sim_platform.state)
