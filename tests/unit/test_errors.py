"""The one exception tree: its shape (as drawn in the module docstring) and its messages."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

import confide.errors as errors
from confide.errors import (
    AttestationError,
    CertificateError,
    CollateralError,
    Error,
    FetchError,
    FormatError,
    FreshnessError,
    LogError,
    PolicyError,
    ReleaseError,
    RevocationError,
    SignatureError,
    SimulationError,
    TcbError,
    TeeError,
    UsageError,
)

ATTESTATION_ERRORS = [
    FormatError,
    CertificateError,
    RevocationError,
    CollateralError,
    SignatureError,
    TcbError,
    SimulationError,
    PolicyError,
    ReleaseError,
    LogError,
    FreshnessError,
]


def _drawn_tree() -> dict[str, str]:
    """Parse the tree in the module docstring into {class: parent}."""
    doc = errors.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        if line.strip() == "Error":
            stack = ["Error"]
            continue
        match = re.match(r"^\s*((?:│   |    )*)[├└]── (\w+)", line)
        if match and stack:
            depth = len(match.group(1)) // 4 + 1
            del stack[depth:]
            parents[match.group(2)] = stack[-1]
            stack.append(match.group(2))
    return parents


def test_every_exported_class_derives_from_error() -> None:
    assert issubclass(Error, Exception)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert isinstance(cls, type) and issubclass(cls, Error), name


def test_the_drawn_tree_is_the_class_tree() -> None:
    drawn = _drawn_tree()
    assert set(drawn) == set(errors.__all__) - {"Error"}
    for name, parent in drawn.items():
        cls = getattr(errors, name)
        assert cls.__bases__ == (getattr(errors, parent),), name


def _defined_here(classes: Sequence[type[Error]]) -> set[type[Error]]:
    return {cls for cls in classes if cls.__module__ == errors.__name__}


def test_attestation_errors() -> None:
    assert _defined_here(AttestationError.__subclasses__()) == set(ATTESTATION_ERRORS)
    top = {getattr(errors, name) for name, parent in _drawn_tree().items() if parent == "Error"}
    assert {UsageError, AttestationError, FetchError, TeeError} <= top
    assert _defined_here(Error.__subclasses__()) == top
    for cls in (UsageError, FetchError, TeeError):
        assert not issubclass(cls, AttestationError)


@pytest.mark.parametrize("cls", ATTESTATION_ERRORS)
def test_attestation_error_fields_and_one_line(cls: type[AttestationError]) -> None:
    err = cls(
        "quote.signature",
        "the quote is not signed by the attestation key",
        observed=b"\x01\x02",
        expected=[b"\xff", "x"],
        detail="InvalidSignature",
        hint="re-fetch the quote",
    )
    assert (err.code, err.check, err.observed, err.expected) == (
        "quote.signature",
        "the quote is not signed by the attestation key",
        b"\x01\x02",
        [b"\xff", "x"],
    )
    assert str(err) == (
        "the quote is not signed by the attestation key: observed 0102, expected [ff, x]: "
        "InvalidSignature; re-fetch the quote"
    )
    assert "\n" not in str(err)
    assert err.checks == ()
    assert isinstance(err, Error)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({}, "check"),
        ({"observed": 3}, "check: observed 3, expected nothing"),
        ({"expected": "UpToDate"}, "check: observed nothing, expected UpToDate"),
        (
            {"observed": frozenset({b"\x0a"}), "expected": (1, 2)},
            "check: observed [0a], expected [1, 2]",
        ),
        ({"detail": "why"}, "check: why"),
        ({"hint": "do this"}, "check; do this"),
    ],
)
def test_message_forms(kwargs: dict[str, object], text: str) -> None:
    assert str(PolicyError("policy.x", "check", **kwargs)) == text  # type: ignore[arg-type]


def test_docstring_example() -> None:
    err = PolicyError("policy.mrenclave", "enclave measurement", observed="aa", expected="bb")
    assert str(err) == "enclave measurement: observed aa, expected bb"


def test_other_errors() -> None:
    assert (Error("x").code, UsageError("x").code, TeeError("x").code) == ("error", "usage", "tee")
    fetch = FetchError("https://pccs.example/tcb", "HTTP 503")
    assert (fetch.code, fetch.url, fetch.reason) == (
        "fetch",
        "https://pccs.example/tcb",
        "HTTP 503",
    )
    assert str(fetch) == "fetching https://pccs.example/tcb failed: HTTP 503"
    assert str(UsageError("no such file", hint="check the path")) == "no such file; check the path"
    assert UsageError("m").message == "m" and UsageError("m").hint is None
