"""Fixtures of the supervisor's storage tests (see :mod:`support.operator_flow`).

``database_url`` and ``database`` (SQLite and PostgreSQL) come from ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from confide.operator import OperatorSettings
from support.operator_flow import BASE_DOMAIN


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path, database_url: str) -> OperatorSettings:
    return OperatorSettings.load(
        tmp_path / "data",
        runtime_sha256=bytes(32),
        database_url=database_url,
        base_domain=BASE_DOMAIN,
    )
