"""Where runtimes run: the :class:`RuntimeBackend` protocol and :class:`LocalProcessBackend`.

A backend starts one ``confide runtime`` per app from an :class:`AppSpec` (the
launch manifest the API stored, the package blob, the owner's certificate, the
plan) and answers for it with a :class:`RuntimeHandle`. It knows nothing of the
database: the supervisor (:mod:`._supervisor`) decides what should run.

:class:`LocalProcessBackend` runs each runtime as a process of this host:

- in a session (and process group) of its own, so that neither a signal to the
  operator's terminal nor the operator's death reaches it; it is stopped by
  SIGTERM to its group, then SIGKILL after :attr:`stop_timeout`;
- on a free loopback port, with its address space limited to the plan's memory
  (``RLIMIT_AS``, set by a tiny launcher that then ``exec``\\ s the runtime, so
  the limit holds from the first instruction and the pid stays the runtime's);
- at a lower CPU priority than the operator (:data:`RUNTIME_NICE`, set by the same
  launcher on the process and on its session's autogroup), so that the API, the router
  and the supervisor answer first while runtimes start (issue 14; ADR 0029);
- with its stdout and stderr appended to ``<logs>/<app-id>.log`` (what the
  API's logs endpoint reads), its sealed state in ``<data>/apps/<id>/state``
  and, in certificate mode, the owner's chain in ``<data>/apps/<id>/certificate.pem``;
- with a fixed, minimal environment: the operator's own (database URL, tokens)
  never reaches an app;
- on the simulated TEE (``--simulation-state <data>/simulation``); Gramine enclaves
  are launched by :class:`~._gramine.GramineBackend`, which shares this plumbing.

With ``fork=True`` (``runtime_fork`` in ``operator.toml``, ADR 0031) each runtime is
forked from one pre-imported runtime parent (:mod:`._runtime_parent`,
:mod:`confide.runtime._parent`) instead of started afresh: the same session,
limits, priority, descriptors, environment, folder and command line, without the
0.6 s of imports; the parent reports exit codes, a dead or stale parent is replaced
at the next launch (its runtimes run on, watched as adopted ones), and a parent
that cannot be used means a fresh process.

A runtime decrypts its app into a RAM folder it names after the app and its
pid in :data:`confide.runtime.CODE_ROOT` (``confide-code-<app id>-<pid>-...``)
and removes it at exit; one that is killed cannot. So the backend removes the
code folders of an app whose runtime no longer runs (a folder whose pid is not
a live runtime of that app: a reused pid does not keep it) when it sees the
runtime end (:meth:`~LocalProcessBackend.release`, :meth:`~LocalProcessBackend.stop`),
before it starts one, when the app is removed, and for every app at the
operator's own start (:meth:`~LocalProcessBackend.discover`).

Before starting, :func:`confide.runtime.check_launch` recomputes the
measurement from the exact inputs and refuses a launch that would not measure
as the stored manifest. After an operator restart, :meth:`LocalProcessBackend.discover`
finds the runtimes still running (their command line names the app and its
state folder under this operator's data folder) and :meth:`adopt` takes one
back by pid, checking its command line so a reused pid is never mistaken for it.

Example::

    >>> backend = LocalProcessBackend(  # doctest: +SKIP
    ...     data_dir=Path("/var/lib/confide"), log_source=FileLogSource(logs),
    ...     tee=TeeBackend.SIMULATION,
    ... )
    >>> handle = await backend.start(spec)  # doctest: +SKIP
    >>> await backend.is_alive(handle)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from confide.errors import UsageError
from confide.runtime import (
    CODE_ROOT,
    LaunchTee,
    check_launch,
    confide_command,
    remove_orphans,
    runtime_arguments,
    runtime_code_hash,
    start_child,
    write_atomically,
)
from confide.wire import LaunchManifest, RequirementsLock, TlsMode

from ._logs import LogSource
from ._runtime_parent import RuntimeParent
from ._seams import Clock, utc_now
from ._settings import DEFAULT_RUNTIME_NICE, MAX_RUNTIME_NICE, TeeBackend
from ._wheels import WheelCache

#: A runtime told to stop gets this long (its app's graceful timeout and margin) before SIGKILL.
STOP_TIMEOUT: Final = 15.0
#: The whole environment of a runtime. ``MALLOC_ARENA_MAX`` keeps glibc from reserving a
#: 64 MiB arena per thread, which would count against ``RLIMIT_AS`` without being used.
LOCAL_RUNTIME_ENVIRONMENT: Final[Mapping[str, str]] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "MALLOC_ARENA_MAX": "2",
    "PYTHONDONTWRITEBYTECODE": "1",
}
#: How much lower a runtime's CPU priority is than the operator's (a nice increment, 0-19;
#: ``runtime_nice`` in ``operator.toml``). The API, the router and the supervisor answer
#: first; a runtime gets the cores they leave. Each runtime leads a session of its own, and
#: with the kernel's autogroups (each session one scheduling group, weighed as one process)
#: its own nice value alone changes nothing: the session's group gets the same increment
#: (``/proc/self/autogroup``).
RUNTIME_NICE: Final = DEFAULT_RUNTIME_NICE
#: Seconds the launch check reuses the runtime environment's digest it computed: a burst
#: of starts scans the environment (thousands of ``stat`` calls) once per this, not once
#: per start (a fifth of the operator's CPU in a burst; issue 14). An upgrade of the
#: installed runtime within it is caught by the runtime's own measurement instead.
RUNTIME_DIGEST_TTL: Final = 5.0
#: Sets RLIMIT_AS to argv[1] bytes and lowers the CPU priority by argv[2] (the process's
#: nice value and its session's autogroup, where the kernel has them), then becomes
#: argv[3:] (same pid, the limit and the priority inherited).
_LIMIT_AND_EXEC: Final = (
    "import os,resource,sys\n"
    "n,p=int(sys.argv[1]),int(sys.argv[2])\n"
    "resource.setrlimit(resource.RLIMIT_AS,(n,n))\n"
    "os.nice(p)\n"
    "try:\n"
    " with open('/proc/self/autogroup','w') as f:f.write(str(p))\n"
    "except OSError:pass\n"
    "os.execv(sys.argv[3],sys.argv[3:])"
)
#: Largest command line read from /proc.
_MAX_CMDLINE: Final = 64 * 1024
#: How much of the end of a log is searched for the runtime's last words.
_LOG_TAIL: Final = 8 * 1024
_POLL: Final = 0.05
_MARK: Final = b"--- confide operator:"
#: The runtime's ``--tee`` for each operator TEE: a simulated TD is one runtime process
#: per app, as an app's own TD would be (ADR 0020).
_LAUNCH_TEE: Final[dict[TeeBackend, LaunchTee]] = {
    TeeBackend.SIMULATION: "simulation",
    TeeBackend.SIMULATION_TDX: "simulation-tdx",
}


class LaunchRefused(UsageError):
    """The app cannot be launched as stored (restarting would not help)."""

    code = "operator.launch_refused"


@dataclass(frozen=True, slots=True)
class AppSpec:
    """What a backend needs to launch one app."""

    app_id: uuid.UUID
    #: The launch manifest the API stored: the runtime must measure exactly this.
    manifest: LaunchManifest
    #: The encrypted package (its blob).
    package: Path
    #: The owner's certificate chain, PEM (certificate mode only).
    certificate_pem: str | None
    memory_mib: int
    cores: int


@dataclass(frozen=True, slots=True)
class RuntimeHandle:
    """A launched runtime: where it listens, and its process."""

    app_id: uuid.UUID
    host: str
    port: int
    pid: int
    #: The runtime's hand-off socket (``--handoff``), when the router may pass it
    #: client connections instead of relaying their bytes.
    handoff: Path | None = None


@runtime_checkable
class RuntimeBackend(Protocol):
    """Starts, watches and stops runtimes. Every method may be called on the event loop."""

    async def start(self, spec: AppSpec) -> RuntimeHandle:
        """Launch the app's runtime; :class:`LaunchRefused` if it cannot be launched as stored."""
        ...

    async def stop(self, handle: RuntimeHandle) -> None:
        """Stop it (gracefully, then by force); returns once it is gone."""
        ...

    async def is_alive(self, handle: RuntimeHandle) -> bool: ...

    async def adopt(self, pid: int, app_id: uuid.UUID) -> RuntimeHandle | None:
        """The runtime of ``app_id`` running as ``pid`` (after an operator restart), or ``None``."""
        ...

    async def discover(self) -> list[RuntimeHandle]:
        """Every runtime of this operator that is running, whoever started it.

        Called at the operator's start: it also removes what runtimes that ended
        meanwhile left behind (their decrypted code in RAM).
        """
        ...

    def exit_reason(self, handle: RuntimeHandle) -> str:
        """Why a runtime that is no longer alive ended, in words (for the app's status)."""
        ...

    def release(self, handle: RuntimeHandle) -> None:
        """Forget a runtime that ended (once its exit reason was read); remove what it left."""
        ...

    def detach(self) -> None:
        """The operator stops and leaves every runtime running (a later one adopts them)."""
        ...

    def remove_app(self, app_id: uuid.UUID) -> None:
        """Remove what the backend keeps for a deleted app (its sealed state and code included)."""
        ...


def fetch_requirements(
    wheels: WheelCache, spec: AppSpec, log: logging.Logger
) -> RequirementsLock | None:
    """The app's stored requirements lock, its wheels fetched into the cache (none fetched
    twice); ``None`` for an app without one; :class:`LaunchRefused` when they cannot be.
    Not a defence: the runtime checks every wheel against the measured lock (ADR 0024)."""
    digest = spec.manifest.requirements_sha256
    if digest is None:
        return None
    try:
        lock = wheels.read_lock(digest)
        fetched = wheels.fetch(lock)
    except UsageError as exc:
        raise LaunchRefused(exc.message, hint=exc.hint) from None
    if fetched:
        log.info("fetched %d wheel(s) of app %s's lock %s", fetched, spec.app_id, digest.hex())
    return lock


def refuse_requirements(spec: AppSpec, where: str) -> None:
    """Refuse an app with a requirements lock on a backend that cannot bring its wheels
    into the enclave (``where``: e.g. a pod of a Kubernetes backend built without the
    operator's wheel cache); ADR 0024 and 0030 say where they go."""
    if spec.manifest.requirements_sha256 is not None:
        raise LaunchRefused(
            f"app {spec.app_id} locks requirements, which {where} cannot install yet",
            hint="deploy it without locked requirements, or on an operator whose backend "
            "has a wheel cache (confide operator serve builds every backend with one; "
            "ADR 0030)",
        )


#: The file in an app's folder recording its runtime's pid and port (RecordedProcessBackend).
LAUNCH_RECORD: Final = "runtime.json"
MAX_LAUNCH_RECORD: Final = 4096


def free_port(host: str) -> int:
    """A port the kernel considers free on ``host`` now (the runtime binds it right after)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def read_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(_MAX_CMDLINE)
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def _is_zombie(pid: int) -> bool:
    """True when ``pid`` has exited but was not reaped (or is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return True
    # The state follows the command name, which is in parentheses and may hold spaces.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state in (b"Z", b"X")


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            return argv[i + 1]
    return None


def _runs_app(app_id: uuid.UUID, pid: int) -> bool:
    """Whether ``pid`` is a live ``confide runtime`` of ``app_id`` (not a reused pid)."""
    if _is_zombie(pid):
        return False
    argv = read_cmdline(pid)
    return argv is not None and "runtime" in argv and _option(argv, "--app-id") == str(app_id)


def _relay_address(runtime_host: str) -> str:
    """The address the router and the prober connect to a runtime listening on ``host`` from."""
    if runtime_host in ("0.0.0.0", "127.0.0.1", "localhost", ""):  # noqa: S104 - a comparison
        return "127.0.0.1"
    if runtime_host in ("::", "::1"):
        return "::1"
    return runtime_host  # a runtime on another address of this host is reached from it


def _handoff(argv: Sequence[str]) -> Path | None:
    value = _option(argv, "--handoff")
    return Path(value) if value else None


@dataclass(frozen=True, slots=True)
class Launch:
    """How a backend starts one runtime: its command line, environment and port."""

    argv: list[str]
    environment: Mapping[str, str]
    port: int
    handoff: Path | None = None


@dataclass
class _Child:
    """A runtime this backend started (its Popen, to reap it and read its exit status)."""

    process: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)


class LocalProcessBackend:
    """Each app's runtime as a process of this host (see the module's description)."""

    def __init__(
        self,
        *,
        data_dir: Path,
        log_source: LogSource,
        tee: TeeBackend,
        host: str = "127.0.0.1",
        command: Sequence[str] | None = None,
        environment: Mapping[str, str] = LOCAL_RUNTIME_ENVIRONMENT,
        stop_timeout: float = STOP_TIMEOUT,
        clock: Clock = utc_now,
        logger: logging.Logger | None = None,
        code_root: Path = CODE_ROOT,
        wheel_index_url: str | None = None,
        wheel_find_links: str | None = None,
        nice: int = RUNTIME_NICE,
        monotonic: Callable[[], float] = time.monotonic,
        fork: bool = False,
    ) -> None:
        if not data_dir.is_absolute():
            raise UsageError(f"the data folder must be absolute, got {data_dir}")
        if not 0 <= nice <= MAX_RUNTIME_NICE:
            raise UsageError(f"a runtime's nice increment must be 0-{MAX_RUNTIME_NICE}, got {nice}")
        self.data_dir = data_dir
        self.apps_dir = data_dir / "apps"
        self.simulation_dir = data_dir / "simulation"
        self._log_source = log_source
        self._tee = tee
        self._host = host
        self._command = tuple(command) if command is not None else confide_command()
        self._environment = dict(environment)
        #: Lowers each runtime's CPU priority by this much (:data:`RUNTIME_NICE`).
        self.nice = nice
        self._monotonic = monotonic
        #: The runtime environment's digest and when it was computed (:meth:`runtime_digest`).
        self._digest: tuple[bytes, float] | None = None
        self.stop_timeout = stop_timeout
        self._clock = clock
        #: Where runtimes make their code folders (fixed by the runtime; a test may move it).
        self._code_root = code_root
        #: Apps' requirement locks and their wheels (ADR 0024); fetched before a launch.
        self.wheels = WheelCache(
            data_dir / "wheels", index_url=wheel_index_url, find_links=wheel_find_links
        )
        self._log = logger or logging.getLogger("confide.operator.backend")
        self._children: dict[int, _Child] = {}
        #: Fork runtimes from one pre-imported parent (ADR 0031); only with confide's own
        #: command, which the parent runs in-process.
        self.fork = fork and command is None
        self._parent: RuntimeParent | None = None
        #: Runtimes forked by a parent, by pid, and that parent.
        self._forked: dict[int, RuntimeParent] = {}
        self._fork_warned = False
        self._fork_lock = threading.Lock()
        #: The pid of each app's current runtime (for metrics).
        self._pids: dict[uuid.UUID, int] = {}

    # -- folders -------------------------------------------------------------------------------

    def app_dir(self, app_id: uuid.UUID) -> Path:
        return self.apps_dir / str(app_id)

    def state_dir(self, app_id: uuid.UUID) -> Path:
        return self.app_dir(app_id) / "state"

    def certificate_path(self, app_id: uuid.UUID) -> Path:
        return self.app_dir(app_id) / "certificate.pem"

    def handoff_path(self, app_id: uuid.UUID) -> Path:
        return self.app_dir(app_id) / "handoff.sock"

    def remove_code(self, app_id: uuid.UUID | None = None) -> list[Path]:
        """Remove the RAM code folders left by runtimes (of ``app_id``, or of any app)
        that no longer run; those of a live runtime stay."""
        removed = remove_orphans(self._code_root, app_id=app_id, running=_runs_app)
        for path in removed:
            self._log.info("removed %s, left by a runtime that ended", path.name)
        return removed

    # -- starting ------------------------------------------------------------------------------

    def runtime_digest(self) -> bytes:
        """The installed runtime environment's digest (what a runtime started now measures),
        computed again once :data:`RUNTIME_DIGEST_TTL` seconds have passed."""
        now = self._monotonic()
        cached = self._digest
        if cached is None or not 0 <= now - cached[1] < RUNTIME_DIGEST_TTL:
            cached = (runtime_code_hash(), now)
            self._digest = cached
        return cached[0]

    def _prepare(self, spec: AppSpec, now: datetime) -> Launch:
        """Write the app's files, check the measurement, and build the command line."""
        if not self._tee.simulated:
            raise LaunchRefused(
                "this backend runs runtimes on a simulated TEE only",
                hint="Gramine enclaves are launched by GramineBackend (ADR 0018)",
            )
        folder = self.app_dir(spec.app_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        certificate: Path | None = None
        if spec.manifest.tls == TlsMode.OWNER:
            if spec.certificate_pem is None:
                raise LaunchRefused(f"app {spec.app_id} has no owner certificate stored")
            certificate = self.certificate_path(spec.app_id)
            tmp = certificate.with_suffix(".tmp")
            tmp.write_text(spec.certificate_pem, encoding="utf-8")
            os.replace(tmp, certificate)
        if not spec.package.is_file():
            raise LaunchRefused(f"the package of app {spec.app_id} is missing: {spec.package}")
        state = self.state_dir(spec.app_id)
        requirements = self.prepare_requirements(spec)
        wheels = self.wheels.wheels_dir if requirements is not None else None
        try:
            check_launch(
                spec.manifest,
                package=spec.package,
                certificate=certificate,
                state_dir=state,
                now=now,
                runtime_sha256=self.runtime_digest(),
                requirements=requirements,
                wheels=wheels,
            )
        except LaunchRefused:
            raise
        except UsageError as exc:
            raise LaunchRefused(exc.message, hint=exc.hint) from None
        tee: LaunchTee = _LAUNCH_TEE[self._tee]
        arguments = runtime_arguments(
            spec.manifest,
            package=spec.package,
            certificate=certificate,
            host=self._host,
            port=free_port(self._host),
            state_dir=state,
            tee=tee,
            simulation_state=self.simulation_dir,
            requirements=requirements,
            wheels=wheels,
        )
        # Gramine enclaves get relayed bytes instead (ADR 0009, 0018).
        arguments += ["--handoff", str(self.handoff_path(spec.app_id))]
        # The router's relayed connections and the supervisor's probes come from this host:
        # the runtime must not count all their clients as one source (ADR 0013).
        arguments += ["--relay-source", _relay_address(self._host)]
        limit = spec.memory_mib * 1024 * 1024
        argv = [
            sys.executable,
            "-I",
            "-c",
            _LIMIT_AND_EXEC,
            str(limit),
            str(self.nice),
            *self._command,
            "runtime",
            *arguments,
        ]
        return Launch(argv, self._environment, int(_option(argv, "--port") or 0), _handoff(argv))

    def prepare_requirements(self, spec: AppSpec) -> Path | None:
        """The path of the app's stored requirements lock, its wheels fetched into the cache
        (:func:`fetch_requirements`); ``None`` for an app without one."""
        digest = spec.manifest.requirements_sha256
        if fetch_requirements(self.wheels, spec, self._log) is None or digest is None:
            return None
        return self.wheels.lock_path(digest)

    def _spawn(self, spec: AppSpec, launch: Launch, now: datetime) -> RuntimeHandle:
        log_path = self._log_source.log_path(spec.app_id)
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(
                _MARK
                + f" starting the runtime at {now.isoformat(timespec='seconds')} ---\n".encode()
            )
            log.flush()
            pid = self._fork(spec, launch, log.fileno()) if self.fork else None
            if pid is None:
                process = start_child(
                    launch.argv, env=launch.environment, output=log, cwd=self.app_dir(spec.app_id)
                )
                self._children[process.pid] = _Child(process, launch.argv)
                pid = process.pid
        self._pids[spec.app_id] = pid
        self._started(spec.app_id, pid, launch)
        return RuntimeHandle(spec.app_id, self._host, launch.port, pid, launch.handoff)

    def _runtime_parent(self) -> RuntimeParent:
        """The running parent whose imports measure as the installed runtime; a new one
        when there is none, it ended, or the runtime was upgraded since it started."""
        parent = self._parent
        if parent is not None and parent.alive and parent.digest == self.runtime_digest():
            return parent
        if parent is not None:
            self._log.info("starting a new runtime parent (the last one ended or is stale)")
            parent.close()
        self._parent = None
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent = RuntimeParent(
            environment=self._environment, log=self.data_dir / "runtime-parent.log"
        )
        self._parent = parent
        return parent

    def _fork(self, spec: AppSpec, launch: Launch, log_fd: int) -> int | None:
        """Fork the runtime from the parent; ``None`` when the parent cannot be used
        (the caller starts a fresh process; said once in the log)."""
        # argv: [python, -I, -c, launcher, limit, nice, *command, "runtime", ...]; what the
        # launcher executes is argv[6:], and that is what the runtime's /proc cmdline reads.
        title = launch.argv[6:]
        try:
            # One parent, even when starts run in several worker threads at once.
            with self._fork_lock:
                parent = self._runtime_parent()
                pid = parent.launch(
                    argv=title[len(self._command) :],
                    title=title,
                    environment=launch.environment,
                    cwd=self.app_dir(spec.app_id),
                    limit=int(launch.argv[4]),
                    nice=int(launch.argv[5]),
                    log_fd=log_fd,
                )
        except (OSError, ValueError) as exc:
            if not self._fork_warned:
                self._fork_warned = True
                self._log.warning(
                    "the runtime parent cannot be used (%s); starting runtimes as fresh "
                    "processes until it can",
                    exc,
                )
            with self._fork_lock:
                if self._parent is not None and not self._parent.alive:
                    self._parent.close()
                    self._parent = None
            return None
        self._forked[pid] = parent
        return pid

    def _started(self, app_id: uuid.UUID, pid: int, launch: Launch) -> None:
        """A runtime was spawned (a backend that must find its port again later records it)."""

    async def start(self, spec: AppSpec) -> RuntimeHandle:
        now = self._clock()
        await asyncio.to_thread(self.remove_code, spec.app_id)
        launch = await asyncio.to_thread(self._prepare, spec, now)
        if self.fork:  # the parent may need starting: not on the event loop
            handle = await asyncio.to_thread(self._spawn, spec, launch, now)
        else:
            handle = self._spawn(spec, launch, now)
        self._log.info(
            "app %s: runtime started as pid %d on %s:%d",
            spec.app_id,
            handle.pid,
            handle.host,
            handle.port,
        )
        return handle

    # -- watching ------------------------------------------------------------------------------

    def _ours(self, pid: int, app_id: uuid.UUID) -> list[str] | None:
        """The command line of ``pid`` if it is the runtime of ``app_id`` under this operator."""
        argv = read_cmdline(pid)
        if argv is None or "runtime" not in argv:
            return None
        if _option(argv, "--app-id") != str(app_id):
            return None
        if _option(argv, "--state-dir") != str(self.state_dir(app_id)):
            return None
        return argv

    def _alive(self, handle: RuntimeHandle) -> bool:
        child = self._children.get(handle.pid)
        if child is not None:
            return child.process.poll() is None
        parent = self._forked.get(handle.pid)
        if parent is not None:
            parent.poll()
            if handle.pid in parent.exits:
                return False
            if parent.alive:
                return True
            # Its parent ended: watched as an adopted runtime from now on.
        return not _is_zombie(handle.pid) and self._ours(handle.pid, handle.app_id) is not None

    async def is_alive(self, handle: RuntimeHandle) -> bool:
        return self._alive(handle)

    def _exit_code(self, pid: int) -> tuple[bool, int | None]:
        """Whether ``pid`` is a runtime this backend started, and its exit code if known."""
        child = self._children.get(pid)
        if child is not None:
            return True, child.process.poll()
        parent = self._forked.get(pid)
        if parent is not None:
            parent.poll()
            return True, parent.exits.get(pid)
        return False, None

    def exit_reason(self, handle: RuntimeHandle) -> str:
        started, code = self._exit_code(handle.pid)
        if code is None:
            reason = "the runtime ended" if not started else "the runtime is still running"
        elif code < 0:
            try:
                reason = f"the runtime was killed by {signal.Signals(-code).name}"
            except ValueError:
                reason = f"the runtime was killed by signal {-code}"
        else:
            reason = f"the runtime exited with code {code}"
        last = self.last_output(handle.app_id)
        return f"{reason}; last output: {last}" if last else reason

    def last_output(self, app_id: uuid.UUID) -> str | None:
        """The runtime's last line of output (its error line when it failed), if any."""
        path = self._log_source.log_path(app_id)
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - _LOG_TAIL))
                tail = f.read(_LOG_TAIL)
        except OSError:
            return None
        lines = [line for line in tail.splitlines() if line.strip() and not line.startswith(_MARK)]
        if not lines:
            return None
        errors = [line for line in lines if line.startswith(b"error:")]
        return (errors or lines)[-1].decode("utf-8", "replace").strip()[:500]

    # -- stopping ------------------------------------------------------------------------------

    def _signal(self, handle: RuntimeHandle, sig: signal.Signals) -> None:
        """Signal the runtime's process group (it leads its own session)."""
        ours = handle.pid in self._children or handle.pid in self._forked
        if not ours and self._ours(handle.pid, handle.app_id) is None:
            return  # gone, or the pid now belongs to someone else: never signal it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                if os.getpgid(handle.pid) == handle.pid:
                    os.killpg(handle.pid, sig)
                    return
            except ProcessLookupError:
                return
            os.kill(handle.pid, sig)

    async def _wait_gone(self, handle: RuntimeHandle, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._alive(handle):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    async def stop(self, handle: RuntimeHandle) -> None:
        self._signal(handle, signal.SIGTERM)
        if not await self._wait_gone(handle, self.stop_timeout):
            self._log.warning(
                "app %s: runtime pid %d did not stop in %g s; killing it",
                handle.app_id,
                handle.pid,
                self.stop_timeout,
            )
            self._signal(handle, signal.SIGKILL)
            await self._wait_gone(handle, self.stop_timeout)
        child = self._children.pop(handle.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=0)
        self._forget(handle.pid)
        if self._pids.get(handle.app_id) == handle.pid:
            del self._pids[handle.app_id]
        await asyncio.to_thread(self.remove_code, handle.app_id)

    def _forget(self, pid: int) -> None:
        parent = self._forked.pop(pid, None)
        if parent is not None:
            parent.exits.pop(pid, None)

    def release(self, handle: RuntimeHandle) -> None:
        child = self._children.pop(handle.pid, None)
        if child is not None:
            child.process.poll()
        self._forget(handle.pid)
        if self._pids.get(handle.app_id) == handle.pid:
            del self._pids[handle.app_id]
        self.remove_code(handle.app_id)

    def detach(self) -> None:
        for child in self._children.values():
            # Not ours to wait for any more: without a return code, Popen's finalizer would
            # warn that the process still runs (and queue it for reaping).
            if child.process.poll() is None:
                child.process.returncode = 0
        self._children.clear()
        self.close()

    def close(self) -> None:
        """Let go of the runtime parent (ADR 0031): it exits when its channel closes; the
        runtimes it forked run on, to be adopted by the next operator."""
        self._forked.clear()
        if self._parent is not None:
            self._parent.close()
            self._parent = None

    def remove_app(self, app_id: uuid.UUID) -> None:
        self.remove_code(app_id)
        shutil.rmtree(self.app_dir(app_id), ignore_errors=True)

    # -- after a restart -----------------------------------------------------------------------

    async def adopt(self, pid: int, app_id: uuid.UUID) -> RuntimeHandle | None:
        if _is_zombie(pid):
            return None
        argv = self._ours(pid, app_id)
        if argv is None:
            return None
        handle = self._handle_of(pid, app_id, argv)
        if handle is not None:
            self._pids[app_id] = pid
        return handle

    def _handle_of(self, pid: int, app_id: uuid.UUID, argv: list[str]) -> RuntimeHandle | None:
        """The handle of the runtime ``pid`` of ``app_id`` whose command line is ``argv``."""
        try:
            port = int(_option(argv, "--port") or "")
        except ValueError:
            return None
        host = _option(argv, "--host") or self._host
        return RuntimeHandle(app_id, host, port, pid, _handoff(argv))

    def _app_of(self, argv: list[str]) -> uuid.UUID | None:
        """The app whose runtime of this operator a command line is, if it is one."""
        if "runtime" not in argv:
            return None
        state = _option(argv, "--state-dir")
        raw_id = _option(argv, "--app-id")
        if state is None or raw_id is None or not state.startswith(str(self.apps_dir) + os.sep):
            return None
        try:
            return uuid.UUID(raw_id)
        except ValueError:
            return None

    async def discover(self) -> list[RuntimeHandle]:
        found: list[RuntimeHandle] = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            argv = read_cmdline(pid)
            app_id = None if argv is None else self._app_of(argv)
            if app_id is None:
                continue
            handle = await self.adopt(pid, app_id)
            if handle is not None:
                found.append(handle)
        # Called at the operator's start: what runtimes killed meanwhile left in RAM goes.
        await asyncio.to_thread(self.remove_code)
        return found

    # -- metrics (MetricsSource) ---------------------------------------------------------------

    def runtime_metrics(self, app_id: uuid.UUID) -> Mapping[str, float]:
        """Resident memory and CPU seconds of the app's runtime, from /proc."""
        pid = self._pids.get(app_id)
        if pid is None:
            return {}
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read(4096)
        except OSError:
            return {}
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        try:
            # Fields 14, 15 (utime, stime) and 24 (rss, pages) of proc(5), counted from 1.
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            rss = int(fields[21]) * page
        except (IndexError, ValueError):
            return {}
        return {"cpu_seconds": cpu, "memory_rss_bytes": float(rss)}


class RecordedProcessBackend(LocalProcessBackend):
    """A local backend whose runtime listens on a TCP port it keeps across restarts (an
    enclave under Gramine, a TD under QEMU): its pid and port are recorded in the app's
    folder (``runtime.json``, at most :data:`MAX_LAUNCH_RECORD` bytes), since neither
    can be read back from the process once the operator restarts."""

    def _record(self, app_id: uuid.UUID) -> dict[str, object] | None:
        try:
            with open(self.app_dir(app_id) / LAUNCH_RECORD, "rb") as f:
                raw = f.read(MAX_LAUNCH_RECORD + 1)
            found = json.loads(raw) if len(raw) <= MAX_LAUNCH_RECORD else None
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def _port(self, app_id: uuid.UUID) -> int:
        """The app's port: the one it was first launched on (kept, not measured)."""
        record = self._record(app_id)
        port = record.get("port") if record else None
        if isinstance(port, int) and 0 < port < 65536:
            return port
        return free_port(self._host)

    def _started(self, app_id: uuid.UUID, pid: int, launch: Launch) -> None:
        record = json.dumps({"pid": pid, "port": launch.port}).encode()
        write_atomically(self.app_dir(app_id) / LAUNCH_RECORD, record)

    def _handle_of(self, pid: int, app_id: uuid.UUID, argv: list[str]) -> RuntimeHandle | None:
        record = self._record(app_id)
        if record is None or record.get("pid") != pid:
            return None
        port = record.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            return None
        return RuntimeHandle(app_id, self._host, port, pid, None)
