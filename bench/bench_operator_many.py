"""Benchmark: many apps (100 by default) deployed at once on one operator.

The deployment of each app is :func:`bench_operator_deploy.owner` (upload,
verify the enclave through the router, configure, wait for ``running``, one
request), N owners at the same moment on one ``confide operator serve``
(simulated TEE, loopback; ``max_apps_per_account`` raised to N in the
operator's configuration file; SQLite, or PostgreSQL under ``scripts/postgres.sh
run --``). Each owner connects from an address of its own in 127.0.0.0/8
(127.0.0.2, 127.0.0.3, ...), as owners on their own machines would: from one
address, the owners' verification and challenge connections share the router's
per-source limits (``max_unrouted_per_source``, ADR 0013), which can close
those over the share (``--one-source`` runs it that way). Meanwhile a second
client, in a process of its own (``--poller-thread``: a thread of the bench, then
waiting for the GIL among the owners' threads), polls ``GET /api/v1/me``
(authenticated, no app work) every ``--poll-interval`` seconds;
its latencies during the burst give the API's p50/p99. Once every app runs,
the memory of each idle runtime process is read from ``/proc``: RSS, and PSS
(shared pages split between the processes sharing them), which is what one
more runtime really costs.

Printed: time until all run, the API's latency during the burst, and the idle
runtime's memory (median and largest), with the machine.

Run: ``scripts/postgres.sh run -- .venv/bin/python bench/bench_operator_many.py``
(``--apps 100``; minutes on this 2-core machine: not part of ``make bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.operators import (  # noqa: E402
    OperatorProcess,
    create_token,
    operator_running,
    runtime_pids,
)

#: Cheap authenticated endpoint polled during the burst.
PROBE: Final = "/api/v1/me"


#: Seconds the operator's CPU is measured with every app running and idle.
_IDLE_SECONDS: Final = 5.0
#: The operator's event-loop lag lines (its log).
_LAG: Final = re.compile(r"event loop lag.*")

#: The source address of the current owner thread's connections (unset: the kernel's).
_SOURCE = threading.local()
_CREATE_CONNECTION: Final = socket.create_connection


def _from_own_source(
    address: tuple[str, int],
    timeout: float | None = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: tuple[str, int] | None = None,
    **options: bool,
) -> socket.socket:
    """``socket.create_connection`` from the thread's own loopback address, if it has one."""
    own: str | None = getattr(_SOURCE, "address", None)
    if source_address is None and own is not None and address[0] == "127.0.0.1":
        source_address = (own, 0)
    return _CREATE_CONNECTION(address, timeout, source_address, **options)


def _owner_address(index: int) -> str:
    """127.0.0.2, 127.0.0.3, ...: one loopback source per owner (127.0.0.1 is the poller's)."""
    n = index + 2
    return f"127.0.{n // 256}.{n % 256}"


def _deploy_module() -> object:
    """bench_operator_deploy.py, whose ``owner`` makes one deployment."""
    spec = importlib.util.spec_from_file_location(
        "bench_operator_deploy", REPO / "bench" / "bench_operator_deploy.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit("bench/bench_operator_deploy.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB, from /proc (0, 0 once it is gone)."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        return 0, 0
    return rss, pss


_TICK: Final = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User and system CPU of a process (or of one of its threads), from /proc."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        stat = Path(path).read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _run_delay(pid: int, tid: int) -> float:
    """Seconds thread ``tid`` of ``pid`` was runnable but waited for a core (schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by name with digits dropped (asyncio_N)."""
    found: dict[str, float] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return found
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        name = "main" if tid == pid else name.rstrip("0123456789_") or name
        found[name] = found.get(name, 0.0) + _cpu_seconds(pid, tid)
    return found


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _TICK, sum(fields[:8]) / _TICK


@dataclass
class _Budget:
    """Where the burst's CPU went: taken at its start, then the difference at its end."""

    operator_pid: int
    machine: tuple[float, float] = (0.0, 0.0)
    operator: float = 0.0
    loop_cpu: float = 0.0
    loop_wait: float = 0.0
    clients: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)

    def take(self) -> _Budget:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pid = self.operator_pid
        return _Budget(
            pid,
            _machine_busy(),
            _cpu_seconds(pid),
            _cpu_seconds(pid, pid),  # the main thread runs the event loop
            _run_delay(pid, pid),
            usage.ru_utime + usage.ru_stime,
            _threads_cpu(pid),
        )

    def since(self, start: _Budget, runtimes: float, seconds: float) -> str:
        busy = self.machine[0] - start.machine[0]
        operator = self.operator - start.operator
        clients = self.clients - start.clients
        return (
            f"CPU during the burst ({seconds:.1f} s, {os.cpu_count()} cores): machine busy "
            f"{busy:.1f} s of {self.machine[1] - start.machine[1]:.1f} s; operator "
            f"{operator:.1f} s (its event loop {self.loop_cpu - start.loop_cpu:.1f} s running, "
            f"{self.loop_wait - start.loop_wait:.1f} s runnable but waiting for a core); "
            f"runtimes {runtimes:.1f} s; owners and poller {clients:.1f} s; "
            f"the rest (other processes) {busy - operator - runtimes - clients:.1f} s\n"
            "operator threads' CPU: "
            + ", ".join(
                f"{name} {seconds - start.threads.get(name, 0.0):.1f} s"
                for name, seconds in sorted(self.threads.items(), key=lambda kv: -kv[1])
            )
        )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument(
        "--one-source",
        action="store_true",
        help="every owner connects from 127.0.0.1 (the router's per-source limits then cut some)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CONFIDE_TEST_POSTGRES_URL"),
        help="the operator's database (default: scripts/postgres.sh run's, else SQLite)",
    )
    parser.add_argument(
        "--no-fork",
        action="store_true",
        help="start every runtime as a fresh process (runtime_fork = false; ADR 0031)",
    )
    parser.add_argument(
        "--runtime-nice",
        type=int,
        default=None,
        help="the operator's runtime_nice (default: the operator's default; ADR 0029)",
    )
    parser.add_argument(
        "--poller-thread",
        action="store_true",
        help="poll the API from a thread of the bench's own process (before session 6): its "
        "latencies then include waiting for the GIL among the owners' threads",
    )
    parser.add_argument(
        "--api-replica",
        action="store_true",
        help="owners and the poller use a second operator process that serves only the API "
        '(supervisor = "never", ADR 0023; PostgreSQL only)',
    )
    args = parser.parse_args()
    deploy = _deploy_module()
    deploy_one = deploy.owner  # type: ignore[attr-defined]

    def owner(index: int, *rest: object) -> Any:
        if not args.one_source:
            _SOURCE.address = _owner_address(index)
        return deploy_one(index, *rest)

    socket.create_connection = _from_own_source  # type: ignore[assignment]  # the client's connections (httpx, RA-TLS)
    root = Path(tempfile.mkdtemp(prefix="confide-bench-many-"))
    data = root / "data"
    data.mkdir()
    config = f"max_apps_per_account = {args.apps}\n"
    if args.no_fork:
        config += "runtime_fork = false\n"
    if args.runtime_nice is not None:
        config += f"runtime_nice = {args.runtime_nice}\n"
    if args.database_url:
        config += f"database_url = {json.dumps(args.database_url)}\n"  # a TOML basic string
    (data / "operator.toml").write_text(config)
    database = "PostgreSQL" if args.database_url else "SQLite"
    latencies: list[float] = []
    errors: list[str] = []
    burst_over = threading.Event()
    try:
        with operator_running(data) as operator, _api_replica(data, args) as replica:
            token = create_token(data, "bench")
            # Owners and the poller talk to the API replica when there is one (its own
            # process and session), and to the supervising operator's router.
            front: Any = operator if replica is None else _Front(replica, operator.router_port)
            expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)

            def poll() -> None:
                if not args.poller_thread:
                    _poll_in_own_process(
                        front.api_url, token, args.poll_interval, burst_over, latencies, errors
                    )
                    return
                with httpx.Client(
                    base_url=front.api_url,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ) as client:
                    while not burst_over.is_set():
                        t0 = time.monotonic()
                        try:
                            response = client.get(PROBE)
                        except httpx.HTTPError as exc:
                            errors.append(repr(exc))
                            break
                        latencies.append(time.monotonic() - t0)
                        if response.status_code != 200:
                            errors.append(f"{response.status_code} {response.text[:80]}")
                        burst_over.wait(args.poll_interval)

            start = threading.Barrier(args.apps + 1)
            poller = threading.Thread(target=poll, daemon=True)
            with ThreadPoolExecutor(max_workers=args.apps) as pool:
                futures = [
                    pool.submit(owner, i, front, token, root, start, expires)
                    for i in range(args.apps)
                ]
                start.wait()
                budget = _Budget(operator.proc.pid).take()
                t0 = time.monotonic()
                poller.start()
                try:
                    results = [f.result() for f in futures]
                except Exception:
                    burst_over.set()
                    log = operator.stderr  # why it failed: its first traceback
                    first = max(0, log.find("Traceback"))
                    print(log[first : first + 6000], file=sys.stderr)
                    poller.join(30)
                    _report_api(latencies, errors, "until the failure")
                    raise
                total = time.monotonic() - t0
                spent = budget.take()
                burst_over.set()
                poller.join(30)
            # What the operator spends with every app running and nothing asked of it.
            idle_before = _cpu_seconds(operator.proc.pid)
            time.sleep(_IDLE_SECONDS)
            idle_operator = (_cpu_seconds(operator.proc.pid) - idle_before) / _IDLE_SECONDS
            pids = runtime_pids(data)
            cpu = spent.since(budget, sum(_cpu_seconds(pid) for pid in pids), total)
            lags = _LAG.findall(operator.stderr)
            memory = [_memory_kib(pid) for pid in pids]
            memory = [m for m in memory if m[0]]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    running = sorted(r.running for r in results)
    print(
        f"{args.apps} apps deployed at once: all running after {total:.1f} s "
        f"(median app {running[len(running) // 2]:.1f} s); "
        f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"simulated TEE, {database}, owners from "
        f"{'127.0.0.1' if args.one_source else 'one loopback address each'}; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    _report_api(latencies, errors, "during the burst")
    print(cpu)
    print(
        f"operator with all {args.apps} apps running and idle: {idle_operator * 100:.1f} % "
        f"of a core (over {_IDLE_SECONDS:g} s)"
    )
    for lag in lags:
        print(f"operator: {lag}")
    if memory:
        rss = sorted(m[0] for m in memory)
        pss = sorted(m[1] for m in memory)
        print(
            f"idle runtimes: {len(memory)} processes; RSS median {rss[len(rss) // 2] / 1024:.1f}"
            f" MiB (max {rss[-1] / 1024:.1f}); PSS median {pss[len(pss) // 2] / 1024:.1f} MiB "
            f"(max {pss[-1] / 1024:.1f}); all runtimes' PSS {sum(pss) / 1024:.0f} MiB"
        )


class _Front:
    """What an owner uses of an operator: the API replica's API, the supervisor's router."""

    def __init__(self, replica: OperatorProcess, router_port: int) -> None:
        self.api_url = replica.api_url
        self.router_port = router_port
        self.client = replica.client


@contextlib.contextmanager
def _api_replica(data: Path, args: argparse.Namespace) -> Iterator[OperatorProcess | None]:
    """With ``--api-replica``: a second ``confide operator serve`` on the same database and
    data folder with ``supervisor = "never"`` (ADR 0023), serving the API in a process and
    session of its own."""
    if not args.api_replica:
        yield None
        return
    if not args.database_url:
        raise SystemExit("--api-replica needs PostgreSQL (scripts/postgres.sh run -- ...)")
    config = data.parent / "replica.toml"
    config.write_text(
        f'max_apps_per_account = {args.apps}\nsupervisor = "never"\n'
        f"database_url = {json.dumps(args.database_url)}\n"
    )
    replica = OperatorProcess(data, "--config", str(config))
    try:
        yield replica
    finally:
        replica.kill()


#: The poller's own process: GET PROBE every interval until a line comes on stdin, then print
#: the latencies and errors as one JSON line. Its own process, so that its latencies are
#: the API's, not the wait of one thread for the GIL among the bench's 100 owner threads.
_POLLER = """
import json, os, sys, threading, time, httpx
url, token, interval = sys.argv[1], os.environ["CONFIDE_BENCH_TOKEN"], float(sys.argv[2])
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
latencies, errors = [], []
with httpx.Client(base_url=url, headers={"Authorization": "Bearer " + token}, timeout=30) as c:
    while not done.is_set():
        t0 = time.monotonic()
        try:
            r = c.get(sys.argv[3])
        except httpx.HTTPError as exc:
            errors.append(repr(exc))
            break
        latencies.append(time.monotonic() - t0)
        if r.status_code != 200:
            errors.append(f"{r.status_code} {r.text[:80]}")
        done.wait(interval)
print(json.dumps({"latencies": latencies, "errors": errors}), flush=True)
"""


def _poll_in_own_process(
    url: str,
    token: str,
    interval: float,
    over: threading.Event,
    latencies: list[float],
    errors: list[str],
) -> None:
    """Poll from a process of its own until ``over``; its figures into the lists."""
    child = subprocess.Popen(  # noqa: S603 - our argv; the token in the environment only
        [sys.executable, "-c", _POLLER, url, str(interval), PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONFIDE_BENCH_TOKEN": token},
    )
    assert child.stdin is not None and child.stdout is not None
    over.wait()
    child.stdin.write("stop\n")
    child.stdin.flush()
    found = json.loads(child.stdout.readline() or "{}")
    child.wait(30)
    latencies.extend(found.get("latencies", []))
    errors.extend(found.get("errors", ["the poller printed nothing"]))


def _report_api(latencies: list[float], errors: list[str], when: str) -> None:
    if latencies:
        print(
            f"API {PROBE} {when}: {len(latencies)} requests, "
            f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {_percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms, {len(errors)} errors"
        )
    for line in errors[:5]:
        print(f"API error: {line}")


if __name__ == "__main__":
    main()
