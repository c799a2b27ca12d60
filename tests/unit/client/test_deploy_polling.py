"""``confide deploy`` waits for a status with a backing-off poll (issue 14: 100 owners
deploying at once asked the operator 500 times a second at a fixed 0.2 s)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from confide.client._deploy import POLL_INTERVAL, POLL_INTERVAL_MAX, _wait_for, poll_interval
from confide.errors import UsageError
from confide.wire import AppStatus
from confide.wire.api import AppRecord
from support.app_doc import app_record


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[AppStatus, str | None]] = []

    def step(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def upload(self, sent: int, total: int) -> None: ...

    def status(self, status: AppStatus, detail: str | None) -> None:
        self.seen.append((status, detail))


class _Client:
    """Answers ``get_app`` with the next record of a script."""

    def __init__(self, records: list[AppRecord]) -> None:
        self._records = records
        self.calls = 0
        self.asked: list[tuple[float, datetime | None]] = []

    def get_app(self, app_id: Any, *, wait: float = 0.0, seen: datetime | None = None) -> AppRecord:
        self.asked.append((wait, seen))
        record = self._records[self.calls]
        self.calls += 1
        return record


def _at(status: AppStatus, detail: str | None = None) -> AppRecord:
    return app_record().model_copy(update={"status": status, "status_detail": detail})


def test_the_interval_doubles_up_to_its_bound() -> None:
    got = [poll_interval(n) for n in range(8)]
    assert got == [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]
    assert got[0] == POLL_INTERVAL and max(got) == POLL_INTERVAL_MAX
    assert poll_interval(10_000) == POLL_INTERVAL_MAX  # no overflow on a long wait


def test_the_wait_backs_off_while_unchanged_and_starts_over_at_a_change() -> None:
    starting = _at(AppStatus.SPAWNING)
    records = [
        *[starting] * 5,
        _at(AppStatus.SPAWNING, "pulling"),
        starting,
        _at(AppStatus.RUNNING),
    ]
    client = _Client(records[1:])
    slept: list[float] = []
    events = _Events()

    got = _wait_for(
        client,  # type: ignore[arg-type]
        records[0],
        AppStatus.RUNNING,
        events,
        wait=60.0,
        sleep=slept.append,
    )

    assert got.status is AppStatus.RUNNING
    assert client.calls == len(records) - 1
    # Four unchanged looks double the wait; a new detail and then a new status reset it.
    assert slept == [0.2, 0.4, 0.8, 1.6, 2.0, 0.2, 0.2]
    assert [s for s, _ in events.seen] == [
        AppStatus.SPAWNING,
        AppStatus.SPAWNING,
        AppStatus.SPAWNING,
        AppStatus.RUNNING,
    ]


def test_a_failed_status_ends_the_wait_without_sleeping_again() -> None:
    slept: list[float] = []
    with pytest.raises(UsageError, match="on_error"):
        _wait_for(
            _Client([]),  # type: ignore[arg-type]
            _at(AppStatus.ON_ERROR, "crashed"),
            AppStatus.RUNNING,
            _Events(),
            wait=60.0,
            sleep=slept.append,
        )
    assert slept == []


def test_each_look_asks_the_operator_to_hold_it_until_the_record_changes() -> None:
    first = _at(AppStatus.SPAWNING)
    later = first.model_copy(update={"updated_at": first.updated_at + timedelta(seconds=3)})
    client = _Client([later, _at(AppStatus.RUNNING)])
    _wait_for(
        client,  # type: ignore[arg-type]
        first,
        AppStatus.RUNNING,
        _Events(),
        wait=60.0,
        long_poll=10.0,
        sleep=lambda _: None,
    )
    # The seen version is the last record's: a long-poll answers once it is no longer so.
    assert client.asked == [(10.0, first.updated_at), (10.0, later.updated_at)]


def test_a_long_poll_never_outlasts_the_wait() -> None:
    client = _Client([_at(AppStatus.RUNNING)])
    _wait_for(
        client,  # type: ignore[arg-type]
        _at(AppStatus.SPAWNING),
        AppStatus.RUNNING,
        _Events(),
        wait=3.0,
        long_poll=10.0,
        sleep=lambda _: None,
    )
    assert 0 < client.asked[0][0] <= 3.0
