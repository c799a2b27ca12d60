"""The supervisor against a real database (SQLite and PostgreSQL), on a fake host.

Each status change goes through ``record_status`` (the history is checked
exactly); runtimes are started, restarted, stopped and adopted as the rows say.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from confide.errors import LifecycleError
from confide.operator import (
    App,
    AppSpec,
    BlobStore,
    Database,
    OperatorSettings,
    Probe,
    RuntimeHandle,
    Supervisor,
)
from confide.operator._router import RouteMode
from confide.operator._service import app_versions
from confide.operator._supervisor import _Change
from confide.operator._waits import AppWaits
from confide.wire import AppStatus, TlsMode
from support.operator_flow import (
    BASE_DOMAIN,
    FAST,
    START,
    FakeBackend,
    FakeClock,
    FakeProber,
    FakeWorld,
    add_app,
    ask,
    history,
    manifest_for,
    row,
    run,
    status_is,
    supervising,
    until,
)


def _started(backend: FakeBackend, app_id: uuid.UUID, times: int) -> bool:
    return backend.starts(app_id) == times


def test_a_failed_removal_of_a_deleted_app_never_brings_it_back(
    settings: OperatorSettings, database: Database
) -> None:
    """Deleted is final: a failure after it is retried, never taken for a crash (a restart)."""
    app_id = add_app(database)

    async def body() -> None:
        async with supervising(settings, database, FakeWorld()) as host:
            host.prober.default = Probe.HEALTHY
            await status_is(database, app_id, AppStatus.RUNNING)
            host.backend.removal_failures = 1
            ask(database, app_id, delete=True)
            host.supervisor.notify(app_id)
            await until(lambda: host.backend.removed == [app_id], "the app's files removed")
            assert row(database, app_id).status == AppStatus.DELETED.value
            assert host.backend.starts(app_id) == 1 and host.backend.removal_failures == 0

    run(body)
    assert history(database, app_id) == ["spawning", "running", "stopped", "deleted"]


def test_an_illegal_transition_is_kept_to_its_app(
    settings: OperatorSettings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A lifecycle bug met for one app is logged loudly; the other apps keep running."""
    broken = add_app(database)

    async def body() -> None:
        world = FakeWorld()
        async with supervising(settings, database, world) as host:
            host.prober.default = Probe.HEALTHY
            real_start = host.backend.start

            async def start(spec: AppSpec) -> RuntimeHandle:
                if spec.app_id == broken:
                    raise LifecycleError("no transition from here to there (a planted bug)")
                return await real_start(spec)

            host.backend.start = start  # type: ignore[method-assign]
            host.supervisor.notify(broken)
            await until(lambda: "planted bug" in caplog.text, "the illegal transition to be logged")
            healthy = add_app(database)
            host.supervisor.notify(healthy)
            await status_is(database, healthy, AppStatus.RUNNING)

    with caplog.at_level(logging.ERROR, logger="confide.operator"):
        run(body)
    assert "an illegal lifecycle transition (a bug)" in caplog.text


def test_a_second_delete_between_stopped_and_deleted_is_recorded_once(
    settings: OperatorSettings, database: Database
) -> None:
    """The owner deletes twice: the API records the deletion of the stopped app just before
    the supervisor does (its row said delete requested while active)."""
    app_id = add_app(database)
    supervisor = Supervisor(
        settings, database, FakeBackend(FakeWorld()), BlobStore(settings.blobs_dir)
    )
    ask(database, app_id, delete=True)  # active: only asked
    supervisor._apply(app_id, _Change(status=AppStatus.STOPPED, clear_runtime=True), START)
    ask(database, app_id, delete=True)  # stopped: the API deletes it at once
    supervisor._apply(app_id, _Change(status=AppStatus.DELETED, detail="deleted by owner"), START)
    assert row(database, app_id).status == AppStatus.DELETED.value
    assert history(database, app_id) == ["spawning", "stopped", "deleted"]


def test_spawning_initializing_running_stopped_deleted(
    settings: OperatorSettings, database: Database
) -> None:
    app_id = add_app(database)

    async def body() -> None:
        world = FakeWorld()
        async with supervising(settings, database, world) as host:
            await status_is(database, app_id, AppStatus.INITIALIZING)
            (spec,) = host.backend.started
            assert spec.app_id == app_id and spec.memory_mib == 512 and spec.cores == 1
            assert (
                spec.package
                == settings.blobs_dir / bytes(range(32)).hex()[:2] / (bytes(range(32)).hex()[2:])
            )
            stored = row(database, app_id)
            (pid,) = world.pids(app_id)
            assert stored.runtime_pid == pid and stored.runtime_host == "127.0.0.1"
            route = host.supervisor.routes.lookup(f"{app_id}.{BASE_DOMAIN}")
            assert route is not None and route.mode is RouteMode.PASSTHROUGH
            assert route.upstream_port == stored.runtime_port

            host.prober.default = Probe.HEALTHY
            host.supervisor.notify(app_id)
            await status_is(database, app_id, AppStatus.RUNNING)
            assert row(database, app_id).started_at == host.clock.now

            ask(database, app_id, stop=True)
            host.supervisor.notify(app_id)
            await status_is(database, app_id, AppStatus.STOPPED)
            assert world.pids(app_id) == []
            assert host.supervisor.routes.lookup(f"{app_id}.{BASE_DOMAIN}") is None
            assert row(database, app_id).runtime_pid is None

            ask(database, app_id, delete=True)
            host.supervisor.notify(app_id)
            await status_is(database, app_id, AppStatus.DELETED)
            await until(lambda: host.backend.removed == [app_id], "the app's files removed")
            assert host.backend.starts(app_id) == 1

    run(body)
    assert history(database, app_id) == [
        "spawning",
        "initializing",
        "running",
        "stopped",
        "deleted",
    ]


def test_crashes_after_the_runtime_answered_are_always_restarted(
    settings: OperatorSettings, database: Database
) -> None:
    """Traffic can crash a running app as often as it likes: never on_error (issue 9, 1)."""
    app_id = add_app(database)
    options = dataclasses.replace(FAST, max_restarts=2)
    crashes = 4  # more than max_restarts + 1

    async def body() -> None:
        world = FakeWorld()
        prober = FakeProber(default=Probe.HEALTHY)
        async with supervising(settings, database, world, prober=prober, options=options) as host:
            await status_is(database, app_id, AppStatus.RUNNING)
            for crash in range(1, crashes + 1):
                world.kill(app_id)
                await until(functools.partial(_started, host.backend, app_id, crash + 1), "restart")
                await status_is(database, app_id, AppStatus.RUNNING)
                assert row(database, app_id).restarts == crash
            assert host.backend.starts(app_id) == crashes + 1

    run(body)
    assert history(database, app_id) == ["spawning"] + ["running", "spawning"] * crashes + [
        "running"
    ]


def test_a_runtime_that_never_answers_goes_on_error_after_the_limit(
    settings: OperatorSettings, database: Database
) -> None:
    app_id = add_app(database)
    options = dataclasses.replace(FAST, max_restarts=2)

    async def body() -> None:
        world = FakeWorld()
        prober = FakeProber(default=Probe.DOWN)
        async with supervising(settings, database, world, prober=prober, options=options) as host:
            for start in (1, 2):
                await until(functools.partial(_started, host.backend, app_id, start), "start")
                world.kill(app_id)
            await until(functools.partial(_started, host.backend, app_id, 3), "third start")
            world.kill(app_id)
            await status_is(database, app_id, AppStatus.ON_ERROR)
            stored = row(database, app_id)
            assert stored.restarts == 2 and stored.runtime_pid is None
            assert stored.status_detail is not None
            assert "exited with code 3" in stored.status_detail
            assert "error: boom" in stored.status_detail
            assert "3 times in a row before it answered" in stored.status_detail
            assert host.backend.starts(app_id) == 3

    run(body)
    assert history(database, app_id) == ["spawning", "spawning", "spawning", "on_error"]


UNUSABLE = [
    (
        "a missing module",
        "error: app unusable: the app imports the module 'pandas', which is not installed "
        "in the enclave; add it to the requirements",
        "the module 'pandas'",
        "add it to the requirements",
    ),
    (
        "no such attribute",
        "error: app unusable: the app module 'app' has no attribute 'application'; "
        "check python_application",
        "no attribute 'application'",
        "check python_application",
    ),
]


@pytest.mark.parametrize(
    ("last_output", "missing", "fix"),
    [u[1:] for u in UNUSABLE],
    ids=[u[0] for u in UNUSABLE],
)
@pytest.mark.parametrize("answered", [False, True], ids=["before", "after-configuration"])
def test_an_app_that_cannot_be_imported_is_on_error_after_one_start(
    settings: OperatorSettings,
    database: Database,
    last_output: str,
    missing: str,
    fix: str,
    answered: bool,
) -> None:
    """A restart cannot fix a missing module or attribute (issue 15, 5): on_error at once,
    with the missing name and the fix in the app's status and its history."""
    app_id = add_app(database)
    options = dataclasses.replace(FAST, max_restarts=5)

    async def body() -> None:
        world = FakeWorld()
        prober = FakeProber(default=Probe.WAITING if answered else Probe.DOWN)
        async with supervising(settings, database, world, prober=prober, options=options) as host:
            host.backend.last_output = last_output
            await until(functools.partial(_started, host.backend, app_id, 1), "start")
            if answered:  # the deploy configured it; the app is imported after that
                await status_is(database, app_id, AppStatus.INITIALIZING)
            world.kill(app_id)
            await status_is(database, app_id, AppStatus.ON_ERROR)
            stored = row(database, app_id)
            assert stored.restarts == 0 and stored.runtime_pid is None
            assert stored.status_detail is not None
            assert missing in stored.status_detail and fix in stored.status_detail
            assert "not restarted" in stored.status_detail
            assert host.backend.starts(app_id) == 1

    run(body)
    ends = ["initializing", "on_error"] if answered else ["on_error"]
    assert history(database, app_id) == ["spawning", *ends]


def test_an_answer_resets_the_count_towards_on_error(
    settings: OperatorSettings, database: Database
) -> None:
    app_id = add_app(database)
    options = dataclasses.replace(FAST, max_restarts=1)

    async def body() -> None:
        world = FakeWorld()
        prober = FakeProber(default=Probe.DOWN)
        async with supervising(settings, database, world, prober=prober, options=options) as host:
            await until(functools.partial(_started, host.backend, app_id, 1), "start")
            world.kill(app_id)  # 1 start failed
            await until(functools.partial(_started, host.backend, app_id, 2), "restart")
            prober.default = Probe.WAITING
            await status_is(database, app_id, AppStatus.INITIALIZING)
            prober.default = Probe.DOWN
            world.kill(app_id)  # it had answered: not a failed start
            await until(functools.partial(_started, host.backend, app_id, 3), "restart")
            world.kill(app_id)  # 1 start failed
            await until(functools.partial(_started, host.backend, app_id, 4), "restart")
            world.kill(app_id)  # 2 in a row: over max_restarts
            await status_is(database, app_id, AppStatus.ON_ERROR)

    run(body)


def test_expired_apps_are_stopped(settings: OperatorSettings, database: Database) -> None:
    clock = FakeClock()
    soon = add_app(database, expires_at=clock.now + timedelta(seconds=60))
    later = add_app(database)

    async def body() -> None:
        world = FakeWorld()
        async with supervising(settings, database, world, clock=clock) as host:
            await status_is(database, soon, AppStatus.INITIALIZING)
            await status_is(database, later, AppStatus.INITIALIZING)
            clock.advance(61)
            host.supervisor.notify(soon)
            await status_is(database, soon, AppStatus.EXPIRED)
            assert world.pids(soon) == [] and len(world.pids(later)) == 1
            assert row(database, later).status == AppStatus.INITIALIZING.value

    run(body)
    assert history(database, soon)[-1] == "expired"


def test_a_runtime_that_stops_at_its_measured_expiry_is_expired_not_restarted(
    settings: OperatorSettings, database: Database
) -> None:
    """The runtime exits by itself at its measured RA-TLS expiry (issue 9, point 5).

    The app's expires_at is later than the measured expiry (whole seconds, or an
    operator's clock behind the enclave's): the app is expired, never on_error or
    restarted.
    """
    clock = FakeClock()
    app_id = add_app(database, expires_at=clock.now + timedelta(days=60))
    measured = manifest_for(app_id, TlsMode.RATLS, None).ratls_expiry
    assert measured is not None and measured < (clock.now + timedelta(days=60)).timestamp()

    async def body() -> None:
        world = FakeWorld()
        prober = FakeProber(default=Probe.HEALTHY)
        async with supervising(settings, database, world, clock=clock, prober=prober) as host:
            await status_is(database, app_id, AppStatus.RUNNING)
            clock.advance(measured - clock.now.timestamp() + 1)
            world.kill(app_id)  # exit code 3 (EXIT_EXPIRED): it stopped serving
            host.supervisor.notify(app_id)
            await status_is(database, app_id, AppStatus.EXPIRED)
            assert (row(database, app_id).status_detail or "").startswith("expired at")
            assert host.backend.starts(app_id) == 1 and world.pids(app_id) == []

    run(body)
    assert history(database, app_id) == ["spawning", "running", "expired"]


def test_an_app_never_configured_is_stopped_at_its_plans_deadline(
    settings: OperatorSettings, database: Database
) -> None:
    """A deploy that died after its upload must not leave the app waiting until it expires."""
    clock = FakeClock()
    deadline = settings.plan("small").configure_timeout.total_seconds()
    stuck = add_app(database)
    configured = add_app(database)

    async def body() -> None:
        world = FakeWorld()
        prober = FakeProber(answers={configured: Probe.HEALTHY})
        async with supervising(settings, database, world, prober=prober, clock=clock) as host:
            await status_is(database, stuck, AppStatus.INITIALIZING)
            await status_is(database, configured, AppStatus.RUNNING)
            clock.advance(deadline)
            host.supervisor.notify(stuck)
            await status_is(database, stuck, AppStatus.STOPPED)
            assert world.pids(stuck) == [] and len(world.pids(configured)) == 1
            assert host.supervisor.routes.lookup(f"{stuck}.{BASE_DOMAIN}") is None
            assert row(database, configured).status == AppStatus.RUNNING.value

    run(body)
    stored = row(database, stuck)
    assert stored.status_detail == (
        "not configured within 30 minutes of its creation (plan small): stopped; deploy it again"
    )
    assert stored.runtime_pid is None
    assert history(database, stuck) == ["spawning", "initializing", "stopped"]


def test_an_app_that_cannot_be_launched_is_on_error_at_once(
    settings: OperatorSettings, database: Database
) -> None:
    app_id = add_app(database)

    async def body() -> None:
        async with supervising(settings, database, FakeWorld()) as host:
            host.backend.refuse = "the launch would not measure as its manifest"
            await status_is(database, app_id, AppStatus.ON_ERROR)
            assert row(database, app_id).status_detail == host.backend.refuse
            assert row(database, app_id).restarts == 0

    run(body)


def test_operator_mode_is_terminated_only_once_running(
    settings: OperatorSettings, database: Database
) -> None:
    app_id = add_app(database, tls=TlsMode.OPERATOR)
    name = f"{app_id}.{BASE_DOMAIN}"

    async def body() -> None:
        async with supervising(settings, database, FakeWorld()) as host:
            await status_is(database, app_id, AppStatus.INITIALIZING)
            route = host.supervisor.routes.lookup(name)
            assert route is not None and route.mode is RouteMode.PASSTHROUGH
            host.prober.default = Probe.HEALTHY
            await status_is(database, app_id, AppStatus.RUNNING)
            await until(
                lambda: (
                    getattr(host.supervisor.routes.lookup(name), "mode", None)
                    is RouteMode.TERMINATE
                ),
                "the route to terminate",
            )

    run(body)


def test_restart_of_the_operator_adopts_restarts_and_stops_strays(
    settings: OperatorSettings, database: Database
) -> None:
    kept = add_app(database)
    died = add_app(database)
    gone = add_app(database)
    world = FakeWorld()

    async def body() -> None:
        prober = FakeProber(default=Probe.HEALTHY)
        async with supervising(settings, database, world, prober=prober, crash=True) as first:
            for app_id in (kept, died, gone):
                await status_is(database, app_id, AppStatus.RUNNING)
        assert not first.backend.detached  # killed: no shutdown step ran
        kept_pid = row(database, kept).runtime_pid
        # While no operator runs: one runtime dies, one app is deleted behind its back
        # (its runtime would be a stray).
        world.kill(died)
        ask(database, gone, delete=True)
        stray = world.pids(gone)
        assert len(stray) == 1

        async with supervising(settings, database, world, prober=prober) as second:
            await until(lambda: second.backend.starts(died) == 1, "the dead runtime restarted")
            await status_is(database, died, AppStatus.RUNNING)
            await status_is(database, gone, AppStatus.DELETED)
            assert row(database, kept).runtime_pid == kept_pid  # adopted
            assert second.backend.starts(kept) == 0
            assert row(database, kept).status == AppStatus.RUNNING.value
            assert [h.pid for h in second.backend.stopped] == stray
            assert row(database, died).restarts == 1
            assert row(database, kept).restarts == 0
            assert second.supervisor.routes.lookup(f"{kept}.{BASE_DOMAIN}") is not None
        assert second.backend.detached  # a clean stop leaves the runtimes running
        assert world.pids(kept) == [kept_pid]

    run(body)
    assert history(database, kept) == ["spawning", "running"]
    assert history(database, died) == ["spawning", "running", "spawning", "running"]


def test_stop_apps_on_exit(settings: OperatorSettings, database: Database) -> None:
    app_id = add_app(database)
    world = FakeWorld()
    options = dataclasses.replace(FAST, stop_apps_on_exit=True)

    async def body() -> None:
        prober = FakeProber(default=Probe.HEALTHY)
        async with supervising(settings, database, world, prober=prober, options=options) as host:
            await status_is(database, app_id, AppStatus.RUNNING)
        assert world.alive == {}
        assert not host.backend.detached
        stored = row(database, app_id)
        assert stored.status == AppStatus.SPAWNING.value and stored.runtime_pid is None
        # The next operator starts it again, not counted as a crash.
        async with supervising(settings, database, world, prober=prober) as again:
            await status_is(database, app_id, AppStatus.RUNNING)
            assert again.backend.starts(app_id) == 1
        assert row(database, app_id).restarts == 0

    run(body)


def test_notify_is_harmless_before_run_and_for_unknown_apps(
    settings: OperatorSettings, database: Database
) -> None:
    idle = Supervisor(settings, database, FakeBackend(FakeWorld()), BlobStore(settings.blobs_dir))
    idle.notify(uuid.uuid4())  # not running yet: the first pass reads everything anyway

    async def body() -> None:
        async with supervising(settings, database, FakeWorld()) as host:
            host.supervisor.notify(uuid.uuid4())

    run(body)


@dataclasses.dataclass
class _CountingProber(FakeProber):
    probes: int = 0

    async def probe(
        self, handle: RuntimeHandle, *, tls: TlsMode, healthcheck: str, name: str
    ) -> Probe:
        self.probes += 1
        return await super().probe(handle, tls=tls, healthcheck=healthcheck, name=name)


def test_starts_queue_behind_max_starting_oldest_app_first(
    settings: OperatorSettings, database: Database
) -> None:
    """100 runtimes starting at once on 2 cores starved the API (issue 14.5): at most
    ``max_starting`` are launched and not yet answering; the others wait, oldest first."""
    apps = [add_app(database) for _ in range(7)]
    # Created in the reverse order of insertion, a second apart: the queue follows created_at.
    with database.session() as s:
        for age, app_id in enumerate(apps):
            found = s.get(App, app_id)
            assert found is not None
            found.created_at = START - timedelta(seconds=age)
        s.commit()
    oldest_first = list(reversed(apps))
    options = dataclasses.replace(FAST, max_starting=3)

    async def body() -> None:
        prober = _CountingProber(default=Probe.DOWN)  # launched, never answering yet
        async with supervising(
            settings, database, FakeWorld(), prober=prober, options=options
        ) as host:
            await until(lambda: len(host.backend.started) >= 3, "three starts")
            probed = prober.probes
            await until(lambda: prober.probes >= probed + 30, "ten more passes")
            assert [s.app_id for s in host.backend.started] == oldest_first[:3]
            prober.default = Probe.WAITING  # they answer: the slots go to the next in line
            for app_id in apps:
                await status_is(database, app_id, AppStatus.INITIALIZING)
            assert [s.app_id for s in host.backend.started] == oldest_first

    run(body)


@dataclasses.dataclass
class _ProbesPerApp(FakeProber):
    probes: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)

    async def probe(
        self, handle: RuntimeHandle, *, tls: TlsMode, healthcheck: str, name: str
    ) -> Probe:
        self.probes[handle.app_id] = self.probes.get(handle.app_id, 0) + 1
        return await super().probe(handle, tls=tls, healthcheck=healthcheck, name=name)


def test_an_app_waiting_for_its_configuration_is_probed_less_and_less_often(
    settings: OperatorSettings, database: Database
) -> None:
    """Each probe is a TLS handshake on the operator's event loop: 100 apps waiting for
    their owners, probed every pass, took the cores the API needed (issue 14.5)."""
    waiting, starting = add_app(database), add_app(database)
    options = dataclasses.replace(FAST, max_waiting_probe_interval=0.5)

    async def body() -> None:
        prober = _ProbesPerApp(answers={starting: Probe.DOWN})  # probed every pass: a clock
        async with supervising(settings, database, FakeWorld(), prober=prober, options=options):
            await status_is(database, waiting, AppStatus.INITIALIZING)
            await until(lambda: prober.probes.get(starting, 0) >= 100, "100 passes")
            # Passes come every 0.01 s (more on a loaded machine): the waiting app's probes
            # back off 0.02, 0.04, ... up to 0.5 s; about 8 in 100 passes, not 100.
            assert 2 <= prober.probes[waiting] < prober.probes[starting] / 3
            prober.answers[waiting] = Probe.HEALTHY  # configured: found within the backoff
            await status_is(database, waiting, AppStatus.RUNNING)

    run(body)


def test_the_supervisors_writes_wake_the_apis_long_polls_without_the_poll(
    settings: OperatorSettings, database: Database
) -> None:
    """An owner long-polling its app (``confide deploy``) hears of each write the supervisor
    commits at once, not at the next read of the database (here an hour away)."""
    app_id = add_app(database)
    waits = AppWaits(functools.partial(app_versions, database), recheck=3600.0)
    held: list[float] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        poll = asyncio.create_task(waits.run())
        await asyncio.sleep(0)
        try:
            async with supervising(settings, database, FakeWorld(), changes=waits):
                # Spawning (its runtime recorded), then initializing. The row is read and the
                # request held with no await between: a write cannot slip in unheard.
                while row(database, app_id).status != AppStatus.INITIALIZING.value:
                    start = loop.time()
                    # As the API holds ``GET /apps/{id}?wait=10&seen=...`` (the fake clock is
                    # fixed, so the record's updated_at never differs from the one seen).
                    assert await waits.wait(1, app_id, START, 10.0)
                    held.append(loop.time() - start)
                    assert held[-1] < 9.0, "not woken by the supervisor's write"
        finally:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll

    run(body)
    assert held  # it waited at least once


def test_only_a_step_that_wrote_wakes_the_next_pass(
    settings: OperatorSettings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that found nothing to do (a running app alive, a runtime not listening yet)
    does not wake the supervisor: every pass reads every app's row, and waking on each step
    made passes follow each other back to back (hundreds a second with 20 apps, and a
    starting runtime probed as fast as the probes returned, not each ``probe_interval``)."""
    running, starting = add_app(database), add_app(database)
    prober = _ProbesPerApp(default=Probe.DOWN, answers={running: Probe.HEALTHY})
    options = dataclasses.replace(FAST, poll_interval=0.2, probe_interval=0.1)
    loads: list[int] = []

    async def body() -> None:
        async with supervising(
            settings, database, FakeWorld(), prober=prober, options=options
        ) as host:
            await status_is(database, running, AppStatus.RUNNING)
            load = host.supervisor._load

            def counted(tracked: Sequence[uuid.UUID]) -> list[Any]:
                loads.append(len(tracked))
                return load(tracked)

            monkeypatch.setattr(host.supervisor, "_load", counted)
            probed = prober.probes.get(starting, 0)
            await asyncio.sleep(1.0)  # a measured second, not a wait for readiness
            probes = prober.probes.get(starting, 0) - probed

        # One pass each probe_interval while the starting app is in transition: about 10.
        assert 1 <= len(loads) <= 25, f"{len(loads)} passes in a second"
        assert 1 <= probes <= 25, f"the starting runtime was probed {probes} times in a second"

    run(body)
