"""A database too busy to write is a retryable 503 with ``Retry-After``, never a 500.

SQLite only: another process (here a plain ``sqlite3`` connection, as the
``confide operator token`` CLI would be) holds the write lock past the busy
timeout while an owner uploads.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import event

from support.operator_api import OperatorFactory, manifest, upload

#: The server's SQLite busy timeout in this test (ms), shortened from the operator's 5 s.
BUSY_MS = 200


def test_an_upload_meeting_a_held_write_lock_is_answered_503_retry_after(
    operators: OperatorFactory, package: bytes, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL waits for row locks; SQLite's busy timeout is what runs out")
    operator = operators.start()
    token = operator.token("alice")

    def shorter_busy_timeout(dbapi: Any, _record: Any) -> None:
        dbapi.execute(f"PRAGMA busy_timeout={BUSY_MS}")

    event.listen(operator.database.engine, "connect", shorter_busy_timeout)
    operator.database.engine.dispose()
    path = operator.database.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        with operator.client(token) as c:
            other.execute("BEGIN IMMEDIATE")
            busy = upload(c, package, manifest(name="busy"))
            other.execute("ROLLBACK")
            after = upload(c, package, manifest(name="after"))
    finally:
        other.close()
    assert busy.status_code == 503, busy.text
    assert busy.headers["Retry-After"] == "2"
    assert "database is busy" in busy.json()["detail"]
    assert after.status_code == 201, after.text  # nothing was left half-done
