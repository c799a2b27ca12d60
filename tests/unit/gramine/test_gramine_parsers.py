"""Every parser of confide.gramine answers arbitrary input with a result or our own error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.errors import ManifestError, UsageError
from confide.gramine import lint_manifest
from confide.gramine._hashcache import HashCache
from confide.gramine._markers import marker_holds, requirement_name


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_the_linter_raises_only_its_own_error(text: str) -> None:
    try:
        lint_manifest(text)
    except ManifestError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_requirements_and_markers_never_raise_anything_else(text: str) -> None:
    try:
        _, marker = requirement_name(text)
    except UsageError:
        return
    assert isinstance(marker_holds(marker), bool)


MARKERS = {
    'python_version >= "3.8"': True,
    'python_version < "3.8"': False,
    'extra == "dev"': False,
    'sys_platform == "win32" or os_name == "posix"': True,
    '(platform_system == "Windows") and python_version >= "3"': False,
    'python_version ~= "3.0"': True,
    '"linux" in sys_platform': True,
    '"linux" not in sys_platform': False,
    "a_variable_nobody_knows == '1'": True,  # unreadable: measure more
}


@pytest.mark.parametrize(("marker", "holds"), MARKERS.items(), ids=MARKERS.keys())
def test_markers_are_evaluated_for_this_interpreter(marker: str, holds: bool) -> None:
    assert marker_holds(marker) is holds


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_a_cache_file_of_any_content_is_read_or_ignored(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache_file = Path(tmp) / "c.json"
        cache_file.write_bytes(content)
        target = Path(tmp) / "f"
        target.write_bytes(b"x")
        cache = HashCache(cache_file, now_ns=0)
        assert len(cache.sha256(str(target))) == 32
        assert os.path.exists(cache_file)
