"""Source distributions by the owner's opt-in (ADR 0024, 2026-12-03 amendment): deploy locks
the sdist by hash and its build backend as build-only wheels; the operator caches them; the
runtime builds the sdist and the app imports it.

The sdist is built by the test and served by a PEP 503 index on 127.0.0.1; its build backend
(flit_core) and its dependency (six) are real wheels resolved by pip from the package index."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from confide.client._config import ProjectConfig
from confide.client._requirements import Target, declared_requirements, lock_for_deploy
from confide.errors import UsageError
from confide.operator._wheels import WheelCache
from confide.runtime import install_locked
from confide.wire import BUILD, SDIST, WHEEL, RequirementsLock
from support.wheels import cache_wheel, index_page, pep503_index, sdist_bytes

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TARGET = Target(python=f"{sys.version_info.major}.{sys.version_info.minor}")
PKG_INFO = b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\nRequires-Dist: six==1.16.0\n"
SDIST_DATA = sdist_bytes("tinypkg", "1.0", extra={"PKG-INFO": PKG_INFO})


def _project(folder: Path, top: str) -> ProjectConfig:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "tests").mkdir(exist_ok=True)
    (folder / "src" / "app.py").write_text("app = None\n")
    (folder / "confide.toml").write_text(
        'name = "deps"\npython_application = "app:app"\nhealthcheck_endpoint = "/"\n'
        f'tests_cmd = "pytest"\ntests_requirements = []\n{top}\n'
        '[cloud]\ncode = "src"\ntests = "tests"\nproject = "default"\nhardware = "small"\n'
    )
    return ProjectConfig.load(folder, now=NOW)


def _files(data: bytes = SDIST_DATA, page_of: bytes = SDIST_DATA) -> dict[str, bytes]:
    return {
        "/simple/tinypkg/": index_page("tinypkg-1.0.tar.gz", page_of),
        "/files/tinypkg-1.0.tar.gz": data,
    }


def test_the_opt_in_is_part_of_what_was_declared(tmp_path: Path) -> None:
    plain = declared_requirements(_project(tmp_path / "a", 'requirements = ["tinypkg==1.0"]'))
    opted = declared_requirements(
        _project(tmp_path / "b", 'requirements = ["tinypkg==1.0"]\nallow_sdists = ["TinyPkg"]')
    )
    assert plain is not None and opted is not None
    assert opted.allow_sdists == ("tinypkg",) and plain.allow_sdists == ()
    assert opted.source != plain.source  # a lock written without the opt-in is not reused


def test_an_allowed_sdist_is_locked_built_in_the_runtime_and_imported(tmp_path: Path) -> None:
    config = _project(tmp_path, 'requirements = ["tinypkg==1.0"]\nallow_sdists = ["tinypkg"]')
    with pep503_index(_files()) as url:
        try:
            choice = lock_for_deploy(config, provided=lambda: (), target=TARGET, index_url=url)
        except UsageError as exc:  # pragma: no cover - offline machine
            if "pip could not resolve" in str(exc) and "connection" in str(exc).lower():
                pytest.skip(f"the package index is not reachable: {exc}")
            raise
    assert choice is not None
    lock = choice.lock
    kinds = {r.name: r.kind for r in lock.requirements}
    assert kinds == {"flit-core": BUILD, "six": WHEEL, "tinypkg": SDIST}
    assert lock.allow_sdists == ("tinypkg",) and lock.version == 2
    assert lock.of_kind(SDIST)[0].sha256 == hashlib.sha256(SDIST_DATA).digest()
    assert RequirementsLock.from_bytes(choice.path.read_bytes()) == lock
    # The operator caches the sdist (served by the test's index) and the wheels (pip).
    cache = WheelCache(tmp_path / "cache")
    cache_wheel(cache.root, SDIST_DATA)
    cache.fetch(lock)
    assert cache.missing(lock) == []
    site = tmp_path / "enclave" / "site"
    installed = install_locked(lock, cache.wheels_dir, site, tmp_path / "enclave" / "scratch")
    assert [r.name for r in installed] == ["six", "tinypkg"]
    done = subprocess.run(  # noqa: S603 - our argv
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(site)!r}); import tinypkg, six; "
            "print(tinypkg.BUILT, tinypkg.__file__.startswith(sys.path[0]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "from its sdist True"


def test_deploy_says_plainly_that_build_code_runs_in_the_enclave(tmp_path: Path) -> None:
    from confide.client._deploy import announce_lock
    from confide.client._requirements import Declared, LockChoice
    from confide.wire import LockedRequirement

    lock = RequirementsLock(
        python="3.11",
        platform="manylinux_2_28_x86_64",
        source="tests",
        requirements=(
            LockedRequirement("flit-core", "3.9.0", bytes(32), BUILD),
            LockedRequirement("tinypkg", "1.0", bytes(32), SDIST),
        ),
        allow_sdists=("tinypkg",),
    )
    said: list[str] = []

    class Events:
        def step(self, text: str) -> None:
            said.append(text)

    choice = LockChoice(lock, tmp_path / "requirements.lock", Declared((), "tests", "x"), False)
    announce_lock(choice, Events())  # type: ignore[arg-type]
    text = "\n".join(said)
    assert "tinypkg==1.0" in text and "SOURCE DISTRIBUTION" in text
    assert "build code will run in the enclave" in text
    assert "flit-core==3.9.0" in text and "build-only" in text


REFUSED = {
    "not declared": ('requirements = ["six"]\nallow_sdists = ["tinypkg"]', _files(), "declare"),
    "not pinned": (
        'requirements = ["tinypkg>=1"]\nallow_sdists = ["tinypkg"]',
        _files(),
        "pinned",
    ),
    "index serves another file": (
        'requirements = ["tinypkg==1.0"]\nallow_sdists = ["tinypkg"]',
        _files(data=sdist_bytes("tinypkg", "1.0", extra={"x.py": b"1"})),
        f"expected {hashlib.sha256(SDIST_DATA).hexdigest()}",
    ),
    "no such sdist": (
        'requirements = ["tinypkg==2.0"]\nallow_sdists = ["tinypkg"]',
        _files(),
        "no source distribution tinypkg-2.0",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_sdist_is_locked_only_when_declared_pinned_and_as_published(
    case: str, tmp_path: Path
) -> None:
    top, files, expected = REFUSED[case]
    config = _project(tmp_path, top)
    with pep503_index(files) as url, pytest.raises(UsageError, match=expected):
        lock_for_deploy(config, provided=lambda: (), target=TARGET, index_url=url, pip=["false"])
    assert not (tmp_path / "requirements.lock").exists()
