"""Hostile peers against the relay worker, on both engines (ADR 0028).

A client or an app may reset its connection in the middle of a transfer, stop
reading while its peer floods, or come and go in numbers; the router aborts
pairs and stops the worker while bytes are in flight. The compiled engine adds
risks the Python one does not have (a descriptor closed twice or never, memory
held past its pair, a pair freed while an event still names it), so both are
held to the same outcome: each pair's ``on_closed`` runs exactly once, every
descriptor is closed, at most one chunk per direction is held, and the worker
still relays the next pair.

Every wait is bounded by ``STEP``; none of these tests asserts a duration.
"""

from __future__ import annotations

import os
import random
import select
import socket
import threading
import time

import pytest

from confide.operator._relay import Engine, RelayWorker
from support.relay import (
    CHUNK,
    ENGINES,
    STEP,
    Ends,
    in_thread,
    open_descriptors,
    relay_worker,
    reset,
)

#: How long a sender must find its socket unwritable to call its path stalled (seconds).
STALLED = 1.0


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    value: Engine = request.param
    return value


def flood(sock: socket.socket, limit: int) -> int:
    """Send up to ``limit`` bytes until the path stalls or breaks; the bytes sent."""
    sock.setblocking(False)
    block = os.urandom(64 * 1024)
    sent = 0
    while sent < limit:
        _, writable, _ = select.select([], [sock], [], STALLED)
        if not writable:
            break
        try:
            sent += sock.send(block)
        except BlockingIOError:
            continue
        except OSError:
            break
    return sent


def drain(sock: socket.socket, seen: list[int] | None = None) -> int:
    """Read to the end (a reset ends it too, and so does ``STEP`` of silence); the bytes
    read, also added to ``seen[0]`` as they come. Safe beside :func:`flood` on one socket."""
    sock.setblocking(False)
    total = 0
    while True:
        readable, _, _ = select.select([sock], [], [], STEP)
        if not readable:
            return total
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            continue
        except OSError:
            return total
        if not chunk:
            return total
        total += len(chunk)
        if seen is not None:
            seen[0] += len(chunk)


def still_relays(worker: RelayWorker, ident: int) -> None:
    """A fresh pair crosses the worker both ways and ends cleanly."""
    ends = Ends(worker, ident)
    ends.client.sendall(b"ping")
    assert ends.upstream.recv(4) == b"ping"
    ends.upstream.sendall(b"pong")
    assert ends.client.recv(4) == b"pong"
    ends.client.shutdown(socket.SHUT_WR)
    ends.upstream.shutdown(socket.SHUT_WR)
    assert ends.closed.wait(STEP), "a clean end did not close the pair"
    assert ends.calls == 1
    ends.close()


@pytest.mark.parametrize("resetter", ["client", "upstream"])
def test_a_peer_that_resets_mid_transfer_cuts_its_pair_only(engine: Engine, resetter: str) -> None:
    before = open_descriptors()
    with relay_worker(engine) as worker:
        victim = Ends(worker, 1, small_buffers=True, tcp=True)
        bystander = Ends(worker, 2, tcp=True)
        hostile, honest = (
            (victim.client, victim.upstream)
            if resetter == "client"
            else (victim.upstream, victim.client)
        )
        # The honest side sends a large answer; the hostile one reads part of it (so the
        # worker is between chunks, with a tail pending) and resets.
        sender = in_thread(flood, honest, 64 * 1024 * 1024)
        hostile.settimeout(STEP)
        got = 0
        while got < 3 * CHUNK + 100:
            got += len(hostile.recv(CHUNK // 3))
        reset(hostile)
        assert victim.closed.wait(STEP), "the reset did not cut the pair"
        sender.join(STEP)
        assert not sender.is_alive(), "the honest sender is still blocked"
        drain(honest)  # ends (or is reset): the worker closed its side
        assert victim.calls == 1
        assert victim.pair.buffered() == 0
        # The other pair was not touched.
        bystander.client.sendall(b"still here")
        assert bystander.upstream.recv(64) == b"still here"
        bystander.close()
        assert bystander.closed.wait(STEP)
        honest.close()
        still_relays(worker, 3)
    assert bystander.calls == 1
    assert open_descriptors() == before, "a descriptor was leaked"


def test_peers_that_never_read_hold_at_most_one_chunk_per_direction(engine: Engine) -> None:
    pairs = 12
    limit = 16 * 1024 * 1024
    before = open_descriptors()
    with relay_worker(engine) as worker:
        ends = [Ends(worker, i, small_buffers=True) for i in range(pairs)]
        # Both peers of every pair send and never read: every direction stalls.
        sent: dict[tuple[int, str], int] = {}

        def push(i: int, name: str, sock: socket.socket) -> None:
            sent[i, name] = flood(sock, limit)

        threads = [
            in_thread(push, i, name, sock)
            for i, e in enumerate(ends)
            for name, sock in (("client", e.client), ("upstream", e.upstream))
        ]
        for thread in threads:
            thread.join(STEP + 2 * STALLED)
            assert not thread.is_alive()
        for (i, name), count in sent.items():
            assert count < limit // 8, f"pair {i}: {count} bytes went into a {name} peer"
        for e in ends:
            assert e.pair.buffered() <= 2 * CHUNK, f"pair {e.pair.ident} holds more than 2 chunks"
        assert worker.buffered() <= 2 * CHUNK * pairs
        assert worker.live() == pairs
        # Closing both ends with bytes unread (a reset) frees every pair.
        for e in ends:
            e.close()
        for e in ends:
            assert e.closed.wait(STEP), f"pair {e.pair.ident} outlived both of its peers"
            assert e.calls == 1
        assert worker.buffered() == 0
        still_relays(worker, pairs)
    assert open_descriptors() == before, "a descriptor was leaked"


def test_pairs_added_and_aborted_from_many_threads(engine: Engine) -> None:
    threads, per_thread = 6, 30
    before = open_descriptors()
    made: list[Ends] = []
    made_lock = threading.Lock()
    stop_reading = threading.Event()
    with relay_worker(engine) as worker:

        def churn(seed: int) -> None:
            rng = random.Random(seed)  # noqa: S311 - test shuffling, not secrets
            for n in range(per_thread):
                ends = Ends(worker, seed * 1000 + n)
                with made_lock:
                    made.append(ends)
                fate = rng.randrange(4)
                if fate == 0:  # aborted at once, maybe twice
                    worker.abort(ends.pair)
                    if rng.random() < 0.5:
                        worker.abort(ends.pair)
                elif fate == 1:  # some bytes, then aborted
                    ends.client.sendall(os.urandom(rng.randrange(1, 3 * CHUNK)))
                    worker.abort(ends.pair)
                elif fate == 2:  # both peers leave
                    ends.client.close()
                    ends.upstream.close()
                # fate 3: left open for stop()

        def observe() -> None:  # reads the pairs' sizes while they change
            while not stop_reading.is_set():
                with made_lock:
                    current = list(made)
                for ends in current:
                    assert ends.pair.buffered() <= 2 * CHUNK
                assert worker.buffered() >= 0

        observer = in_thread(observe)
        workers = [in_thread(churn, seed) for seed in range(threads)]
        for thread in workers:
            thread.join(STEP)
            assert not thread.is_alive()
        stop_reading.set()
        observer.join(STEP)
        assert not observer.is_alive()
        assert len(made) == threads * per_thread
        still_relays(worker, 10**6)
        worker.stop()
        worker.join(STEP)
        assert not worker.alive()
    for ends in made:
        assert ends.closed.wait(STEP)
        assert ends.calls == 1, f"pair {ends.pair.ident}: on_closed ran {ends.calls} times"
        ends.close()
    assert open_descriptors() == before, "a descriptor was leaked"


def test_stop_while_bytes_are_in_flight(engine: Engine) -> None:
    before = open_descriptors()
    with relay_worker(engine) as worker:
        busy = [Ends(worker, i) for i in range(8)]
        traffic = []
        seen = [[0] for _ in range(2 * len(busy))]
        for n, sock in enumerate(s for e in busy for s in (e.client, e.upstream)):
            sock.setblocking(False)
            traffic.append(in_thread(flood, sock, 256 * 1024 * 1024))
            traffic.append(in_thread(drain, sock, seen[n]))
        # Bytes are crossing every pair, both ways, when the stop comes.
        deadline = time.monotonic() + STEP
        while min(count[0] for count in seen) <= CHUNK and time.monotonic() < deadline:
            time.sleep(0.01)  # polls an outcome, bounded
        assert min(count[0] for count in seen) > CHUNK, "a way of a busy pair carried nothing"
        assert not any(e.closed.is_set() for e in busy)
        queued = [Ends(worker, 100 + i) for i in range(8)]  # added just before the stop
        worker.stop()
        worker.join(STEP)
        assert not worker.alive()
        for thread in traffic:
            thread.join(STEP + 2 * STALLED)
            assert not thread.is_alive(), "a peer is still blocked on a stopped worker"
    for e in busy + queued:
        assert e.closed.is_set() and e.calls == 1
        e.close()
    assert open_descriptors() == before, "a descriptor was leaked"
