"""Benchmark: DCAP quote verifications per second, Confide against dcap-qvl, in one run;
then a full user verification on loopback beside the certificate-only one.

(a) Quotes: both verify the SGX vector ``sgx-dcapqvl-00A067110000`` at its
verification time with warm collateral (parsed once, as a service verifying
many quotes holds it). Rounds alternate between the two so that machine noise
hits both; the median round is reported.

(b) The user's verification (``--only user``): one ``confide runtime`` (the
simulated TEE, RA-TLS, ``examples/helloworld``, waiting for its configuration)
on loopback, and the operator's release log answered on loopback by a small
HTTP server holding one owner-signed release (the answers computed with
``confide.release``, as the operator's log does). Alternately, the
certificate-only check (fetch the certificate, verify its quote and the name:
``EnclaveVerifier`` as before ADR 0021) and the full one (the same, then the
fresh challenge on a pinned connection, then the statement, its inclusion and
the log's consistency with the checkpoint seen: ``EnclaveVerifier`` with
``owner``, ``releases`` and ``fresh``). Collateral is warm (made once, as the
PCCS cache holds it). Full verifications are paced to the runtime's challenge
rate per source (:data:`~confide.runtime._challenge.CHALLENGE_RATE`); only the
verification itself is timed.

Run: ``make bench`` (or ``.venv/bin/python bench/bench_verify.py --rounds 7 --seconds 1``;
``--only user`` for (b) alone).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform as platform_module
import queue
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dcap_qvl

from confide.attestation import Collateral, Policy, verify_quote
from confide.tee import SimulatedPlatform

VECTOR = "sgx-dcapqvl-00A067110000"


def _rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    parser.add_argument("--vectors", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--only", choices=("quote", "user"), default=None)
    parser.add_argument(
        "--verifications", type=int, default=25, help="user verifications of each kind"
    )
    args = parser.parse_args()
    if args.only != "user":
        code = quotes(args)
        if code:
            return code
    if args.only != "quote":
        user_verification(args.verifications, as_json=args.json)
    return 0


def quotes(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parent.parent
    vectors = args.vectors or root.parent / "shared" / "vectors"
    base = vectors / VECTOR
    expected = json.loads((base / "expected.json").read_text())
    quote = (base / "quote.bin").read_bytes()
    text = (base / "collateral.json").read_text()
    at = int(expected["verification_time"])
    now = datetime.fromtimestamp(at, UTC)

    ours_collateral = Collateral.from_json(text)
    policy = Policy.accepting([expected["dcap_qvl_0_7_0_result"]["status"]])
    peer_collateral = dcap_qvl.QuoteCollateralV3.from_json(text)

    def ours() -> object:
        return verify_quote(quote, ours_collateral, now=now, policy=policy)

    def peer() -> object:
        return dcap_qvl.verify(quote, peer_collateral, at)

    def ours_cold() -> object:
        # Collateral parsed and fully re-verified on every call: no cache at all.
        return verify_quote(quote, Collateral.from_json(text), now=now, policy=policy)

    # Same verdict first: a benchmark of two verifiers that disagree means nothing.
    mine, theirs = ours(), dcap_qvl.verify(quote, peer_collateral, at)
    status = getattr(mine, "tcb_status", None)
    if str(status) != theirs.status:
        print(f"verdicts differ: ours {status}, dcap-qvl {theirs.status}", file=sys.stderr)
        return 1

    ours_rates, peer_rates, cold_rates = [], [], []
    for _ in range(args.rounds):
        ours_rates.append(_rate(ours, args.seconds))
        peer_rates.append(_rate(peer, args.seconds))
        cold_rates.append(_rate(ours_cold, args.seconds))
    ours_med = statistics.median(ours_rates)
    peer_med = statistics.median(peer_rates)
    cold_med = statistics.median(cold_rates)
    figures = {
        "vector": VECTOR,
        "python": platform_module.python_version(),
        "machine": platform_module.machine(),
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "confide_per_s": round(ours_med),
        "dcap_qvl_per_s": round(peer_med),
        "ratio": round(ours_med / peer_med, 2),
        "confide_us_per_verify": round(1e6 / ours_med, 1),
        "dcap_qvl_us_per_verify": round(1e6 / peer_med, 1),
        "confide_cold_per_s": round(cold_med),
        "confide_cold_us_per_verify": round(1e6 / cold_med, 1),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"quote verification, {VECTOR}, warm collateral, median of {args.rounds} rounds")
        print(
            f"  confide   {figures['confide_per_s']:>8,}/s  {figures['confide_us_per_verify']} us"
        )
        print(
            f"  dcap-qvl  {figures['dcap_qvl_per_s']:>8,}/s  {figures['dcap_qvl_us_per_verify']} us"
        )
        print(f"  ratio     {figures['ratio']}x (target >= 3x)")
        print(
            f"  confide, cold collateral (parsed and re-verified each call) "
            f"{figures['confide_cold_per_s']:,}/s  {figures['confide_cold_us_per_verify']} us"
        )
    return 0


# -- (b) the user's verification on loopback ---------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
CONFIDE = Path(sys.executable).with_name("confide")
LOOPBACK = "127.0.0.1"
NAME = "localhost"
#: Longest wait for the runtime to listen (seconds).
DEADLINE = 60.0
LOG_ORIGIN = "bench.invalid/confide-log"


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


class _Log:
    """An operator's release log holding ``leaves``, answered as the operator's API does."""

    def __init__(self, leaves: list[bytes]) -> None:
        from confide.release import LogKey

        self.key = LogKey(LOG_ORIGIN, secrets.token_bytes(32))
        self.leaves = leaves

    def answer(self, path: str, query: dict[str, list[str]]) -> dict[str, Any] | None:
        from confide.release import Checkpoint, consistency_proof, inclusion_proof, leaf_hash, root

        hashes = [leaf_hash(leaf) for leaf in self.leaves]
        note = Checkpoint(self.key.name, len(hashes), root(hashes)).sign(self.key).decode()
        path = path.removeprefix("/api/v1")
        if path == "/log":
            return {
                "origin": LOG_ORIGIN,
                "log_key": self.key.verifier.to_text(),
                "checkpoint": note,
            }
        if path.startswith("/log/fingerprints/"):
            since = int(query["since"][0])
            entries = [
                {
                    "index": i,
                    "envelope": base64.b64encode(leaf).decode(),
                    "proof": _b64(inclusion_proof(hashes, i)),
                }
                for i, leaf in enumerate(self.leaves)
            ]
            consistency = _b64(consistency_proof(hashes, since))
            return {"checkpoint": note, "entries": entries, "consistency": consistency}
        if path == "/log/consistency":
            return {"proof": _b64(consistency_proof(hashes, int(query["first"][0])))}
        return None


@contextmanager
def _log_server(log: _Log) -> Iterator[str]:
    """``log`` served over HTTP on loopback (port 0); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed ACK wait

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            body = log.answer(url.path, parse_qs(url.query))
            data = json.dumps(body if body is not None else {"detail": "not found"}).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def _runtime(folder: Path) -> Iterator[tuple[int, Path]]:
    """``confide runtime`` waiting for its configuration; yields its port and platform folder."""
    from confide.runtime import start_child

    sim = folder / "sim"
    expiry = int((datetime.now(UTC) + timedelta(days=1)).timestamp())
    args = [
        str(CONFIDE), "runtime", "--app-id", str(uuid.uuid4()), "--application", "app:app",
        "--app-dir", str(REPO / "examples" / "helloworld"), "--plaincode",
        "--host", LOOPBACK, "--port", "0", "--ratls", str(expiry),
        "--state-dir", str(folder / "state"), "--tee", "simulation",
        "--simulation-state", str(sim), "--san", NAME, "--timeout", "600",
    ]  # fmt: skip
    SimulatedPlatform.open(sim, now=datetime.now(UTC))
    proc = start_child(args, env=dict(os.environ), output=None)
    try:
        pattern = re.compile(rb"waiting for the configuration on https://\S+:(\d+)")
        lines: queue.Queue[bytes] = queue.Queue()

        def pump() -> None:
            if proc.stdout is not None:
                for line in iter(proc.stdout.readline, b""):
                    lines.put(line)
            lines.put(b"")

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + DEADLINE
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if not line:
                raise RuntimeError("the runtime ended before it listened")
            if match := pattern.search(line):
                break
        yield int(match.group(1)), sim
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def user_verification(count: int, *, as_json: bool) -> None:
    from confide.attestation import Quote, quote_from_certificate
    from confide.client import (
        ChallengeClient,
        CheckpointStore,
        CollateralEvidence,
        EnclavePolicy,
        EnclaveVerifier,
        OperatorReleaseLog,
        fetch_enclave_certificate,
    )
    from confide.client._verify import launch_manifest_bytes
    from confide.release import OwnerKey, Release
    from confide.runtime._challenge import CHALLENGE_RATE
    from confide.wire import HostPort, LaunchManifest

    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp, _runtime(Path(tmp)) as started:
        port, sim = started
        platform = SimulatedPlatform.open(sim, now=datetime.now(UTC))
        collateral = platform.collateral(datetime.now(UTC))
        address = HostPort(LOOPBACK, port)
        cert = fetch_enclave_certificate(address, NAME, timeout=10.0)
        manifest = LaunchManifest.from_json(launch_manifest_bytes(cert))
        owner = OwnerKey(secrets.token_bytes(32))
        release = Release.of(
            manifest, not_before=datetime.now(UTC) - timedelta(hours=1), validity=timedelta(days=1)
        )
        log = _Log([release.sign(owner).to_json()])

        def warm(quote: Quote, now: datetime) -> Collateral:
            return collateral

        evidence = CollateralEvidence(warm, platform.root_certificate)
        report_data = Quote.from_bytes(quote_from_certificate(cert)).report_data
        with _log_server(log) as url:
            certificate_only = EnclaveVerifier(
                evidence,
                EnclavePolicy(
                    manifest.measurement(), NAME, allow_simulation=True, allow_stale=True
                ),
            )
            challenge = ChallengeClient(address, NAME, timeout=10.0)
            releases = OperatorReleaseLog(url, CheckpointStore(Path(tmp) / "logs"), 10.0)
            full = EnclaveVerifier(
                evidence,
                EnclavePolicy(None, NAME, owner=owner.public_key, allow_simulation=True),
                releases=releases,
                fresh=challenge,
            )
            pace = 2.0 / CHALLENGE_RATE  # two challenges an iteration
            times: dict[str, list[float]] = {
                "certificate_only": [],
                "full_user_verification": [],
                "challenge_step": [],
                "release_step": [],
            }
            for _ in range(count):
                began = time.perf_counter()
                certificate_only.verify(fetch_enclave_certificate(address, NAME, timeout=10.0))
                times["certificate_only"].append(time.perf_counter() - began)
                began = time.perf_counter()
                verified = full.verify(fetch_enclave_certificate(address, NAME, timeout=10.0))
                times["full_user_verification"].append(time.perf_counter() - began)
                if (
                    verified.fresh is None
                    or verified.release is None
                    or verified.fresh.quote.report_data == report_data
                ):
                    raise RuntimeError("the full verification did not check freshness and release")
                # Its two new steps alone (the I/O and the checks of each).
                step = time.perf_counter()
                challenge(cert)
                times["challenge_step"].append(time.perf_counter() - step)
                step = time.perf_counter()
                releases(owner.public_key, manifest.measurement(), datetime.now(UTC))
                times["release_step"].append(time.perf_counter() - step)
                time.sleep(max(pace - (time.perf_counter() - began), 0.0))
    figures = {
        "python": platform_module.python_version(),
        "verifications": count,
        **{key: _ms(values) for key, values in times.items()},
        "checks": [check.name for check in verified.quote.checks],
    }
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    print(f"user verification on loopback, {count} of each, warm collateral")
    for label, key in (
        ("certificate only (quote, name)", "certificate_only"),
        ("full (quote, name, challenge, statement, log proofs)", "full_user_verification"),
        ("  of which: the challenge (pinned connection, new quote)", "challenge_step"),
        ("  of which: the release (statement, inclusion, consistency)", "release_step"),
    ):
        f = figures[key]
        assert isinstance(f, dict)  # noqa: S101 - built above
        print(
            f"  {label:<55} median {f['median_ms']} ms  p90 {f['p90_ms']} ms  max {f['max_ms']} ms"
        )


if __name__ == "__main__":
    raise SystemExit(main())
