"""``confide proxy``, ``verify``, ``deploy`` and ``attest cert`` read ``HOST:PORT`` with the
CLI's one parser (over :meth:`RouterAddress.parse`); port 0 only where a listener may take it."""

from __future__ import annotations

import pytest

from confide.cli._verify_options import parse_address
from confide.client import RouterAddress
from confide.errors import UsageError


@pytest.mark.parametrize(
    ("value", "port_zero", "expected"),
    [
        ("127.0.0.1:8080", False, RouterAddress("127.0.0.1", 8080)),
        ("[::1]:443", False, RouterAddress("::1", 443)),
        ("router.example:65535", False, RouterAddress("router.example", 65535)),
        ("127.0.0.1:0", True, RouterAddress("127.0.0.1", 0)),
        ("[::1]:0", True, RouterAddress("::1", 0)),
    ],
)
def test_addresses_parse(value: str, port_zero: bool, expected: RouterAddress) -> None:
    assert parse_address(value, "--listen", port_zero=port_zero) == expected


@pytest.mark.parametrize(
    ("value", "port_zero"),
    [
        ("127.0.0.1:0", False),  # a port to connect to is never 0
        ("127.0.0.1:65536", True),
        ("127.0.0.1", True),
        (":8080", False),
        (":0", True),
        ("host:http", False),
    ],
)
def test_bad_addresses_are_one_usage_line(value: str, port_zero: bool) -> None:
    with pytest.raises(UsageError, match="--connect must be HOST:PORT"):
        parse_address(value, "--connect", port_zero=port_zero)
