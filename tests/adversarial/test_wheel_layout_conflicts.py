"""A locked wheel whose entries clash with each other's layout (ADR 0024).

A wheel is a zip: nothing stops it holding ``pkg/x`` as a file and ``pkg/x/y.py`` under
it, or a file where an earlier entry made a folder. Installing one must end in the
runtime's typed refusal (``requirements.unsafe_wheel``: one line, the app ``on_error``),
never in an operating system error escaping as a traceback. Guard: the same entries
without the clash install.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from confide.errors import RequirementError
from confide.runtime import install_locked
from support.wheels import cache_wheel, lock_of, wheel_bytes

CLASHES = {
    "a file, then a file under it": {"evil/x": b"1", "evil/x/y.py": b"2"},
    "a file under a name, then that name as a file": {"evil/x/y.py": b"1", "evil/x": b"2"},
}


def _install(files: dict[str, bytes], tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    data = wheel_bytes("evil", "1.0", files)
    cache_wheel(cache, data)
    site = tmp_path / "code" / "site"
    install_locked(lock_of(("evil", "1.0", data)), cache, site, tmp_path / "code" / "wheels")
    return site


@pytest.mark.parametrize("case", sorted(CLASHES))
def test_clashing_entries_are_a_typed_refusal(case: str, tmp_path: Path) -> None:
    with pytest.raises(RequirementError) as caught:
        _install(CLASHES[case], tmp_path)
    assert caught.value.code == "requirements.unsafe_wheel", str(caught.value)
    assert "evil/x" in str(caught.value)


def test_the_same_entries_without_a_clash_install(tmp_path: Path) -> None:
    site = _install({"evil/x.py": b"1", "evil/x/y.py": b"2"}, tmp_path)
    assert (site / "evil" / "x" / "y.py").read_bytes() == b"2"
