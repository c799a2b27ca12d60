"""Benchmark: DCAP quote verifications per second, Confide against dcap-qvl, in one run.

Both verify the SGX vector ``sgx-dcapqvl-00A067110000`` at its verification
time with warm collateral (parsed once, as a service verifying many quotes
holds it). Rounds alternate between the two so that machine noise hits both;
the median round is reported.

Run: ``make bench`` (or ``.venv/bin/python bench/bench_verify.py --rounds 7 --seconds 1``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl

from confide.attestation import Collateral, Policy, verify_quote

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
    args = parser.parse_args()

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
        "python": platform.python_version(),
        "machine": platform.machine(),
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


if __name__ == "__main__":
    raise SystemExit(main())
