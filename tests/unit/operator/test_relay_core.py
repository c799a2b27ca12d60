"""The compiled relay core's own contract (ADR 0028): built where it can be, and safe to misuse.

What the relay does is tested on both engines through :class:`RelayWorker`
(``test_router_relay.py``, ``tests/adversarial/test_relay_peers.py``); this
file holds the core to the rules that keep it memory-safe: it owns the
descriptors it is given (and closes them when it refuses them), it never
touches the wake descriptor it does not own, a pair belongs to one core, and
no method runs while the loop runs without the GIL.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from confide.errors import UsageError
from confide.operator._relay import compiled_core
from support.relay import LOG, STEP

needs_core = pytest.mark.skipif(compiled_core() is None, reason="_relaycore not built")


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


@pytest.fixture
def wake() -> Iterator[int]:
    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    yield fd
    os.close(fd)


def _pair() -> tuple[socket.socket, socket.socket, int, int]:
    """Two socket pairs; the near ends' descriptors detached for the core."""
    client, near_client = socket.socketpair()
    near_upstream, upstream = socket.socketpair()
    return client, upstream, near_client.detach(), near_upstream.detach()


def test_the_compiled_engine_is_built_where_a_c_compiler_is() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which(compiler) is None or not headers.is_file():
        pytest.skip(f"no C compiler ({compiler}) or no {headers}: the Python engine is used")
    assert compiled_core() is not None, (
        "a C compiler is here but confide.operator._relaycore is not built: "
        "run `pip install -e .` again (make .venv/.installed)"
    )


@needs_core
def test_the_core_refuses_bad_settings(wake: int) -> None:
    from confide.operator import _relaycore

    for chunk, idle in [
        (_relaycore.MIN_CHUNK - 1, 1.0),
        (_relaycore.MAX_CHUNK + 1, 1.0),
        (1 << 40, 1.0),
        (8192, 0.0),
        (8192, -1.0),
        (8192, float("nan")),
        (8192, float("inf")),
    ]:
        with pytest.raises(ValueError):
            _relaycore.Core(chunk, idle, wake)
    with pytest.raises(ValueError):
        _relaycore.Core(8192, 1.0, -1)
    with pytest.raises(TypeError):
        _relaycore.Pair()


@needs_core
def test_descriptors_the_core_refuses_are_closed_and_its_wake_descriptor_is_not(
    wake: int,
) -> None:
    from confide.operator import _relaycore

    core = _relaycore.Core(8192, 60.0, wake)
    try:
        for make in (
            lambda a, b: (a, a),  # one descriptor twice
            lambda a, b: (-1, b),  # a negative one
            lambda a, b: (a, wake),  # the wake descriptor
        ):
            a_end, a_sock = socket.socketpair()
            b_end, b_sock = socket.socketpair()
            a, b = a_sock.detach(), b_sock.detach()
            client, upstream = make(a, b)
            with pytest.raises(OSError):
                core.add(client, upstream)
            given = {fd for fd in (client, upstream) if fd >= 0 and fd != wake}
            for fd in given:
                assert _closed(fd), f"descriptor {fd} refused but left open"
            for fd in {a, b} - given:
                os.close(fd)  # never given to the core: still the test's
            a_end.close()
            b_end.close()
        assert not _closed(wake), "the core closed the wake descriptor it does not own"
        assert core.live() == 0
    finally:
        core.close()


@needs_core
def test_a_descriptor_another_pair_relays_is_refused_without_closing_it(wake: int) -> None:
    """Given a number the core already relays (a caller's bug), the core refuses the new
    pair and closes the new descriptor only: the live pair keeps its own (review)."""
    from confide.operator import _relaycore

    core = _relaycore.Core(8192, 60.0, wake)
    client, upstream, a, b = _pair()
    other_end, other = socket.socketpair()
    c = other.detach()
    try:
        core.add(a, b)
        with pytest.raises(OSError) as refused:
            core.add(a, c)  # ``a`` is the live pair's
        assert refused.value.errno == errno.EEXIST
        assert not _closed(a), "the live pair's descriptor was closed"
        assert _closed(c), "the refused pair's own descriptor was left open"
        assert core.live() == 1
    finally:
        core.close()
        for sock in (client, upstream, other_end):
            sock.close()


@needs_core
def test_a_pair_belongs_to_one_core_and_is_reported_once(wake: int) -> None:
    from confide.operator import _relaycore

    first = _relaycore.Core(8192, 60.0, wake)
    other = _relaycore.Core(8192, 60.0, wake)
    try:
        ends = [_pair() for _ in range(3)]
        pairs = [first.add(near_client, near_upstream) for _, _, near_client, near_upstream in ends]
        assert first.live() == 3
        assert not other.abort(pairs[0]), "a core aborted another core's pair"
        with pytest.raises(TypeError):
            first.abort(object())  # type: ignore[arg-type]
        assert first.abort(pairs[1])
        assert not first.abort(pairs[1]), "a pair was aborted twice"
        closed = first.close_all()
        # Each pair once, in the order they closed: the aborted one first.
        assert len(closed) == 3 and {id(p) for p, _, _ in closed} == {id(p) for p in pairs}
        assert closed[0][:2] == (pairs[1], _relaycore.CLOSED_ABORTED)
        assert all(reason == _relaycore.CLOSED_STOPPING for _, reason, _ in closed[1:])
        assert first.close_all() == [], "a pair was reported twice"
        for client, upstream, near_client, near_upstream in ends:
            assert _closed(near_client) and _closed(near_upstream)
            assert client.recv(1) == b"" and upstream.recv(1) == b""
            client.close()
            upstream.close()
        assert not first.abort(pairs[0]), "a reported pair was aborted again"
    finally:
        first.close()
        other.close()


@needs_core
def test_no_method_runs_while_the_loop_runs_without_the_gil(wake: int) -> None:
    from confide.operator import _relaycore

    core = _relaycore.Core(8192, 60.0, wake)
    client, upstream, near_client, near_upstream = _pair()
    pair = core.add(near_client, near_upstream)
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.append(core.run()), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + STEP
        while True:  # the loop runs once the core refuses a call (-1, -1: no side effect)
            try:
                core.add(-1, -1)
            except RuntimeError as exc:
                assert "running" in str(exc)
                break
            except OSError:
                pass  # not running yet: refused as bad descriptors
            assert time.monotonic() < deadline, "the core never ran"
            time.sleep(0.001)
        spare_a, spare = socket.socketpair()
        spare_b, other = socket.socketpair()
        fds = (spare.detach(), other.detach())
        with pytest.raises(RuntimeError):
            core.add(*fds)
        assert all(_closed(fd) for fd in fds), "a refused add kept its descriptors"
        with pytest.raises(RuntimeError):
            core.abort(pair)
        with pytest.raises(RuntimeError):
            core.close()
        assert pair.buffered() == 0  # the one call allowed from any thread
        client.sendall(b"still relayed")
        assert upstream.recv(64) == b"still relayed"
    finally:
        os.eventfd_write(wake, 1)
        runner.join(STEP)
    assert not runner.is_alive()
    assert results == [(True, [])]
    core.close()
    assert _closed(near_client) and _closed(near_upstream)
    with pytest.raises(RuntimeError):
        core.run()
    last = socket.socketpair()
    raw = (last[0].detach(), last[1].detach())
    with pytest.raises(RuntimeError):
        core.add(*raw)
    assert all(_closed(fd) for fd in raw), "a closed core kept descriptors it refused"
    for sock in (client, upstream, spare_a, spare_b):
        sock.close()


def test_the_engine_is_chosen_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    from confide.operator._relay import RelayWorker, choose_engine

    built = compiled_core() is not None
    assert choose_engine("auto", recording=False)[0] == ("c" if built else "python")
    assert choose_engine("auto", recording=True) == ("python", "a chunk recorder is set")
    assert choose_engine("python", recording=False)[0] == "python"
    with pytest.raises(UsageError, match="cannot record"):
        choose_engine("c", recording=True)
    # The extension not importable (no compiler at install): the Python loop relays.
    import confide.operator

    monkeypatch.setitem(sys.modules, "confide.operator._relaycore", None)
    monkeypatch.delattr(confide.operator, "_relaycore", raising=False)
    assert compiled_core() is None
    engine, why = choose_engine("auto", recording=False)
    assert engine == "python" and "not built" in why
    with pytest.raises(UsageError, match="not built"):
        choose_engine("c", recording=False)
    worker = RelayWorker(chunk=8192, idle_timeout=1.0, log=LOG)
    assert worker.engine == "python"
    worker.start()
    worker.stop()
    worker.join(STEP)
    assert not worker.alive()
