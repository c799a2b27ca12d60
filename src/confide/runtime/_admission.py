"""Admission: how many connections the runtime holds, per source and in all, and whom it sheds.

Every connection the runtime serves, accepted on its port or handed off by
the router (:mod:`._handoff`), is admitted here first, with the source
address it came from. Two resources are bounded, each in all and per source
(an IPv4 address, or the /64 of an IPv6 address, which one attacker easily
holds whole):

- **pending TLS handshakes**, the cheapest thing for an attacker to hold
  (one ClientHello, then silence) and each worth a read buffer and a TLS
  state in the runtime. When a source is at its share, or all slots are
  taken, the *oldest* pending handshake of that source (or of the source
  holding the most) is aborted to make room: a handshake that stalled is
  always older than one that is progressing, so the flood sheds itself and
  a client that completes its handshake in time is never the one shed;
- **open connections** (handshaking or served). A new connection over a
  limit first takes the place of one of the pending handshakes above
  (its own source's, over its share). When every connection slot is taken
  and no handshake is pending, it takes the place of the oldest *idle*
  served connection (one not running a request: between requests, or still
  sending a request head) of the source holding the most connections, if
  that source holds at least two more than the newcomer's (as the router's
  ``_make_room``), so a few sources that fill the runtime cannot keep the
  others out. Otherwise it is closed at once.

A third budget is not a count of connections: **bytes buffered for request
bodies** (:class:`BodyBudget`), in all. A WSGI app is handed a request body
whole, so the runtime reads it into memory first; each request reserves its
bytes here before they are read and is answered 503 when they are not there
(after the bodies that stalled, oldest first, were shed to make room, if that
is enough).

Memory follows: a connection costs at most its TLS read buffer
(:data:`TLS_READ_BUFFER`), OpenSSL's state and the HTTP protocol's, so the
runtime's connections cost at most about ``connections`` times 100 KiB (see
BENCHMARKS.md for the measured figure), and request bodies at most the
body budget on top. Nothing here blocks or raises: a connection is
admitted, or closed; a body's bytes are reserved, or not.

Example::

    >>> admission = Admission(ConnectionLimits(handshakes=2, handshakes_per_source=1,
    ...                                        connections=8, connections_per_source=4))
    >>> first = admission.admit("192.0.2.1")
    >>> second = admission.admit("192.0.2.1")
    >>> first.closed, second.pending  # the same source's older pending handshake made room
    (True, True)
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from confide.errors import UsageError

#: Bytes read from a TLS connection's socket at once (asyncio's own default is 256 KiB,
#: reserved for every connection from its first byte on).
TLS_READ_BUFFER: Final = 64 * 1024
#: Bytes of request bodies the runtime buffers at once, in all (twice the largest WSGI body).
BODY_BUDGET: Final = 32 * 1024 * 1024
#: A request body slower than this on average (bytes per second, after BODY_GRACE) may be
#: shed when a newcomer's body does not fit in the budget.
MIN_BODY_RATE: Final = 64 * 1024
#: Seconds a request body is never counted as slow (its client's first round trips).
BODY_GRACE: Final = 2.0
#: IPv6 sources are grouped by this prefix length (one subscriber's usual allocation).
IPV6_SOURCE_PREFIX: Final = 64
#: ... and their networks by this one (a site's allocation, free from tunnel brokers).
IPV6_NETWORK_PREFIX: Final = 48


def source_of(address: object) -> str:
    """The source a peer address counts against: its IPv4 address, or its IPv6 /64."""
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return "local"  # a Unix socket, or an address family with no host part
    try:
        ip = ipaddress.ip_address(address[0].split("%", 1)[0])
    except ValueError:
        return address[0]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_SOURCE_PREFIX), strict=False))
    return str(ip)


def network_of(source: str) -> str:
    """The network a source belongs to: an IPv6 /64's /48; any other source is its own."""
    if not source.endswith(f"/{IPV6_SOURCE_PREFIX}"):
        return source
    try:
        network = ipaddress.IPv6Network(source)
    except ValueError:
        return source
    return str(network.supernet(new_prefix=IPV6_NETWORK_PREFIX))


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What the runtime's connections may hold, in all and per source."""

    #: TLS handshakes under way.
    handshakes: int = 128
    handshakes_per_source: int = 32
    #: Connections open, handshaking or served.
    connections: int = 1024
    connections_per_source: int = 256
    #: Sources that relay other clients' connections (the operator's router, whose
    #: connections all come from its address): only the global limits apply to them, the
    #: relay tells its clients apart itself (``confide runtime --relay-source``).
    relays: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in (
            "handshakes",
            "handshakes_per_source",
            "connections",
            "connections_per_source",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"connection limit {name} must be at least 1")
        if self.handshakes_per_source > self.handshakes:
            raise UsageError("handshakes_per_source must not exceed handshakes")
        if self.connections_per_source > self.connections:
            raise UsageError("connections_per_source must not exceed connections")
        if self.handshakes > self.connections:
            raise UsageError("handshakes must not exceed connections")


class Ticket:
    """One admitted connection. Its owner calls :meth:`handshake_done`, then :meth:`close`.

    The owner sets :attr:`on_shed` once it can cut the connection; a connection
    shed before that sees :attr:`closed` and cuts itself. Once served, the owner
    may set :attr:`idle`: a connection it returns true for may be shed to make
    room for a newcomer (its :attr:`on_shed` must then cut the served connection).
    """

    __slots__ = ("_admission", "source", "pending", "closed", "on_shed", "idle")

    def __init__(self, admission: Admission, source: str) -> None:
        self._admission = admission
        self.source = source
        #: Still in its TLS handshake (sheddable).
        self.pending = True
        self.closed = False
        #: Cuts the connection at once (called when it is shed).
        self.on_shed: Callable[[], None] | None = None
        #: Whether the served connection is idle now (no request running): sheddable.
        self.idle: Callable[[], bool] | None = None

    def handshake_done(self) -> None:
        """The TLS handshake completed (or there is none): the connection is served from now on."""
        if self.pending and not self.closed:
            self._admission._unpend(self)

    def close(self) -> None:
        """The connection ended (any way, any number of times)."""
        if not self.closed:
            self._admission._release(self)

    def shed(self) -> None:
        """Close the connection to make room for another (it is released at once)."""
        if not self.closed:
            self._admission._release(self)
            if self.on_shed is not None:
                self.on_shed()


class BodyHold:
    """One request's share of a :class:`BodyBudget`: ``size`` bytes, ``received`` so far.

    Its owner counts what it read in :attr:`received`, sets :attr:`on_shed` while it
    waits for more (a hold is shed only then), and calls :meth:`release` when the
    request ends.
    """

    __slots__ = ("_budget", "size", "received", "since", "on_shed", "shed", "released")

    def __init__(self, budget: BodyBudget, size: int, since: float) -> None:
        self._budget = budget
        self.size = size
        self.received = 0
        self.since = since
        #: Ends the request at once (called when it is shed); None: not waiting, keep it.
        self.on_shed: Callable[[], None] | None = None
        self.shed = False
        self.released = False

    def grow(self, size: int) -> bool:
        """Take ``size`` more bytes (a body of unknown length); False if they are not there."""
        if self.released or not self._budget._take(size):
            return False
        self.size += size
        return True

    def release(self) -> None:
        """Give the bytes back (any number of times)."""
        if not self.released:
            self.released = True
            self._budget._give(self)

    def stalled(self, now: float) -> bool:
        """Waiting for a body slower than :data:`MIN_BODY_RATE`, past :data:`BODY_GRACE`."""
        age = now - self.since
        return (
            self.on_shed is not None
            and age > BODY_GRACE
            and self.received < MIN_BODY_RATE * (age - BODY_GRACE)
        )


class BodyBudget:
    """Bytes the runtime may hold for request bodies at once, reserved before they are read.

    When a newcomer's bytes are not there, requests whose bodies stalled (slower than
    :data:`MIN_BODY_RATE` on average after :data:`BODY_GRACE`) are shed, oldest first,
    if that makes room: holding the budget costs a client bandwidth, not patience.

    >>> budget = BodyBudget(100)
    >>> first = budget.hold(60, now=0.0)
    >>> budget.hold(60, now=0.0) is None, budget.held
    (True, 60)
    >>> first.release(); budget.held
    0
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise UsageError(f"the request body budget must be at least 1 byte, not {limit}")
        self.limit = limit
        self.held = 0
        #: Holds, oldest first.
        self._holds: dict[BodyHold, None] = {}
        #: Holds refused, and holds shed for a newcomer (for logs and tests).
        self.refused_count = 0
        self.shed_count = 0

    def hold(self, size: int, now: float) -> BodyHold | None:
        """A hold of ``size`` bytes, or None (nothing taken) if they are not there."""
        if size < 0 or size > self.limit:
            self.refused_count += 1
            return None
        if self.held + size > self.limit and not self._shed_stalled(size, now):
            self.refused_count += 1
            return None
        self.held += size
        hold = BodyHold(self, size, now)
        self._holds[hold] = None
        return hold

    def _shed_stalled(self, size: int, now: float) -> bool:
        victims = []
        free = self.limit - self.held
        for hold in self._holds:
            if free >= size:
                break
            if hold.stalled(now):
                victims.append(hold)
                free += hold.size
        if free < size:
            return False  # shedding them would not make room: keep them
        for hold in victims:
            self.shed_count += 1
            shed, hold.on_shed = hold.on_shed, None
            hold.shed = True
            hold.release()
            if shed is not None:
                shed()
        return True

    def _take(self, size: int) -> bool:
        if size < 0 or self.held + size > self.limit:
            self.refused_count += 1
            return False
        self.held += size
        return True

    def _give(self, hold: BodyHold) -> None:
        self.held -= hold.size
        del self._holds[hold]


class Admission:
    """The books of one server's connections (no I/O, no clock)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        #: Pending handshakes per source, oldest first (dicts keep insertion order).
        self._pending: dict[str, dict[Ticket, None]] = {}
        self._pending_count = 0
        self._open: Counter[str] = Counter()
        #: Open connections per source, oldest first.
        self._tickets: dict[str, dict[Ticket, None]] = {}
        self._open_count = 0
        #: Connections shed to make room, and refused for want of any (for logs and tests).
        self.shed_count = 0
        self.refused_count = 0

    @property
    def pending(self) -> int:
        return self._pending_count

    @property
    def open(self) -> int:
        return self._open_count

    def open_from(self, source: str) -> int:
        return self._open[source]

    def pending_from(self, source: str) -> int:
        return len(self._pending.get(source, ()))

    def admit(self, source: str) -> Ticket | None:
        """A ticket for a new connection from ``source``, or ``None``: close it.

        Making room may shed older pending handshakes, or idle served connections
        (their :attr:`Ticket.on_shed`).
        """
        limits = self.limits
        shared = source not in limits.relays  # a relay's connections: the global limits
        if shared and self._open[source] >= limits.connections_per_source:
            if not self._shed_oldest(source):
                self.refused_count += 1
                return None
        elif self._open_count >= limits.connections:
            if not (self._shed_oldest(self._busiest()) or self._displace(source)):
                self.refused_count += 1
                return None
        if shared and self.pending_from(source) >= limits.handshakes_per_source:
            self._shed_oldest(source)
        elif self._pending_count >= limits.handshakes:
            self._shed_oldest(self._busiest())
        ticket = Ticket(self, source)
        self._pending.setdefault(source, {})[ticket] = None
        self._pending_count += 1
        self._open[source] += 1
        self._tickets.setdefault(source, {})[ticket] = None
        self._open_count += 1
        return ticket

    def shed_pending(self) -> None:
        """Shed every pending handshake (the server is stopping)."""
        for queue in list(self._pending.values()):
            for ticket in list(queue):
                ticket.shed()

    def _busiest(self) -> str | None:
        """The source with the most pending handshakes (``None`` when there are none)."""
        if not self._pending:
            return None
        return max(self._pending, key=lambda source: len(self._pending[source]))

    def _shed_oldest(self, source: str | None) -> bool:
        queue = self._pending.get(source) if source is not None else None
        if not queue:
            return False
        victim = next(iter(queue))
        self.shed_count += 1
        victim.shed()
        return True

    def _shed_idle(self, source: str) -> bool:
        """Shed the oldest idle served connection of ``source``; False if it has none."""
        for ticket in self._tickets.get(source, ()):
            if not ticket.pending and ticket.idle is not None and ticket.idle():
                self.shed_count += 1
                ticket.shed()
                return True
        return False

    def _displace(self, newcomer: str) -> bool:
        """Every connection slot is taken: shed an idle connection of the source holding the
        most, if it holds at least two more than ``newcomer`` (so that shares even out and
        never swap back and forth)."""
        mine = self._open[newcomer]
        for source in sorted(self._open, key=self._open.__getitem__, reverse=True):
            if self._open[source] <= mine + 1:
                return False
            if self._shed_idle(source):
                return True
        return False

    def _unpend(self, ticket: Ticket) -> None:
        queue = self._pending.get(ticket.source)
        if queue is not None and ticket in queue:
            del queue[ticket]
            self._pending_count -= 1
            if not queue:
                del self._pending[ticket.source]
        ticket.pending = False

    def _release(self, ticket: Ticket) -> None:
        if ticket.pending:
            self._unpend(ticket)
        ticket.closed = True
        self._open[ticket.source] -= 1
        if not self._open[ticket.source]:
            del self._open[ticket.source]
        tickets = self._tickets[ticket.source]
        del tickets[ticket]
        if not tickets:
            del self._tickets[ticket.source]
        self._open_count -= 1
