"""Which address the local backend tells a runtime relays its clients (ADR 0013)."""

from __future__ import annotations

import pytest

from confide.operator._backend import _relay_address


@pytest.mark.parametrize(
    ("runtime_host", "relay"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),  # noqa: S104 - a value under test
        ("localhost", "127.0.0.1"),
        ("::1", "::1"),
        ("::", "::1"),
        ("10.1.2.3", "10.1.2.3"),
    ],
)
def test_the_router_and_prober_reach_a_runtime_from(runtime_host: str, relay: str) -> None:
    assert _relay_address(runtime_host) == relay
