"""Helpers of the supervisor's storage tests: a real database (SQLite and PostgreSQL), a fake host.

The supervisor runs for real against a migrated database, on the test's event
loop; what it starts lives in a :class:`FakeWorld` (pids that are alive or
not), which a second supervisor can find again as after an operator restart.
The prober answers what the test says. No process, no port, no sleep for
readiness: waits poll the database with a deadline.

The PostgreSQL cases need ``CONFIDE_TEST_POSTGRES_URL`` (``make test`` sets it);
without it they fail, saying so. The fixtures are ``database`` (``tests/conftest.py``)
and ``settings`` (``tests/integration/operator_flow/conftest.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import select

from confide.operator import (
    Account,
    App,
    AppEvents,
    AppSpec,
    BlobStore,
    Database,
    LaunchRefused,
    OperatorSettings,
    Probe,
    Project,
    RuntimeHandle,
    Supervisor,
    SupervisorOptions,
    record_created,
    request_delete,
    request_stop,
    status_history,
)
from confide.wire import AppStatus, LaunchManifest, TlsMode

BASE_DOMAIN: Final = "flow.test"
START: Final = datetime(2031, 1, 1, tzinfo=UTC)
#: Bound on each test body.
TEST_TIMEOUT: Final = 30.0
#: Fast enough for tests: the supervisor passes often and restarts at once.
FAST: Final = SupervisorOptions(
    poll_interval=0.05, probe_interval=0.01, restart_backoff=0.01, max_backoff=0.05
)


class FakeClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeWorld:
    """The host: which runtime pids are alive. Shared by the backends of successive operators."""

    alive: dict[int, RuntimeHandle] = field(default_factory=dict)
    next_pid: int = 1000

    def kill(self, app_id: uuid.UUID) -> RuntimeHandle:
        for pid, handle in list(self.alive.items()):
            if handle.app_id == app_id:
                del self.alive[pid]
                return handle
        raise AssertionError(f"no runtime of {app_id} is alive")

    def pids(self, app_id: uuid.UUID) -> list[int]:
        return [pid for pid, h in self.alive.items() if h.app_id == app_id]


@dataclass
class FakeBackend:
    """A :class:`RuntimeBackend` over a :class:`FakeWorld`, keeping what it was asked."""

    world: FakeWorld
    started: list[AppSpec] = field(default_factory=list)
    stopped: list[RuntimeHandle] = field(default_factory=list)
    removed: list[uuid.UUID] = field(default_factory=list)
    refuse: str | None = None
    detached: bool = False
    #: The next this many removals of an app's files fail (a disk error).
    removal_failures: int = 0
    #: What an ended runtime says last (as a process backend reads it from its output).
    last_output: str = "error: boom"

    async def start(self, spec: AppSpec) -> RuntimeHandle:
        if self.refuse is not None:
            raise LaunchRefused(self.refuse)
        self.world.next_pid += 1
        pid = self.world.next_pid
        handle = RuntimeHandle(spec.app_id, "127.0.0.1", 20000 + pid % 10000, pid)
        self.world.alive[pid] = handle
        self.started.append(spec)
        return handle

    async def stop(self, handle: RuntimeHandle) -> None:
        self.world.alive.pop(handle.pid, None)
        self.stopped.append(handle)

    async def is_alive(self, handle: RuntimeHandle) -> bool:
        return handle.pid in self.world.alive

    async def adopt(self, pid: int, app_id: uuid.UUID) -> RuntimeHandle | None:
        handle = self.world.alive.get(pid)
        return handle if handle is not None and handle.app_id == app_id else None

    async def discover(self) -> list[RuntimeHandle]:
        return list(self.world.alive.values())

    def exit_reason(self, handle: RuntimeHandle) -> str:
        return f"the runtime exited with code 3; last output: {self.last_output}"

    def release(self, handle: RuntimeHandle) -> None:
        return None

    def detach(self) -> None:
        self.detached = True

    def remove_app(self, app_id: uuid.UUID) -> None:
        if self.removal_failures > 0:
            self.removal_failures -= 1
            raise OSError(f"cannot remove the files of {app_id}")
        self.removed.append(app_id)

    def starts(self, app_id: uuid.UUID) -> int:
        return sum(1 for spec in self.started if spec.app_id == app_id)


@dataclass
class FakeProber:
    """Answers :attr:`default`, or what :attr:`answers` says for an app."""

    default: Probe = Probe.WAITING
    answers: dict[uuid.UUID, Probe] = field(default_factory=dict)

    async def probe(
        self, handle: RuntimeHandle, *, tls: TlsMode, healthcheck: str, name: str
    ) -> Probe:
        return self.answers.get(handle.app_id, self.default)


def manifest_for(app_id: uuid.UUID, tls: TlsMode, domain: str | None) -> LaunchManifest:
    san = (f"{app_id}.{BASE_DOMAIN}",) + ((domain,) if domain else ())
    mode = {
        TlsMode.RATLS: TlsMode.RATLS,
        TlsMode.OWNER: TlsMode.OWNER,
        TlsMode.OPERATOR: TlsMode.OPERATOR,
    }[tls]
    return LaunchManifest(
        runtime_sha256=bytes(32),
        package_sha256=bytes(range(32)),
        app_id=app_id,
        application="app:app",
        tls=mode,
        ratls_expiry=int((START + timedelta(days=30)).timestamp())
        if mode == TlsMode.RATLS
        else None,
        certificate_sha256=bytes(32) if mode == TlsMode.OWNER else None,
        san=san,
        subject=None,
    )


def add_app(
    db: Database,
    *,
    tls: TlsMode = TlsMode.RATLS,
    domain: str | None = None,
    expires_at: datetime = START + timedelta(days=30),
    plan: str = "small",
) -> uuid.UUID:
    """An app row as the API writes it (status spawning, desired run)."""
    app_id = uuid.uuid4()
    with db.session() as s:
        account = s.scalar(select(Account).where(Account.name == "alice"))
        if account is None:
            account = Account(name="alice", created_at=START)
            s.add(account)
            s.flush()
        project = s.scalar(select(Project).where(Project.account_id == account.id))
        if project is None:
            project = Project(account_id=account.id, name="default", created_at=START)
            s.add(project)
            s.flush()
        app = App(
            id=app_id,
            account_id=account.id,
            project_id=project.id,
            name="hello",
            application="app:app",
            healthcheck="/health",
            plan=plan,
            expires_at=expires_at,
            tls=tls.value,
            domain=domain,
            certificate_pem="-----BEGIN CERTIFICATE-----\n" if tls == TlsMode.OWNER else None,
            package_sha256=bytes(range(32)).hex(),
            package_size=10,
            launch_manifest=manifest_for(app_id, tls, domain).to_json().decode(),
            restarts=0,
            created_at=START,
            updated_at=START,
        )
        record_created(s, app, now=START)
        s.commit()
    return app_id


def row(db: Database, app_id: uuid.UUID) -> App:
    with db.session() as s:
        found = s.get(App, app_id)
        assert found is not None
        return found


def history(db: Database, app_id: uuid.UUID) -> list[str]:
    with db.session() as s:
        return [c.status for c in status_history(s, app_id)]


def ask(db: Database, app_id: uuid.UUID, *, stop: bool = False, delete: bool = False) -> None:
    """What the API's stop and delete endpoints write."""
    with db.session() as s:
        app = s.get(App, app_id)
        assert app is not None
        if delete:
            request_delete(s, app, now=START)
        elif stop:
            request_stop(app, now=START)
        s.commit()


async def until(
    check: Callable[[], bool], what: str, timeout: float = 10.0, step: float = 0.01
) -> None:
    """Poll ``check`` (in a thread: it reads the database) until true; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


async def status_is(db: Database, app_id: uuid.UUID, status: AppStatus) -> None:
    await until(lambda: row(db, app_id).status == status.value, f"{app_id} to be {status}")


@dataclass
class Host:
    """A supervisor under test and its fakes."""

    supervisor: Supervisor
    backend: FakeBackend
    prober: FakeProber
    clock: FakeClock


@asynccontextmanager
async def supervising(
    settings: OperatorSettings,
    db: Database,
    world: FakeWorld,
    *,
    prober: FakeProber | None = None,
    clock: FakeClock | None = None,
    options: SupervisorOptions = FAST,
    crash: bool = False,
    changes: AppEvents | None = None,
) -> AsyncIterator[Host]:
    """A running supervisor. ``crash``: end it as ``kill -9`` would (no shutdown step)."""
    backend = FakeBackend(world)
    prober = prober if prober is not None else FakeProber()
    clock = clock if clock is not None else FakeClock()
    supervisor = Supervisor(
        settings,
        db,
        backend,
        BlobStore(settings.blobs_dir),
        prober=prober,
        options=options,
        clock=clock,
        changes=changes,
    )
    host = Host(supervisor, backend, prober, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(host.supervisor.run(stop.wait))
    try:
        yield host
    finally:
        if crash:
            task.cancel()
        else:
            stop.set()
        try:
            await task
        except asyncio.CancelledError:
            if not crash:
                raise


def run(body: Callable[[], Awaitable[None]], timeout: float = TEST_TIMEOUT) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await body()

    asyncio.run(bounded())
