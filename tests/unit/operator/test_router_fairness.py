"""Fair admission at the router (issue 9, point 2): one source cannot keep the others out.

Sources are loopback addresses: 127.0.0.2 and 127.0.0.3 play attackers,
127.0.0.1 the legitimate client. Before fair admission, 512 idle connections
from one address took every unrouted slot and the router reset everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator._router import RouterSettings, _RateLimiter
from support.router import (
    APP,
    LOOPBACK,
    OTHER_APP,
    DictRoutes,
    client_hello,
    close_writer,
    exchange,
    fast_settings,
    http_upstream,
    passthrough,
    ratls_like_identity,
    run,
    running_router,
)

ATTACKER = "127.0.0.2"
OTHER_ATTACKER = "127.0.0.3"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def idle_from(source: str, port: int) -> Connection:
    return await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))


async def is_open(reader: asyncio.StreamReader) -> bool:
    """Whether the router still holds the connection (no EOF or reset within a moment)."""
    try:
        async with asyncio.timeout(0.3):
            return bool(await reader.read(1)) or False
    except TimeoutError:
        return True
    except OSError:
        return False


async def served(port: int, enclave_context: object) -> bytes:
    reader, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=enclave_context, server_hostname=APP
    )
    try:
        return await exchange(reader, writer, APP, b"")
    finally:
        await close_writer(writer)


async def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        with contextlib.suppress(OSError):
            writer.close()


def test_one_source_with_idle_connections_cannot_keep_others_out(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        settings = fast_settings(max_unrouted=16, max_unrouted_per_source=8, handshake_timeout=20.0)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):
            flood = [await idle_from(ATTACKER, router.port) for _ in range(64)]
            held = [await is_open(reader) for reader, _ in flood]
            assert sum(held) == 8, "the attacker holds more than its share of unrouted slots"
            assert await served(router.port, enclave.client_context()) == b"hello enclave"
            await close_all(flood)

    run(body)


def test_when_every_unrouted_slot_is_taken_a_newcomer_takes_the_busiest_sources_oldest(
    tmp_path: Path,
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        settings = fast_settings(max_unrouted=8, max_unrouted_per_source=6, handshake_timeout=20.0)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):
            busiest = [await idle_from(ATTACKER, router.port) for _ in range(6)]
            other = [await idle_from(OTHER_ATTACKER, router.port) for _ in range(2)]
            assert all([await is_open(reader) for reader, _ in busiest + other])
            # Every slot is taken: the legitimate client gets in all the same...
            assert await served(router.port, enclave.client_context()) == b"hello enclave"
            # ...in the place of the busiest source's oldest connection.
            assert [await is_open(reader) for reader, _ in busiest] == [False] + [True] * 5
            assert all([await is_open(reader) for reader, _ in other])
            await close_all(busiest + other)

    run(body)


def test_a_source_over_its_connection_rate_is_closed_at_once_and_others_are_not(
    tmp_path: Path,
) -> None:
    enclave = ratls_like_identity(tmp_path, APP)

    async def body() -> None:
        settings = fast_settings(
            new_connections_per_second=0.001, new_connections_burst=3, handshake_timeout=20.0
        )
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            running_router(settings, DictRoutes({APP: passthrough(upstream.port)})) as router,
        ):
            burst = [await idle_from(ATTACKER, router.port) for _ in range(4)]
            assert [await is_open(reader) for reader, _ in burst] == [True] * 3 + [False]
            assert await served(router.port, enclave.client_context()) == b"hello enclave"
            await close_all(burst)

    run(body)


def test_relayed_connections_are_bounded_per_app(tmp_path: Path) -> None:
    enclave = ratls_like_identity(tmp_path, APP)
    other = ratls_like_identity(tmp_path / "other", OTHER_APP)

    async def body() -> None:
        settings = fast_settings(max_connections_per_app=2, handshake_timeout=20.0)
        async with (
            http_upstream("enclave", enclave.server_context()) as upstream,
            http_upstream("other", other.server_context()) as other_upstream,
            running_router(
                settings,
                DictRoutes(
                    {APP: passthrough(upstream.port), OTHER_APP: passthrough(other_upstream.port)}
                ),
            ) as router,
        ):
            held = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, router.port, ssl=enclave.client_context(), server_hostname=APP
                )
                assert await exchange(reader, writer, APP, b"1") == b"hello enclave"
                held.append((reader, writer))
            reader, writer = await asyncio.open_connection(LOOPBACK, router.port)
            writer.write(client_hello(APP))
            assert not await is_open(reader), "a third relayed connection to the app was kept"
            writer.close()
            reader, writer = await asyncio.open_connection(
                LOOPBACK, router.port, ssl=other.client_context(), server_hostname=OTHER_APP
            )
            assert await exchange(reader, writer, OTHER_APP, b"") == b"hello other"
            await close_writer(writer)
            for _, held_writer in held:
                await close_writer(held_writer)

    run(body)


def test_the_rate_bucket_refills_and_forgets_full_buckets() -> None:
    limiter = _RateLimiter(rate=2.0, burst=2)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.take("a", 0.5)  # one token back after half a second
    assert not limiter.take("a", 0.5)
    assert limiter.take("b", 0.5)  # every source has its own bucket
    limiter._forget_full(10.0)
    assert limiter.buckets == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_unrouted_per_source": 0},
        {"max_connections_per_source": 0},
        {"max_connections_per_app": 0},
        {"new_connections_burst": 0},
        {"new_connections_per_second": 0.0},
    ],
)
def test_bad_fairness_settings_are_refused(overrides: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        RouterSettings(**overrides)  # type: ignore[arg-type]
