"""SQLite's writers queue in the operator's process instead of failing ``database is locked``.

SQLite's busy handler sleeps and polls: under a burst of writers (100 uploads at
once, issue 14) some outwaited ``busy_timeout`` and the API answered 500. The
writers of one process now take turns, first come first served, before SQLite's
lock; what still finds the lock held past the busy timeout (another process)
raises :class:`DatabaseBusy`, never a bare ``OperationalError``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from confide.operator import Account, Database, upgrade_database
from confide.operator._db import DatabaseBusy, lock_account

NOW = datetime(2030, 1, 1, tzinfo=UTC)
#: Writers at once, each holding the write lock for HOLD seconds: 1.3 s of work in all,
#: far more than the (shortened) busy timeout below.
WRITERS = 64
HOLD = 0.02
#: SQLite's busy timeout in these tests (ms): short, so that polling loses within the test.
BUSY_MS = 300


def _open(path: Path, pool_size: int) -> Database:
    db = Database.open(f"sqlite:///{path}", pool_size=pool_size, max_overflow=0)
    upgrade_database(db)

    def shorter_busy_timeout(dbapi: Any, _record: Any) -> None:
        dbapi.execute(f"PRAGMA busy_timeout={BUSY_MS}")

    event.listen(db.engine, "connect", shorter_busy_timeout)  # runs after the operator's
    db.engine.dispose()  # the migration's connection had the operator's timeout
    with db.session() as s:
        s.add(Account(name="alice", created_at=NOW))
        s.commit()
    return db


def test_a_burst_of_writers_takes_turns_instead_of_failing(tmp_path: Path) -> None:
    db = _open(tmp_path / "operator.db", pool_size=WRITERS)
    with db.session() as s:
        account_id = s.scalar(select(Account.id))
    assert account_id is not None
    barrier = threading.Barrier(WRITERS, timeout=30)

    def write(_: int) -> str:
        barrier.wait()
        try:
            with db.session() as s:
                lock_account(s, account_id)
                time.sleep(HOLD)  # the rest of the transaction (count, inserts)
                s.commit()
        except Exception as exc:  # reported below, every kind of it
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            results = list(pool.map(write, range(WRITERS)))
        took = time.monotonic() - started
    finally:
        db.dispose()
    failures = [r for r in results if r != "ok"]
    assert failures == []
    # Guard against a vacuous pass: the writers really were serialised past the busy timeout.
    assert took >= WRITERS * HOLD > 2 * BUSY_MS / 1000


def test_the_lock_of_another_process_past_the_busy_timeout_is_database_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "operator.db"
    db = _open(path, pool_size=2)
    other = sqlite3.connect(path, isolation_level=None)  # as the token CLI would, elsewhere
    try:
        other.execute("BEGIN IMMEDIATE")
        with db.session() as s:
            account_id = s.scalar(select(Account.id))
            assert account_id is not None
            with pytest.raises(DatabaseBusy) as raised:
                lock_account(s, account_id)
        assert raised.value.code == "database_busy"
        assert "database is locked" in str(raised.value)
        other.execute("ROLLBACK")
        with db.session() as s:  # the turn was given back: the next writer goes through
            lock_account(s, account_id)
            s.commit()
    finally:
        other.close()
        db.dispose()
