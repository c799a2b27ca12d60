"""Benchmark: ``confide runtime`` start-up and configuration times, and its serving rate.

One run, on 127.0.0.1 only, with the simulated TEE and RA-TLS mode, measures:

- **start-up**, over ``--launches`` fresh launches of ``examples/helloworld`` as an
  encrypted package: from the start of the ``confide runtime`` process to its
  configuration endpoint answering ``GET /`` (``Confide-Status: waiting``), and
  from sending the configuration (the package key) to the app answering ``GET /``.
  Between the two, the owner verifies the RA-TLS certificate (timed apart);
  the configuration travels over a connection pinned to the verified certificate.
- **serving**: requests per second and p99 latency of ``GET /`` of each example
  app (Flask through WSGI, FastAPI through ASGI), served by the configured
  runtime with its RA-TLS certificate (HTTP/1.1 through uvicorn's h11
  protocol, ADR 0008), against the same app under plain ``uvicorn`` and plain
  ``hypercorn`` (the runtime's server before ADR 0008, and still its HTTP/2)
  with an ordinary certificate signed by a test CA made for the run. Same key type
  (P-256), same TLS 1.2 ciphers; the TLS version and cipher each target
  negotiated are printed. The load generator is ``bench_router``'s (asyncio +
  ssl, its own process, keep-alive HTTP/1.1, every certificate verified: the
  runtime's pinned, the plain servers' through the test CA), with the same
  ``--connections`` for every target. Rounds alternate between the targets, in
  a rotating order; the median round is reported. Each server is one process,
  and the CPU time it spent in the measured window (Linux ``/proc``) is divided
  by the requests answered: on a machine shared with other work, where req/s
  moves with the load, CPU per request is the steadier comparison.

The runtimes run from a compiled copy of the ``confide`` package taken at the
start, so that edits to the working tree during the run cannot change their
measurement (the owner hashes the same copy).

The plain servers are run as their command lines with their defaults, except:
one process, asyncio event loop, h11 (uvicorn: ``--loop asyncio --http h11``,
the protocol the runtime serves HTTP/1.1 with; WSGI apps through uvicorn's
built-in adapter, its default), no access log (as the runtime). Uvicorn is skipped, and said so, if
it is not installed.

Run: ``.venv/bin/python bench/bench_runtime.py`` (``--launches 5 --rounds 3
--seconds 2 --connections 32`` by default; about 80 s on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench_router import client_context, run_load

if TYPE_CHECKING:
    from confide.attestation import Collateral
    from confide.tee import SimulatedPlatform

REPO: Final = Path(__file__).resolve().parents[1]
# The runtime's launch (its command line, its measurement) and the test PKI: the tests' helpers.
sys.path.insert(0, str(REPO / "tests"))
EXAMPLES: Final = REPO / "examples"
CONFIDE: Final = Path(sys.executable).with_name("confide")
HOST: Final = "127.0.0.1"
#: Host name the clients send (SNI, Host) and check; every certificate also names 127.0.0.1.
SERVER_NAME: Final = "localhost"
SANS: Final = (SERVER_NAME, HOST)
REQUEST: Final = f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode()
#: The runtime's TLS 1.2 suites (confide.runtime.server_ssl_context), given to the plain servers.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: Longest wait for a server to start, to be configured, or to stop.
DEADLINE: Final = 30.0
#: Pause between two tries of the app while the runtime switches from configuration to app.
POLL_PAUSE: Final = 0.002
#: Bound on one load run beyond its own length.
LOAD_MARGIN: Final = 60.0


@dataclass(frozen=True)
class App:
    """An example app, and what its ``GET /`` answers."""

    name: str
    folder: Path
    #: uvicorn's ``--interface`` for it (hypercorn and the runtime detect it).
    interface: str
    body: bytes


APPS: Final = {
    "flask": App("flask", EXAMPLES / "helloworld", "wsgi", b"Hello world"),
    "fastapi": App("fastapi", EXAMPLES / "fastapi_hello", "asgi3", b'{"message":"Hello world"}'),
}


# -- child processes ----------------------------------------------------------------------------


class Process:
    """A server process; a thread reads its output (stdout and stderr) and timestamps each line."""

    def __init__(
        self, argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        from confide.runtime import start_child

        self.started = time.perf_counter()
        self.proc = start_child(argv, env=env, output=None, cwd=cwd)
        self._lines: list[tuple[float, str]] = []
        self._ended = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        stream = self.proc.stdout
        if stream is not None:
            for raw in iter(stream.readline, b""):
                with self._cond:
                    self._lines.append((time.perf_counter(), raw.decode("utf-8", "replace")))
                    self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(line for _, line in self._lines)

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> tuple[float, re.Match[str]]:
        """When the first line matching ``pattern`` was read, and the match."""
        regex = re.compile(pattern, re.IGNORECASE)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for at, line in self._lines[seen:]:
                    if match := regex.search(line):
                        return at, match
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._ended:
                    raise RuntimeError(
                        f"{self.proc.args!r}: no line matching {pattern!r} within {timeout} s; "
                        f"output:\n{self.output}"
                    )
                self._cond.wait(left)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it is still there after :data:`DEADLINE`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(DEADLINE)
        return code


@contextmanager
def started(
    argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[Process]:
    process = Process(argv, cwd=cwd, env=env)
    try:
        yield process
    finally:
        process.stop()


# -- certificates and clients -------------------------------------------------------------------


def write_test_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a P-256 server certificate it signed for ``localhost`` and 127.0.0.1.

    Returns the CA's certificate, the server's certificate and its key (PEM files).
    """
    from cryptography.hazmat.primitives import serialization

    from support.runtimes import OwnerPki

    pki = OwnerPki.generate(SANS)
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(pki.ca.public_bytes(serialization.Encoding.PEM))
    pki.write_certificate(cert_file)
    key_file.write_text(pki.key_pem)
    return ca_file, cert_file, key_file


def negotiated(port: int, context: ssl.SSLContext) -> str:
    """The TLS version and cipher suite a target agrees with the bench's client."""
    with (
        socket.create_connection((HOST, port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else '?'}"


def get_root(port: int, context: ssl.SSLContext) -> tuple[int, bytes]:
    """``GET /`` on a new connection: status and body."""
    import httpx

    with httpx.Client(verify=context, timeout=DEADLINE) as client:
        response = client.get(f"https://{HOST}:{port}/")
        return response.status_code, response.content


# -- the runtime, as its owner launches, verifies and configures it ----------------------------


def snapshot_confide(folder: Path) -> Path:
    """Copy the ``confide`` package into ``folder`` and compile it; returns ``folder``.

    The runtimes run from this copy (``PYTHONPATH``), so that edits to the working tree
    during the run cannot change the code, and so the measurement, under the bench. It
    is compiled to bytecode as pip does when it installs a wheel: the working tree may
    have none (``PYTHONDONTWRITEBYTECODE``), and an enclave image ships it.
    """
    import compileall
    from importlib import resources

    source = Path(str(resources.files("confide")))
    shutil.copytree(source, folder / "confide", ignore=shutil.ignore_patterns("__pycache__"))
    if not compileall.compile_dir(folder / "confide", quiet=1):
        raise RuntimeError(f"cannot compile the copy of {source}")
    return folder


@dataclass(frozen=True)
class Owner:
    """What the owner holds: the simulated platform's root and collateral, the runtime's hash."""

    platform: SimulatedPlatform
    collateral: Collateral
    sim_dir: Path
    #: Where the runtime's code is (see :func:`snapshot_confide`), and its hash.
    code_path: Path
    runtime_sha256: bytes


@dataclass(frozen=True)
class Package:
    app: App
    path: Path
    digest: bytes
    key_hex: str


@dataclass(frozen=True)
class Launched:
    """A configured runtime, and how long each step of its launch took (seconds)."""

    process: Process
    port: int
    certificate_pem: bytes
    #: Process start to its log line "waiting for the configuration on ..." (listening).
    listening: float
    #: Process start to ``GET /`` answered ``Confide-Status: waiting``.
    waiting: float
    #: The owner's verification of the RA-TLS certificate (not the runtime's time).
    verify: float
    #: Configuration sent to the app answering ``GET /``.
    configure: float
    #: Tries of ``GET /`` during the switch-over that were answered 409 or not at all.
    retries: int


def make_package(app: App, folder: Path) -> Package:
    from confide.crypto import PackageKey, encrypt_package

    key = PackageKey.generate()
    path = folder / f"{app.name}.pkg"
    with path.open("wb") as f:
        info = encrypt_package(app.folder, f, key)
    return Package(app=app, path=path, digest=info.digest, key_hex=key.hex())


def launch_runtime(owner: Owner, package: Package, state_dir: Path, stack: ExitStack) -> Launched:
    """Start ``confide runtime``, verify it, configure it; it is stopped when ``stack`` closes."""
    import httpx
    from cryptography.hazmat.primitives import serialization

    from confide.attestation import Policy, fetch_peer_certificate, verify_ratls_certificate
    from confide.wire import STATUS_HEADER, ConfigurationStatus, configuration_body
    from support.runtimes import CodeUnderTest, Launch, trusting

    launch = Launch(
        code=CodeUnderTest(path=package.path, plaintext=False, digest=package.digest),
        state_dir=state_dir,
        sim_dir=owner.sim_dir,
        san=SANS,
        timeout=DEADLINE * 4,
        ratls_expiry=int((datetime.now(UTC) + timedelta(days=1)).timestamp()),
    )
    app_id = launch.app_id
    measurement = launch.measurement(runtime_sha256=owner.runtime_sha256)
    args = [str(CONFIDE), "runtime", *launch.args()]
    body = json.dumps(configuration_body(app_id, code_secret_key=package.key_hex)).encode()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(owner.code_path), env.get("PYTHONPATH")]))
    process = stack.enter_context(started(args, env=env))
    listening_at, match = process.wait_for(r"waiting for the configuration on https://\S+:(\d+)")
    port = int(match.group(1))
    certificate = fetch_peer_certificate(HOST, port, server_name=SERVER_NAME, timeout=DEADLINE)
    pinned = trusting(certificate)
    with httpx.Client(verify=pinned, timeout=DEADLINE) as owner_client:
        waiting = owner_client.get(f"https://{HOST}:{port}/")
        waiting_at = time.perf_counter()
        if (
            waiting.status_code != 200
            or waiting.headers.get(STATUS_HEADER) != ConfigurationStatus.WAITING
        ):
            raise RuntimeError(f"configuration endpoint: {waiting.status_code} {waiting.text!r}")

        verify_from = time.perf_counter()
        now = datetime.now(UTC)
        verify_ratls_certificate(
            certificate,
            owner.collateral,
            now=now,
            policy=Policy(mr_enclave=measurement, allow_simulation=True),
            trust_anchor=owner.platform.root_certificate,
        )
        verify_to = time.perf_counter()

        sent_at = time.perf_counter()
        configured = owner_client.post(
            f"https://{HOST}:{port}/",
            content=body,
            headers={"content-type": "application/json"},
        )
        if configured.status_code != 200:
            raise RuntimeError(f"configuration refused: {configured.status_code} {configured.text}")
    # The app takes over the same socket. A connection the configuration endpoint accepted
    # in its last moment answers 409, or is closed unanswered as that server shuts down:
    # try again on a new connection.
    deadline = time.monotonic() + DEADLINE
    retries = 0
    while True:
        try:
            status, content = get_root(port, pinned)
        except httpx.TransportError as exc:
            status, content = 0, repr(exc).encode()
        if status == 200 and content == package.app.body:
            answered_at = time.perf_counter()
            break
        retries += 1
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the app did not answer GET / within {DEADLINE} s; last: {status} {content!r}"
            )
        time.sleep(POLL_PAUSE)
    return Launched(
        process=process,
        port=port,
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        listening=listening_at - process.started,
        waiting=waiting_at - process.started,
        verify=verify_to - verify_from,
        configure=answered_at - sent_at,
        retries=retries,
    )


# -- the plain servers --------------------------------------------------------------------------


def uvicorn_argv(app: App, cert: Path, key: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--app-dir",
        str(app.folder),
        "--interface",
        app.interface,
        "--host",
        HOST,
        "--port",
        "0",
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        "--ssl-ciphers",
        TLS12_CIPHERS,
        "--loop",
        "asyncio",
        "--http",
        "h11",
        "--no-access-log",
    ]


def hypercorn_argv(cert: Path, key: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "app:app",
        "--bind",
        f"{HOST}:0",
        "--certfile",
        str(cert),
        "--keyfile",
        str(key),
        "--ciphers",
        TLS12_CIPHERS,
        "--worker-class",
        "asyncio",
        "--workers",
        "0",  # serve in this process, as the runtime does
    ]


# -- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    app: str
    server: str
    port: int
    #: The server's process (each server is one process: its CPU time is the server's).
    pid: int
    #: PEM file the load generator trusts: the runtime's certificate, or the test CA.
    anchor: Path
    tls: str


def measure(target: Target, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(  # noqa: S603 - this interpreter and script, our arguments
        [
            sys.executable,
            __file__,
            "--role",
            "load",
            "--port",
            str(target.port),
            "--anchor",
            str(target.anchor),
            "--pid",
            str(target.pid),
            "--connections",
            str(args.connections),
            "--seconds",
            str(args.seconds),
            "--warmup",
            str(args.warmup),
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=args.warmup + args.seconds + LOAD_MARGIN,
    )
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads), from Linux's /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_role(args: argparse.Namespace) -> dict[str, float]:
    """Drive one target; also the CPU time its server spent within the measured window."""
    start = time.perf_counter()

    async def server_cpu() -> float:
        await asyncio.sleep(start + args.warmup - time.perf_counter())
        before = cpu_seconds(args.pid)
        await asyncio.sleep(start + args.warmup + args.seconds - time.perf_counter())
        return cpu_seconds(args.pid) - before

    sampler = asyncio.create_task(server_cpu())
    figures = await run_load(
        args.port,
        client_context(args.anchor),
        connections=args.connections,
        seconds=args.seconds,
        warmup=args.warmup,
        server_name=SERVER_NAME,
        request=REQUEST,
    )
    return {
        "requests": figures.requests,
        "seconds": figures.seconds,
        "p99": figures.p99,
        "server_cpu": await sampler,
    }


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median and max, in milliseconds, and every value."""
    ms = [v * 1000 for v in values]
    return {
        "median_ms": round(statistics.median(ms), 1),
        "max_ms": round(max(ms), 1),
        "all_ms": [round(v, 1) for v in ms],
    }


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from confide.runtime import runtime_code_hash
    from confide.tee import SimulatedPlatform

    if not CONFIDE.exists():
        raise SystemExit(f"{CONFIDE} is missing: run `make` (pip install -e .) first")
    has_uvicorn = util.find_spec("uvicorn") is not None
    apps = [APPS[name] for name in args.apps]
    figures: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "versions": {
            name: metadata.version(name)
            for name in ("hypercorn", "uvicorn", "flask", "fastapi")
            if util.find_spec(name) is not None
        },
    }
    with tempfile.TemporaryDirectory(prefix="confide-bench-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        now = datetime.now(UTC)
        sim_platform = SimulatedPlatform.open(folder / "sim", now=now)
        code_path = snapshot_confide(folder / "code")
        owner = Owner(
            platform=sim_platform,
            collateral=sim_platform.collateral(now),
            sim_dir=folder / "sim",
            code_path=code_path,
            runtime_sha256=runtime_code_hash(code_path / "confide"),
        )
        # Start-up is always timed with the Flask example; serving uses --apps.
        packages = {
            name: make_package(APPS[name], folder) for name in dict.fromkeys(["flask", *args.apps])
        }
        ca, cert, key = write_test_pki(folder)

        # (a) start-up: fresh launches (new state), each stopped before the next.
        launches: list[Launched] = []
        for i in range(args.launches):
            progress(f"launch {i + 1}/{args.launches}")
            with ExitStack() as one:
                launched = launch_runtime(owner, packages["flask"], folder / f"state-{i}", one)
                launches.append(launched)
                code = launched.process.stop()
                if code != 0:
                    raise RuntimeError(f"the runtime exited {code}:\n{launched.process.output}")
        figures["startup"] = {
            "app": "flask",
            "launches": args.launches,
            "start_to_listening": spread([x.listening for x in launches]),
            "start_to_waiting": spread([x.waiting for x in launches]),
            "owner_verify": spread([x.verify for x in launches]),
            "configure_to_app": spread([x.configure for x in launches]),
            "switch_over_retries": [x.retries for x in launches],
        }

        # (b) serving: every server of every app up at once; rounds alternate between them.
        targets: list[Target] = []
        for app in apps:
            progress(f"starting the {app.name} servers")
            runtime = launch_runtime(owner, packages[app.name], folder / f"state-{app.name}", stack)
            anchor = folder / f"ratls-{app.name}.pem"
            anchor.write_bytes(runtime.certificate_pem)
            servers = {"runtime": (runtime.process, runtime.port, anchor)}
            plain = {"hypercorn": started(hypercorn_argv(cert, key), cwd=app.folder)}
            if has_uvicorn:
                plain = {"uvicorn": started(uvicorn_argv(app, cert, key)), **plain}
            for server, starting in plain.items():
                process = stack.enter_context(starting)
                _, match = process.wait_for(r"running on https://\S+:(\d+)")
                servers[server] = (process, int(match.group(1)), ca)
            for server, (process, port, trust) in servers.items():
                context = client_context(trust)
                status, content = get_root(port, context)
                if status != 200 or content != app.body:
                    raise RuntimeError(f"{app.name} under {server}: {status} {content!r}")
                tls = negotiated(port, context)
                targets.append(Target(app.name, server, port, process.proc.pid, trust, tls))
        if len({t.tls for t in targets}) != 1:
            progress(f"warning: the targets negotiated different TLS: {[t.tls for t in targets]}")

        rounds: dict[str, dict[str, list[dict[str, float]]]] = {
            app.name: {t.server: [] for t in targets if t.app == app.name} for app in apps
        }
        for r in range(args.rounds):
            progress(f"round {r + 1}/{args.rounds}")
            for app in apps:
                mine = [t for t in targets if t.app == app.name]
                shift = r % len(mine)
                for target in mine[shift:] + mine[:shift]:
                    rounds[app.name][target.server].append(measure(target, args))

    serving: dict[str, Any] = {}
    for app in apps:
        rows: dict[str, Any] = {}
        for target in (t for t in targets if t.app == app.name):
            runs = rounds[app.name][target.server]
            rows[target.server] = {
                "rps": round(statistics.median(x["requests"] / x["seconds"] for x in runs)),
                "p99_ms": round(statistics.median(x["p99"] * 1000 for x in runs), 2),
                "server_cpu_us_per_request": round(
                    statistics.median(x["server_cpu"] / x["requests"] * 1e6 for x in runs)
                ),
                "tls": target.tls,
            }
        peers = [peer for peer in ("uvicorn", "hypercorn") if peer in rows]
        mine = rows["runtime"]
        serving[app.name] = {
            "servers": rows,
            # Both read "runtime as good as plain" at 1.0, higher is better for the runtime.
            "rps_ratio": {
                f"runtime/{peer}": round(mine["rps"] / rows[peer]["rps"], 2) for peer in peers
            },
            "cpu_ratio": {
                f"{peer}/runtime": round(
                    rows[peer]["server_cpu_us_per_request"] / mine["server_cpu_us_per_request"], 2
                )
                for peer in peers
            },
        }
    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    figures["serving"] = {
        "connections": args.connections,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "apps": serving,
        "runs": rounds,
    }
    return figures


def render(figures: dict[str, Any]) -> None:
    startup = figures["startup"]
    serving = figures["serving"]
    versions = ", ".join(f"{k} {v}" for k, v in figures["versions"].items())
    print(f"{figures['python']}, {figures['cpus']} CPUs; {versions}")
    print(
        f"1-minute load average {figures['load_average_at_start']} at the start, "
        f"{figures['load_average_at_end']} at the end"
    )
    print()
    print(
        f"confide runtime start-up, simulated TEE, RA-TLS, encrypted {startup['app']} package, "
        f"{startup['launches']} launches"
    )
    print(f"  {'':<40}{'median ms':>10}{'max ms':>10}")
    for key, label in (
        ("start_to_listening", "process start -> listening"),
        ("start_to_waiting", "process start -> GET / answers 'waiting'"),
        ("owner_verify", "(owner verifies the RA-TLS certificate)"),
        ("configure_to_app", "configuration sent -> app answers GET /"),
    ):
        row = startup[key]
        print(f"  {label:<40}{row['median_ms']:>10,.1f}{row['max_ms']:>10,.1f}")
    retried = sum(1 for n in startup["switch_over_retries"] if n)
    if retried:
        print(
            f"  ({retried} of {startup['launches']} launches: a GET / sent during the switch-over "
            "was answered 409 or closed unanswered, and retried)"
        )
    print()
    print(
        f"serving GET /: {serving['connections']} keep-alive TLS connections, HTTP/1.1, "
        f"{serving['rounds']} rounds of {serving['seconds']:g} s (median round)"
    )
    print(f"  {'app':<9}{'server':<11}{'req/s':>8}{'p99 ms':>9}{'CPU us/req':>12}  TLS")
    for app, block in serving["apps"].items():
        for server, row in block["servers"].items():
            print(
                f"  {app:<9}{server:<11}{row['rps']:>8,}{row['p99_ms']:>9.2f}"
                f"{row['server_cpu_us_per_request']:>12,}  {row['tls']}"
            )
        rps = ", ".join(f"{name} {ratio:.2f}" for name, ratio in block["rps_ratio"].items())
        cpu = ", ".join(f"{name} {ratio:.2f}" for name, ratio in block["cpu_ratio"].items())
        print(f"  {'':<9}req/s {rps} (target >= 0.9)")
        print(f"  {'':<9}CPU per request {cpu}")
    if "uvicorn" not in figures["versions"]:
        print("uvicorn is not installed: plain hypercorn only (pip install uvicorn)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=5, help="launches timed for start-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time per round")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured time per round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--apps", nargs="+", choices=sorted(APPS), default=list(APPS), help="apps to serve"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--role", choices=["main", "load"], default="main")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--anchor", type=Path, help="PEM the load generator trusts")
    parser.add_argument("--pid", type=int, default=0, help="the target server's process")
    args = parser.parse_args()

    if args.role == "load":
        print(json.dumps(asyncio.run(load_role(args))), flush=True)
        return 0

    figures = run(args)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        render(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
