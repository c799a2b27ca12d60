"""Bounded long-polls on an app's record: ``GET /apps/{id}?wait=S&seen=T`` (issue 14).

``confide deploy`` waits for its app's status. Asking again and again costs the
operator a request each time (100 owners at 0.2 s: 500 requests a second), so
the API can hold the question instead: with ``seen`` (the ``updated_at`` of the
record the client has) and ``wait`` (at most :data:`MAX_WAIT` seconds), it
answers as soon as the app's record differs from the one seen, or at the end of
the wait with the record as it is.

No query per waiter: one :meth:`AppWaits.run` task reads the ``updated_at`` of
every waited app in one query each :data:`RECHECK_INTERVAL` and wakes the
waiters whose app changed. Reading the database (not only this process's own
writes) sees the changes made by the supervisor and by other replicas alike.
A change committed in this process (the supervisor's status writes, the API's
own) is told at once (:meth:`AppWaits.notify`, an :class:`~._seams.AppEvents`):
its waiters answer without waiting for the next read, which stays for the rest.
Waiters are bounded (:data:`MAX_WAITERS`, :data:`MAX_WAITERS_PER_ACCOUNT`);
a request beyond the bounds, or while the task is not running, is answered at
once, as without ``wait`` (the client then waits on its side before asking again).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import anyio

from ._db import DatabaseBusy

#: The longest a request may be held, in seconds (below clients' 30 s network timeout).
MAX_WAIT: Final = 20.0
#: Seconds between two reads of the waited apps' records.
RECHECK_INTERVAL: Final = 0.5
#: Requests held at once, over all accounts.
MAX_WAITERS: Final = 1024
#: Requests held at once for one account.
MAX_WAITERS_PER_ACCOUNT: Final = 128

#: The ``updated_at`` of each of these apps that still exists (one query).
CurrentVersions = Callable[[Collection[uuid.UUID]], Mapping[uuid.UUID, datetime]]


@dataclass(eq=False, slots=True)
class _Waiter:
    account_id: int
    app_id: uuid.UUID
    seen: datetime
    changed: anyio.Event = field(default_factory=anyio.Event)


class AppWaits:
    """The held requests of one API process, and the one task that wakes them."""

    def __init__(
        self,
        current: CurrentVersions,
        *,
        recheck: float = RECHECK_INTERVAL,
        max_waiters: int = MAX_WAITERS,
        max_per_account: int = MAX_WAITERS_PER_ACCOUNT,
    ) -> None:
        self._current = current
        self._recheck = recheck
        self._max = max_waiters
        self._max_per_account = max_per_account
        self._waiters: set[_Waiter] = set()
        #: The held requests of each app (what :meth:`notify` wakes).
        self._by_app: dict[uuid.UUID, set[_Waiter]] = {}
        self._per_account: Counter[int] = Counter()
        self._someone: anyio.Event | None = None  # made in run(): events belong to a loop
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        """Requests held now."""
        return len(self._waiters)

    async def wait(
        self, account_id: int, app_id: uuid.UUID, seen: datetime, timeout: float
    ) -> bool:
        """Hold until app ``app_id``'s ``updated_at`` is no longer ``seen``, at most
        ``timeout`` seconds (bounded by :data:`MAX_WAIT`). ``False``: not held (a bound is
        reached, or :meth:`run` is not running): answer at once."""
        if (
            not self._running
            or len(self._waiters) >= self._max
            or self._per_account[account_id] >= self._max_per_account
        ):
            return False
        waiter = _Waiter(account_id, app_id, seen)
        self._waiters.add(waiter)
        self._by_app.setdefault(app_id, set()).add(waiter)
        self._per_account[account_id] += 1
        if self._someone is not None:
            self._someone.set()
        try:
            with anyio.move_on_after(min(timeout, MAX_WAIT)):
                await waiter.changed.wait()
        finally:
            self._waiters.discard(waiter)
            same_app = self._by_app.get(app_id)
            if same_app is not None:
                same_app.discard(waiter)
                if not same_app:
                    del self._by_app[app_id]
            self._per_account[account_id] -= 1
            if not self._per_account[account_id]:
                del self._per_account[account_id]
        return True

    def notify(self, app_id: uuid.UUID) -> None:
        """A change to app ``app_id`` was committed in this process: wake its held requests
        now (they read the record again). Thread-safe, returns at once; before :meth:`run`,
        or for an app nobody waits for, nothing happens."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._wake_app, app_id)

    def _wake_app(self, app_id: uuid.UUID) -> None:
        for waiter in self._by_app.get(app_id, ()):
            waiter.changed.set()

    async def run(self) -> None:
        """Wake the waiters whose app changed, one query each ``recheck`` seconds while
        anyone waits (none while nobody does). Runs until cancelled, then wakes them all."""
        self._running = True
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._waiters:
                    self._someone = anyio.Event()
                    await self._someone.wait()
                await anyio.sleep(self._recheck)
                waiting = list(self._waiters)
                if not waiting:
                    continue
                ids = frozenset(w.app_id for w in waiting)
                try:
                    current = await anyio.to_thread.run_sync(self._current, ids)
                except DatabaseBusy:
                    continue  # the next round reads again; the waits stay bounded
                for waiter in waiting:
                    if current.get(waiter.app_id) != waiter.seen:
                        waiter.changed.set()
        finally:
            # Stopping (the API shuts down): answer every held request now, not at its deadline.
            self._running = False
            self._loop = None
            for waiter in self._waiters:
                waiter.changed.set()
