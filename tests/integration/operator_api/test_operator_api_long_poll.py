"""``GET /api/v1/apps/{id}?wait=S&seen=T`` over HTTP: held until the app's record changes or
the wait ends; without the parameters (old clients) answered at once as before (issue 14)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx

from confide.client import OperatorClient
from confide.operator import App, record_status
from confide.operator._waits import MAX_WAIT
from confide.wire import AppStatus
from support.operator_api import Operator, upload


def _deployed(operator: Operator, package: bytes) -> tuple[str, dict[str, Any]]:
    token = operator.token("alice")
    with operator.client(token) as c:
        r = upload(c, package)
        assert r.status_code == 201, r.text
        return token, r.json()


def _set_status(operator: Operator, app_id: str, status: AppStatus) -> None:
    """What the supervisor does, a second later on the operator's clock."""
    operator.clock.advance(1)
    with operator.database.session() as s:
        app = s.get(App, uuid.UUID(app_id))
        assert app is not None
        record_status(s, app, status, now=operator.clock())
        s.commit()


def test_a_long_poll_is_held_until_its_deadline_when_nothing_changes(
    operator: Operator, package: bytes
) -> None:
    token, app = _deployed(operator, package)
    with operator.client(token) as c:
        start = time.monotonic()
        r = c.get(f"/api/v1/apps/{app['id']}", params={"wait": "1", "seen": app["updated_at"]})
        took = time.monotonic() - start
        assert r.status_code == 200, r.text
        assert r.json() == app
        assert took >= 1.0
        # Without the parameters (an old client), at once as before.
        start = time.monotonic()
        assert c.get(f"/api/v1/apps/{app['id']}").json() == app
        assert time.monotonic() - start < 1.0
        # Too long a wait is refused.
        too_long = {"wait": str(MAX_WAIT + 1), "seen": app["updated_at"]}
        assert c.get(f"/api/v1/apps/{app['id']}", params=too_long).status_code == 422


def test_a_long_poll_answers_at_a_status_change(operator: Operator, package: bytes) -> None:
    token, app = _deployed(operator, package)
    answer: list[httpx.Response] = []

    def held() -> None:
        with operator.client(token) as c:
            params = {"wait": "15", "seen": app["updated_at"]}
            answer.append(c.get(f"/api/v1/apps/{app['id']}", params=params))

    start = time.monotonic()
    thread = threading.Thread(target=held)
    thread.start()
    _set_status(operator, app["id"], AppStatus.INITIALIZING)
    thread.join(timeout=20)
    took = time.monotonic() - start
    assert answer and answer[0].status_code == 200, answer
    assert answer[0].json()["status"] == "initializing"
    assert took < 10  # not held to its 15 s deadline


def test_the_client_long_polls_with_the_version_it_has(operator: Operator, package: bytes) -> None:
    token, app = _deployed(operator, package)
    with OperatorClient(operator.url, token) as client:
        record = client.get_app(app["id"])
        start = time.monotonic()
        same = client.get_app(app["id"], wait=1.0, seen=record.updated_at)
        assert time.monotonic() - start >= 1.0
        assert same == record
        _set_status(operator, app["id"], AppStatus.INITIALIZING)
        start = time.monotonic()
        changed = client.get_app(app["id"], wait=15.0, seen=record.updated_at)
        assert time.monotonic() - start < 10
        assert changed.status is AppStatus.INITIALIZING
