"""The runtime installs a wheel only when it is the locked one, and extracts it within bounds.

Every refusal case names the error code it must raise; a guard checks that the good
wheels of the same table do install (so no case passes because nothing works)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from confide.errors import RequirementError
from confide.runtime import _requirements as installer
from confide.runtime import install_locked
from confide.wire import LockedRequirement, RequirementsLock
from support.wheels import cache_wheel, lock_of, wheel_bytes

GOOD = wheel_bytes("tinydep", "1.0")
OTHER = wheel_bytes("otherdep", "2.0")


def _install(cache: Path, lock: RequirementsLock, tmp: Path) -> Path:
    site = tmp / "code" / "site"
    install_locked(lock, cache, site, tmp / "code" / "scratch")
    return site


def test_locked_wheels_install_into_the_private_site(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache_wheel(cache, GOOD)
    cache_wheel(cache, OTHER)
    lock = lock_of(("tinydep", "1.0", GOOD), ("otherdep", "2.0", OTHER))
    site = _install(cache, lock, tmp_path)
    assert (site / "tinydep" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert (site / "otherdep-2.0.dist-info" / "METADATA").is_file()
    assert not any((tmp_path / "code" / "scratch").iterdir())  # checked copies removed


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        data = b"import os; os.system('echo built')\n"
        info = tarfile.TarInfo("evil-1.0/setup.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _tampered(cache: Path) -> tuple[RequirementsLock, str]:
    lock = lock_of(("tinydep", "1.0", GOOD))
    bad = GOOD[:-10] + bytes(10)
    cache_wheel(cache, bad, sha256=hashlib.sha256(GOOD).digest())
    return lock, hashlib.sha256(bad).hexdigest()


def _with(name: str, version: str, data: bytes, cache: Path) -> RequirementsLock:
    cache_wheel(cache, data)
    return lock_of((name, version, data))


CASES: dict[str, tuple[str, Callable[[Path], RequirementsLock]]] = {
    "missing from the cache": ("requirements.missing", lambda c: lock_of(("tinydep", "1.0", GOOD))),
    "tampered": ("requirements.hash_mismatch", lambda c: _tampered(c)[0]),
    "source distribution": ("requirements.not_a_wheel", lambda c: _with("evil", "1.0", _tar(), c)),
    "another version": (
        "requirements.not_a_wheel",
        lambda c: _with("tinydep", "1.1", wheel_bytes("tinydep", "1.0"), c),
    ),
    "another distribution": (
        "requirements.not_a_wheel",
        lambda c: _with("tinydep", "1.0", wheel_bytes("evil", "1.0"), c),
    ),
    "parent path": (
        "requirements.unsafe_wheel",
        lambda c: _with("evil", "1.0", wheel_bytes("evil", "1.0", {"../evil.py": b"x"}), c),
    ),
    "deep parent path": (
        "requirements.unsafe_wheel",
        lambda c: _with("evil", "1.0", wheel_bytes("evil", "1.0", {"evil/../../x.py": b"x"}), c),
    ),
    "absolute path": (
        "requirements.unsafe_wheel",
        lambda c: _with("evil", "1.0", wheel_bytes("evil", "1.0", {"/tmp/evil.py": b"x"}), c),
    ),
    "backslash path": (
        "requirements.unsafe_wheel",
        lambda c: _with("evil", "1.0", wheel_bytes("evil", "1.0", {"evil\\..\\x.py": b"x"}), c),
    ),
    "symbolic link": (
        "requirements.unsafe_wheel",
        lambda c: _with("evil", "1.0", wheel_bytes("evil", "1.0", symlink="/etc/passwd"), c),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wheel_that_is_not_the_locked_one_is_refused(case: str, tmp_path: Path) -> None:
    code, make = CASES[case]
    cache = tmp_path / "cache"
    lock = make(cache)
    with pytest.raises(RequirementError) as caught:
        _install(cache, lock, tmp_path)
    assert caught.value.code == code, str(caught.value)
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "x.py").exists()
    site = tmp_path / "code" / "site"
    assert not (site / "evil" / "__init__.py").exists() or code == "requirements.unsafe_wheel"


def test_a_tampered_wheel_is_refused_with_both_hashes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lock, observed = _tampered(cache)
    with pytest.raises(RequirementError) as caught:
        _install(cache, lock, tmp_path)
    message = str(caught.value)
    assert f"observed {observed}" in message
    assert f"expected {hashlib.sha256(GOOD).hexdigest()}" in message
    assert not (tmp_path / "code" / "site" / "tinydep").exists()  # nothing installed


def test_a_link_in_the_cache_is_not_followed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    real = tmp_path / "real.whl"
    real.write_bytes(GOOD)
    target = cache_wheel(cache, GOOD)
    target.unlink()
    os.symlink(real, target)
    with pytest.raises(RequirementError) as caught:
        _install(cache, lock_of(("tinydep", "1.0", GOOD)), tmp_path)
    assert caught.value.code == "requirements.unreadable"


def test_two_wheels_writing_one_file_are_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = wheel_bytes("onedep", "1.0", {"shared/mod.py": b"a = 1\n"})
    second = wheel_bytes("twodep", "1.0", {"shared/mod.py": b"a = 2\n"})
    cache_wheel(cache, first)
    cache_wheel(cache, second)
    with pytest.raises(RequirementError, match="another locked wheel wrote") as caught:
        _install(cache, lock_of(("onedep", "1.0", first), ("twodep", "1.0", second)), tmp_path)
    assert caught.value.code == "requirements.unsafe_wheel"


@pytest.mark.parametrize(
    ("bound", "value", "code"),
    [
        ("MAX_WHEEL_SIZE", 100, "requirements.too_large"),
        ("MAX_WHEELS_TOTAL", 100, "requirements.too_large"),
        ("MAX_WHEEL_ENTRIES", 2, "requirements.unsafe_wheel"),
        ("MAX_ENTRY_SIZE", 5, "requirements.unsafe_wheel"),
        ("MAX_EXTRACTED", 5, "requirements.unsafe_wheel"),
        ("MAX_PATH_LENGTH", 5, "requirements.unsafe_wheel"),
    ],
)
def test_every_bound_is_enforced(
    bound: str, value: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache_wheel(cache, GOOD)
    lock = lock_of(("tinydep", "1.0", GOOD))
    _install(cache, lock, tmp_path / "guard")  # within the real bounds it installs
    monkeypatch.setattr(installer, bound, value)
    with pytest.raises(RequirementError) as caught:
        _install(cache, lock, tmp_path)
    assert caught.value.code == code


def test_a_lock_entry_names_exactly_one_wheel() -> None:
    with pytest.raises(Exception, match="32 bytes"):
        LockedRequirement("tinydep", "1.0", b"short")
