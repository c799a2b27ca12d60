"""Ignore patterns: the documented gitignore subset, as a table; the parser fails closed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confide.crypto import IgnoreRules
from confide.errors import UsageError

# (patterns, path, is_dir, ignored)
CASES: list[tuple[str, str, bool, bool]] = [
    ("*.log", "a.log", False, True),
    ("*.log", "deep/er/a.log", False, True),
    ("*.log", "a.logx", False, False),
    ("*.log\n!keep.log", "keep.log", False, False),
    ("*.log\n!keep.log", "sub/keep.log", False, False),
    ("!keep.log\n*.log", "keep.log", False, True),
    ("build/", "build", True, True),
    ("build/", "build", False, False),
    ("build/", "src/build", True, True),
    ("/build", "build", True, True),
    ("/build", "src/build", True, False),
    ("docs/*.md", "docs/a.md", False, True),
    ("docs/*.md", "docs/x/a.md", False, False),
    ("docs/*.md", "sub/docs/a.md", False, False),
    ("**/cache", "cache", True, True),
    ("**/cache", "a/b/cache", True, True),
    ("a/**/z", "a/z", False, True),
    ("a/**/z", "a/b/c/z", False, True),
    ("a/**", "a/b/c", False, True),
    ("a/**", "a", True, False),
    ("?.txt", "a.txt", False, True),
    ("?.txt", "ab.txt", False, False),
    ("[ab].py", "a.py", False, True),
    ("[ab].py", "c.py", False, False),
    ("[!ab].py", "c.py", False, True),
    ("[a-c].py", "b.py", False, True),
    ("*", "x/y", False, True),
    ("# comment", "# comment", False, False),
    ("\\#hash", "#hash", False, True),
    ("\\!bang", "!bang", False, True),
    ("trail   ", "trail", False, True),
    ("", "anything", False, False),
    ("secret.env", "config/secret.env", False, True),
    ("*.pem", "a/b.pem", False, True),
    # Always left out, whatever the patterns say.
    ("!.git", ".git", True, True),
    ("", "sub/__pycache__", True, True),
    ("", ".confideignore", False, True),
    ("", ".mseignore", False, True),
]


@pytest.mark.parametrize(("patterns", "path", "is_dir", "ignored"), CASES)
def test_patterns(patterns: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert IgnoreRules.parse(patterns).ignores(path, is_dir=is_dir) is ignored


@pytest.mark.parametrize("bad", ["[abc", "a\\", "[z-a]"])
def test_malformed_patterns_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        IgnoreRules.parse(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("ab*?[]!-^/\\#. \n"), max_size=40),
    st.text(alphabet=st.sampled_from("ab./"), min_size=1, max_size=12),
)
def test_parser_fails_closed(text: str, path: str) -> None:
    try:
        rules = IgnoreRules.parse(text)
    except UsageError:
        return
    assert isinstance(rules.ignores(path, is_dir=False), bool)
