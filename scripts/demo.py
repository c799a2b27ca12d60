"""`make demo`: the attestation core, end to end, with the `confide` command.

1. A simulated TEE signs a quote for an enclave measurement.
2. The quote verifies against the simulation root, with --allow-simulation.
3. The same quote is rejected without --allow-simulation, and against Intel's root.
4. A quote with one tampered byte of its measurement is rejected.
5. A real Intel SGX quote verifies against Intel's root (when ../shared/vectors is present).

Each step prints the command it runs and checks its exit code.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIDE = [str(Path(sys.executable).parent / "confide")]
MRENCLAVE = "c0" * 32
MRSIGNER = "5e" * 32
REPORT_DATA = "00" * 32 + "ab" * 32


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(args: list[str], *, expect: int) -> subprocess.CompletedProcess[str]:
    shown = " ".join(shlex.quote(a) for a in ["confide", *args])
    print(f"$ {shown}", flush=True)
    proc = subprocess.run([*CONFIDE, *args], capture_output=True, text=True, check=False)  # noqa: S603
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if proc.returncode != expect:
        print(f"demo failed: exit code {proc.returncode}, expected {expect}", file=sys.stderr)
        raise SystemExit(1)
    print(f"(exit {proc.returncode}, as expected)", flush=True)
    return proc


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="confide-demo-") as tmp:
        work = Path(tmp)
        quote, coll, root = work / "quote.bin", work / "collateral.json", work / "sim-root.pem"

        step("1. A simulated TEE signs a quote for an enclave")
        run(
            [
                "sim",
                "quote",
                "--state",
                str(work / "platform"),
                "--mrenclave",
                MRENCLAVE,
                "--mrsigner",
                MRSIGNER,
                "--report-data",
                REPORT_DATA,
                "--out",
                str(quote),
                "--collateral-out",
                str(coll),
                "--root-out",
                str(root),
            ],
            expect=0,
        )

        step("2. The app owner verifies it, explicitly accepting the simulation root")
        verify = ["attest", "quote", str(quote), "--collateral", str(coll)]
        run(
            [*verify, "--root-ca", str(root), "--allow-simulation", "--mrenclave", MRENCLAVE],
            expect=0,
        )

        step("3. Without --allow-simulation, and against Intel's root, it is rejected")
        run([*verify, "--root-ca", str(root)], expect=1)
        run(verify, expect=1)

        step("4. The expected code differs: rejected, naming the measurement")
        run(
            [*verify, "--root-ca", str(root), "--allow-simulation", "--mrenclave", "c1" * 32],
            expect=1,
        )

        step("5. One byte of the quote's MRENCLAVE is flipped: the signature no longer holds")
        raw = bytearray(quote.read_bytes())
        raw[48 + 64] ^= 0x01  # header (48) + cpusvn..attributes (64): first MRENCLAVE byte
        tampered = work / "tampered.bin"
        tampered.write_bytes(bytes(raw))
        run(
            [
                "attest",
                "quote",
                str(tampered),
                "--collateral",
                str(coll),
                "--root-ca",
                str(root),
                "--allow-simulation",
                "--json",
            ],
            expect=1,
        )

        vectors = ROOT.parent / "shared" / "vectors" / "sgx-dcapqvl-00A067110000"
        if vectors.is_dir():
            step(
                "6. A real Intel SGX quote verifies against Intel's root, at its collateral's time"
            )
            expected = json.loads((vectors / "expected.json").read_text())
            run(
                [
                    "attest",
                    "quote",
                    str(vectors / "quote.bin"),
                    "--collateral",
                    str(vectors / "collateral.json"),
                    "--at",
                    str(expected["verification_time"]),
                    "--accept-tcb",
                    expected["dcap_qvl_0_7_0_result"]["status"],
                ],
                expect=0,
            )
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
