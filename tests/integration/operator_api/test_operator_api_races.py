"""Concurrent creates through the real API: the database, not a check before it, decides.

Each case sends many ``POST /api/v1/apps`` at once (one thread and one
connection each, released together by a barrier once every connection is
open) to a real server, on SQLite and on PostgreSQL. Exactly the creates that
fit win (201); every other one gets 409, and the rows agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import func, select

from confide.operator import App
from support.operator_api import (
    Operator,
    OperatorFactory,
    certificate,
    manifest,
    upload,
)

#: Creates sent at once.
RACERS = 12
#: Seconds a racer waits for the others at the barrier.
BARRIER_TIMEOUT = 30


def _race(
    operator: Operator, tokens: list[str], send: Callable[[httpx.Client, int], Any]
) -> list[int]:
    """``send(client, i)`` from ``len(tokens)`` threads at once; their status codes."""
    barrier = threading.Barrier(len(tokens), timeout=BARRIER_TIMEOUT)

    def one(i: int) -> int:
        with operator.client(tokens[i]) as c:
            assert c.get("/api/v1/me").status_code == 200  # the connection is open
            barrier.wait()
            response: httpx.Response = send(c, i)
            return response.status_code

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        return list(pool.map(one, range(len(tokens))))


def _live_apps(operator: Operator, **where: Any) -> int:
    with operator.database.session() as s:
        query = select(func.count()).select_from(App).filter_by(**where)
        return s.scalar(query) or 0


def test_concurrent_creates_never_pass_the_account_limit(
    operators: OperatorFactory, package: bytes
) -> None:
    limit, already = 8, 5
    operator = operators.start(max_apps_per_account=limit)
    token = operator.token("alice")
    with operator.client(token) as c:
        for i in range(already):
            assert upload(c, package, manifest(name=f"before-{i}")).status_code == 201

    codes = _race(
        operator,
        [token] * RACERS,
        lambda c, i: upload(c, package, manifest(name=f"racer-{i}")),
    )

    assert sorted(codes) == [201] * (limit - already) + [409] * (RACERS - limit + already)
    assert _live_apps(operator) == limit
    with operator.client(token) as c:
        assert c.get("/api/v1/me").json()["apps"] == limit


def test_concurrent_creates_for_one_domain_have_one_winner(
    operators: OperatorFactory, package: bytes
) -> None:
    operator = operators.start()
    # One account per racer: the per-account lock must not be what serialises them.
    tokens = [operator.token(f"owner-{i}") for i in range(RACERS)]
    pem = certificate(["shop.example.com"])
    doc = manifest(tls="owner", domain="shop.example.com", certificate=pem)

    codes = _race(operator, tokens, lambda c, i: upload(c, package, doc))

    assert sorted(codes) == [201] + [409] * (RACERS - 1)
    assert _live_apps(operator, domain="shop.example.com") == 1
