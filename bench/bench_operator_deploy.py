"""Benchmark: N apps deployed at once on one operator, until every one runs.

One ``confide operator serve`` (SQLite, simulated TEE, loopback, port 0 for
the API and the router). N owners (threads) each upload their own encrypted
package of ``examples/helloworld`` at the same moment, wait for
``initializing``, verify their enclave's RA-TLS certificate through the
router (the measurement the API states, the operator's simulation root),
send the code key through the router, and wait for ``running``. Printed: per
app, the time from the upload to each phase; then the total (first upload
to the last app running) and the machine.

Run: ``.venv/bin/python bench/bench_operator_deploy.py`` (``--apps 10``; about
30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from confide.attestation import Policy, fetch_peer_certificate, verify_ratls_certificate
from confide.crypto import PackageKey, encrypt_package
from confide.operator import Database, create_token, upgrade_database, utc_now
from confide.runtime import start_child
from confide.tee import SimulatedPlatform

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "examples" / "helloworld"
CONFIDE = Path(sys.executable).with_name("confide")
LOOPBACK = "127.0.0.1"
BASE_DOMAIN = "bench.test"
#: Bound on any one wait.
DEADLINE = 180.0


@dataclass
class Result:
    app: int
    uploaded: float = 0.0
    initializing: float = 0.0
    configured: float = 0.0
    running: float = 0.0


def wait_for_operator(data: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    path = data / "operator.json"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if path.is_file():
            try:
                found: dict[str, Any] = json.loads(path.read_text())
            except ValueError:
                found = {}
            if found.get("pid") == proc.pid:
                return found
        if proc.poll() is not None:
            raise SystemExit(f"the operator exited with {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit("the operator did not start")


def wait_status(api: httpx.Client, app_id: str, status: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/apps/{app_id}").json()
        if body["status"] == status:
            return
        if body["status"] in ("on_error", "stopped", "expired"):
            raise SystemExit(f"app {app_id}: {body['status']}: {body['status_detail']}")
        time.sleep(0.05)
    raise SystemExit(f"app {app_id} did not reach {status}")


def owner(
    index: int,
    api_url: str,
    token: str,
    router_port: int,
    sim: Path,
    start: threading.Barrier,
    expires: str,
) -> Result:
    key = PackageKey.generate()
    package = io.BytesIO()
    encrypt_package(HELLO, package, key)
    manifest = {
        "name": f"bench-{index}",
        "application": "app:app",
        "plan": "small",
        "expires_at": expires,
        "tls": "ratls",
        "healthcheck": "/health",
    }
    result = Result(index)
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        start.wait()
        t0 = time.monotonic()
        response = api.post(
            "/api/v1/apps",
            files={"package": ("app.pkg", package.getvalue(), "application/octet-stream")},
            data={"manifest": json.dumps(manifest)},
        )
        if response.status_code != 201:
            raise SystemExit(f"upload {index}: {response.status_code} {response.text}")
        body = response.json()
        app_id, name = body["id"], f"{body['id']}.{BASE_DOMAIN}"
        result.uploaded = time.monotonic() - t0
        wait_status(api, app_id, "initializing")
        result.initializing = time.monotonic() - t0
        cert = fetch_peer_certificate(LOOPBACK, router_port, server_name=name, timeout=30)
        now = datetime.now(UTC)
        root = x509.load_pem_x509_certificate(body["simulation_root_ca"].encode())
        verify_ratls_certificate(
            cert,
            SimulatedPlatform.open(sim, now=now).collateral(now),
            now=now,
            policy=Policy(mr_enclave=bytes.fromhex(body["fingerprint"]), allow_simulation=True),
            trust_anchor=root,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cadata=cert.public_bytes(Encoding.PEM).decode())
        with httpx.Client(
            base_url=f"https://{LOOPBACK}:{router_port}",
            headers={"Host": name},
            verify=context,
            timeout=60,
        ) as enclave:
            configured = enclave.post(
                "/",
                json={"uuid": app_id, "code_secret_key": key.hex()},
                extensions={"sni_hostname": name},
            )
            if configured.status_code != 200:
                raise SystemExit(f"configure {index}: {configured.text}")
            result.configured = time.monotonic() - t0
            wait_status(api, app_id, "running")
            result.running = time.monotonic() - t0
            hello = enclave.get("/", extensions={"sni_hostname": name})
            if hello.text != "Hello world":
                raise SystemExit(f"app {index} answered {hello.text!r}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="confide-bench-operator-"))
    data = root / "data"
    err = (root / "operator.err").open("wb")
    proc = start_child(
        [
            str(CONFIDE),
            "operator",
            "serve",
            "--data-dir",
            str(data),
            "--api",
            f"{LOOPBACK}:0",
            "--router",
            f"{LOOPBACK}:0",
            "--base-domain",
            BASE_DOMAIN,
            "--stop-apps-on-exit",
        ],
        env=None,
        output=err,
    )
    try:
        addresses = wait_for_operator(data, proc)
        db = Database.open(f"sqlite:///{data / 'operator.db'}")
        upgrade_database(db)
        with db.session() as session:
            token = create_token(session, "bench", now=utc_now()).token
            session.commit()
        db.dispose()
        expires = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        start = threading.Barrier(args.apps + 1)
        with ThreadPoolExecutor(max_workers=args.apps) as pool:
            futures = [
                pool.submit(
                    owner,
                    i,
                    addresses["api_url"],
                    token,
                    int(addresses["router_port"]),
                    data / "simulation",
                    start,
                    expires,
                )
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
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
