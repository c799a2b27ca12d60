"""The runtime environment's measurement: what changes the simulated fingerprint, and what not.

Every test works on copies in a temporary folder (support.gramine_env), never on the real
environment. The acceptance rows: one byte of h11, of uvicorn, of a standard-library
module or of the manifest changes the simulated fingerprint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.gramine import (
    RuntimeEnvironment,
    gramine_manifest,
    runtime_environment,
    simulated_mrenclave,
)
from confide.gramine._environment import EnvironmentRoots, scan_environment
from confide.gramine._hashcache import HashCache
from support.gramine_env import LAUNCH, FakeEnvironment, flip_one_byte, make_fake_environment


@pytest.fixture
def fake(tmp_path: Path) -> FakeEnvironment:
    return make_fake_environment(tmp_path / "env")


# Each row: a file of the fake environment whose one changed byte must change the fingerprint.
MEASURED = {
    "h11 (a dependency of uvicorn)": "site/h11/_readers.py",
    "uvicorn": "site/uvicorn/main.py",
    "click (a dependency of uvicorn)": "site/click/core.py",
    "uvicorn's metadata": "site/uvicorn-0.54.0.dist-info/METADATA",
    "a standard-library module": "lib/python3/os.py",
    "a standard-library package": "lib/python3/json/decoder.py",
    "the interpreter": "bin/python3",
    "libpython": "lib/libpython3.so.1.0",
}


@pytest.mark.parametrize("relative", MEASURED.values(), ids=MEASURED.keys())
def test_one_byte_changes_the_simulated_fingerprint(fake: FakeEnvironment, relative: str) -> None:
    before = fake.fingerprint()
    target = fake.root / relative
    assert any(f.path == target for f in fake.scan().files), "the file is not even listed"
    flip_one_byte(target)
    assert fake.fingerprint() != before


# Each row: a change that must not change the fingerprint (it cannot run in the runtime).
NOT_MEASURED = {
    "a distribution the runtime does not need": "site/flask/app.py",
    "a standard-library test folder": "lib/python3/test/left_out.py",
    "a nested test folder": "lib/python3/json/tests/left_out.py",
    "byte code": "lib/python3/__pycache__/left_out.py",
    "the interpreter's site-packages": "lib/python3/site-packages/left_out.py",
}


@pytest.mark.parametrize("relative", NOT_MEASURED.values(), ids=NOT_MEASURED.keys())
def test_what_cannot_run_is_left_out(fake: FakeEnvironment, relative: str) -> None:
    before = fake.fingerprint()
    target = fake.root / relative
    assert target.is_file()
    flip_one_byte(target)
    assert fake.fingerprint() == before


def test_the_closure_follows_requirements_and_evaluates_markers(fake: FakeEnvironment) -> None:
    env = fake.scan()
    names = {d.split("==")[0].lower() for d in env.distributions}
    # uvicorn needs click and h11; typing_extensions only before 3.11, colorama only on Windows.
    assert names == {"uvicorn", "h11", "click"}


def test_a_missing_requirement_fails(fake: FakeEnvironment) -> None:
    shutil.rmtree(fake.root / "site" / "h11-0.16.0.dist-info")
    with pytest.raises(UsageError, match="'h11', which is not installed"):
        fake.scan()


def test_the_digest_is_location_independent(fake: FakeEnvironment, tmp_path: Path) -> None:
    moved = FakeEnvironment(tmp_path / "elsewhere" / "env")
    shutil.copytree(fake.root, moved.root, symlinks=True)
    assert moved.scan().digest == fake.scan().digest
    assert moved.scan().files[0].path != fake.scan().files[0].path


def test_one_byte_of_the_gramine_manifest_changes_the_simulated_mrenclave(
    fake: FakeEnvironment,
) -> None:
    env = fake.scan()
    text = gramine_manifest(
        LAUNCH, ["python3", "-c", "pass"], env, enclave_size="1G", max_threads=16,
        package=Path("package"), state_dir=Path("state"),
    )  # fmt: skip
    changed = text.replace("sgx.max_threads = 16", "sgx.max_threads = 17")
    assert changed != text
    assert simulated_mrenclave(changed) != simulated_mrenclave(text)
    assert len(simulated_mrenclave(text)) == 32


def test_one_byte_of_the_launch_manifest_changes_the_fingerprint(fake: FakeEnvironment) -> None:
    env = fake.scan()
    base = LAUNCH.to_dict() | {"runtime_sha256": env.digest.hex()}
    changed = base | {"application": "app:apq"}
    from confide.wire import LaunchManifest

    assert (
        LaunchManifest.from_dict(changed).measurement()
        != LaunchManifest.from_dict(base).measurement()
    )


def test_the_real_environment_holds_confide_and_its_dependencies(tmp_path: Path) -> None:
    env = runtime_environment(cache_dir=tmp_path)
    labels = {f.label for f in env.files}
    names = {d.split("==")[0].lower() for d in env.distributions}
    assert {"h11", "uvicorn", "hypercorn", "cryptography", "typer"} <= names
    assert "flask" not in names and "pytest" not in names  # extras are not followed
    assert "site/confide/runtime/_runtime.py" in labels
    assert "site/confide/gramine/_environment.py" in labels
    assert not any(label.startswith("site/confide/operator/") for label in labels)
    # Compiled or C files of Confide's own (the relay's core, ADR 0028) are never measured.
    assert not any(
        label.startswith("site/confide/") and label.endswith((".so", ".c", ".pyi"))
        for label in labels
    )
    assert any(label.startswith("stdlib/json/") for label in labels)
    assert any(label.startswith("interpreter/") for label in labels)
    assert runtime_environment(["flask"], cache_dir=tmp_path).digest != env.digest


def test_confide_without_its_metadata_fails(fake: FakeEnvironment, tmp_path: Path) -> None:
    package = tmp_path / "confide"
    package.mkdir()
    roots = fake.roots
    with_confide = EnvironmentRoots(
        interpreter=roots.interpreter, libraries=roots.libraries, stdlib=roots.stdlib,
        site=roots.site, confide_package=package,
    )  # fmt: skip
    with pytest.raises(UsageError, match="dependencies cannot be measured"):
        scan_environment(with_confide, [], HashCache(None, now_ns=0))


def test_confide_is_measured_from_its_package_folder(fake: FakeEnvironment, tmp_path: Path) -> None:
    info = fake.root / "site" / "confide-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Name: confide\nRequires-Dist: uvicorn\n\nbody\n")
    package = tmp_path / "confide"
    (package / "operator").mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "operator" / "_api.py").write_text("y = 1\n")
    roots = fake.roots
    with_confide = EnvironmentRoots(
        interpreter=roots.interpreter, libraries=roots.libraries, stdlib=roots.stdlib,
        site=roots.site, confide_package=package,
    )  # fmt: skip

    def scan() -> RuntimeEnvironment:
        return scan_environment(with_confide, [], HashCache(None, now_ns=0))

    def digest() -> bytes:
        return scan().digest

    # Confide's own requirements (uvicorn, so h11 and click) come from its metadata.
    assert {d.split("==")[0] for d in scan().distributions} == {"uvicorn", "h11", "click"}
    first = digest()
    (package / "operator" / "_api.py").write_text("y = 2\n")
    assert digest() == first, "the operator never runs in the enclave"
    # The relay's compiled loop (ADR 0028): built or not, by whatever compiler, it is not
    # measured, so an owner's prediction does not depend on either machine's compiler.
    for name in ("_relaycore.cpython-311-x86_64-linux-gnu.so", "_relaycore.c", "_relaycore.pyi"):
        (package / "operator" / name).write_bytes(os.urandom(64))
        assert digest() == first, f"operator/{name} changed the measurement"
    (package / "__init__.py").write_text("x = 2\n")
    assert digest() != first


def test_a_process_launched_as_the_manifest_says_finds_the_same_digest(tmp_path: Path) -> None:
    """The runtime under Gramine runs the resolved interpreter with the manifest's fixed
    PYTHONPATH (no virtual environment): it must measure the same environment.

    Something else in a full test run rewrites a file of the shared environment at times
    (certifi's cacert.pem was seen rewritten with the same bytes mid-run; the writer is not
    found yet), so one comparison can catch a file half written: a difference must show in
    three attempts in a row to fail (a real difference shows every time)."""
    import json
    import os
    import subprocess
    import tomllib

    for _ in range(3):
        env = runtime_environment(cache_dir=tmp_path)
        text = gramine_manifest(
            LAUNCH, ["python3"], env, enclave_size="1G", max_threads=8,
            package=Path("package"), state_dir=Path("state"),
        )  # fmt: skip
        loader = tomllib.loads(text)["loader"]
        probe = (
            "import sys; from pathlib import Path; from confide.gramine import runtime_environment;"
            "e = runtime_environment(cache_dir=Path(sys.argv[1])); import json;"
            "print(json.dumps([e.digest.hex(), {f.label: f.sha256.hex() for f in e.files}]))"
        )
        done = subprocess.run(
            [tomllib.loads(text)["libos"]["entrypoint"], "-c", probe, str(tmp_path)],
            # The fixed values (the passthrough ones, where to listen, are the host's).
            env={**{k: v for k, v in loader["env"].items() if isinstance(v, str)},
                 "PATH": os.environ.get("PATH", "")},
            capture_output=True, text=True, check=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        digest, child = json.loads(done.stdout)
        mine = {f.label: f.sha256.hex() for f in env.files}
        if child == mine and digest == env.digest.hex():
            break
    assert set(child) ^ set(mine) == set()
    assert [k for k in mine if mine[k] != child[k]] == []
    assert digest == env.digest.hex()
