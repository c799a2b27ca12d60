"""How late the operator's event loop runs what is due: one timer, a log line when it lags.

The API, the router's hand-offs, the supervisor and its probes, and the long-polls
share one event loop (and one GIL). A request that waits for its turn on that loop
is late by however long the loop was busy elsewhere, or waited for a core. So
:class:`LoopLag` asks the loop to wake it every :data:`TICK` seconds and measures
how much later than asked it woke (what any callback due then waited); over each
:data:`WINDOW` it logs one line when the worst of them reached :data:`REPORTED`::

    event loop lag over 10 s: p50 4 ms, p99 180 ms, max 240 ms (96 ticks)

Nothing is logged while the loop keeps up. The cost is one timer each 0.1 s.
:class:`LagWindow` is the pure part (lags in, a summary out, time a parameter).

Example::

    >>> window = LagWindow(started=0.0)
    >>> window.add(0.002)
    >>> window.add(0.3)
    >>> window.summary(now=10.0).max_ms
    300
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

#: Seconds between two wake-ups asked of the loop.
TICK: Final = 0.1
#: Seconds summarised by one log line.
WINDOW: Final = 10.0
#: A window whose worst lag reaches this (seconds) is logged.
REPORTED: Final = 0.1
#: Lags kept per window (a lagging loop ticks less often: never more than WINDOW / TICK).
_MAX_SAMPLES: Final = 1024


@dataclass(frozen=True, slots=True)
class LagSummary:
    """The lags of one window, in milliseconds."""

    seconds: float
    ticks: int
    p50_ms: int
    p99_ms: int
    max_ms: int

    def line(self) -> str:
        return (
            f"event loop lag over {self.seconds:.0f} s: p50 {self.p50_ms} ms, "
            f"p99 {self.p99_ms} ms, max {self.max_ms} ms ({self.ticks} ticks)"
        )


@dataclass(slots=True)
class LagWindow:
    """The lags measured since ``started`` (at most :data:`_MAX_SAMPLES`)."""

    started: float
    lags: list[float] = field(default_factory=list)

    def add(self, lag: float) -> None:
        if len(self.lags) < _MAX_SAMPLES:
            self.lags.append(max(lag, 0.0))

    def summary(self, now: float) -> LagSummary:
        ordered = sorted(self.lags) or [0.0]

        def ms(fraction: float) -> int:
            return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000)

        return LagSummary(now - self.started, len(self.lags), ms(0.5), ms(0.99), ms(1.0))


class LoopLag:
    """Measures the running loop's lag until stopped; logs each window that lagged."""

    def __init__(
        self,
        *,
        tick: float = TICK,
        window: float = WINDOW,
        reported: float = REPORTED,
        logger: logging.Logger | None = None,
    ) -> None:
        self._tick = tick
        self._window = window
        self._reported = reported
        self._log = logger or logging.getLogger("confide.operator.loop")
        #: The last full window's summary (``None`` before one ended).
        self.last: LagSummary | None = None

    async def run(self, shutdown_trigger: Callable[[], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(shutdown_trigger())
        try:
            window = LagWindow(started=loop.time())
            while not stopping.done():
                asked = loop.time() + self._tick
                await asyncio.wait({stopping}, timeout=self._tick)
                now = loop.time()
                if stopping.done():
                    break
                window.add(now - asked)
                if now - window.started >= self._window:
                    summary = window.summary(now)
                    self.last = summary
                    if summary.max_ms >= self._reported * 1000:
                        self._log.warning("%s", summary.line())
                    window = LagWindow(started=now)
        finally:
            stopping.cancel()
