"""The API's long-polls (:class:`confide.operator._waits.AppWaits`): a held request is woken
when its app's record changes, ends at its deadline, and the held requests are bounded."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta

import anyio

from confide.operator._db import DatabaseBusy
from confide.operator._waits import MAX_WAIT, AppWaits

T0 = datetime(2030, 1, 1, tzinfo=UTC)
APP = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000001")
OTHER = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000002")


class _Versions:
    """The database's ``updated_at`` per app, and the queries made."""

    def __init__(self) -> None:
        self.now: dict[uuid.UUID, datetime] = {APP: T0, OTHER: T0}
        self.queries: list[frozenset[uuid.UUID]] = []
        self.busy = 0

    def __call__(self, ids: Collection[uuid.UUID]) -> Mapping[uuid.UUID, datetime]:
        self.queries.append(frozenset(ids))
        if self.busy:
            self.busy -= 1
            raise DatabaseBusy("locked")
        return {i: self.now[i] for i in ids if i in self.now}


def test_a_held_request_is_woken_by_a_change_and_one_query_serves_every_waiter() -> None:
    versions = _Versions()
    waits = AppWaits(versions, recheck=0.01)
    woken: list[tuple[str, float]] = []

    async def held(name: str, app_id: uuid.UUID) -> None:
        start = anyio.current_time()
        assert await waits.wait(1, app_id, T0, 10.0)
        woken.append((name, anyio.current_time() - start))

    async def main() -> None:
        with anyio.fail_after(5):
            await _main()

    async def _main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(waits.run)
            async with anyio.create_task_group() as clients:
                clients.start_soon(held, "a", APP)
                clients.start_soon(held, "b", APP)
                clients.start_soon(held, "other", OTHER)
                while waits.waiting < 3 or len(versions.queries) < 2:
                    await anyio.sleep(0.005)
                assert woken == []  # nothing changed: all still held
                versions.now[APP] = T0 + timedelta(seconds=1)
                while len(woken) < 2:
                    await anyio.sleep(0.005)
                assert sorted(n for n, _ in woken) == ["a", "b"]
                assert waits.waiting == 1
                del versions.now[OTHER]  # a deleted app wakes its waiter too
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert sorted(n for n, _ in woken) == ["a", "b", "other"]
    assert all(seconds < 5 for _, seconds in woken)
    # One query per round for all the waited apps, never one per waiter.
    assert {APP, OTHER} in versions.queries


def test_a_held_request_ends_at_its_deadline_and_a_busy_database_is_read_again() -> None:
    versions = _Versions()
    versions.busy = 2
    waits = AppWaits(versions, recheck=0.01)
    took: list[float] = []

    async def main() -> None:
        with anyio.fail_after(5):
            await _main()

    async def _main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(waits.run)
            await anyio.sleep(0)
            start = anyio.current_time()
            assert await waits.wait(1, APP, T0, 0.3)
            took.append(anyio.current_time() - start)
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert 0.3 <= took[0] < 3
    assert len(versions.queries) > 2  # two busy rounds, then read again


def test_held_requests_are_bounded_per_account_and_overall() -> None:
    versions = _Versions()
    waits = AppWaits(versions, recheck=0.01, max_waiters=3, max_per_account=2)
    answers: dict[str, bool] = {}

    async def ask(name: str, account: int) -> None:
        answers[name] = await waits.wait(account, APP, T0, 10.0)

    async def main() -> None:
        with anyio.fail_after(5):
            await _main()

    async def _main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(waits.run)
            await anyio.sleep(0)
            async with anyio.create_task_group() as clients:
                clients.start_soon(ask, "a1", 1)
                clients.start_soon(ask, "a2", 1)
                await _until(lambda: waits.waiting == 2)
                await ask("a3", 1)  # the account's bound: answered at once
                clients.start_soon(ask, "b1", 2)
                await _until(lambda: waits.waiting == 3)
                await ask("b2", 2)  # the overall bound
                versions.now[APP] = T0 + timedelta(seconds=1)
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert answers == {"a1": True, "a2": True, "a3": False, "b1": True, "b2": False}
    assert waits.waiting == 0


def test_no_request_is_held_without_the_task_nor_beyond_the_bound() -> None:
    waits = AppWaits(_Versions(), recheck=0.01)

    async def main() -> bool:
        return await waits.wait(1, APP, T0, 10.0)

    assert anyio.run(main) is False  # run() is not running: answered at once
    assert MAX_WAIT <= 25  # below the clients' 30 s network timeout


async def _until(condition: object) -> None:
    assert callable(condition)
    while not condition():
        await anyio.sleep(0.005)


def test_stopping_the_task_answers_every_held_request() -> None:
    waits = AppWaits(_Versions(), recheck=0.01)
    took: list[float] = []

    async def held() -> None:
        start = anyio.current_time()
        assert await waits.wait(1, APP, T0, 10.0)
        took.append(anyio.current_time() - start)

    async def main() -> None:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as clients:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(waits.run)
                    await anyio.sleep(0)
                    clients.start_soon(held)
                    await _until(lambda: waits.waiting == 1)
                    tasks.cancel_scope.cancel()

    anyio.run(main)
    assert len(took) == 1 and took[0] < 5


def test_a_change_told_in_this_process_wakes_its_waiters_without_the_poll() -> None:
    """The supervisor's status writes (and the API's own) wake their app's held requests at
    once, from any thread; the others stay held, and the database is not read for it."""
    versions = _Versions()
    waits = AppWaits(versions, recheck=3600.0)  # the database read never comes in this test
    woken: list[str] = []

    async def held(name: str, app_id: uuid.UUID) -> None:
        assert await waits.wait(1, app_id, T0, 15.0)
        woken.append(name)

    async def main() -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(waits.run)
                await anyio.sleep(0)
                waits.notify(APP)  # nobody waits yet: nothing to do, nothing kept
                async with anyio.create_task_group() as clients:
                    clients.start_soon(held, "a", APP)
                    clients.start_soon(held, "b", APP)
                    clients.start_soon(held, "other", OTHER)
                    await _until(lambda: waits.waiting == 3)
                    await anyio.to_thread.run_sync(waits.notify, APP)  # from a worker thread
                    await _until(lambda: len(woken) == 2)
                    assert sorted(woken) == ["a", "b"] and waits.waiting == 1
                    waits.notify(OTHER)
                tasks.cancel_scope.cancel()

    anyio.run(main)
    assert sorted(woken) == ["a", "b", "other"]
    assert versions.queries == []  # woken by the notice alone
    waits.notify(APP)  # after run(): harmless
