"""Fixtures of the operator API tests: a real API server per test (see :mod:`support.operator_api`).

``database_url`` (SQLite and PostgreSQL) comes from ``tests/conftest.py``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.crypto import PackageKey, encrypt_package
from support.operator_api import Operator, OperatorFactory, StaticCa


@pytest.fixture(name="operators")
def operators_fixture(tmp_path: Path, database_url: str) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(tmp_path, database_url)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(name="operator")
def operator_fixture(operators: OperatorFactory) -> Operator:
    """An operator with the default settings (simulated TEE, a CA)."""
    return operators.start(ca_provider=StaticCa())


@pytest.fixture(name="app_dir")
def app_dir_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    root.mkdir()
    (root / "app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    return root


@pytest.fixture(name="package")
def package_fixture(app_dir: Path) -> bytes:
    """An encrypted package of ``app_dir``."""
    out = io.BytesIO()
    encrypt_package(app_dir, out, PackageKey.generate())
    return out.getvalue()
