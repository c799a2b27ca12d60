"""Databases for the operator's tests: one of its own per test, on SQLite and PostgreSQL.

The fixtures ``database_url`` and ``database`` (``tests/conftest.py``) are built on
:func:`fresh_database_url`; :func:`dump` shows what a look at the database would find.

The PostgreSQL cases need a server: ``make test`` starts a throwaway one with
``scripts/postgres.sh`` and exports ``CONFIDE_TEST_POSTGRES_URL``. Without it
they fail (never skip), saying so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import MetaData, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from confide.operator import Database

POSTGRES_ENV: Final = "CONFIDE_TEST_POSTGRES_URL"
BACKENDS: Final = ["sqlite", "postgresql"]


@contextmanager
def fresh_database_url(backend: str, sqlite_file: Path) -> Iterator[str]:
    """A URL of an empty database of its own on ``backend`` (SQLite: at ``sqlite_file``)."""
    if backend == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.fail(
            f"{POSTGRES_ENV} is not set: run `make test`, which starts a throwaway PostgreSQL, "
            f"or `scripts/postgres.sh run -- .venv/bin/pytest ...`"
        )
    name = f"confide_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def dump(db: Database) -> str:
    """Every row of every table, as text: what a look at the database would find."""
    metadata = MetaData()
    metadata.reflect(db.engine)
    lines = []
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)
