"""The runtime builds an sdist only when the owner allowed it in the measured lock, its hash
is the locked one, and its build backend is locked too (ADR 0024, 2026-12-03 amendment).

The sdists are built by the test; the backends (flit_core, setuptools) are real wheels from
the package index (pip's cache first). Each refusal case names its error code; the good
lock of the same table installs (so no case passes because nothing works)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from confide.errors import RequirementError
from confide.runtime import install_locked
from confide.wire import BUILD, SDIST, WHEEL, LockedRequirement, RequirementsLock
from support.wheels import cache_wheel, download_wheels, sdist_bytes, wheel_bytes

SDIST_FLIT = sdist_bytes("tinypkg", "1.0")
SDIST_LEGACY = sdist_bytes("legacypkg", "2.0", backend="legacy")
DEP = wheel_bytes("tinydep", "1.0")


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("backends")
    try:
        found = download_wheels(folder, "flit_core", "setuptools")
    except (subprocess.SubprocessError, OSError) as exc:  # pragma: no cover - offline machine
        pytest.skip(f"the package index is not reachable: {exc}")
    return {name: path.read_bytes() for name, path in found.items()} | {
        f"{name} version": path.name.split("-")[1].encode() for name, path in found.items()
    }


def _backend(b: dict[str, bytes], name: str) -> LockedRequirement:
    return _entry(name, b[f"{name} version"].decode(), b[name], BUILD)


def _entry(name: str, version: str, data: bytes, kind: str) -> LockedRequirement:
    return LockedRequirement(name, version, hashlib.sha256(data).digest(), kind)


def _lock(*entries: LockedRequirement, allow: tuple[str, ...] = ()) -> RequirementsLock:
    return RequirementsLock(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        platform="manylinux_2_28_x86_64",
        source="tests",
        requirements=tuple(sorted(entries, key=lambda r: r.name)),
        allow_sdists=allow,
    )


def _cache(folder: Path, *files: bytes) -> Path:
    for data in files:
        cache_wheel(folder, data)
    return folder


def _good(backends: dict[str, bytes], cache: Path) -> RequirementsLock:
    flit = backends["flit-core"]
    _cache(cache, SDIST_FLIT, flit, DEP)
    return _lock(
        _entry("tinypkg", "1.0", SDIST_FLIT, SDIST),
        _backend(backends, "flit-core"),
        _entry("tinydep", "1.0", DEP, WHEEL),
        allow=("tinypkg",),
    )


def _import(site: Path, module: str) -> str:
    done = subprocess.run(  # noqa: S603 - our argv
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(site)!r}); "
            f"import {module}; print({module}.BUILT, {module}.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_an_allowed_sdist_is_built_with_its_locked_backend_and_imported(
    backends: dict[str, bytes], tmp_path: Path
) -> None:
    lock = _good(backends, tmp_path / "cache")
    site = tmp_path / "code" / "site"
    installed = install_locked(lock, tmp_path / "cache", site, tmp_path / "code" / "scratch")
    assert [r.pin for r in installed] == ["tinydep==1.0", "tinypkg==1.0"]
    out = _import(site, "tinypkg")
    assert out.startswith("from its sdist " + str(site))
    assert (site / "tinypkg-1.0.dist-info" / "METADATA").is_file()
    assert not (site / "flit_core").exists()  # the backend stays out of the app's site


def test_an_sdist_without_pyproject_builds_with_setuptools_legacy_backend(
    backends: dict[str, bytes], tmp_path: Path
) -> None:
    setuptools = backends["setuptools"]
    cache = _cache(tmp_path / "cache", SDIST_LEGACY, setuptools)
    lock = _lock(
        _entry("legacypkg", "2.0", SDIST_LEGACY, SDIST),
        _backend(backends, "setuptools"),
        allow=("legacypkg",),
    )
    site = tmp_path / "site"
    install_locked(lock, cache, site, tmp_path / "scratch")
    assert _import(site, "legacypkg").startswith("from its sdist")


def _not_allowed(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    good = _good(b, cache)
    return _lock(*good.requirements)  # the same lock, without the owner's opt-in


def _allowed_other(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    good = _good(b, cache)
    return _lock(*good.requirements, allow=("otherpkg",))


def _unlocked_backend(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    good = _good(b, cache)
    return _lock(*(r for r in good.requirements if r.kind != BUILD), allow=("tinypkg",))


def _wrong_backend(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    good = _good(b, cache)
    setuptools = b["setuptools"]
    _cache(cache, setuptools)
    rest = [r for r in good.requirements if r.kind != BUILD]
    return _lock(*rest, _backend(b, "setuptools"), allow=("tinypkg",))


TAMPERED = SDIST_FLIT[:-8] + bytes(8)


def _tampered(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    lock = _good(b, cache)
    cache_wheel(cache, TAMPERED, sha256=hashlib.sha256(SDIST_FLIT).digest())
    return lock


def _tampered_backend(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    lock = _good(b, cache)
    flit = b["flit-core"]
    cache_wheel(cache, flit[:-8] + bytes(8), sha256=hashlib.sha256(flit).digest())
    return lock


def _in_tree_backend(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    sdist = sdist_bytes(
        "tinypkg",
        "1.0",
        extra={
            "pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "b"\n'
            b'backend-path = ["."]\n',
            "b.py": b"def build_wheel(d, *a):\n    raise SystemExit('ran')\n",
        },
        backend="legacy",
    )
    _cache(cache, sdist)
    return _lock(_entry("tinypkg", "1.0", sdist, SDIST), allow=("tinypkg",))


def _failing_build(b: dict[str, bytes], cache: Path) -> RequirementsLock:
    setuptools = b["setuptools"]
    sdist = sdist_bytes(
        "tinypkg", "1.0", backend="legacy", extra={"setup.py": b"raise SystemExit('no')\n"}
    )
    _cache(cache, sdist, setuptools)
    return _lock(
        _entry("tinypkg", "1.0", sdist, SDIST),
        _backend(b, "setuptools"),
        allow=("tinypkg",),
    )


CASES: dict[str, tuple[str, Callable[[dict[str, bytes], Path], RequirementsLock]]] = {
    "sdist not allowed": ("requirements.sdist_not_allowed", _not_allowed),
    "another sdist allowed": ("requirements.sdist_not_allowed", _allowed_other),
    "backend not locked": ("requirements.backend_not_locked", _unlocked_backend),
    "another backend locked": ("requirements.backend_not_locked", _wrong_backend),
    "in-tree backend": ("requirements.backend_not_locked", _in_tree_backend),
    "tampered sdist": ("requirements.hash_mismatch", _tampered),
    "tampered backend": ("requirements.hash_mismatch", _tampered_backend),
    "build fails": ("requirements.build_failed", _failing_build),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_sdist_is_refused_unless_allowed_checked_and_its_backend_locked(
    case: str, backends: dict[str, bytes], tmp_path: Path
) -> None:
    code, make = CASES[case]
    cache = tmp_path / "cache"
    lock = make(backends, cache)
    site = tmp_path / "site"
    with pytest.raises(RequirementError) as caught:
        install_locked(lock, cache, site, tmp_path / "scratch")
    assert caught.value.code == code, str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (site / "tinypkg").exists()  # nothing of the sdist was installed
    # guard: the good lock installs with the same backends, so the case is not vacuous
    good_cache = tmp_path / "good"
    install_locked(_good(backends, good_cache), good_cache, tmp_path / "g", tmp_path / "gs")


def test_a_tampered_sdist_is_refused_with_both_hashes(
    backends: dict[str, bytes], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    lock = _tampered(backends, cache)
    with pytest.raises(RequirementError, match="sha256 observed") as caught:
        install_locked(lock, cache, tmp_path / "site", tmp_path / "scratch")
    message = str(caught.value)
    assert hashlib.sha256(TAMPERED).hexdigest() in message
    assert hashlib.sha256(SDIST_FLIT).hexdigest() in message
    assert "sdist of tinypkg==1.0" in message


def test_an_sdist_not_allowed_is_refused_before_any_wheel_is_installed(
    backends: dict[str, bytes], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    lock = _not_allowed(backends, cache)
    site = tmp_path / "site"
    with pytest.raises(RequirementError, match="did not allow"):
        install_locked(lock, cache, site, tmp_path / "scratch")
    assert not (site / "tinydep").exists()
