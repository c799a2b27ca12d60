"""Requirement strings (PEP 508) as far as the measurement needs them: a name and a marker.

Only the name and the environment marker are read (versions are whatever is
installed; extras are not followed). A marker is evaluated against the running
interpreter; ``extra`` is always the empty string. A marker this small parser
cannot read counts as true: measuring a distribution more never hides a file.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Final

from confide.errors import UsageError

_NAME: Final = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_TOKEN: Final = re.compile(
    r"""\s*(\(|\)|===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b|and\b|or\b|'[^']*'|"[^"]*"|[A-Za-z_][.\w]*)"""
)
_VERSIONED: Final = frozenset({"python_version", "python_full_version", "implementation_version"})


class _Unreadable(Exception):
    """The marker is outside what this parser reads."""


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> tuple[str, str | None]:
    """``(normalized name, marker or None)`` of a requirement string."""
    match = _NAME.match(requirement)
    if match is None:
        raise UsageError(f"not a requirement: {requirement[:200]!r}")
    _, _, marker = requirement.partition(";")
    return normalize(match.group(1)), marker.strip() or None


def _environment() -> dict[str, str]:
    impl = sys.implementation.version
    return {
        "os_name": os.name,
        "sys_platform": sys.platform,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "python_full_version": platform.python_version(),
        "implementation_name": sys.implementation.name,
        "implementation_version": f"{impl.major}.{impl.minor}.{impl.micro}",
        "extra": "",
    }


def _version(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split("."))
    except ValueError:
        raise _Unreadable(value) from None


def _compare(left: str, op: str, right: str, versioned: bool) -> bool:
    if op in ("in", "not in") or re.fullmatch(r"not\s+in", op):
        found = left in right
        return found if op == "in" else not found
    if op == "===":
        return left == right
    if not versioned:
        if op not in ("==", "!="):
            raise _Unreadable(op)
        return (left == right) == (op == "==")
    a, b = _version(left), _version(right)
    if op == "~=":
        return a >= b and a[: len(b) - 1] == b[: len(b) - 1]
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


class _Parser:
    def __init__(self, text: str, env: dict[str, str]) -> None:
        self._tokens: list[str] = []
        pos = 0
        while pos < len(text.rstrip()):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise _Unreadable(text)
            self._tokens.append(match.group(1))
            pos = match.end()
        self._env = env
        self._at = 0

    def _next(self) -> str:
        if self._at >= len(self._tokens):
            raise _Unreadable("end of marker")
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _peek(self) -> str | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def parse(self) -> bool:
        value = self._or()
        if self._peek() is not None:
            raise _Unreadable("trailing tokens")
        return value

    def _or(self) -> bool:
        value = self._and()
        while self._peek() == "or":
            self._next()
            value = self._and() or value
        return value

    def _and(self) -> bool:
        value = self._atom()
        while self._peek() == "and":
            self._next()
            value = self._atom() and value
        return value

    def _value(self) -> tuple[str, bool]:
        token = self._next()
        if token[0] in "'\"":
            return token[1:-1], False
        if token not in self._env:
            raise _Unreadable(token)
        return self._env[token], token in _VERSIONED

    def _atom(self) -> bool:
        if self._peek() == "(":
            self._next()
            value = self._or()
            if self._next() != ")":
                raise _Unreadable("unbalanced parenthesis")
            return value
        left, left_versioned = self._value()
        op = self._next()
        right, right_versioned = self._value()
        return _compare(left, op, right, left_versioned or right_versioned)


def marker_holds(marker: str | None) -> bool:
    """Whether a requirement with this marker applies to the running interpreter."""
    if marker is None:
        return True
    try:
        return _Parser(marker, _environment()).parse()
    except _Unreadable:
        return True
