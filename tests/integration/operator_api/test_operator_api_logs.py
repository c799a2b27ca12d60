"""Logs: the end of the runtime's log, ``?tail=N``, and ``?follow=true`` until the app stops."""

from __future__ import annotations

import threading
import uuid

from confide.operator import (
    App,
    record_status,
)
from confide.wire import AppStatus
from support.operator_api import (
    Operator,
    upload,
)


def _deploy(operator: Operator, package: bytes) -> tuple[str, str]:
    token = operator.token("alice")
    with operator.client(token) as c:
        return token, upload(c, package).json()["id"]


def test_logs_and_tail(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    log = operator.settings.logs_dir / f"{app_id}.log"
    with operator.client(token) as c:
        empty = c.get(f"/api/v1/apps/{app_id}/logs")  # nothing written yet
        assert empty.status_code == 200 and empty.text == ""
        log.parent.mkdir(parents=True)
        log.write_text("".join(f"line {i}\n" for i in range(1000)) + "partial")
        full = c.get(f"/api/v1/apps/{app_id}/logs")
        assert full.headers["content-type"] == "text/plain; charset=utf-8"
        assert full.text.startswith("line 0\n") and full.text.endswith("line 999\npartial")
        for tail, expected in [
            (0, ""),
            (1, "partial"),
            (3, "line 998\nline 999\npartial"),
            (5000, full.text),
        ]:
            assert c.get(f"/api/v1/apps/{app_id}/logs", params={"tail": tail}).text == expected
        bad = c.get(f"/api/v1/apps/{app_id}/logs", params={"tail": -1})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "tail"]


def test_follow_streams_until_the_app_stops(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    log = operator.settings.logs_dir / f"{app_id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("old 1\nold 2\nold 3\n")
    received: list[str] = []
    got_first = threading.Event()
    with operator.client(token) as c:
        with c.stream("GET", f"/api/v1/apps/{app_id}/logs?follow=true&tail=2") as r:
            assert r.status_code == 200
            for chunk in r.iter_text():
                received.append(chunk)
                if not got_first.is_set():
                    got_first.set()
                    with log.open("a") as f:
                        f.write("new 1\n")
                    continue
                if "new 1" in "".join(received) and "bye" not in "".join(received):
                    # The runtime writes its last words, then the supervisor marks it stopped.
                    with log.open("a") as f:
                        f.write("bye\n")
                    with operator.database.session() as s:
                        row = s.get(App, uuid.UUID(app_id))
                        assert row is not None
                        record_status(s, row, AppStatus.STOPPED, now=operator.clock())
                        s.commit()
        # The stream ended by itself.
    assert "".join(received) == "old 2\nold 3\nnew 1\nbye\n"


def test_follow_of_a_stopped_app_returns_at_once(operator: Operator, package: bytes) -> None:
    token, app_id = _deploy(operator, package)
    with operator.database.session() as s:
        row = s.get(App, uuid.UUID(app_id))
        assert row is not None
        record_status(s, row, AppStatus.ON_ERROR, now=operator.clock(), detail="crashed")
        s.commit()
    log = operator.settings.logs_dir / f"{app_id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\n")
    with operator.client(token) as c:
        r = c.get(f"/api/v1/apps/{app_id}/logs", params={"follow": "true"})
    assert r.status_code == 200 and r.text == "Traceback ...\n"
