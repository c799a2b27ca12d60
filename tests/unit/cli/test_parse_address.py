"""``confide proxy``, ``verify``, ``deploy`` and ``attest cert`` read ``HOST:PORT`` with the
one parser, :meth:`confide.wire.HostPort.parse`; port 0 only where a listener may take it."""

from __future__ import annotations

import pytest

from confide.errors import UsageError
from confide.wire import HostPort


@pytest.mark.parametrize(
    ("value", "port_zero", "expected"),
    [
        ("127.0.0.1:8080", False, HostPort("127.0.0.1", 8080)),
        ("[::1]:443", False, HostPort("::1", 443)),
        ("router.example:65535", False, HostPort("router.example", 65535)),
        ("127.0.0.1:0", True, HostPort("127.0.0.1", 0)),
        ("[::1]:0", True, HostPort("::1", 0)),
    ],
)
def test_addresses_parse(value: str, port_zero: bool, expected: HostPort) -> None:
    assert HostPort.parse(value, "--listen", allow_port_zero=port_zero) == expected


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
        HostPort.parse(value, "--connect", allow_port_zero=port_zero)
