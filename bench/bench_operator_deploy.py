"""Benchmark: N apps deployed at once on one operator, until every one runs.

One ``confide operator serve`` (SQLite, simulated TEE, loopback, port 0 for
the API and the router). N owners (threads) each upload their own encrypted
package of ``examples/helloworld`` at the same moment, wait for
``initializing``, verify their enclave's RA-TLS certificate through the
router (the fingerprint recomputed on the owner's side, the operator's
simulation root), send the configuration (the code key sealed to the enclave)
through the router, and wait for ``running``: what ``confide deploy`` does,
with :mod:`confide.client`'s functions. The operator is started and waited for
by the tests' helpers (``tests/support/operators.py``). Printed: per
app, the time from the upload to each phase; then the total (first upload
to the last app running) and the machine.

Run: ``.venv/bin/python bench/bench_operator_deploy.py`` (``--apps 10``; about
30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx

from confide.client import (
    ChallengeClient,
    EnclavePolicy,
    EnclaveVerifier,
    OperatorClient,
    SimulationEvidence,
    configuration_payload,
    expected_launch,
    fetch_enclave_certificate,
    pinned_client,
    server_name,
)
from confide.client._deploy import LONG_POLL, poll_interval
from confide.crypto import PackageKey, encrypt_package
from confide.runtime import runtime_code_hash
from confide.wire import HostPort, TlsMode
from confide.wire.api import DeployManifest

REPO: Final = Path(__file__).resolve().parents[1]
# Starting an operator and waiting for it, and for an app's status: the tests' helpers.
sys.path.insert(0, str(REPO / "tests"))
from support.operators import OperatorProcess, app_body, create_token, operator_running  # noqa: E402

HELLO: Final = REPO / "examples" / "helloworld"
LOOPBACK: Final = "127.0.0.1"
#: Bound on any one wait.
DEADLINE: Final = 180.0


def wait_for_status(api: httpx.Client, app_id: uuid.UUID, status: str, *, timeout: float) -> None:
    """Wait for ``status`` as ``confide deploy`` does: each look a long-poll of up to
    ``LONG_POLL`` s on the record last seen, 0.2 s doubling to 2 s between looks while the
    status stays the same (the tests' fixed 0.05 s, times 100 owners, would be 2,000
    requests a second on the API)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    unchanged = 0
    body = app_body(api, app_id)
    while True:
        now = body["status"]
        if not seen or seen[-1] != now:
            seen.append(now)
            unchanged = 0
        else:
            unchanged += 1
        if now == status:
            return
        if now in ("on_error", "expired", "stopped", "deleted") or time.monotonic() > deadline:
            raise AssertionError(f"app {app_id} did not reach {status} in {timeout} s: {seen}")
        time.sleep(poll_interval(unchanged))
        held = min(LONG_POLL, max(deadline - time.monotonic(), 0.0))
        params = {"wait": f"{held:g}", "seen": body["updated_at"]}
        response = api.get(f"/api/v1/apps/{app_id}", params=params)
        assert response.status_code == 200, response.text
        body = response.json()


@dataclass
class Result:
    app: int
    uploaded: float = 0.0
    initializing: float = 0.0
    configured: float = 0.0
    running: float = 0.0


def owner(
    index: int,
    operator: OperatorProcess,
    token: str,
    folder: Path,
    start: threading.Barrier,
    expires: datetime,
) -> Result:
    """One owner's deployment, as ``confide deploy`` makes it (:mod:`confide.client`)."""
    key = PackageKey.generate()
    package = folder / f"bench-{index}.pkg"
    with package.open("wb") as f:
        info = encrypt_package(HELLO, f, key)
    asked = DeployManifest(
        name=f"bench-{index}",
        application="app:app",
        plan="small",
        expires_at=expires,
        tls=TlsMode.RATLS,
        healthcheck="/health",
    )
    router = HostPort(LOOPBACK, operator.router_port)
    result = Result(index)
    with (
        OperatorClient(operator.api_url, token, timeout=60) as client,
        operator.client(token) as api,
    ):
        start.wait()
        t0 = time.monotonic()
        record = client.create_app(package, asked)
        result.uploaded = time.monotonic() - t0
        wait_for_status(api, record.id, "initializing", timeout=DEADLINE)
        result.initializing = time.monotonic() - t0
        record = client.get_app(record.id)
        name = server_name(record, asked)
        fingerprint = expected_launch(
            record, asked, package, info.digest, runtime_code_hash()
        ).measurement()
        cert = fetch_enclave_certificate(router, name, timeout=30)
        verified = EnclaveVerifier(
            SimulationEvidence(client.simulation),
            EnclavePolicy(fingerprint, name, allow_simulation=True),
            fresh=ChallengeClient(router, name, timeout=30),  # as confide deploy does
        ).verify(cert)
        payload = configuration_payload(
            record, key, verified.ratls.extra, app_secrets=None, ssl_private_key=None
        )
        with pinned_client(router, name, cert, timeout=60) as enclave:
            configured = enclave.post("/", json=payload)
            if configured.status_code != 200:
                raise SystemExit(f"configure {index}: {configured.text}")
            result.configured = time.monotonic() - t0
            wait_for_status(api, record.id, "running", timeout=DEADLINE)
            result.running = time.monotonic() - t0
            hello = enclave.get("/")
            if hello.text != "Hello world":
                raise SystemExit(f"app {index} answered {hello.text!r}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="confide-bench-operator-"))
    data = root / "data"
    try:
        with operator_running(data) as operator:
            token = create_token(data, "bench")
            expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
            start = threading.Barrier(args.apps + 1)
            with ThreadPoolExecutor(max_workers=args.apps) as pool:
                futures = [
                    pool.submit(owner, i, operator, token, root, start, expires)
                    for i in range(args.apps)
                ]
                start.wait()
                t0 = time.monotonic()
                results = [f.result() for f in futures]
                total = time.monotonic() - t0
        print(f"{'app':>4} {'uploaded':>9} {'initializing':>13} {'configured':>11} {'running':>8}")
        for r in results:
            print(
                f"{r.app:>4} {r.uploaded:>8.2f}s {r.initializing:>12.2f}s "
                f"{r.configured:>10.2f}s {r.running:>7.2f}s"
            )
        running = sorted(r.running for r in results)
        print(
            f"{args.apps} apps deployed at once: all running after {total:.2f} s "
            f"(median app {running[len(running) // 2]:.2f} s, slowest {running[-1]:.2f} s); "
            f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
            f"simulated TEE, SQLite"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
