"""Attacks on the console's live log follow (ADR 0025) by a signed-in account.

- a log that never pauses: the follower must still end at sign-out or revocation (and
  at the follow's time limit), not only when the app is quiet;
- many follows at once: each polls the log and the database, so one account may hold
  only a few, and all accounts together a bounded number (429 with ``Retry-After``).

Each refusal has a guard: the same request within the bound succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import typing
import uuid
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import pytest

from confide.operator import App, record_status
from confide.operator._console import _app as console_app
from confide.wire import AppStatus
from support.console import ConsoleUser
from support.operator_api import Operator, OperatorFactory, StaticCa, upload

#: Events read from a chatty log before the test gives up waiting for ``end``.
MAX_EVENTS = 200


class _ChattyLog:
    """A log the app writes to without a pause: every read returns a new line."""

    def __init__(self) -> None:
        self.reads = 0

    def log_path(self, app_id: uuid.UUID) -> Path:
        return Path("/nonexistent") / f"{app_id}.log"

    def read_end(self, app_id: uuid.UUID, tail: int | None) -> tuple[bytes, int]:
        return b"", 0

    def read_from(self, app_id: uuid.UUID, offset: int) -> tuple[bytes, int]:
        self.reads += 1
        line = b"busy\n"
        return line, offset + len(line)


def _follow_until_end(why: list[str | None]) -> tuple[list[bytes], int]:
    """Run a follow of a chatty log; ``why[0]`` is what ``why_stop`` answers."""
    log = _ChattyLog()
    checks = 0

    def why_stop() -> str | None:
        nonlocal checks
        checks += 1
        return why[0]

    async def run() -> list[bytes]:
        events: list[bytes] = []
        stream = typing.cast(
            AsyncGenerator[bytes, None],
            console_app._follow(log, uuid.uuid4(), 0, why_stop, 0.0),
        )
        try:
            async for event in stream:
                events.append(event)
                if len(events) >= MAX_EVENTS or event.startswith(b"event: end"):
                    break
        finally:
            await stream.aclose()
        return events

    return asyncio.run(asyncio.wait_for(run(), timeout=30)), checks


def test_a_chatty_log_does_not_outlive_a_sign_out() -> None:
    events, checks = _follow_until_end(["signed-out"])
    assert events[-1] == b"event: end\ndata: signed-out\n\n", events[-3:]
    assert len(events) < MAX_EVENTS and checks >= 1
    # Guard: while the session holds, the same log is followed line after line.
    events, _ = _follow_until_end([None])
    assert len(events) == MAX_EVENTS and events[-1].endswith(b"data: busy\n\n")


def test_a_chatty_log_does_not_outlive_the_follow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_app, "FOLLOW_LIMIT", -1.0)
    events, _ = _follow_until_end([None])
    assert events == [b"retry: 2000\n\n"]


@pytest.fixture(name="operator")
def operator_fixture(tmp_path: Path, database_url: str) -> Iterator[Operator]:
    factory = OperatorFactory(tmp_path, database_url)
    try:
        yield factory.start(ca_provider=StaticCa())
    finally:
        factory.close()


def _running_app(operator: Operator, token: str, tmp_path: Path) -> str:
    from confide.crypto import PackageKey, encrypt_package

    root = tmp_path / "app"
    root.mkdir(exist_ok=True)
    (root / "app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    out = io.BytesIO()
    encrypt_package(root, out, PackageKey.generate())
    with operator.client(token) as c:
        created = upload(c, out.getvalue())
        assert created.status_code == 201, created.text
        app_id: str = created.json()["id"]
    with operator.database.session() as s:
        row = s.get(App, uuid.UUID(app_id))
        assert row is not None
        record_status(s, row, AppStatus.RUNNING, now=operator.clock())
        s.commit()
    return app_id


def test_one_account_holds_a_bounded_number_of_follows(
    operator: Operator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_app, "MAX_FOLLOWS_PER_ACCOUNT", 2, raising=False)
    token = operator.token("mallory")
    app_id = _running_app(operator, token, tmp_path)
    url = f"/console/apps/{app_id}/log/events"
    with ConsoleUser(operator.url).signed_in(token) as user, contextlib.ExitStack() as open_:
        for _ in range(2):  # guard: within the bound, each follow starts
            stream = open_.enter_context(user.http.stream("GET", url))
            assert stream.status_code == 200
        refused = user.page(url)
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"]
        open_.close()  # the follows end: their slots are given back
        with user.http.stream("GET", url) as again:
            assert again.status_code == 200


def test_a_follow_gone_before_its_first_event_gives_its_slot_back() -> None:
    """A client that drops the connection at once (before the body's first event is
    asked for) must not keep its slot: else a few such drops lock the account out."""
    released: list[int] = []
    started: list[bool] = []

    async def events() -> AsyncGenerator[bytes, None]:
        started.append(True)
        yield b"retry: 2000\n\n"

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: object) -> None:
        raise OSError("the client is gone")

    async def run() -> None:
        response = console_app._FollowResponse(events(), lambda: released.append(1))
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
        with contextlib.suppress(Exception):
            await response(scope, receive, send)

    asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert not started  # the stream never began, so no finally inside it could run
    assert released == [1]
