"""Relaying a routed passthrough connection's bytes outside asyncio: one thread, one epoll.

Once the router has routed a passthrough connection (ClientHello peeked at,
upstream connected), both sockets leave the event loop for a
:class:`RelayWorker`: a thread that waits on one edge-triggered ``epoll`` for
all its connections and copies each readable side into the other with
``recv_into`` a buffer it reuses and ``send``. A request and its answer cost one
wake-up, one read and one write per direction, with no transport, callback
handle or ``bytes`` object per chunk (a :class:`~._router.Recorder` other than
the default one gets a copy of each chunk).

The bounds of the asyncio relay are kept:

- **backpressure**: at most one chunk (``chunk`` bytes) waits per direction in
  the worker; while it waits, its source is not read, so a peer that stops
  reading stalls its sender through TCP, and the router holds at most two
  chunks per connection;
- **half-close**: the end of one direction (a read of 0 bytes) is passed on as
  ``shutdown(SHUT_WR)`` once what came before it is sent; the other direction
  carries on; the connection ends when both have ended;
- **idle timeout**: a connection with no byte read or sent in either direction
  for ``idle_timeout`` seconds is cut (checked every ``idle_timeout / 4``, at
  most every second);
- an error on either side cuts both.

The worker owns the sockets it is given; it tells each connection's
``on_closed`` (on the worker thread) when it has closed them. Commands from the
event loop (add, abort, stop) go through a queue and an ``eventfd``.

Two engines run this loop (ADR 0028): the compiled one
(:mod:`confide.operator._relaycore`, built from ``_relaycore.c`` when a C compiler
is there at install time), which copies without the GIL and comes back to Python
only for commands and closed pairs; and this module's Python loop, the reference,
used when the compiled one is not built or when a chunk recorder is set (the
recorder is Python). Both keep the bounds above, and the relay's tests run on
both. With the compiled engine, the worker detaches each socket's descriptor
from its :class:`socket.socket` when it hands the pair to the core: from then
on the core alone closes it.

Example::

    >>> worker = RelayWorker(chunk=256 * 1024, idle_timeout=300.0, log=log)
    >>> worker.start()
    >>> pair = RelayPair(1, client_sock, upstream_sock, on_closed=lambda: None)
    >>> worker.add(pair)
    True
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

from confide.errors import UsageError

if TYPE_CHECKING:
    import confide.operator._relaycore as _relaycore

#: epoll events that mean a side may be read (data, end of stream, reset, error).
_READ_EVENTS: Final = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
#: epoll events that mean a side may be written (space, or an error the write will show).
_WRITE_EVENTS: Final = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
#: epoll events that mean a side's peer has ended its stream (or the connection broke).
_END_EVENTS: Final = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
#: Registered once per socket; edge-triggered, so a socket is never re-armed.
_MASK: Final = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
#: Longest wait between two idle sweeps (seconds).
_MAX_SWEEP: Final = 1.0
#: Chunks are at least this large (bytes), and at most this large (one buffer of it is
#: allocated per worker; the compiled engine refuses larger ones too).
MIN_CHUNK: Final = 4096
MAX_CHUNK: Final = 64 * 1024 * 1024
#: Full chunks one pump moves before the other pairs get a turn (the compiled core's too):
#: a pair whose two ends read and write at loopback speed cannot hold the relay thread.
PUMP_BUDGET: Final = 16
#: What :meth:`RelayWorker._pump` returns when its budget ran out with more to read.
_YIELDED: Final = object()

#: Called with (connection id, True when towards the upstream, the chunk).
ChunkRecorder = Callable[[int, bool, bytes], None]
#: Which loop relays: ``auto`` is the compiled one when it is built and nothing records.
Engine = Literal["auto", "c", "python"]


def compiled_core() -> type[_relaycore.Core] | None:
    """The compiled engine's core, or ``None`` when it was not built (no C compiler)."""
    try:
        import confide.operator._relaycore as _relaycore
    except ImportError:
        return None
    return _relaycore.Core


def choose_engine(engine: Engine, *, recording: bool) -> tuple[Literal["c", "python"], str]:
    """The engine a worker uses, and why (for the operator's log)."""
    if engine == "python":
        return "python", "asked for"
    built = compiled_core() is not None
    if engine == "c":
        if recording:
            raise UsageError("the compiled relay engine cannot record chunks: use the Python one")
        if not built:
            raise UsageError(
                "the compiled relay engine (confide.operator._relaycore) is not built",
                hint="install Confide with a C compiler and Python's headers (pip install -e .)",
            )
        return "c", "asked for"
    if recording:
        return "python", "a chunk recorder is set"
    if not built:
        return "python", "confide.operator._relaycore is not built (no C compiler at install)"
    return "c", "confide.operator._relaycore"


def _core_reasons(idle: float) -> dict[int, str]:
    """The compiled engine's reasons for closing a pair, as the Python loop words them."""
    import confide.operator._relaycore as _relaycore

    return {
        _relaycore.CLOSED_END: "",
        _relaycore.CLOSED_ABORTED: "aborted",
        _relaycore.CLOSED_IDLE: f"idle for {idle} s",
        _relaycore.CLOSED_READ: "read failed",
        _relaycore.CLOSED_WRITE: "write failed",
        _relaycore.CLOSED_HALF_CLOSE: "half-close failed",
        _relaycore.CLOSED_STOPPING: "router stopping",
    }


class _Way:
    """One direction of a pair: bytes read from ``src`` are written to ``dst``.

    It also keeps the edge-triggered readiness the worker knows of, set by
    events and cleared by ``EAGAIN``: ``readable`` (``src`` may be read),
    ``ending`` (``src``'s peer ended, or the connection broke: read on to the
    0-byte read) and ``writable`` (``dst`` has room). A socket is the ``src`` of
    one way and the ``dst`` of the other, so each flag lives in one place.
    """

    __slots__ = (
        "src",
        "dst",
        "pending",
        "eof",
        "shut",
        "to_upstream",
        "readable",
        "ending",
        "writable",
    )

    def __init__(self, src: socket.socket, dst: socket.socket, to_upstream: bool) -> None:
        self.src = src
        self.dst = dst
        self.pending: bytes = b""  # read, not yet sent (at most one chunk)
        self.eof = False  # src ended its stream
        self.shut = False  # and that end was passed on to dst
        self.to_upstream = to_upstream
        self.readable = False
        self.ending = False
        self.writable = False


class RelayPair:
    """A routed connection: the client's socket and the upstream's, relayed both ways."""

    __slots__ = (
        "ident",
        "client",
        "upstream",
        "on_closed",
        "up",
        "down",
        "last",
        "closed",
        "core",
    )

    def __init__(
        self,
        ident: int,
        client: socket.socket,
        upstream: socket.socket,
        *,
        on_closed: Callable[[], None],
    ) -> None:
        self.ident = ident
        self.client = client
        self.upstream = upstream
        self.on_closed = on_closed
        self.up = _Way(client, upstream, to_upstream=True)
        self.down = _Way(upstream, client, to_upstream=False)
        self.last = 0.0
        self.closed = False
        #: The compiled engine's pair, once it relays this one (it owns the descriptors).
        self.core: _relaycore.Pair | None = None

    def buffered(self) -> int:
        """Bytes the worker holds for this pair (at most two chunks)."""
        core = self.core
        if core is not None:
            return core.buffered()
        return len(self.up.pending) + len(self.down.pending)


class RelayWorker:
    """A thread relaying many :class:`RelayPair` with one epoll.

    ``engine`` picks the loop (see :func:`choose_engine`); :attr:`engine` says which runs.
    """

    def __init__(
        self,
        *,
        chunk: int,
        idle_timeout: float,
        log: logging.Logger,
        record: ChunkRecorder | None = None,
        name: str = "confide-relay",
        engine: Engine = "auto",
    ) -> None:
        if chunk < MIN_CHUNK:
            raise UsageError(f"relay chunk {chunk} is under {MIN_CHUNK} bytes")
        if chunk > MAX_CHUNK:
            raise UsageError(f"relay chunk {chunk} is over {MAX_CHUNK} bytes")
        if not 0 < idle_timeout < float("inf"):
            raise UsageError(f"relay idle timeout {idle_timeout} is not a positive number")
        self.engine, self.engine_reason = choose_engine(engine, recording=record is not None)
        self._idle = idle_timeout
        self._sweep_every = min(_MAX_SWEEP, idle_timeout / 4)
        self._log = log
        self._record = record
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._core: _relaycore.Core | None = None
        #: The compiled engine's pairs, to find their RelayPair when they close.
        self._by_core: dict[_relaycore.Pair, RelayPair] = {}
        self._reasons = _core_reasons(idle_timeout) if self.engine == "c" else {}
        #: The Python loop's epoll and buffer (the compiled engine has its own).
        self._epoll: select.epoll | None = None
        self._view = memoryview(b"")
        core_type = compiled_core() if self.engine == "c" else None
        try:
            if core_type is not None:
                self._core = core_type(chunk, idle_timeout, self._wake)
            else:
                self._view = memoryview(bytearray(chunk))
                self._epoll = select.epoll()
                self._epoll.register(self._wake, select.EPOLLIN)
        except BaseException:
            os.close(self._wake)
            raise
        self._lock = threading.Lock()
        self._inbox: collections.deque[tuple[str, RelayPair | None]] = collections.deque()
        self._stopping = False
        #: fd -> (its pair, the way it feeds, the way that feeds it)
        self._sides: dict[int, tuple[RelayPair, _Way, _Way]] = {}
        self._pairs: set[RelayPair] = set()
        #: Pairs whose pump ran out of its budget with more to read, in order (their turn
        #: comes after the next look at epoll, which then does not wait).
        self._ready: dict[RelayPair, None] = {}
        #: How often a budget ran out (the compiled core counts its own).
        self._yields = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- called from other threads --

    def start(self) -> None:
        self._thread.start()

    def add(self, pair: RelayPair) -> bool:
        """Hand ``pair`` to the worker; ``False`` (sockets untouched) once it is stopping."""
        return self._send("add", pair)

    def abort(self, pair: RelayPair) -> None:
        """Cut ``pair`` now; its ``on_closed`` follows (unless it was already closed)."""
        self._send("abort", pair)

    def stop(self) -> None:
        """Cut every pair and end the thread (see :meth:`join`)."""
        self._send("stop", None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def _send(self, command: str, pair: RelayPair | None) -> bool:
        with self._lock:
            if self._stopping:
                return False
            if command == "stop":
                self._stopping = True
            self._inbox.append((command, pair))
            # Under the lock: once stopping, the thread closes this descriptor, and a write
            # after that could land in whatever file reused its number.
            os.eventfd_write(self._wake, 1)
        return True

    # -- the worker thread --

    def _run(self) -> None:
        try:
            if self._core is not None:
                self._loop_core(self._core)
            else:
                self._loop()
        except BaseException:  # a bug: say so, and leave no connection behind
            self._log.exception("relay worker failed; cutting its connections")
            with self._lock:
                self._stopping = True
            raise
        finally:
            self._shut_down()

    def _loop_core(self, core: _relaycore.Core) -> None:
        """The compiled engine: it relays without the GIL and returns for commands and
        closed pairs."""
        run = core.run
        while True:
            woken, closed = run()
            for core_pair, reason, error in closed:
                self._closed_by_core(core_pair, reason, error)
            if woken and self._commands_core(core):
                return

    def _commands_core(self, core: _relaycore.Core) -> bool:
        """Run the queued commands on the compiled engine; ``True`` when told to stop."""
        with self._lock:
            commands = list(self._inbox)
            self._inbox.clear()
        for command, pair in commands:
            if pair is None:  # stop
                return True
            if command == "abort":
                if pair.core is not None:
                    core.abort(pair.core)  # its closing comes back from the next run()
                else:
                    self._close(pair, "aborted")  # never relayed: the sockets are still ours
            elif not pair.closed:  # add
                # The core owns the descriptors from here: detached, so that no socket object
                # closes a descriptor the core relays (or, closed, its reused number).
                client, upstream = pair.client.detach(), pair.upstream.detach()
                self._pairs.add(pair)
                try:
                    pair.core = core.add(client, upstream)
                except (OSError, MemoryError) as exc:  # the core closed what it was given
                    self._close(pair, f"relay failed: {exc}")
                    continue
                self._by_core[pair.core] = pair
        return False

    def _closed_by_core(self, core_pair: _relaycore.Pair, reason: int, error: int) -> None:
        pair = self._by_core.pop(core_pair)
        pair.core = None
        what = self._reasons.get(reason, f"closed ({reason})")
        if error:
            what = f"{what}: {OSError(error, os.strerror(error))}"
        self._close(pair, what or None)

    def _loop(self) -> None:
        epoll = self._epoll
        if epoll is None:  # pragma: no cover - the compiled engine has no Python loop
            raise RuntimeError("the Python relay loop has no epoll")
        poll = epoll.poll
        sides = self._sides
        wake = self._wake
        pump = self._pump
        monotonic = time.monotonic
        next_sweep = monotonic() + self._sweep_every
        ready = self._ready
        while True:
            events = poll(0.0 if ready else max(0.0, next_sweep - monotonic()))
            now = monotonic()
            for fd, mask in events:
                side = sides.get(fd)
                if side is None:
                    if fd == wake:
                        os.eventfd_read(wake)
                        if self._commands(epoll, now):
                            return
                    continue  # a socket closed earlier in this batch
                pair, out_way, in_way = side
                if mask & _WRITE_EVENTS:
                    in_way.writable = True
                if mask & _READ_EVENTS:
                    out_way.readable = True
                    if mask & _END_EVENTS:
                        out_way.ending = True
                    done = pump(pair, out_way, now)
                    if not done:
                        continue
                    if done is _YIELDED:
                        self._mark_ready(pair)
                # What waits for this side (its space came back), and what follows it.
                if in_way.pending or in_way.eof:
                    done = pump(pair, in_way, now)
                    if not done:
                        continue
                    if done is _YIELDED:
                        self._mark_ready(pair)
                if out_way.shut and in_way.shut:
                    self._close(pair, None)
            # Then one more turn for each pair whose budget ran out (not those put back now).
            for pair in list(ready):
                if pair in ready:  # a pair that closed since has left the list
                    del ready[pair]
                    self._service(pair, now)
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + self._sweep_every

    def _commands(self, epoll: select.epoll, now: float) -> bool:
        """Run the queued commands; ``True`` when told to stop."""
        with self._lock:
            commands = list(self._inbox)
            self._inbox.clear()
        for command, pair in commands:
            if pair is None:  # stop
                return True
            if command == "abort":
                self._close(pair, "aborted")
            elif not pair.closed:  # add
                self._pairs.add(pair)
                pair.last = now
                for sock, out_way, in_way in (
                    (pair.client, pair.up, pair.down),
                    (pair.upstream, pair.down, pair.up),
                ):
                    self._sides[sock.fileno()] = (pair, out_way, in_way)
                    # Registering reports what is already ready (the ClientHello).
                    epoll.register(sock.fileno(), _MASK)
        return False

    def _mark_ready(self, pair: RelayPair) -> None:
        if pair not in self._ready and not pair.closed:
            self._ready[pair] = None
            self._yields += 1

    def _service(self, pair: RelayPair, now: float) -> None:
        """Pump both ways of a pair whose turn came, as the event path does."""
        for way in (pair.up, pair.down):
            if way.readable or way.pending or way.eof:
                done = self._pump(pair, way, now)
                if not done:
                    return
                if done is _YIELDED:
                    self._mark_ready(pair)
        if pair.up.shut and pair.down.shut:
            self._close(pair, None)

    def _pump(self, pair: RelayPair, way: _Way, now: float) -> object:
        """One direction; ``False`` if the pair was closed, :data:`_YIELDED` when
        :data:`PUMP_BUDGET` full chunks went and more are there to read, else ``True``."""
        src, dst = way.src, way.dst
        view = self._view
        size = len(view)
        record = self._record
        budget = PUMP_BUDGET
        while True:
            if way.pending:
                if not way.writable:
                    return True
                try:
                    sent = dst.send(way.pending)
                except (BlockingIOError, InterruptedError):
                    way.writable = False
                    return True
                except OSError as exc:
                    self._close(pair, f"write failed: {exc}")
                    return False
                pair.last = now
                if sent < len(way.pending):
                    way.pending = way.pending[sent:]
                    way.writable = False  # full: its next space comes as an event
                    return True
                way.pending = b""
            if way.eof:
                if not way.shut:
                    way.shut = True
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError as exc:
                        if exc.errno != errno.ENOTCONN:
                            self._close(pair, f"half-close failed: {exc}")
                            return False
                return True
            if not way.readable:
                return True
            try:
                count = src.recv_into(view)
            except (BlockingIOError, InterruptedError):
                way.readable = False
                return True
            except OSError as exc:
                self._close(pair, f"read failed: {exc}")
                return False
            if count == 0:
                way.eof = True
                continue
            pair.last = now
            if count < size and not way.ending:
                # Read short: the socket is drained; data arriving since is a new edge. Not
                # so for an end that came with the data: its edge is spent, read on to it.
                way.readable = False
            chunk = view[:count]
            if record is not None:
                record(pair.ident, way.to_upstream, bytes(chunk))
            try:
                sent = dst.send(chunk)  # optimistic: a full socket says EAGAIN
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._close(pair, f"write failed: {exc}")
                return False
            if sent < count:
                way.pending = bytes(chunk[sent:])
                way.writable = False
                return True
            if not way.readable:
                return True  # the common case: all of it read and sent
            budget -= 1
            if not budget:
                return _YIELDED  # full chunks and more to come: the other pairs' turn

    def _sweep(self, now: float) -> None:
        for pair in [p for p in self._pairs if now - p.last >= self._idle]:
            self._close(pair, f"idle for {self._idle} s")

    def _close(self, pair: RelayPair, reason: str | None) -> None:
        """Close ``pair``'s sockets (detached ones, the compiled engine's, are closed by
        it already) and tell its ``on_closed``."""
        if pair.closed:
            return
        pair.closed = True
        if reason is not None:
            self._log.debug("connection %d closed: %s", pair.ident, reason)
        self._pairs.discard(pair)
        self._ready.pop(pair, None)
        for sock in (pair.client, pair.upstream):
            fd = sock.fileno()
            if fd >= 0 and self._sides.pop(fd, None) is not None and self._epoll is not None:
                self._epoll.unregister(fd)
            sock.close()
        pair.up.pending = pair.down.pending = b""
        pair.on_closed()

    def _shut_down(self) -> None:
        """The thread ends: cut what is left, queued pairs included."""
        with self._lock:
            self._stopping = True
            queued = [pair for _, pair in self._inbox if pair is not None]
            self._inbox.clear()
        try:
            if self._core is not None:
                try:
                    for core_pair, reason, error in self._core.close_all():
                        self._closed_by_core(core_pair, reason, error)
                finally:
                    self._core.close()  # closes what close_all() could not report
            # The Python loop's pairs, queued pairs, and any pair whose report was lost.
            for pair in list(self._pairs) + queued:
                pair.core = None
                self._close(pair, "router stopping")
        finally:
            if self._epoll is not None:
                self._epoll.close()
            os.close(self._wake)

    # -- for tests --

    def live(self) -> int:
        """Pairs being relayed (read on the worker thread's data: an estimate elsewhere)."""
        return len(self._pairs)

    def yields(self) -> int:
        """How often a pump's budget (:data:`PUMP_BUDGET`) ran out and its pair waited its
        turn; read it once the worker has stopped (the compiled core's count is read only
        while its loop is not running)."""
        if self._core is not None:
            return self._core.yields()
        return self._yields

    def buffered(self) -> int:
        """Bytes held for all pairs (read on the worker thread's data: an estimate elsewhere)."""
        return sum(pair.buffered() for pair in list(self._pairs))
