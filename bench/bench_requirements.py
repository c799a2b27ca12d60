"""Benchmark: time to running of an app with locked requirements, first and second deploy.

One ``confide operator serve`` (SQLite, simulated TEE, loopback, port 0) with an empty
wheel cache. ``confide deploy`` (the real CLI, as a subprocess) runs, each until the app
is ``running`` (attested, configured, its health check answered):

1. ``plain flask``: ``examples/helloworld`` without its ``requirements.txt`` (no lock:
   Flask from the runtime's environment, as before ADR 0024);
2. ``pandas, 1st``: ``examples/cosmian_pandas`` (Cosmian's mse-ds set: 17 wheels, about
   80 MB), the operator's wheel cache empty: the operator fetches every wheel;
3. ``pandas, 2nd``: the same project and lock again: nothing is fetched;
4. ``plain flask, 2nd``: the first app again, for the noise.

Printed per deploy: the whole ``confide deploy`` time, and from the runtime's log the
time it took to check and install the locked wheels. The operator fetches with pip's
cache off (``PIP_NO_CACHE_DIR``), so the first pandas deploy downloads from the index
(PyPI, or this machine's pip configuration).

Run: ``.venv/bin/python bench/bench_requirements.py`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from support.operators import OperatorProcess, create_token, operator_running  # noqa: E402
from support.runtimes import CONFIDE  # noqa: E402

HELLO: Final = REPO / "examples" / "helloworld"
PANDAS: Final = REPO / "examples" / "cosmian_pandas"
_INSTALLED: Final = re.compile(r"installed (\d+) locked wheel\(s\) .* in ([0-9.]+) s")


def _plain_project(folder: Path) -> Path:
    code = folder / "code"
    shutil.copytree(HELLO, code, ignore=shutil.ignore_patterns("requirements.txt", "__pycache__"))
    (folder / "tests").mkdir()
    project = folder / "confide.toml"
    project.write_text(
        'name = "plain"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        'tests_cmd = "pytest"\ntests_requirements = []\n\n[cloud]\ncode = "code"\n'
        'tests = "tests"\nproject = "default"\nhardware = "small"\n'
    )
    return project


def _pandas_project(folder: Path) -> Path:
    copy = folder / "pandas"
    shutil.copytree(PANDAS, copy, ignore=shutil.ignore_patterns("__pycache__", ".confide"))
    return copy / "mse.toml"


def _deploy(operator: OperatorProcess, token: str, project: Path, workspace: Path) -> float:
    argv = [
        str(CONFIDE), "deploy", "--path", str(project), "--url", operator.api_url,
        "--token", token, "--connect", f"127.0.0.1:{operator.router_port}",
        "--allow-simulation", "-y", "--workspace", str(workspace),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"deploy of {project} failed:\n{done.stderr[-2000:]}")
    return took


def _install_times(data: Path) -> list[tuple[int, float]]:
    found = []
    for log in sorted((data / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime):
        for match in _INSTALLED.finditer(log.read_text(errors="replace")):
            found.append((int(match.group(1)), float(match.group(2))))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="confide-bench-req-") as tmp:
        folder = Path(tmp)
        data = folder / "data"
        os.environ["PIP_NO_CACHE_DIR"] = "1"  # the operator fetches from the index
        try:
            with operator_running(data) as operator:
                token = create_token(data, "bench")
                plain = _plain_project(folder / "plain")
                pandas = _pandas_project(folder)
                rows = [
                    ("plain flask", _deploy(operator, token, plain, folder / "w1")),
                    ("pandas, 1st deploy", _deploy(operator, token, pandas, folder / "w2")),
                    ("pandas, 2nd deploy", _deploy(operator, token, pandas, folder / "w3")),
                    ("plain flask, 2nd", _deploy(operator, token, plain, folder / "w4")),
                ]
                installs = _install_times(data)
        finally:
            os.environ.pop("PIP_NO_CACHE_DIR", None)
    print(f"{'deploy':<20} {'time to running':>16}")
    for name, took in rows:
        print(f"{name:<20} {took:>15.1f}s")
    for count, took in installs:
        print(f"runtime: checked and installed {count} locked wheels in {took:.2f} s")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average at start {load[0]:.1f}, "
        f"at end {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
