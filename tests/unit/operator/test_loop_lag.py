"""The operator's event-loop lag monitor (:mod:`confide.operator._looplag`): it measures how
late the loop runs a timer, and logs a window only when the loop lagged."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from confide.operator._looplag import LagWindow, LoopLag


def test_a_window_summarises_its_lags_in_milliseconds() -> None:
    window = LagWindow(started=5.0)
    for lag in [0.001] * 98 + [0.2, 0.5]:
        window.add(lag)
    window.add(-0.001)  # a timer a hair early counts as on time
    summary = window.summary(now=15.0)
    assert (summary.seconds, summary.ticks) == (10.0, 101)
    assert (summary.p50_ms, summary.p99_ms, summary.max_ms) == (1, 200, 500)
    assert summary.line() == (
        "event loop lag over 10 s: p50 1 ms, p99 200 ms, max 500 ms (101 ticks)"
    )
    assert LagWindow(started=0.0).summary(now=1.0).max_ms == 0  # nothing measured


def test_a_blocked_loop_is_logged_and_a_free_one_is_not(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.looplag")

    async def main(block: float, reported: float) -> LoopLag:
        lag = LoopLag(tick=0.01, window=0.3, reported=reported, logger=logger)
        stop = asyncio.Event()
        task = asyncio.create_task(lag.run(stop.wait))
        async with asyncio.timeout(10):
            await asyncio.sleep(0.05)
            time.sleep(block)  # the loop's thread busy elsewhere: every timer waits
            while lag.last is None:
                await asyncio.sleep(0.01)
        stop.set()
        await task
        return lag

    with caplog.at_level(logging.WARNING, logger="test.looplag"):
        # Under the threshold (2 s: far above what a busy test machine delays a timer).
        free = asyncio.run(main(0.0, reported=2.0))
    assert free.last is not None and free.last.max_ms < 2000
    assert not caplog.records  # a loop that keeps up says nothing

    with caplog.at_level(logging.WARNING, logger="test.looplag"):
        blocked = asyncio.run(main(0.25, reported=0.1))
    assert blocked.last is not None and blocked.last.max_ms >= 200
    assert any("event loop lag over" in r.getMessage() for r in caplog.records)
