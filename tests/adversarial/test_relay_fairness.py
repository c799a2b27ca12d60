"""One busy connection cannot hold the relay thread (ADR 0028, review).

A pump drains a direction until ``EAGAIN`` (edge-triggered epoll), so a pair whose
ends read and write at loopback speed would keep the one relay thread for as long as
every read came back full, and every other connection, new ones and idle sweeps
would wait. Each pump moves at most ``PUMP_BUDGET`` full chunks; a pair with more to
read waits on a ready list for its next turn, after the next look at epoll.

Here pair A has far more than a budget of bytes queued when it is added, next to
pair B with a ping: B's ping goes through, A's bytes arrive whole and in order, and
the budget ran out at least once (each engine counts it).
"""

from __future__ import annotations

import socket
import threading

import pytest

from confide.operator._relay import MIN_CHUNK, PUMP_BUDGET, Engine, RelayWorker
from support.relay import ENGINES, LOG, STEP, Ends

#: A's queued bytes, in chunks: more than a budget, as much as a socket pair holds.
CHUNKS = PUMP_BUDGET + 8


def _fill(sock: socket.socket, limit: int) -> bytes:
    """Queue up to ``limit`` bytes in ``sock`` without blocking; what was queued."""
    sent = bytearray()
    sock.setblocking(False)
    try:
        while len(sent) < limit:
            block = bytes([len(sent) // MIN_CHUNK % 251]) * min(MIN_CHUNK, limit - len(sent))
            try:
                sent += block[: sock.send(block)]
            except BlockingIOError:
                break
    finally:
        sock.settimeout(STEP)
    return bytes(sent)


def _read(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        part = sock.recv(size - len(got))
        if not part:
            break
        got += part
    return bytes(got)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_pair_with_more_than_a_budget_queued_lets_the_others_through(engine: Engine) -> None:
    worker = RelayWorker(
        chunk=MIN_CHUNK,
        idle_timeout=60.0,
        log=LOG,
        engine=engine,
    )
    assert worker.engine == engine
    worker.start()
    busy = Ends(worker, 1, add=False)
    other = Ends(worker, 2, add=False)
    try:
        queued = _fill(busy.client, CHUNKS * MIN_CHUNK)
        # Guard: the test means something only if A holds more than one budget of chunks.
        assert len(queued) > PUMP_BUDGET * MIN_CHUNK, f"only {len(queued)} bytes queued"
        other.client.sendall(b"ping")
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(_read(busy.upstream, len(queued))))
        reader.start()
        assert worker.add(busy.pair) and worker.add(other.pair)
        assert _read(other.upstream, 4) == b"ping"
        reader.join(STEP)
        assert received == [queued], "the busy pair's bytes did not arrive whole and in order"
    finally:
        worker.stop()
        worker.join(STEP)
        busy.close()
        other.close()
    assert not worker.alive()
    assert worker.yields() >= 1, "no pump ran out of its budget: the busy pair held the thread"
