"""A database too busy to write is a retryable 503 with ``Retry-After``, never a 500.

SQLite only: another process (here a plain ``sqlite3`` connection, as the
``confide operator token`` CLI would be) holds the write lock past the busy
timeout while an owner uploads.
"""

from __future__ import annotations

import select
import socket
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


def test_a_keep_alive_connection_outlives_hypercorns_default_idle_timeout(
    operators: OperatorFactory, database_url: str
) -> None:
    """When the loop lagged past hypercorn's 5 s, its idle timer closed connections whose
    next request was already sent: "connection reset by peer" (100 apps, issue 14.5)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the same server on either database")
    operator = operators.start()
    host, port = operator.url.removeprefix("http://").split(":")
    request = b"GET /api/v1/health HTTP/1.1\r\nHost: api\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=STEP) as sock:
        sock.sendall(request)
        first = _answer(sock)
        # Idle past hypercorn's default: the server must still be there. The wait is for
        # the server to NOT do something, so it is a bounded select, not a sleep.
        assert select.select([sock], [], [], 5.0 + 1.5)[0] == []
        sock.sendall(request)
        second = _answer(sock)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")


#: Bound on one blocking step (seconds).
STEP = 20.0


def _answer(sock: socket.socket) -> bytes:
    """One whole answer (its head and a body of Content-Length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body
