"""A stream of sign-in attempts at the console from one source (ADR 0025).

An API token is 256 random bits, so guessing one is hopeless; still, every attempt
made the database look a token up, without bound. One source gets a bucket of
attempts: past it, 429 with ``Retry-After`` and no lookup, even for a right token.
Guard: within the bucket, a wrong token is 401 and a right one signs in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.operator._console import _app as console_app
from support.console import ConsoleUser
from support.operator_api import Operator, OperatorFactory, StaticCa

BURST = 3
WRONG = "cfd_" + "A" * 43


@pytest.fixture(name="operator")
def operator_fixture(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Operator]:
    monkeypatch.setattr(console_app, "SIGN_IN_BURST", BURST, raising=False)
    factory = OperatorFactory(tmp_path, database_url)
    try:
        yield factory.start(ca_provider=StaticCa())
    finally:
        factory.close()


def test_one_source_cannot_try_tokens_without_bound(operator: Operator) -> None:
    token = operator.token("alice")
    with ConsoleUser(operator.url) as user:  # guard: a right token signs in
        assert user.sign_in(token).status_code == 303
    with ConsoleUser(operator.url) as user, ConsoleUser(operator.url) as owner:
        for _ in range(BURST - 1):
            assert user.sign_in(WRONG).status_code == 401  # guard: a wrong one is 401
        flooded = user.sign_in(WRONG)
        assert flooded.status_code == 429, flooded.text
        assert int(flooded.headers["retry-after"]) >= 1
        assert "Too many sign-in attempts" in flooded.text
        # Past the bucket even the right token is not looked up (same source address).
        assert owner.sign_in(token).status_code == 429


def test_the_bucket_refills_and_forgets_the_least_recent_source() -> None:
    limiter = console_app._SignInLimiter(2, 0.5, 2)
    assert [limiter.admit("a", 0.0) for _ in range(3)] == [0, 0, 2]
    assert limiter.admit("a", 1.0) == 1  # half a token back: not yet
    assert limiter.admit("a", 2.0) == 0  # one token back
    limiter.admit("b", 2.0)
    limiter.admit("c", 2.0)  # "a" is forgotten: a full bucket again
    assert limiter.admit("a", 2.0) == 0 and limiter.admit("a", 2.0) == 0
