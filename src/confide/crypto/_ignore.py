"""Which files of an app folder go into its package: ``.confideignore`` and ``.mseignore``.

The ignore files at the root of the app folder are read (``.confideignore``
first, then ``.mseignore``; nested ignore files are not), with this subset of
gitignore's syntax:

- blank lines and lines starting with ``#`` are skipped; trailing spaces are
  dropped; ``\\#`` and ``\\!`` start a pattern with a literal ``#`` or ``!``;
- ``!pattern`` re-includes what an earlier pattern excluded; the last matching
  pattern wins, and nothing inside an excluded directory can be re-included;
- a pattern ending in ``/`` matches directories only;
- a pattern with no other ``/`` matches a name at any depth (``*.log``); one
  with a ``/`` at its start or in its middle is anchored to the app folder
  (``/build``, ``docs/*.md``);
- ``*`` matches within one name, ``?`` one character, ``[abc]``, ``[a-z]``,
  ``[!abc]`` a set; ``**/`` at the start, ``/**/`` in the middle and ``/**``
  at the end match any number of directories; ``\\`` escapes a character.

Always excluded, whatever the ignore files say: ``.git/``, ``__pycache__/``
and the ignore files themselves (they describe the packaging, not the app,
and often name the secrets that were kept out).

Example::

    >>> from confide.crypto import IgnoreRules
    >>> rules = IgnoreRules.parse("*.log\\n!keep.log\\n/build/\\n")
    >>> rules.ignores("logs/a.log", is_dir=False), rules.ignores("keep.log", is_dir=False)
    (True, False)
    >>> rules.ignores("build", is_dir=True), rules.ignores("src/build", is_dir=True)
    (True, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confide.errors import UsageError

#: Ignore files read at the root of an app folder, in this order.
IGNORE_FILES: Final = (".confideignore", ".mseignore")
#: Names never packaged, at any depth.
ALWAYS_IGNORED: Final = frozenset({".git", "__pycache__", *IGNORE_FILES})
#: Largest ignore file read.
MAX_IGNORE_FILE_SIZE: Final = 256 * 1024
#: Most patterns in all ignore files together.
MAX_IGNORE_PATTERNS: Final = 4096
_MAX_PATTERN_LENGTH: Final = 1024


@dataclass(frozen=True, slots=True)
class _Pattern:
    source: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


def _glob(pattern: str, where: str) -> str:
    """Regex for a gitignore glob (without leading ``!``, trailing ``/`` or anchor)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i) and i + 2 == n and (i == 0 or pattern[i - 1] == "/"):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 == n:
                raise UsageError(f"{where}: the pattern {pattern!r} ends with a lone backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                raise UsageError(f"{where}: the pattern {pattern!r} has an unclosed '['")
            body = pattern[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            out.append(f"[{'^/' if negate else ''}{_char_class(body, pattern, where)}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _char_class(body: str, pattern: str, where: str) -> str:
    """A bracket body as a regex class: ``a-z`` ranges, any other ``-`` literal."""
    parts: list[str] = []
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            lo, hi = body[j], body[j + 2]
            if lo > hi:
                raise UsageError(f"{where}: the pattern {pattern!r} has a reversed range {lo}-{hi}")
            parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
            j += 3
        else:
            parts.append("\\-" if body[j] == "-" else re.escape(body[j]))
            j += 1
    return "".join(parts)


def _compile(line: str, where: str) -> _Pattern | None:
    text = line.rstrip("\r")
    stripped = text.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(text):
        stripped += " "  # an escaped trailing space stays
    text = stripped
    if not text or text.startswith("#"):
        return None
    if len(text) > _MAX_PATTERN_LENGTH:
        raise UsageError(f"{where}: a pattern is longer than {_MAX_PATTERN_LENGTH} characters")
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    elif text.startswith(("\\!", "\\#")):
        text = text[1:]
    dir_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None
    anchored = "/" in text
    text = text.removeprefix("/")
    body = _glob(text, where)
    regex = body if anchored else f"(?:[^/]+/)*{body}"
    try:
        compiled = re.compile(regex, re.DOTALL)
    except re.error as exc:
        raise UsageError(f"{where}: the pattern {line!r} is not valid: {exc}") from None
    return _Pattern(line, compiled, negated, dir_only)


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """Compiled ignore patterns; :meth:`ignores` decides for one relative path."""

    patterns: tuple[_Pattern, ...] = ()

    @classmethod
    def parse(cls, text: str, *, where: str = "ignore file") -> IgnoreRules:
        lines = text.splitlines()
        patterns = tuple(p for line in lines if (p := _compile(line, where)) is not None)
        if len(patterns) > MAX_IGNORE_PATTERNS:
            raise UsageError(f"{where}: more than {MAX_IGNORE_PATTERNS} patterns")
        return cls(patterns)

    @classmethod
    def from_directory(cls, app_dir: Path) -> IgnoreRules:
        """The rules of ``app_dir``'s ignore files (none if there are none)."""
        patterns: list[_Pattern] = []
        for name in IGNORE_FILES:
            path = app_dir / name
            if not path.is_file():
                continue
            try:
                with path.open("rb") as f:
                    raw = f.read(MAX_IGNORE_FILE_SIZE + 1)
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
            if len(raw) > MAX_IGNORE_FILE_SIZE:
                raise UsageError(f"{path} is larger than {MAX_IGNORE_FILE_SIZE} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"{path} is not UTF-8 text") from None
            patterns.extend(cls.parse(text, where=str(path)).patterns)
        if len(patterns) > MAX_IGNORE_PATTERNS:
            raise UsageError(
                f"the ignore files of {app_dir} hold more than {MAX_IGNORE_PATTERNS} patterns"
            )
        return cls(tuple(patterns))

    def ignores(self, relpath: str, *, is_dir: bool) -> bool:
        """Whether ``relpath`` (``/``-separated, relative to the app folder) is left out.

        Only the path itself is judged: the caller does not descend into an
        ignored directory.
        """
        if relpath.rsplit("/", 1)[-1] in ALWAYS_IGNORED:
            return True
        ignored = False
        for p in self.patterns:
            if p.dir_only and not is_dir:
                continue
            if p.negated == ignored and p.regex.fullmatch(relpath):
                ignored = not p.negated
        return ignored
