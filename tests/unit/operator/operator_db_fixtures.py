"""Fixtures of the operator's storage tests: one database per test, on SQLite and PostgreSQL.

Test modules import the fixtures they use (``from operator_db_fixtures import
database_fixture  # noqa: F401``): a second ``conftest.py`` would clash for mypy.
The database itself comes from ``tests/operator_database.py``.

The PostgreSQL cases need a server: ``make test`` starts a throwaway one with
``scripts/postgres.sh`` and exports ``CONFIDE_TEST_POSTGRES_URL``. Without it
they fail (never skip), saying so. Each test gets a fresh database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from operator_database import BACKENDS, fresh_database_url
from operator_database import database_fixture as database_fixture
from operator_database import dump as dump


@pytest.fixture(name="database_url", params=BACKENDS)
def database_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of its own, for each backend.

    Its SQLite file is in ``tmp_path/db``, apart from ``tmp_path/data``, the
    data folder that the CLI tests pass.
    """
    with fresh_database_url(request.param, tmp_path / "db" / "operator.db") as url:
        yield url
