"""Benchmark: the router's SNI passthrough against a direct connection and against HAProxy.

One run measures, side by side and on 127.0.0.1 only, the requests per second
and the p99 latency of a "hello" HTTP/1.1 app served over TLS with keep-alive:

- **direct**: the load generator talks to the app;
- **router**: through ``serve_router`` in passthrough mode (SNI ``app1.bench.test``);
  once with a hand-off route, once with a plain passthrough route whose bytes its
  relay copies (the compiled loop when it is built, ADR 0028: the output names the
  engine);
- **haproxy**: through HAProxy (Debian package ``haproxy``) doing the same SNI
  passthrough (``mode tcp``, ``tcp-request inspect-delay``, ``req_ssl_sni``),
  one thread like the router. ``make bench`` installs it first
  (``scripts/haproxy.sh``); run alone, the script skips it, and says so, if
  ``haproxy`` is missing.

The load generator is ours (asyncio + ssl, in its own process): it keeps
``--connections`` keep-alive TLS connections busy, each sending the next request
when the previous answer is in, and it verifies the app's self-signed certificate
and host name through the proxies, as a client of a passthrough route does. (``wrk``
was not used: it takes the SNI from the URL's host and resolves that host, so
it cannot send ``app1.bench.test`` to 127.0.0.1 without editing /etc/hosts,
and it does not verify certificates.) The app, the router, HAProxy and the
load generator each run in their own process. Rounds alternate between the
three targets so that machine noise hits all of them; the median round is
reported.

Run: ``.venv/bin/python bench/bench_router.py`` (``--rounds 3 --seconds 4
--connections 32`` by default; about 50 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confide.operator._router import Route
    from confide.wire import HostPort

LOOPBACK = "127.0.0.1"
SNI = "app1.bench.test"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
REQUEST = f"GET / HTTP/1.1\r\nHost: {SNI}\r\n\r\n".encode()
#: Bound on waiting for a child process to say it listens.
STARTUP_TIMEOUT = 20.0
#: Largest request head the bench app accepts.
MAX_HEAD = 16 * 1024


# -- the app: a keep-alive TLS "hello" server --


class _Hello(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = self.buffer.count(b"\r\n\r\n")
        if answers and self.transport is not None:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * answers)
        if len(self.buffer) > MAX_HEAD and self.transport is not None:
            self.transport.abort()


def _app_context(cert: Path, key: Path) -> ssl.SSLContext:
    # The bench app stands in for an enclave: TLS 1.2+, no client certificates.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(cert, key)
    return context


async def _serve_app(cert: Path, key: Path, handoff: Path) -> None:
    """The app listens on its port and, as a runtime does, on a hand-off socket."""
    from confide.runtime._handoff import HandoffListener

    loop = asyncio.get_running_loop()
    context = _app_context(cert, key)
    from confide.runtime import bind_listener

    sock = bind_listener(LOOPBACK, 0, backlog=1024)
    server = await loop.create_server(_Hello, sock=sock, ssl=context, backlog=1024)
    tasks: set[asyncio.Task[Any]] = set()

    def handed(sock: socket.socket) -> None:
        task = loop.create_task(loop.connect_accepted_socket(_Hello, sock, ssl=context))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    listener = HandoffListener.bind(handoff, logger=logging.getLogger("bench.app"))
    listener.start(loop)
    listener.serve_to(handed)
    print(server.sockets[0].getsockname()[1], flush=True)
    await _until_stdin_closes()
    listener.close()
    server.close()


# -- the router, in passthrough mode --


class _OneRoute:
    def __init__(self, route: Route) -> None:
        self.route = route

    def lookup(self, server_name: str) -> Route | None:
        return self.route if server_name == SNI else None


class _NoTls:
    def server_ssl_context(self) -> ssl.SSLContext:
        raise RuntimeError("the bench has no terminate route")


async def _serve_router(upstream_port: int, handoff: Path | None) -> None:
    # Imported here: the app and load roles should not pay for the operator's imports.
    from confide.operator._router import Route, RouteMode, RouterSettings, serve_router

    def ready(address: HostPort) -> None:
        print(address.port, flush=True)

    await serve_router(
        RouterSettings(host=LOOPBACK, port=0),
        _OneRoute(Route(RouteMode.PASSTHROUGH, LOOPBACK, upstream_port, handoff=handoff)),
        _NoTls(),
        shutdown_trigger=_until_stdin_closes,
        on_ready=ready,
    )


async def _until_stdin_closes() -> None:
    """Children stop when the parent closes their stdin (no signals, no polling)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


# -- the load generator (importable: bench_runtime.py drives other servers with it) --


@dataclass(frozen=True)
class LoadFigures:
    """One load run: the requests answered within the measured window, and their p99."""

    requests: int
    #: Length of the measured window (the warm-up is not counted).
    seconds: float
    #: 99th percentile latency, in seconds (NaN if nothing was answered).
    p99: float

    def to_json(self) -> str:
        return json.dumps({"requests": self.requests, "seconds": self.seconds, "p99": self.p99})


def client_context(cafile: Path) -> ssl.SSLContext:
    """A bench client's TLS context: trusts only ``cafile``, checks the host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile)
    return context


def _body_length(head: bytes) -> int:
    """The body length of a ``200`` answer; any other answer is the target's failure."""
    if not head.startswith(b"HTTP/1.1 200 "):
        status = head.partition(b"\r\n")[0]
        raise RuntimeError(f"the target answered {status!r}, not 200")
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        raise RuntimeError("the target answered without Content-Length (not supported here)")
    end = head.find(b"\r\n", start + 2)
    return int(head[start + len(b"\r\ncontent-length:") : end])


async def run_load(
    port: int,
    context: ssl.SSLContext,
    *,
    connections: int,
    seconds: float,
    warmup: float,
    server_name: str = SNI,
    request: bytes = REQUEST,
) -> LoadFigures:
    """Keep ``connections`` keep-alive TLS connections to ``127.0.0.1:port`` busy.

    Each connection sends ``request`` (HTTP/1.1), reads the answer (a 200 with a
    ``Content-Length``) and sends the next; answers to requests sent during the
    ``warmup`` seconds are not counted.
    """
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=context, server_hostname=server_name
        )
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    break
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(_body_length(head))
                done = time.perf_counter()
                if sent >= measure_from:
                    latencies.append(done - sent)
        finally:
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(connections)))
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    return LoadFigures(requests=len(latencies), seconds=seconds, p99=p99)


async def _load(port: int, cert: Path, connections: int, seconds: float, warmup: float) -> None:
    # Bench client: verifies the app's own certificate and name, as through a passthrough.
    figures = await run_load(
        port, client_context(cert), connections=connections, seconds=seconds, warmup=warmup
    )
    print(figures.to_json(), flush=True)


# -- orchestration --


def _identity(folder: Path) -> tuple[Path, Path]:
    """An RA-TLS-shaped self-signed certificate for the app (its quote is a placeholder)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.router import ratls_like_identity  # the router tests' upstream identity

    identity = ratls_like_identity(folder, SNI)
    return identity.cert_file, identity.key_file


@contextmanager
def _child(*args: str) -> Iterator[tuple[int, int]]:
    """Run this script in another role; yields the port it prints once it listens, and its pid."""
    process = subprocess.Popen(  # noqa: S603 - this interpreter and script, our arguments
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = _readline(process, STARTUP_TIMEOUT)
        yield int(line), process.pid
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    if process.stdout is None:
        raise RuntimeError("no stdout")
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise RuntimeError(f"{process.args!r} did not start within {timeout} s")
    line = process.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"{process.args!r} exited: {process.wait()}")
    return line


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextmanager
def _haproxy(upstream_port: int, folder: Path) -> Iterator[tuple[int, int] | None]:
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if binary is None:
        yield None
        return
    port = _free_port()
    config = folder / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 4096
    nbthread 1

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tls_front
    bind {LOOPBACK}:{port}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    use_backend app1 if {{ req_ssl_sni -i {SNI} }}

backend app1
    server app {LOOPBACK}:{upstream_port}
"""
    )
    process = subprocess.Popen([binary, "-db", "-f", str(config)])  # noqa: S603 - our config
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # readiness: its port accepts a connection
            with socket.socket() as probe:
                if probe.connect_ex((LOOPBACK, port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used (Linux ``/proc``); 0 for none."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(
    port: int, cert: Path, args: argparse.Namespace, proxy: int | None = None
) -> dict[str, Any]:
    """One round against ``port``; with ``proxy`` (a pid), also its CPU time per request."""
    cpu_before = _cpu_seconds(proxy)
    out = subprocess.run(  # noqa: S603 - this interpreter and script, our arguments
        [
            sys.executable,
            __file__,
            "--role",
            "load",
            "--port",
            str(port),
            "--cert",
            str(cert),
            "--connections",
            str(args.connections),
            "--seconds",
            str(args.seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=args.seconds + 60,
    )
    figures: dict[str, Any] = json.loads(out.stdout)
    # The proxy's CPU over the whole round (warm-up included) per measured request.
    figures["proxy_cpu"] = _cpu_seconds(proxy) - cpu_before
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--role", choices=["main", "app", "router", "load"], default="main")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--handoff", type=Path)
    args = parser.parse_args()

    if args.role == "app":
        asyncio.run(_serve_app(args.cert, args.key, args.handoff))
        return 0
    if args.role == "router":
        asyncio.run(_serve_router(args.port, args.handoff))
        return 0
    if args.role == "load":
        asyncio.run(_load(args.port, args.cert, args.connections, args.seconds, warmup=0.5))
        return 0

    results: dict[str, list[dict[str, Any]]] = {
        "direct": [],
        "router": [],
        "relay": [],
        "haproxy": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cert, key = _identity(folder)
        handoff = folder / "handoff.sock"
        with (
            _child(
                "--role", "app", "--cert", str(cert), "--key", str(key), "--handoff", str(handoff)
            ) as (app_port, _),
            _child(
                "--role", "router", "--port", str(app_port), "--handoff", str(handoff)
            ) as router,
            _child("--role", "router", "--port", str(app_port)) as relay,
            _haproxy(app_port, folder) as haproxy,
        ):
            # The relay and HAProxy rounds run back to back.
            targets: dict[str, tuple[int, int | None] | None] = {
                "direct": (app_port, None),
                "router": router,
                "relay": relay,
                "haproxy": haproxy,
            }
            for _ in range(args.rounds):
                for name, target in targets.items():
                    if target is not None:
                        port, pid = target
                        results[name].append(_measure(port, cert, args, pid))

    def median(name: str, key: str) -> float:
        runs = results[name]
        if not runs:
            return float("nan")
        if key == "rps":
            return float(statistics.median(r["requests"] / r["seconds"] for r in runs))
        if key == "cpu_us":
            return float(statistics.median(r["proxy_cpu"] * 1e6 / r["requests"] for r in runs))
        return float(statistics.median(r["p99"] * 1000 for r in runs))

    summary = {
        name: {
            "rps": median(name, "rps"),
            "p99_ms": median(name, "p99"),
            "proxy_cpu_us_per_request": median(name, "cpu_us"),
        }
        for name in results
    }

    def ratio(name: str, peer: str) -> float:
        return summary[name]["rps"] / summary[peer]["rps"]

    if args.json:
        print(json.dumps({"summary": summary, "rounds": results}, indent=2))
        return 0
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.connections} keep-alive TLS connections, {args.rounds} rounds of "
        f"{args.seconds:g} s (median round)"
    )
    try:
        from confide.operator._relay import choose_engine
    except ImportError:  # a Confide from before ADR 0028 (PYTHONPATH=<older src>)
        print("relay engine: Python (no compiled engine in this Confide)")
    else:
        engine, why = choose_engine("auto", recording=False)  # as the router child chooses
        print(f"relay engine: {'compiled' if engine == 'c' else 'Python'} ({why})")
    print(f"{'target':<10}{'req/s':>10}{'p99 ms':>10}{'proxy CPU us/req':>18}")
    for name, row in summary.items():
        cpu = row["proxy_cpu_us_per_request"]
        cpu_text = f"{cpu:>18.1f}" if name != "direct" else f"{'-':>18}"
        print(f"{name:<10}{row['rps']:>10,.0f}{row['p99_ms']:>10.2f}{cpu_text}")
    print(f"router/direct  {ratio('router', 'direct'):.2f} (hand-off; target >= 0.8)")
    print(f"relay/direct   {ratio('relay', 'direct'):.2f} (bytes relayed by the router)")
    if results["haproxy"]:
        print(f"router/haproxy {ratio('router', 'haproxy'):.2f}")
        print(f"relay/haproxy  {ratio('relay', 'haproxy'):.2f} (target >= 1.0)")
        relay_cpu = summary["relay"]["proxy_cpu_us_per_request"]
        haproxy_cpu = summary["haproxy"]["proxy_cpu_us_per_request"]
        print(f"relay CPU/haproxy CPU per request {relay_cpu / haproxy_cpu:.2f}")
    else:
        print("haproxy not installed: run scripts/haproxy.sh (make bench does)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
