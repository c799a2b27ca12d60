"""Locked requirements under Gramine (ADR 0024): the lock and each wheel are trusted files with
the lock's hashes, mounted where the measured argv names them; nothing about them is allowed."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.gramine import app_manifest, lint_manifest
from support.gramine_env import LAUNCH, FakeEnvironment, make_fake_environment
from support.wheels import lock_of, wheel_bytes

LOCK = lock_of(("tinydep", "1.0", wheel_bytes("tinydep", "1.0")))
LOCKED = dataclasses.replace(LAUNCH, requirements_sha256=LOCK.digest())


@pytest.fixture
def fake(tmp_path: Path) -> FakeEnvironment:
    return make_fake_environment(tmp_path / "env")


def test_the_lock_and_its_wheels_are_trusted_with_the_locks_hashes(
    fake: FakeEnvironment,
) -> None:
    text = app_manifest(LOCKED, fake.scan(), lock=LOCK)
    lint_manifest(text)
    m = tomllib.loads(text)
    argv = m["loader"]["argv"]
    assert argv[argv.index("--requirements") + 1] == "/confide/requirements.lock"
    assert argv[argv.index("--wheels") + 1] == "/confide/wheels"
    hashes = {e["uri"]: e["sha256"] for e in m["sgx"]["trusted_files"] if isinstance(e, dict)}
    assert hashes["file:requirements.lock"] == LOCK.digest().hex()
    wheel = LOCK.requirements[0].sha256.hex()
    assert hashes[f"file:wheels/{wheel[:2]}/{wheel[2:]}"] == wheel
    allowed = m["sgx"]["allowed_files"]
    assert not any(a.startswith(("file:wheels", "file:requirements")) for a in allowed)
    mounts = {mount["path"]: mount.get("uri") for mount in m["fs"]["mounts"]}
    assert mounts["/confide/requirements.lock"] == "file:requirements.lock"
    assert mounts["/confide/wheels"] == "file:wheels"
    # One other pin: another MRENCLAVE input (the lock's hash is in the manifest).
    other = lock_of(("tinydep", "1.1", wheel_bytes("tinydep", "1.1")))
    bumped = dataclasses.replace(LAUNCH, requirements_sha256=other.digest())
    assert app_manifest(bumped, fake.scan(), lock=other) != text


@pytest.mark.parametrize("case", ["no lock given", "another lock", "a lock for no launch lock"])
def test_the_lock_must_be_the_one_the_launch_measures(fake: FakeEnvironment, case: str) -> None:
    other = lock_of(("tinydep", "1.1", wheel_bytes("tinydep", "1.1")))
    launch, lock = {
        "no lock given": (LOCKED, None),
        "another lock": (LOCKED, other),
        "a lock for no launch lock": (LAUNCH, LOCK),
    }[case]
    with pytest.raises(UsageError, match="requirements lock the launch measures"):
        app_manifest(launch, fake.scan(), lock=lock)
