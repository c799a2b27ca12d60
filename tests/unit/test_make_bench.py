"""``make bench`` installs what its benchmarks compare with (as ``make test`` does PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _recipe(target: str) -> list[str]:
    """The commands of a Makefile target, in order."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_bench_installs_haproxy_before_the_router_benchmark() -> None:
    recipe = _recipe("bench")
    assert "$(BIN)/python bench/bench_router.py" in recipe
    assert "scripts/haproxy.sh" in recipe
    assert recipe.index("scripts/haproxy.sh") < recipe.index("$(BIN)/python bench/bench_router.py")


def test_the_haproxy_script_is_executable_bash() -> None:
    script = ROOT / "scripts" / "haproxy.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)  # noqa: S603, S607
