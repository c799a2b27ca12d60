"""The runtime image's pinned dependencies are exactly what the runtime environment measures."""

from __future__ import annotations

import re
from pathlib import Path

from confide.gramine import runtime_environment
from confide.gramine._markers import normalize

ROOT = Path(__file__).resolve().parents[3]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text()
    found = {normalize(m.group(1)): m.group(2) for m in PIN.finditer(text)}
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 2 * len(found), "a line is neither a comment nor a hashed pin"
    return found


def test_the_image_pins_every_measured_distribution_at_its_version(tmp_path: Path) -> None:
    measured = {
        normalize(d.split("==")[0]): d.split("==")[1]
        for d in runtime_environment(cache_dir=tmp_path).distributions
    }
    assert _pins("gramine-image.txt") == measured, (
        "regenerate requirements/gramine-image.txt (its header says how)"
    )


def test_the_containerfile_pins_its_base_by_digest_and_installs_by_hash() -> None:
    text = (ROOT / "Containerfile").read_text()
    assert re.search(r"^ARG GRAMINE_IMAGE=\S+:\S+@sha256:[0-9a-f]{64}$", text, re.M)
    assert text.count("--require-hashes") == 2
    assert set(_pins("gramine-build.txt")) == {"setuptools", "wheel"}
