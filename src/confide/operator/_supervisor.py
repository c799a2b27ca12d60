"""The supervisor: converge what runs on what the database asks, and say so in the database.

One asyncio task (:meth:`Supervisor.run`). Each pass reads the apps that are
active or being removed, and gives each app at most one operation at a time
(start, probe, stop), run concurrently with the others. It wakes on
:meth:`Supervisor.notify` (the API's :class:`~._seams.AppEvents`), when an
operation ends, or after a short interval while an app is in transition
(:attr:`SupervisorOptions.probe_interval`), else every
:attr:`SupervisorOptions.poll_interval` and at the next expiry.

The life of an app (spawning, initializing, running, stopped, expired,
on_error, deleted) is the transition table of :mod:`._lifecycle`, drawn in its
docstring; every status change goes through its :func:`~._lifecycle.record_status`.

A runtime that dies while it should run is restarted after a backoff
(:attr:`SupervisorOptions.restart_backoff`, doubling up to ``max_backoff``);
it resumes from its sealed state, so a configured app comes back running with
no action from its owner. ``restarts`` counts every restart; the count of
crashes in a row resets once the app has run for ``stable_after`` seconds.

``on_error`` is for an app that cannot start, never for one that traffic
crashed: a runtime that answered a probe (its configuration endpoint or the
app) started, so however often it dies afterwards it is restarted, with the
backoff capped at ``max_backoff``. Only runtimes that end before they ever
answer count towards ``max_restarts``; one that answers resets that count. A
runtime that cannot import its app (its last line ``error: app unusable: ...``,
:data:`~confide.wire.APP_UNUSABLE_LINE`) puts it ``on_error`` at once, with that
reason: the app's code is measured, so every restart would fail the same way.

Probes (:mod:`._prober`) are liveness checks only.

After an operator restart (even ``kill -9``) the first pass asks the backend
which runtimes still run: those of active apps are adopted (the recorded pid
first), dead ones restarted, and runtimes of apps that should not run stopped.

Example::

    >>> supervisor = Supervisor(settings, database, backend, blobs)  # doctest: +SKIP
    >>> api = create_app(settings, database=database, events=supervisor)  # doctest: +SKIP
    >>> await supervisor.run(stop.wait)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import and_, false, or_, select

from confide.errors import Error, LifecycleError
from confide.wire import AppStatus, DesiredState, LaunchManifest, TlsMode, app_unusable

from ._backend import AppSpec, LaunchRefused, RuntimeBackend, RuntimeHandle
from ._blobs import BlobStore
from ._db import Database
from ._lifecycle import record_status
from ._models import App
from ._prober import HttpProber, Probe, Prober
from ._routes import AppRoutes
from ._seams import AppEvents, Clock, NoEvents, utc_now
from ._settings import OperatorSettings

#: Runtimes in a row that end before they ever answer, restarted before on_error.
MAX_RESTARTS: Final = 5
#: Doublings of the restart backoff counted at most (far past any ``max_backoff``).
_MAX_DOUBLINGS: Final = 64
_ACTIVE: Final = tuple(s.value for s in AppStatus if s.active)


def _default_max_starting(cpus: int | None) -> int:
    """Four starting runtimes per core: enough to keep the cores busy while some wait on
    I/O or on a probe, few enough that the API and the router keep their share."""
    return 4 * (cpus or 1)


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    """How often and how patiently the supervisor works. Seconds."""

    #: Between passes when nothing is in transition.
    poll_interval: float = 2.0
    #: Between passes while an app is spawning, initializing, restarting or stopping.
    probe_interval: float = 0.25
    #: An app waiting for its owner's configuration is probed less and less often, up to
    #: this interval: each probe is a TLS handshake on the operator's event loop, and 100
    #: apps waiting at 0.25 s took the cores the API needed.
    max_waiting_probe_interval: float = 2.0
    #: First wait before restarting a crashed runtime; doubles with each crash in a row.
    restart_backoff: float = 0.5
    max_backoff: float = 30.0
    max_restarts: int = MAX_RESTARTS
    #: Running this long resets the count of crashes in a row.
    stable_after: float = 60.0
    #: Each probe request (connect, TLS and answer).
    probe_timeout: float = 3.0
    #: On shutdown, stop every runtime (else leave them running for the next operator).
    stop_apps_on_exit: bool = False
    #: Runtimes starting at once (launched, not yet answering a probe); more wait for a
    #: slot, oldest app first. A start is mostly CPU (an interpreter importing its stack):
    #: 100 at once on 2 cores thrashed and starved the API and the router sharing them.
    max_starting: int = field(default_factory=lambda: _default_max_starting(os.cpu_count()))
    #: Seconds between clearing a runtime's address in the database and stopping it:
    #: routers that read the routes from the database (replicas, ADR 0023) drop the
    #: route within one refresh and a read, while the runtime still holds its address.
    route_drain: float = 0.0

    def backoff(self, crashes: int) -> float:
        # An app that answered is restarted however often it ends: ``crashes`` has no bound,
        # and a float times 2**1024 or more raises OverflowError.
        doublings = min(max(crashes - 1, 0), _MAX_DOUBLINGS)
        return float(min(self.restart_backoff * 2**doublings, self.max_backoff))


def _first_name(row: _Row) -> str:
    """The app's first name as its runtime was launched with it (its Host for a probe)."""
    names = LaunchManifest.from_json(row.launch_manifest).san
    return names[0] if names else ""


@dataclass(frozen=True, slots=True)
class _Row:
    """What the supervisor reads of an app (a snapshot; the database stays the truth)."""

    id: uuid.UUID
    status: AppStatus
    desired_state: DesiredState
    delete_requested: bool
    expires_at: datetime
    tls: TlsMode
    domain: str | None
    healthcheck: str
    plan: str
    launch_manifest: str
    certificate_pem: str | None
    package_sha256: str
    runtime_pid: int | None
    #: When the app last reached running (``None``: never, so never configured).
    started_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, app: App) -> _Row:
        return cls(
            id=app.id,
            status=AppStatus(app.status),
            desired_state=DesiredState(app.desired_state),
            delete_requested=app.delete_requested,
            expires_at=_expiry(app.expires_at, app.launch_manifest),
            tls=TlsMode(app.tls),
            domain=app.domain,
            healthcheck=app.healthcheck,
            plan=app.plan,
            launch_manifest=app.launch_manifest,
            certificate_pem=app.certificate_pem,
            package_sha256=app.package_sha256,
            runtime_pid=app.runtime_pid,
            started_at=app.started_at,
            created_at=app.created_at,
        )


def _expiry(expires_at: datetime, launch_manifest: str) -> datetime:
    """When the app expires: ``expires_at``, or its measured RA-TLS expiry if sooner.

    At the measured expiry the runtime stops by itself (``EXIT_EXPIRED``): the
    app is then expired, not crashed, and is not restarted.
    """
    try:
        ratls = LaunchManifest.from_json(launch_manifest).ratls_expiry
    except Error:
        return expires_at  # a launch refuses it; its status says so
    if ratls is None:
        return expires_at
    return min(expires_at, datetime.fromtimestamp(ratls, expires_at.tzinfo or UTC))


@dataclass
class _Tracked:
    """The supervisor's memory of one app (lost on restart, rebuilt from the database)."""

    app_id: uuid.UUID
    handle: RuntimeHandle | None = None
    status: AppStatus | None = None
    #: Crashes in a row (they set the backoff).
    crashes: int = 0
    #: Runtimes in a row that ended before they ever answered a probe (towards on_error).
    failed_starts: int = 0
    #: The current runtime answered a probe: it started.
    answered: bool = False
    #: Loop time before which a crashed runtime is not restarted.
    not_before: float = 0.0
    #: Loop time the current run reached ``running``.
    running_since: float | None = None
    #: Probes in a row that found the runtime waiting for its configuration.
    waits: int = 0
    #: Loop time before which a runtime waiting for its configuration is not probed again.
    next_probe: float = 0.0
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Steps finished that wrote the app's row: a row read meanwhile may predate the write.
    steps: int = 0
    #: Writes to the app's row (a step that made none has nothing to follow up at once).
    writes: int = 0

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass(frozen=True, slots=True)
class _Change:
    """A write to one app's row."""

    status: AppStatus | None = None
    detail: str | None = None
    handle: RuntimeHandle | None = None
    clear_runtime: bool = False
    count_restart: bool = False
    started: bool = False


class Supervisor:
    """Runs the apps the database asks for, through a :class:`RuntimeBackend`.

    Also the API's :class:`~._seams.AppEvents` (:meth:`notify`) and the owner
    of the router's :class:`~._routes.AppRoutes` (:attr:`routes`).
    """

    def __init__(
        self,
        settings: OperatorSettings,
        database: Database,
        backend: RuntimeBackend,
        blobs: BlobStore,
        *,
        prober: Prober | None = None,
        routes: AppRoutes | None = None,
        options: SupervisorOptions = SupervisorOptions(),  # noqa: B008 - frozen
        clock: Clock = utc_now,
        logger: logging.Logger | None = None,
        changes: AppEvents | None = None,
    ) -> None:
        self._settings = settings
        self._db = database
        self._backend = backend
        self._blobs = blobs
        self._prober = prober
        self.routes = routes if routes is not None else AppRoutes(settings.base_domain)
        self.options = options
        self._clock = clock
        self._log = logger or logging.getLogger("confide.operator.supervisor")
        #: Told after each write to an app's row (the API's long-polls of this process).
        self._changes = changes if changes is not None else NoEvents()
        self._apps: dict[uuid.UUID, _Tracked] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        #: Apps the API told about since the last pass (a deletion of a stopped app, say).
        self._news: set[uuid.UUID] = set()
        #: Apps whose launch is under way (a slot of ``max_starting`` taken before any await).
        self._launching: set[uuid.UUID] = set()

    # -- AppEvents -----------------------------------------------------------------------------

    def notify(self, app_id: uuid.UUID) -> None:
        """Wake the supervisor (thread-safe, returns at once). Before :meth:`run`: a no-op."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._notified, app_id)

    def _notified(self, app_id: uuid.UUID) -> None:
        self._news.add(app_id)
        if self._wake is not None:
            self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, shutdown_trigger: Callable[[], Awaitable[object]]) -> None:
        """Supervise until ``shutdown_trigger()`` returns."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        own_prober = self._prober is None
        prober = HttpProber(timeout=self.options.probe_timeout) if own_prober else self._prober
        if prober is None:  # pragma: no cover - set just above
            raise RuntimeError("no prober")
        stopping = asyncio.ensure_future(shutdown_trigger())
        try:
            async with asyncio.TaskGroup() as group:
                await self._adopt_all()
                while not stopping.done():
                    timeout = await self._pass(group, prober)
                    waker = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait(
                            {waker, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        waker.cancel()
                    self._wake.clear()
                tasks = [t.task for t in self._apps.values() if t.task is not None]
                if tasks:
                    await asyncio.wait(tasks)
            await self._shutdown()
        finally:
            stopping.cancel()
            if own_prober and isinstance(prober, HttpProber):
                await prober.aclose()
            self._wake = None
            self._loop = None

    async def _shutdown(self) -> None:
        running = [t for t in self._apps.values() if t.handle is not None]
        if not self.options.stop_apps_on_exit:
            if running:
                self._log.info("leaving %d runtimes running for the next operator", len(running))
            self._backend.detach()
            return

        async def stop(t: _Tracked) -> None:
            if t.handle is None:  # pragma: no cover - filtered above
                return
            await self._backend.stop(t.handle)
            self.routes.withdraw(t.app_id)
            await self._write(
                t.app_id,
                _Change(
                    status=AppStatus.SPAWNING,
                    detail="the operator stopped; the app restarts with it",
                    clear_runtime=True,
                ),
            )
            t.handle = None

        await asyncio.gather(*(stop(t) for t in running))

    def _in_transition(self) -> bool:
        for t in self._apps.values():
            if t.busy or t.handle is None or t.status != AppStatus.RUNNING:
                return True
        return False

    async def _pass(self, group: asyncio.TaskGroup, prober: Prober) -> float:
        """Give every app that needs it an operation; return how long to sleep."""
        now = self._clock()
        news, self._news = self._news, set()
        before = {app_id: t.steps for app_id, t in self._apps.items()}
        rows = await asyncio.to_thread(self._load, [*self._apps, *news])
        loop = asyncio.get_running_loop()
        next_expiry: float | None = None
        for row in sorted(rows, key=lambda r: r.created_at):  # starts queue oldest first
            t = self._apps.setdefault(row.id, _Tracked(row.id))
            if t.status is None:
                t.status = row.status
            if row.status.active:
                left = (row.expires_at - now).total_seconds()
                next_expiry = left if next_expiry is None else min(next_expiry, left)
            if t.busy:
                continue
            if t.steps != before.get(row.id, t.steps):
                # A step ended while the rows were read: this row may predate what it
                # wrote (a stop would be done twice). Its end woke the loop: next pass.
                continue
            t.task = group.create_task(self._step(t, row, now, prober))
        seen = {row.id for row in rows}
        for app_id in [a for a, t in self._apps.items() if a not in seen and not t.busy]:
            if self._apps[app_id].handle is None:
                del self._apps[app_id]
        timeout = (
            self.options.probe_interval if self._in_transition() else self.options.poll_interval
        )
        retry = [
            t.not_before - loop.time()
            for t in self._apps.values()
            if t.handle is None and t.not_before > loop.time()
        ]
        for wait in [*retry, *([next_expiry] if next_expiry is not None else [])]:
            timeout = min(timeout, max(wait, 0.0) + 0.01)
        return max(timeout, 0.01)

    def _load(self, tracked: Sequence[uuid.UUID]) -> list[_Row]:
        with self._db.session() as session:
            query = select(App).where(
                or_(
                    App.status.in_(_ACTIVE),
                    and_(App.delete_requested, App.status != AppStatus.DELETED.value),
                    App.id.in_(tracked) if tracked else false(),
                )
            )
            return [_Row.of(app) for app in session.scalars(query)]

    # -- one app -------------------------------------------------------------------------------

    async def _step(self, t: _Tracked, row: _Row, now: datetime, prober: Prober) -> None:
        writes = t.writes
        try:
            await self._step_once(t, row, now, prober)
        finally:
            # A step that wrote (started, stopped, a new status) wakes the next pass, which
            # follows it up at once. One that found nothing to do (a runtime not listening
            # yet, a running app alive, a start still queued) does not: its app is looked at
            # again at the next interval. Waking on every step made a busy loop of passes,
            # each reading every app's row (hundreds a second; issue 14).
            if t.writes != writes:
                t.steps += 1
                if self._wake is not None:
                    self._wake.set()

    async def _step_once(self, t: _Tracked, row: _Row, now: datetime, prober: Prober) -> None:
        try:
            await self._converge(t, row, now, prober)
        except LaunchRefused as exc:
            self._log.error("app %s cannot be launched: %s", row.id, exc.message)
            await self._write(row.id, _Change(status=AppStatus.ON_ERROR, detail=exc.message))
            t.status = AppStatus.ON_ERROR
        except LifecycleError:
            # A bug in the table or here, not a crash of the app: said loudly, with its
            # traceback, and kept to this app (the others, the API and the router go on);
            # the next pass reads the app's row again.
            self._log.exception("app %s: an illegal lifecycle transition (a bug)", row.id)
        except (Error, OSError) as exc:
            # A start that failed for a reason that may pass (a port taken, a full disk): a crash.
            detail = exc.message if isinstance(exc, Error) else f"{exc.__class__.__name__}: {exc}"
            self._log.warning("app %s: %s", row.id, detail)
            if t.status is not None and not t.status.active:
                return  # stopping or removing it failed: no restart; the next pass tries again
            await self._crashed(t, detail)

    async def _converge(self, t: _Tracked, row: _Row, now: datetime, prober: Prober) -> None:
        if not row.status.active:
            # stopped, on_error, expired or deleted: nothing may run.
            await self._stop_runtime(t)
            if row.delete_requested and row.status != AppStatus.DELETED:
                await self._write(
                    row.id, _Change(status=AppStatus.DELETED, detail="deleted by owner")
                )
                t.status = AppStatus.DELETED
            if row.status == AppStatus.DELETED or row.delete_requested:
                await asyncio.to_thread(self._remove_files, row.id)
            self._apps.pop(row.id, None)  # nothing to watch until it is active again
            return
        if now >= row.expires_at:
            await self._expire(t, row)
            return
        if row.desired_state == DesiredState.STOP or row.delete_requested:
            await self._stop_runtime(t)
            await self._write(
                row.id,
                _Change(status=AppStatus.STOPPED, detail="stopped by owner", clear_runtime=True),
            )
            t.status = AppStatus.STOPPED
            if row.delete_requested:
                await self._write(
                    row.id, _Change(status=AppStatus.DELETED, detail="deleted by owner")
                )
                t.status = AppStatus.DELETED
                await asyncio.to_thread(self._remove_files, row.id)
            self._log.info(
                "app %s stopped%s", row.id, " and deleted" if row.delete_requested else ""
            )
            return
        if await self._unconfigured_too_long(t, row, now):
            return
        if t.handle is None:
            await self._start(t, row)
            return
        if not await self._backend.is_alive(t.handle):
            reason = self._backend.exit_reason(t.handle)
            self._backend.release(t.handle)
            if self._clock() >= row.expires_at:
                # It stopped at its measured expiry (EXIT_EXPIRED) while this pass ran.
                await self._expire(t, row)
                return
            unusable = app_unusable(reason)
            if unusable is not None:
                await self._unusable(t, unusable)
                return
            await self._crashed(t, reason)
            return
        await self._observe(t, row, prober)

    async def _expire(self, t: _Tracked, row: _Row) -> None:
        await self._stop_runtime(t)
        await self._write(
            row.id,
            _Change(
                status=AppStatus.EXPIRED,
                detail=f"expired at {row.expires_at.isoformat()}",
                clear_runtime=True,
            ),
        )
        t.status = AppStatus.EXPIRED
        self._log.info("app %s expired", row.id)

    async def _unconfigured_too_long(self, t: _Tracked, row: _Row, now: datetime) -> bool:
        """Stop an app never running within its plan's configuration deadline (whose deploy
        died after the upload); else it would wait for a configuration until it expires."""
        if row.started_at is not None or not self._settings.has_plan(row.plan):
            return False  # configured once (restarts resume sealed); no plan: refused at start
        timeout = self._settings.plan(row.plan).configure_timeout
        if now < row.created_at + timeout:
            return False
        await self._stop_runtime(t)
        detail = (
            f"not configured within {timeout.total_seconds() / 60:g} minutes of its creation "
            f"(plan {row.plan}): stopped; deploy it again"
        )
        await self._write(
            row.id, _Change(status=AppStatus.STOPPED, detail=detail, clear_runtime=True)
        )
        t.status = AppStatus.STOPPED
        self._log.warning("app %s: %s", row.id, detail)
        return True

    def _starting(self) -> int:
        """Launches under way and runtimes launched that never answered yet."""
        unanswered = {a for a, t in self._apps.items() if t.handle is not None and not t.answered}
        return len(unanswered | self._launching)

    async def _start(self, t: _Tracked, row: _Row) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < t.not_before:
            return
        if self._starting() >= self.options.max_starting:
            return  # queued: a start that ends (answer, crash, stop) wakes the next pass
        self._launching.add(row.id)
        try:
            await self._launch(t, row)
        finally:
            self._launching.discard(row.id)

    async def _launch(self, t: _Tracked, row: _Row) -> None:
        try:
            plan = self._settings.plan(row.plan)
            manifest = LaunchManifest.from_json(row.launch_manifest)
        except Error as exc:
            raise LaunchRefused(exc.message) from None
        spec = AppSpec(
            app_id=row.id,
            manifest=manifest,
            package=self._blobs.path(bytes.fromhex(row.package_sha256)),
            certificate_pem=row.certificate_pem,
            memory_mib=plan.memory_mib,
            cores=plan.cores,
        )
        handle = await self._backend.start(spec)
        t.handle = handle
        t.answered = False
        t.waits, t.next_probe = 0, 0.0
        t.running_since = None
        if t.status == AppStatus.SPAWNING:
            await self._write(row.id, _Change(handle=handle))  # the status says so already
        else:
            await self._write(row.id, _Change(status=AppStatus.SPAWNING, handle=handle))
            t.status = AppStatus.SPAWNING
        self._publish(t, row)

    async def _unusable(self, t: _Tracked, reason: str) -> None:
        """The runtime could not import the app (EXIT_APP_UNUSABLE): on_error at once, with
        what is missing and the fix, since every restart would end the same way."""
        t.handle = None
        self.routes.withdraw(t.app_id)
        t.running_since = None
        detail = f"{reason} (a restart cannot fix it: not restarted)"
        self._log.error("app %s: %s", t.app_id, detail)
        await self._write(
            t.app_id, _Change(status=AppStatus.ON_ERROR, detail=detail, clear_runtime=True)
        )
        t.status = AppStatus.ON_ERROR

    async def _crashed(self, t: _Tracked, reason: str) -> None:
        handle, t.handle = t.handle, None
        self.routes.withdraw(t.app_id)
        t.running_since = None
        t.crashes += 1
        if t.answered:
            t.failed_starts = 0  # it started: whatever ended it, it is restarted
        else:
            t.failed_starts += 1
        t.answered = False
        if t.failed_starts > self.options.max_restarts:
            detail = (
                f"{reason} ({t.failed_starts} times in a row before it answered; not restarted)"
            )
            self._log.error("app %s: %s", t.app_id, detail)
            await self._write(
                t.app_id, _Change(status=AppStatus.ON_ERROR, detail=detail, clear_runtime=True)
            )
            t.status = AppStatus.ON_ERROR
            return
        wait = self.options.backoff(t.crashes)
        t.not_before = asyncio.get_running_loop().time() + wait
        detail = f"{reason}; restart in {wait:g} s (crash {t.crashes} in a row)"
        self._log.warning(
            "app %s: runtime%s ended: %s",
            t.app_id,
            f" pid {handle.pid}" if handle else "",
            detail,
        )
        await self._write(
            t.app_id,
            _Change(
                status=AppStatus.SPAWNING, detail=detail, clear_runtime=True, count_restart=True
            ),
        )
        t.status = AppStatus.SPAWNING

    async def _observe(self, t: _Tracked, row: _Row, prober: Prober) -> None:
        if t.handle is None:  # pragma: no cover - checked by the caller
            return
        loop = asyncio.get_running_loop()
        if t.status == AppStatus.RUNNING and t.running_since is not None:
            # Running: the process being alive is enough; reset the crash count once stable.
            if t.crashes and loop.time() - t.running_since >= self.options.stable_after:
                t.crashes = 0
            return
        if t.status == AppStatus.INITIALIZING and loop.time() < t.next_probe:
            self._publish(t, row)  # waiting for its owner: probed again later
            return
        probe = await prober.probe(
            t.handle, tls=row.tls, healthcheck=row.healthcheck, name=_first_name(row)
        )
        if probe != Probe.DOWN:
            t.answered = True
        if probe == Probe.WAITING:
            t.waits += 1
            backoff = self.options.probe_interval * 2 ** min(t.waits, _MAX_DOUBLINGS)
            t.next_probe = loop.time() + min(backoff, self.options.max_waiting_probe_interval)
        else:
            t.waits, t.next_probe = 0, 0.0
        if probe == Probe.WAITING and t.status != AppStatus.INITIALIZING:
            await self._write(
                row.id,
                _Change(status=AppStatus.INITIALIZING, detail="waiting for the configuration"),
            )
            t.status = AppStatus.INITIALIZING
        elif probe == Probe.HEALTHY:
            if t.status != AppStatus.RUNNING:
                await self._write(row.id, _Change(status=AppStatus.RUNNING, started=True))
                self._log.info("app %s is running", row.id)
            t.status = AppStatus.RUNNING
            t.running_since = loop.time()
        self._publish(t, row)

    def _publish(self, t: _Tracked, row: _Row) -> None:
        if t.handle is None:
            self.routes.withdraw(t.app_id)
            return
        self.routes.publish(
            t.app_id,
            row.tls,
            row.domain,
            t.handle.host,
            t.handle.port,
            running=t.status == AppStatus.RUNNING,
            handoff=t.handle.handoff,
        )

    async def _stop_runtime(self, t: _Tracked) -> None:
        self.routes.withdraw(t.app_id)
        if t.handle is not None:
            # Replicas route from the database (ADR 0023): its address goes from there
            # before the runtime does, so no router keeps it after it is freed (a pod IP
            # is reused: an operator-mode route would send plain HTTP to another runtime).
            await self._write(t.app_id, _Change(clear_runtime=True))
            if self.options.route_drain > 0:
                await asyncio.sleep(self.options.route_drain)
            await self._backend.stop(t.handle)
            t.handle = None
        t.running_since = None

    def _remove_files(self, app_id: uuid.UUID) -> None:
        self._backend.remove_app(app_id)

    # -- after a restart -----------------------------------------------------------------------

    async def _adopt_all(self) -> None:
        """Take back the runtimes that survived the previous operator; stop strays."""
        found = await self._backend.discover()
        rows = {row.id: row for row in await asyncio.to_thread(self._load, [])}
        by_app: dict[uuid.UUID, list[RuntimeHandle]] = {}
        for handle in found:
            by_app.setdefault(handle.app_id, []).append(handle)
        for app_id, handles in by_app.items():
            row = rows.get(app_id)
            keep: RuntimeHandle | None = None
            if (
                row is not None
                and row.status.active
                and row.desired_state == DesiredState.RUN
                and not row.delete_requested
            ):
                recorded = [h for h in handles if h.pid == row.runtime_pid]
                keep = (recorded or handles)[0]
                t = self._apps.setdefault(app_id, _Tracked(app_id))
                t.handle, t.status = keep, row.status
                # A runtime that had answered before the operator restarted has started.
                t.answered = row.status in (AppStatus.INITIALIZING, AppStatus.RUNNING)
                if keep.pid != row.runtime_pid:
                    await self._write(app_id, _Change(handle=keep))
                self._publish(t, row)
                self._log.info("app %s: adopted its runtime pid %d", app_id, keep.pid)
            for handle in handles:
                if handle is not keep:
                    self._log.warning("app %s: stopping a stray runtime pid %d", app_id, handle.pid)
                    await self._backend.stop(handle)
        for row in rows.values():
            if row.id not in self._apps and row.runtime_pid is not None and row.status.active:
                # Recorded but gone: it died with (or after) the previous operator.
                t = self._apps.setdefault(row.id, _Tracked(row.id, status=row.status))
                await self._write(
                    row.id,
                    _Change(
                        status=AppStatus.SPAWNING,
                        detail="the runtime was gone after an operator restart; restarting",
                        clear_runtime=True,
                        count_restart=True,
                    ),
                )
                t.status = AppStatus.SPAWNING

    # -- the database --------------------------------------------------------------------------

    async def _write(self, app_id: uuid.UUID, change: _Change) -> None:
        tracked = self._apps.get(app_id)
        if tracked is not None:
            tracked.writes += 1
        await asyncio.to_thread(self._apply, app_id, change, self._clock())
        self._changes.notify(app_id)  # committed: whoever waits on the app reads it now

    def _apply(self, app_id: uuid.UUID, change: _Change, now: datetime) -> None:
        with self._db.session() as session:
            app = session.get(App, app_id)
            if app is None or (change.status == app.status == AppStatus.DELETED):
                return  # gone, or deleted by the API meanwhile (asked twice): recorded once
            if change.handle is not None:
                app.runtime_host = change.handle.host
                app.runtime_port = change.handle.port
                app.runtime_pid = change.handle.pid
            if change.clear_runtime:
                app.runtime_host = app.runtime_port = app.runtime_pid = None
            if change.count_restart:
                app.restarts = (app.restarts or 0) + 1
            if change.started:
                app.started_at = now
            if change.status is not None:
                record_status(session, app, change.status, now=now, detail=change.detail)
            else:
                app.updated_at = now
            session.commit()
